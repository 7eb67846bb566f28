"""Tests for flexcache.engine.index: torch and faiss flat indexes, partitions, build_index."""

from __future__ import annotations

import math

import pytest
import torch

from flexcache.config import IndexConfig
from flexcache.engine.index import (
    MISSING_ID,
    TIE_TOLERANCE,
    FaissFlatIndex,
    PartitionedIndex,
    TorchFlatIndex,
    build_index,
)

DIM = 32


def unit_vectors(n: int, dim: int = DIM, *, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    vectors = torch.randn(n, dim, generator=generator)
    return torch.nn.functional.normalize(vectors, dim=1)


def brute_force(vectors: torch.Tensor, ids: torch.Tensor, queries: torch.Tensor, k: int):
    """Reference top-k ids (id -1 padding), computed in float64."""
    sims = queries.double() @ vectors.double().T
    top = min(k, ids.shape[0])
    best, rows = torch.topk(sims, top, dim=1)
    result = ids[rows]
    pad = k - top
    if pad:
        result = torch.cat([result, torch.full((queries.shape[0], pad), MISSING_ID)], dim=1)
        best = torch.cat([best, torch.full((queries.shape[0], pad), float("-inf"), dtype=best.dtype)], dim=1)
    return best, result


def make_both(dim: int = DIM, compact_fraction: float = 0.25):
    return TorchFlatIndex(dim, "cpu", compact_fraction=compact_fraction), FaissFlatIndex(dim, "cpu")


def random_ids(n: int, *, seed: int) -> torch.Tensor:
    # Distinct, non-contiguous, unordered int64 ids.
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(10 * n + 10, generator=generator)[:n].to(torch.int64) + 100


def assert_same_results(a, b, atol=1e-5):
    sims_a, ids_a = a
    sims_b, ids_b = b
    assert ids_a.dtype == torch.int64 and ids_b.dtype == torch.int64
    assert torch.equal(ids_a, ids_b), f"{ids_a} != {ids_b}"
    finite = torch.isfinite(sims_a)
    assert torch.equal(finite, torch.isfinite(sims_b))
    assert torch.allclose(sims_a[finite], sims_b[finite], atol=atol, rtol=0)
    assert torch.all(sims_a[~finite] == float("-inf"))
    assert torch.all(sims_b[~finite] == float("-inf"))


# -- backends agree ------------------------------------------------------------


@pytest.mark.parametrize(("n", "k"), [(1, 1), (5, 3), (17, 4), (64, 10), (257, 8), (6, 20), (3, 3)])
def test_backends_agree_with_each_other_and_brute_force(n, k):
    vectors = unit_vectors(n, seed=n)
    ids = random_ids(n, seed=n + 1)
    queries = unit_vectors(7, seed=n + 2)
    torch_index, faiss_index = make_both()
    torch_index.add(ids, vectors)
    faiss_index.add(ids, vectors)
    assert len(torch_index) == len(faiss_index) == n

    result_torch = torch_index.search(queries, k)
    result_faiss = faiss_index.search(queries, k)
    assert result_torch[0].shape == result_torch[1].shape == (7, k)
    assert result_faiss[0].shape == result_faiss[1].shape == (7, k)
    assert_same_results(result_torch, result_faiss)

    ref_sims, ref_ids = brute_force(vectors, ids, queries, k)
    assert torch.equal(result_torch[1], ref_ids)
    finite = torch.isfinite(ref_sims)
    assert torch.allclose(result_torch[0][finite].double(), ref_sims[finite], atol=1e-5, rtol=0)


@pytest.mark.parametrize("n", [4, 30, 120])
def test_self_query_returns_own_id_first(n):
    vectors = unit_vectors(n, seed=1000 + n)
    ids = random_ids(n, seed=2000 + n)
    for index in make_both():
        index.add(ids, vectors)
        sims, found = index.search(vectors, 2)
        assert torch.equal(found[:, 0], ids)
        assert torch.allclose(sims[:, 0], torch.ones(n), atol=1e-5)
        # sorted descending
        assert torch.all(sims[:, 0] >= sims[:, 1])


def test_added_in_several_batches():
    vectors = unit_vectors(40, seed=11)
    ids = random_ids(40, seed=12)
    queries = unit_vectors(5, seed=13)
    one_shot = TorchFlatIndex(DIM)
    one_shot.add(ids, vectors)
    for index in make_both():
        for start in range(0, 40, 9):
            index.add(ids[start:start + 9], vectors[start:start + 9])
        assert len(index) == 40
        assert_same_results(index.search(queries, 6), one_shot.search(queries, 6))


@pytest.mark.parametrize("n", [10, 50, 200])
def test_backends_agree_after_removals(n):
    vectors = unit_vectors(n, seed=3 * n)
    ids = random_ids(n, seed=3 * n + 1)
    queries = unit_vectors(6, seed=3 * n + 2)
    gen = torch.Generator().manual_seed(n)
    removed = ids[torch.randperm(n, generator=gen)[: n // 3]]
    unknown = torch.tensor([-5, 10**9], dtype=torch.int64)

    torch_index, faiss_index = make_both(compact_fraction=1.0)  # keep tombstones around
    for index in (torch_index, faiss_index):
        index.add(ids, vectors)
        assert index.remove(torch.cat([removed, unknown])) == removed.numel()
        assert len(index) == n - removed.numel()
        # removing again removes nothing
        assert index.remove(removed) == 0
    assert torch_index.tombstones == removed.numel()

    keep = ~torch.isin(ids, removed)
    for k in (1, 5, n):
        result_torch = torch_index.search(queries, k)
        result_faiss = faiss_index.search(queries, k)
        assert_same_results(result_torch, result_faiss)
        assert not torch.isin(result_torch[1], removed).any()
        _, ref_ids = brute_force(vectors[keep], ids[keep], queries, k)
        assert torch.equal(result_torch[1], ref_ids)


@pytest.mark.parametrize("backend", ["torch", "faiss"])
def test_removed_vector_no_longer_found(backend):
    vectors = unit_vectors(8, seed=21)
    ids = torch.arange(8, dtype=torch.int64) * 7
    index = TorchFlatIndex(DIM) if backend == "torch" else FaissFlatIndex(DIM)
    index.add(ids, vectors)
    _, found = index.search(vectors[3:4], 1)
    assert found.item() == 21
    assert index.remove(torch.tensor([21])) == 1
    _, found = index.search(vectors[3:4], 8)
    assert 21 not in found.tolist()[0]
    assert found[0, -1].item() == MISSING_ID
    assert (found[0] != MISSING_ID).sum().item() == 7


@pytest.mark.parametrize("backend", ["torch", "faiss"])
def test_removed_id_can_be_added_again(backend):
    vectors = unit_vectors(6, seed=31)
    ids = torch.arange(6, dtype=torch.int64)
    index = TorchFlatIndex(DIM, compact_fraction=1.0) if backend == "torch" else FaissFlatIndex(DIM)
    index.add(ids, vectors)
    index.remove(torch.tensor([2]))
    replacement = unit_vectors(1, seed=32)
    index.add(torch.tensor([2]), replacement)
    assert len(index) == 6
    sims, found = index.search(replacement, 1)
    assert found.item() == 2
    assert sims.item() == pytest.approx(1.0, abs=1e-5)
    # the old vector for id 2 is gone: its best match is no longer itself with similarity 1
    sims, found = index.search(vectors[2:3], 6)
    assert found[0].tolist().count(2) == 1
    assert not (found[0, 0].item() == 2 and sims[0, 0].item() == pytest.approx(1.0, abs=1e-5))


# -- missing slots ---------------------------------------------------------------


@pytest.mark.parametrize("backend", ["torch", "faiss"])
def test_missing_slots_are_minus_one_and_minus_inf(backend):
    index = TorchFlatIndex(DIM) if backend == "torch" else FaissFlatIndex(DIM)
    queries = unit_vectors(3, seed=41)

    sims, ids = index.search(queries, 4)  # empty index
    assert sims.shape == ids.shape == (3, 4)
    assert ids.dtype == torch.int64
    assert torch.all(ids == MISSING_ID)
    assert torch.all(sims == float("-inf"))

    index.add(torch.tensor([10, 20]), unit_vectors(2, seed=42))
    sims, ids = index.search(queries, 5)
    assert sims.shape == ids.shape == (3, 5)
    assert torch.all(ids[:, 2:] == MISSING_ID)
    assert torch.all(sims[:, 2:] == float("-inf"))
    assert torch.all(torch.isfinite(sims[:, :2]))
    assert sorted(ids[0, :2].tolist()) == [10, 20]

    index.remove(torch.tensor([10, 20]))
    assert len(index) == 0
    sims, ids = index.search(queries, 2)
    assert torch.all(ids == MISSING_ID)
    assert torch.all(sims == float("-inf"))


def test_torch_tombstones_show_as_missing_when_k_exceeds_live_rows():
    index = TorchFlatIndex(DIM, compact_fraction=1.0)
    index.add(torch.arange(4), unit_vectors(4, seed=51))
    index.remove(torch.tensor([0, 1]))
    assert index.tombstones == 2
    sims, ids = index.search(unit_vectors(2, seed=52), 4)
    assert torch.all(ids[:, 2:] == MISSING_ID)
    assert torch.all(sims[:, 2:] == float("-inf"))
    assert set(ids[:, :2].reshape(-1).tolist()) <= {2, 3}


# -- compaction --------------------------------------------------------------------


def test_torch_compacts_when_tombstones_exceed_fraction():
    n = 20
    vectors = unit_vectors(n, seed=61)
    ids = torch.arange(100, 100 + n, dtype=torch.int64)
    index = TorchFlatIndex(DIM, compact_fraction=0.25)
    index.add(ids, vectors)

    # 5 of 20 tombstones is not more than 25%: no compaction yet.
    index.remove(ids[:5])
    assert index.tombstones == 5
    assert index._ids.shape[0] == n

    # the 6th pushes it over: matrix rebuilt without tombstones.
    index.remove(ids[5:6])
    assert index.tombstones == 0
    assert index._ids.shape[0] == n - 6
    assert index._vectors.shape == (n - 6, DIM)
    assert len(index) == n - 6

    queries = unit_vectors(5, seed=62)
    _, ref_ids = brute_force(vectors[6:], ids[6:], queries, 7)
    sims, found = index.search(queries, 7)
    assert torch.equal(found, ref_ids)
    # self queries still map to the right ids after compaction
    _, own = index.search(vectors[6:], 1)
    assert torch.equal(own[:, 0], ids[6:])

    # removals after compaction use the rebuilt row map
    assert index.remove(ids[10:11]) == 1
    _, own = index.search(vectors[10:11], 3)
    assert int(ids[10]) not in own.tolist()[0]
    _, own = index.search(vectors[11:], 1)
    assert torch.equal(own[:, 0], ids[11:])


def test_torch_explicit_compact_preserves_results():
    vectors = unit_vectors(30, seed=71)
    ids = random_ids(30, seed=72)
    queries = unit_vectors(4, seed=73)
    index = TorchFlatIndex(DIM, compact_fraction=1.0)
    index.add(ids, vectors)
    index.remove(ids[::3])
    before = index.search(queries, 6)
    index.compact()
    assert index.tombstones == 0
    assert index._ids.shape[0] == len(index) == 20
    assert_same_results(index.search(queries, 6), before, atol=0)


def test_torch_index_agrees_with_faiss_through_compactions():
    n = 60
    vectors = unit_vectors(n, seed=81)
    ids = random_ids(n, seed=82)
    queries = unit_vectors(8, seed=83)
    torch_index, faiss_index = make_both(compact_fraction=0.1)
    torch_index.add(ids, vectors)
    faiss_index.add(ids, vectors)
    for start in range(0, 40, 4):
        chunk = ids[start:start + 4]
        assert torch_index.remove(chunk) == faiss_index.remove(chunk) == 4
        assert len(torch_index) == len(faiss_index)
        assert_same_results(torch_index.search(queries, 9), faiss_index.search(queries, 9))
    assert torch_index._ids.shape[0] < n  # compaction happened along the way


# -- tie breaking ----------------------------------------------------------------


def exact_unit_vector(dim: int = 16) -> torch.Tensor:
    """A unit vector whose products with itself are exact in any summation order: entries +-1/4."""
    signs = torch.tensor([1.0 if i % 3 else -1.0 for i in range(dim)])
    return (signs / math.sqrt(dim)).unsqueeze(0)


def test_the_exact_vector_gives_bit_equal_similarities():
    vector = exact_unit_vector()
    assert torch.equal(vector.repeat(10, 1) @ vector.T, torch.ones(10, 1))


@pytest.mark.parametrize("backend", ["torch", "faiss"])
def test_exact_ties_at_the_k_boundary_prefer_lower_ids(backend):
    vector = exact_unit_vector()
    ids = torch.tensor([17, 4, 30, 2, 11, 25, 8, 40, 1, 33])
    index = TorchFlatIndex(16) if backend == "torch" else FaissFlatIndex(16)
    index.add(ids, vector.repeat(10, 1))
    _, found = index.search(vector, 3)
    assert found.tolist() == [[1, 2, 4]]


@pytest.mark.parametrize("backend", ["torch", "faiss"])
def test_ties_within_the_tolerance_at_the_k_boundary_prefer_lower_ids(backend):
    # What BLAS kernels do to identical rows: similarities a few ulps apart, in no particular order.
    vector = unit_vectors(1, dim=16, seed=0)
    wobble = 1e-5 * unit_vectors(10, dim=16, seed=1)
    rows = torch.nn.functional.normalize(vector + wobble, dim=1)
    spread = (rows @ vector.T).flatten()
    assert 0 < float(spread.max() - spread.min()) < TIE_TOLERANCE
    # The lower the id, the lower its similarity: an exact comparison would return the highest ids.
    ranked = sorted([17, 4, 30, 2, 11, 25, 8, 40, 1, 33])
    ids = torch.empty(10, dtype=torch.int64)
    ids[torch.argsort(spread)] = torch.tensor(ranked)
    index = TorchFlatIndex(16) if backend == "torch" else FaissFlatIndex(16)
    index.add(ids, rows)
    _, found = index.search(vector, 3)
    assert found.tolist() == [[1, 2, 4]]


@pytest.mark.parametrize("backend", ["torch", "faiss"])
def test_similarities_further_apart_than_the_tolerance_are_not_ties(backend):
    vector = exact_unit_vector()
    farther = torch.nn.functional.normalize(vector + 0.01 * unit_vectors(1, dim=16, seed=3), dim=1)
    index = TorchFlatIndex(16) if backend == "torch" else FaissFlatIndex(16)
    index.add(torch.tensor([9, 3]), torch.cat([vector, farther]))
    _, found = index.search(vector, 2)
    assert found.tolist() == [[9, 3]]


@pytest.mark.parametrize("backend", ["torch", "faiss"])
def test_exact_ties_within_k_are_ordered_by_id(backend):
    vector = exact_unit_vector()
    other = unit_vectors(1, dim=16, seed=1)
    ids = torch.tensor([9, 3, 7, 5])
    index = TorchFlatIndex(16) if backend == "torch" else FaissFlatIndex(16)
    index.add(ids, torch.cat([vector.repeat(3, 1), other]))
    _, found = index.search(vector, 4)
    assert found[0, :3].tolist() == [3, 7, 9]
    assert found[0, 3].item() == 5


# -- partitions ----------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["torch", "faiss"])
def test_partitioned_index_keeps_partitions_apart(backend):
    config = IndexConfig(backend=backend, device="cpu")
    index = PartitionedIndex(DIM, config)
    vectors_a = unit_vectors(10, seed=91)
    vectors_b = unit_vectors(10, seed=92)
    ids_a = torch.arange(0, 10, dtype=torch.int64)
    ids_b = torch.arange(100, 110, dtype=torch.int64)
    part_a = ("tenant-a", "sig1")
    part_b = ("tenant-b", "sig1")
    index.add(part_a, ids_a, vectors_a)
    index.add(part_b, ids_b, vectors_b)
    assert index.partitions == 2
    assert len(index) == 20

    # Query A with B's own vectors (perfect matches in B): still only A's ids come back.
    sims, found = index.search(part_a, vectors_b, 15)
    live = found[found != MISSING_ID]
    assert live.numel() == 10 * 10
    assert torch.isin(live, ids_a).all()
    assert not torch.isin(found, ids_b).any()
    assert torch.all(found[:, 10:] == MISSING_ID)

    sims, found = index.search(part_b, vectors_b, 1)
    assert torch.equal(found[:, 0], ids_b)

    # an unknown partition is all misses
    sims, found = index.search(("tenant-c", "sig1"), vectors_a[:2], 3)
    assert sims.shape == found.shape == (2, 3)
    assert torch.all(found == MISSING_ID)
    assert torch.all(sims == float("-inf"))


@pytest.mark.parametrize("backend", ["torch", "faiss"])
def test_partitioned_index_drops_empty_partitions(backend):
    index = PartitionedIndex(DIM, IndexConfig(backend=backend, device="cpu"))
    index.add("a", torch.tensor([1, 2]), unit_vectors(2, seed=101))
    index.add("b", torch.tensor([3]), unit_vectors(1, seed=102))
    assert index.partitions == 2

    assert index.remove("a", torch.tensor([1])) == 1
    assert index.partitions == 2
    assert index.remove("a", torch.tensor([3])) == 0  # id 3 lives in b, not a
    assert len(index) == 2
    assert index.remove("a", torch.tensor([2])) == 1
    assert index.partitions == 1
    assert len(index) == 1
    assert index.remove("nope", torch.tensor([3])) == 0

    _, found = index.search("a", unit_vectors(1, seed=103), 2)
    assert torch.all(found == MISSING_ID)
    _, found = index.search("b", unit_vectors(1, seed=104), 2)
    assert found.tolist() == [[3, MISSING_ID]]

    # a dropped partition can be refilled
    index.add("a", torch.tensor([7]), unit_vectors(1, seed=105))
    assert index.partitions == 2
    _, found = index.search("a", unit_vectors(1, seed=106), 1)
    assert found.item() == 7


# -- build_index -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("backend", "expected"),
    [("torch", TorchFlatIndex), ("faiss", FaissFlatIndex), ("auto", FaissFlatIndex)],
)
def test_build_index_on_cpu(backend, expected):
    index = build_index(DIM, IndexConfig(backend=backend, device="cpu", compact_fraction=0.5))
    assert type(index) is expected
    assert index.dim == DIM
    assert index.device == torch.device("cpu")
    if expected is TorchFlatIndex:
        assert index.compact_fraction == 0.5


def test_build_index_auto_without_faiss_falls_back_to_torch(monkeypatch):
    import flexcache.engine.index as index_module

    monkeypatch.setattr(index_module, "_faiss_importable", lambda need_gpu: False)
    index = build_index(DIM, IndexConfig(backend="auto", device="cpu"))
    assert type(index) is TorchFlatIndex


def test_search_results_are_finite_unit_cosines():
    vectors = unit_vectors(50, seed=111)
    queries = unit_vectors(10, seed=112)
    for index in make_both():
        index.add(torch.arange(50), vectors)
        sims, _ = index.search(queries, 50)
        assert torch.all(sims <= 1.0 + 1e-5) and torch.all(sims >= -1.0 - 1e-5)
        assert not any(math.isnan(x) for x in sims.reshape(-1).tolist())
        # each row sorted descending
        assert torch.all(sims[:, :-1] >= sims[:, 1:])


# -- FAISS tombstone mode (what faiss-gpu uses; exercised here on CPU) --------------------


def test_faiss_tombstone_mode_matches_removal_and_compacts():
    n, dim = 200, 16
    vectors = unit_vectors(n, dim=dim, seed=11)
    queries = unit_vectors(5, dim=dim, seed=12)
    ids = torch.arange(1000, 1000 + n)
    tomb = FaissFlatIndex(dim, tombstones=True, compact_fraction=0.25)
    plain = FaissFlatIndex(dim)
    for index in (tomb, plain):
        index.add(ids, vectors)
    for chunk in range(0, 120, 10):  # remove 120 of 200 in steps, crossing the threshold several times
        doomed = ids[chunk:chunk + 10]
        assert tomb.remove(doomed) == plain.remove(doomed) == 10
        assert tomb.tombstones <= 0.25 * tomb._index.ntotal
        s_t, i_t = tomb.search(queries, 6)
        s_p, i_p = plain.search(queries, 6)
        assert torch.equal(i_t, i_p)
        torch.testing.assert_close(s_t, s_p)
    assert len(tomb) == 80 and tomb._index.ntotal < 200


def test_faiss_tombstone_mode_re_adding_a_dead_id_does_not_duplicate_it():
    dim = 16
    vectors = unit_vectors(4, dim=dim, seed=13)
    index = FaissFlatIndex(dim, tombstones=True, compact_fraction=1.0)
    index.add(torch.tensor([1, 2, 3, 4]), vectors)
    index.remove(torch.tensor([2]))
    assert index.tombstones == 1
    index.add(torch.tensor([2]), vectors[2:3])
    _, found = index.search(vectors[2:3], 4)
    assert sorted(found[0].tolist()) == [1, 2, 3, 4]
