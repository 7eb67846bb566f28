"""The README's examples that run on a CPU are run: a claim of the README that stops working fails here."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_the_toy_world_snippet_under_using_it_runs_as_it_says(monkeypatch):
    monkeypatch.setenv("FLEXCACHE_EMBEDDER__DEVICE", "cpu")
    (block,) = [b for b in _python_blocks() if b.startswith("# toy world: runs on a CPU")]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        namespace: dict = {}
        exec(compile(block, "README.md (toy world)", "exec"), namespace)
    lines = out.getvalue().splitlines()
    # What the paragraph after the block says: a miss, the paraphrase resumes at 8 of 20, the Chinese prompt runs.
    assert lines[0].startswith("hit=False K=0/20")
    assert lines[1].startswith("hit=True K=8/20")
    assert lines[2].startswith("hit=False K=0/20")
    assert float(lines[3]) == 1 / 3
    namespace["get_flexcache"](namespace["pipe"]).close()
