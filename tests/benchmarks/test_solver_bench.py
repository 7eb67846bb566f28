"""`flexcache bench solvers` on one toy-world prompt: restoring the solver state closes the resume gap."""

from __future__ import annotations

from flexcache.benchmarks.solver_bench import format_solver_table, run_solver_bench


def test_restored_state_resumes_exactly_and_a_restart_does_not():
    result = run_solver_bench(prompts=1, steps=10, skips=(3,), solvers=("euler", "unipc"))
    rows = {(r["solver"], r["variant"]): r for r in result["rows"]}
    assert rows["euler", "restarted"]["relative_l2_to_uninterrupted"] < 1e-6  # one-step: nothing to restore
    assert rows["unipc", "restored"]["relative_l2_to_uninterrupted"] < 1e-6
    assert rows["unipc", "restarted"]["relative_l2_to_uninterrupted"] > 1e-4
    assert rows["unipc", "restored"]["state_bytes"] > 0 and rows["unipc", "restarted"]["state_bytes"] == 0
    assert "| unipc | 3 | restored |" in format_solver_table(result)
