"""Tests for flexcache.engine.approximate_index and the switch to it in PartitionedIndex.

The approximate indexes are compared with the exact flat FAISS index: equal on
tiny data (where HNSW links every pair and IVF has one bucket), a generous
recall bound on clustered data, and the `VectorIndex` result rules always.
"""

from __future__ import annotations

import pytest
import torch

from flexcache.config import CacheConfig, IndexConfig
from flexcache.core.errors import BackendUnavailableError, ConfigError
from flexcache.engine.approximate_index import FaissApproximateIndex, auto_ivf_lists, build_approximate_index
from flexcache.engine.index import MISSING_ID, FaissFlatIndex, PartitionedIndex

DIM = 32
KINDS = ("hnsw", "ivf")


def unit_vectors(n: int, dim: int = DIM, *, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(n, dim, generator=generator), dim=1)


def clustered_vectors(n: int, clusters: int, *, seed: int, spread: float = 0.5) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    centres = torch.nn.functional.normalize(torch.randn(clusters, DIM, generator=generator), dim=1)
    members = centres[torch.randint(0, clusters, (n,), generator=generator)]
    noise = spread * torch.nn.functional.normalize(torch.randn(n, DIM, generator=generator), dim=1)
    return torch.nn.functional.normalize(members + noise, dim=1)


def distinct_ids(n: int, *, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(10 * n + 10, generator=generator)[:n].to(torch.int64) + 100


def assert_same_results(a, b, atol=1e-5):
    sims_a, ids_a = a
    sims_b, ids_b = b
    assert ids_a.dtype == ids_b.dtype == torch.int64
    assert torch.equal(ids_a, ids_b), f"{ids_a} != {ids_b}"
    finite = torch.isfinite(sims_a)
    assert torch.equal(finite, torch.isfinite(sims_b))
    assert torch.allclose(sims_a[finite], sims_b[finite], atol=atol, rtol=0)
    assert torch.all(sims_a[~finite] == float("-inf"))


def filled(kind: str, ids: torch.Tensor, vectors: torch.Tensor, **options):
    approximate, flat = FaissApproximateIndex(DIM, kind, **options), FaissFlatIndex(DIM)
    approximate.add(ids, vectors)
    flat.add(ids, vectors)
    return approximate, flat


def recall(found: torch.Tensor, truth: torch.Tensor) -> float:
    hits = sum(len(set(a.tolist()) & set(b.tolist()) - {MISSING_ID}) for a, b in zip(found, truth))
    return hits / int((truth != MISSING_ID).sum())


# -- the index on its own ----------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_exact_on_tiny_data(kind):
    # 30 rows: fewer than HNSW's construction list (40) and level-0 links (64); IVF has one bucket.
    ids, vectors = distinct_ids(30, seed=1), unit_vectors(30, seed=2)
    approximate, flat = filled(kind, ids, vectors)
    queries = unit_vectors(12, seed=3)
    for k in (1, 4, 30):
        assert_same_results(approximate.search(queries, k), flat.search(queries, k))
    assert approximate.approximate and not flat.approximate


@pytest.mark.parametrize("kind", KINDS)
def test_recall_on_clustered_data_against_flat(kind):
    ids, vectors = distinct_ids(4000, seed=4), clustered_vectors(4000, 80, seed=5)
    approximate, flat = FaissApproximateIndex(DIM, kind), FaissFlatIndex(DIM)
    for start in range(0, 4000, 500):  # grown in batches, as partitions grow (IVF retrains on the way)
        approximate.add(ids[start:start + 500], vectors[start:start + 500])
        flat.add(ids[start:start + 500], vectors[start:start + 500])
    queries = clustered_vectors(100, 80, seed=5)[:100] + 0.05 * unit_vectors(100, seed=6)
    queries = torch.nn.functional.normalize(queries, dim=1)
    sims, found = approximate.search(queries, 4)
    _, truth = flat.search(queries, 4)
    assert recall(found, truth) >= 0.9
    assert torch.all(found != MISSING_ID)
    # what it returns is what the rows score: similarities are the true inner products, descending
    by_id = dict(zip(ids.tolist(), vectors))
    expected = torch.stack([torch.stack([queries[q] @ by_id[i] for i in row.tolist()]) for q, row in enumerate(found)])
    assert torch.allclose(sims, expected, atol=1e-5)
    assert torch.all(sims[:, :-1] >= sims[:, 1:] - 1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_pads_with_minus_inf_and_missing_id(kind):
    index = FaissApproximateIndex(DIM, kind)
    sims, found = index.search(unit_vectors(2, seed=7), 3)
    assert sims.shape == found.shape == (2, 3)
    assert torch.all(sims == float("-inf")) and torch.all(found == MISSING_ID)
    index.add(torch.tensor([11, 12]), unit_vectors(2, seed=8))
    sims, found = index.search(unit_vectors(3, seed=9), 5)
    assert found.shape == (3, 5)
    assert sorted(found[0, :2].tolist()) == [11, 12]
    assert torch.all(found[:, 2:] == MISSING_ID) and torch.all(sims[:, 2:] == float("-inf"))
    assert torch.all(torch.isfinite(sims[:, :2]))


@pytest.mark.parametrize("kind", KINDS)
def test_ties_are_broken_by_the_lower_id(kind):
    vector = unit_vectors(1, seed=10)
    index = FaissApproximateIndex(DIM, kind)
    index.add(torch.tensor([9, 3, 7, 5]), torch.cat([vector.repeat(3, 1), unit_vectors(1, seed=11)]))
    _, found = index.search(vector, 4)
    assert found[0, :3].tolist() == [3, 7, 9]
    _, found = index.search(vector, 2)  # tied rows beyond the cut are seen too
    assert found[0].tolist() == [3, 7]


@pytest.mark.parametrize("kind", KINDS)
def test_removal_tombstones_then_rebuilds(kind):
    ids, vectors = distinct_ids(30, seed=12), unit_vectors(30, seed=13)
    approximate, flat = filled(kind, ids, vectors, compact_fraction=0.5)
    queries = unit_vectors(6, seed=14)

    gone = ids[:10]
    assert approximate.remove(torch.cat([gone, torch.tensor([1, 2])])) == 10  # unknown ids are ignored
    flat.remove(gone)
    assert approximate.remove(gone) == 0
    assert len(approximate) == 20 and approximate.tombstones == 10
    _, found = approximate.search(queries, 30)
    assert not torch.isin(found, gone).any()
    assert_same_results(approximate.search(queries, 8), flat.search(queries, 8))

    more = ids[10:17]  # 17 of 30 rows dead: past the fraction, rebuilt from the 13 live ones
    approximate.remove(more)
    flat.remove(more)
    assert approximate.tombstones == 0 and len(approximate) == 13
    assert_same_results(approximate.search(queries, 20), flat.search(queries, 20))


@pytest.mark.parametrize("kind", KINDS)
def test_a_removed_id_can_come_back_with_a_new_vector(kind):
    old, new = unit_vectors(2, seed=15)
    index = FaissApproximateIndex(DIM, kind)
    index.add(torch.tensor([5, 6]), torch.stack([old, unit_vectors(1, seed=16)[0]]))
    index.remove(torch.tensor([5]))
    index.add(torch.tensor([5]), new.unsqueeze(0))
    sims, found = index.search(new.unsqueeze(0), 3)
    assert found[0].tolist()[:2] == [5, 6] and found[0, 2] == MISSING_ID
    assert sims[0, 0].item() == pytest.approx(1.0, abs=1e-5)
    assert len(index) == 2


@pytest.mark.parametrize("kind", KINDS)
def test_removing_every_row_empties_the_index(kind):
    index = FaissApproximateIndex(DIM, kind)
    index.add(torch.tensor([1, 2, 3]), unit_vectors(3, seed=17))
    assert index.remove(torch.tensor([1, 2, 3])) == 3
    assert len(index) == 0 and index.nbytes == 0
    _, found = index.search(unit_vectors(1, seed=18), 2)
    assert found.tolist() == [[MISSING_ID, MISSING_ID]]
    index.add(torch.tensor([4]), unit_vectors(1, seed=19))
    assert index.search(unit_vectors(1, seed=20), 1)[1].item() == 4


@pytest.mark.parametrize("kind", KINDS)
def test_live_rows_and_nbytes(kind):
    ids, vectors = torch.tensor([30, 10, 20, 40]), unit_vectors(4, seed=21)
    index = FaissApproximateIndex(DIM, kind)
    index.add(ids, vectors)
    index.remove(torch.tensor([20]))
    live_ids, live_vectors = index.live_rows()
    assert live_ids.tolist() == [10, 30, 40]
    assert torch.allclose(live_vectors, vectors[[1, 0, 3]], atol=1e-6)
    assert index.nbytes >= 4 * DIM * 4  # at least the float32 rows


def test_ivf_retrains_as_it_grows_fourfold():
    index = FaissApproximateIndex(DIM, "ivf")
    vectors = unit_vectors(2000, seed=22)
    index.add(torch.arange(0, 100), vectors[:100])
    assert index.trained_rows == 100
    index.add(torch.arange(100, 400), vectors[100:400])
    assert index.trained_rows == 100  # 400 rows: not past four times 100
    index.add(torch.arange(400, 2000), vectors[400:])
    assert index.trained_rows == 2000
    assert auto_ivf_lists(2000) == 51 and auto_ivf_lists(10) == 1
    assert FaissApproximateIndex(DIM, "hnsw").trained_rows == 0


def test_an_unknown_kind_is_a_config_error():
    with pytest.raises(ConfigError, match="index.approximate"):
        FaissApproximateIndex(DIM, "annoy")


def test_build_approximate_index_reads_the_config():
    config = IndexConfig(approximate="ivf", ivf_probes=3, ivf_lists=7, compact_fraction=0.5)
    index = build_approximate_index(DIM, config)
    assert (index.kind, index.probes, index.lists, index.compact_fraction) == ("ivf", 3, 7, 0.5)
    index = build_approximate_index(DIM, IndexConfig(approximate="hnsw", hnsw_m=8, hnsw_ef_search=20))
    assert (index.kind, index.m, index.ef_search) == ("hnsw", 8, 20)


# -- the switch in PartitionedIndex ------------------------------------------------------


@pytest.mark.parametrize("backend", ["faiss", "torch"])
@pytest.mark.parametrize("kind", KINDS)
def test_a_partition_turns_approximate_past_the_threshold(backend, kind):
    config = IndexConfig(backend=backend, device="cpu", approximate_above=20, approximate=kind)
    index = PartitionedIndex(DIM, config)
    ids, vectors = distinct_ids(30, seed=23), unit_vectors(30, seed=24)
    reference = FaissFlatIndex(DIM)
    for position in range(20):  # one at a time, as the cache inserts
        index.add("big", ids[position:position + 1], vectors[position:position + 1])
    index.add("small", ids[:5], vectors[:5])
    assert not index.partition_index("big").approximate  # at the threshold: still flat
    index.add("big", ids[20:21], vectors[20:21])
    assert index.partition_index("big").approximate
    assert not index.partition_index("small").approximate
    index.add("big", ids[21:], vectors[21:])
    reference.add(ids, vectors)
    assert len(index.partition_index("big")) == 30 and len(index) == 35
    queries = unit_vectors(5, seed=25)
    assert_same_results(index.search("big", queries, 6), reference.search(queries, 6))  # tiny: exact

    index.remove("big", ids[:15])  # below the threshold again: stays approximate (no flip-flop)
    reference.remove(ids[:15])
    assert index.partition_index("big").approximate
    assert_same_results(index.search("big", queries, 6), reference.search(queries, 6))


def test_a_bulk_add_past_the_threshold_builds_the_approximate_index_at_once():
    index = PartitionedIndex(DIM, IndexConfig(device="cpu", approximate_above=10))
    index.add("p", torch.arange(25), unit_vectors(25, seed=26))
    assert index.partition_index("p").approximate and len(index.partition_index("p")) == 25


def test_zero_means_never_approximate():
    index = PartitionedIndex(DIM, IndexConfig(device="cpu", approximate_above=0))
    index.add("p", torch.arange(300), unit_vectors(300, seed=27))
    assert not index.partition_index("p").approximate
    assert index.partition_index("nothing") is None


def test_without_faiss_partitions_stay_flat_with_a_warning(monkeypatch):
    def unavailable(dim, config):
        raise BackendUnavailableError("the approximate index needs faiss")

    monkeypatch.setattr("flexcache.engine.index.build_approximate_index", unavailable)
    index = PartitionedIndex(DIM, IndexConfig(backend="torch", device="cpu", approximate_above=5))
    with pytest.warns(RuntimeWarning, match="partitions stay flat"):
        index.add("p", torch.arange(8), unit_vectors(8, seed=28))
    index.add("p", torch.arange(8, 12), unit_vectors(4, seed=29))  # no second attempt, no lost rows
    assert not index.partition_index("p").approximate and len(index) == 12


# -- config ------------------------------------------------------------------------------


@pytest.mark.parametrize(("field", "value"), [
    ("approximate_above", -1), ("approximate", "annoy"), ("hnsw_m", 1), ("hnsw_m", 1000),
    ("hnsw_ef_construction", 0), ("hnsw_ef_search", 0), ("ivf_lists", -1), ("ivf_probes", 0),
])
def test_config_errors_name_the_field(field, value):
    with pytest.raises(ConfigError, match=f"index.{field}"):
        IndexConfig(**{field: value})
    with pytest.raises(ConfigError, match=f"index.{field}"):
        CacheConfig.from_dict({"index": {field: value}})


def test_config_defaults_round_trip():
    config = CacheConfig.from_dict({"index": {"approximate_above": 0, "approximate": "ivf", "ivf_probes": 8}})
    assert (config.index.approximate_above, config.index.approximate, config.index.ivf_probes) == (0, "ivf", 8)
    assert CacheConfig.from_yaml(config.to_yaml()).index == config.index
    assert IndexConfig().approximate_above > 0  # on by default


def test_a_fixed_bucket_count_above_the_rows_is_capped():
    ids, vectors = torch.arange(10), unit_vectors(10, seed=30)
    approximate, flat = filled("ivf", ids, vectors, lists=64, probes=64)
    queries = unit_vectors(3, seed=31)
    assert_same_results(approximate.search(queries, 4), flat.search(queries, 4))


@pytest.mark.parametrize("kind", KINDS)
def test_a_failed_rebuild_keeps_the_index_as_it_was(kind, monkeypatch):
    ids, vectors = distinct_ids(30, seed=32), unit_vectors(30, seed=33)
    index = FaissApproximateIndex(DIM, kind)
    index.add(ids, vectors)
    index.remove(ids[:3])
    queries = unit_vectors(4, seed=34)
    before = index.search(queries, 5)

    def out_of_memory(training):
        raise MemoryError

    monkeypatch.setattr(index, "_new_index", out_of_memory)
    with pytest.raises(MemoryError):
        index.compact()
    assert len(index) == 27 and index.tombstones == 3
    assert_same_results(index.search(queries, 5), before)


@pytest.mark.parametrize("kind", KINDS)
def test_removed_rows_stay_hidden_while_the_index_grows(kind):
    ids, vectors = distinct_ids(150, seed=35), unit_vectors(150, seed=36)
    index = FaissApproximateIndex(DIM, kind, compact_fraction=1.0)
    index.add(ids[:20], vectors[:20])
    index.remove(ids[:2])
    index.search(vectors[:1], 4)  # the selector exists now; growing moves the rows it reads
    for position in range(20, 150):
        index.add(ids[position:position + 1], vectors[position:position + 1])
    index.remove(ids[100:110])
    gone = torch.cat([ids[:2], ids[100:110]])
    sims, found = index.search(vectors, 10)
    assert not torch.isin(found, gone).any()
    assert torch.all(found != MISSING_ID)
    own = [row.tolist().index(item) if item in row.tolist() else None for row, item in zip(found, ids.tolist())]
    assert sum(position == 0 for position in own) >= 130  # a live row finds itself first
