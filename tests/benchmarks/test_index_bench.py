"""Tests for flexcache.benchmarks.index_bench: the vectors it draws, the exact reference, a tiny run, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from flexcache.benchmarks.index_bench import (
    clustered_vectors,
    exact_neighbours,
    format_index_table,
    run_index_bench,
    uniform_vectors,
)
from flexcache.cli import main
from flexcache.core import ConfigError


def test_clustered_vectors_have_near_duplicate_and_fresh_queries():
    base, queries = clustered_vectors(3000, 40, 64, seed=1)
    assert base.shape == (3000, 64) and queries.shape == (40, 64) and base.dtype == np.float32
    assert np.allclose(np.linalg.norm(base, axis=1), 1.0, atol=1e-5)
    top = (queries @ base.T).max(axis=1)
    near, fresh = top[:20], top[20:]  # the first half revisits known families, the second starts new ones
    assert np.median(near) > 0.75 > np.median(fresh)
    pairs = base[:500] @ base[500:1000].T
    assert 0.05 < float(pairs.mean()) < 0.4  # anisotropic, as sentence embeddings are
    again, _ = clustered_vectors(3000, 40, 64, seed=1)
    assert np.array_equal(base, again)


def test_uniform_vectors_have_no_structure():
    base, queries = uniform_vectors(2000, 10, 64, seed=2)
    assert np.allclose(np.linalg.norm(base, axis=1), 1.0, atol=1e-5)
    assert abs(float((base[:500] @ base[500:1000].T).mean())) < 0.02


def test_exact_neighbours_match_a_full_sort():
    base, queries = uniform_vectors(70_000, 5, 8, seed=3)  # past one scoring chunk
    sims, rows = exact_neighbours(base, queries, 4)
    full = queries @ base.T
    assert np.array_equal(rows, np.argsort(-full, axis=1, kind="stable")[:, :4])
    assert np.allclose(sims, np.take_along_axis(full, rows, 1))


def test_a_tiny_run_measures_every_cpu_backend():
    result = run_index_bench(400, dim=16, queries=12, backends=("faiss-flat", "torch-flat", "hnsw", "ivf"),
                             data=("clustered", "uniform"), batch=150, isolate=False)
    rows = {(row["data"], row["backend"]): row for row in result["results"]}
    assert len(rows) == 8
    for (data, backend), row in rows.items():
        assert row["approximate"] == (backend in ("hnsw", "ivf"))
        assert row["index_bytes_per_entry"] >= 16 * 4
        assert 0 < row["search_p50_ms"] <= row["search_p99_ms"]
        assert 0.0 <= row["recall_at_4"] <= 1.0
        if not row["approximate"]:
            assert row["recall_at_4"] == 1.0  # flat search is the reference
    assert rows[("clustered", "hnsw")]["recall_at_4"] >= 0.9  # 400 rows: nearly exact
    assert rows[("uniform", "faiss-flat")]["near_recall_at_4"] is None  # no neighbour that close
    table = format_index_table(result)
    assert "| clustered | ivf |" in table and "recall@4" in table


def test_isolated_runs_report_their_memory_growth():
    result = run_index_bench(2000, dim=32, queries=5, backends=("faiss-flat",))
    row = result["results"][0]
    assert row["rss_bytes_per_entry"] is None or row["rss_bytes_per_entry"] > 0
    assert row["index_bytes_per_entry"] == 32 * 4 + 8


@pytest.mark.parametrize("options", [{"backends": ("annoy",)}, {"data": ("gaussian",)}, {"queries": 0}])
def test_bad_arguments_are_config_errors(options):
    with pytest.raises(ConfigError):
        run_index_bench(100, dim=8, isolate=False, **options)


def test_the_cli_writes_json(tmp_path, capsys):
    out = tmp_path / "index.json"
    assert main(["bench", "index", "--entries", "300", "--dim", "8", "--queries", "4", "--backends",
                 "faiss-flat,hnsw", "--in-process", "--no-progress", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert [row["backend"] for row in data["results"]] == ["faiss-flat", "hnsw"]
    assert data["entries"] == 300 and data["index_config"]["approximate_above"] > 0
    assert "| clustered | hnsw |" in capsys.readouterr().out
