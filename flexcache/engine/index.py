"""Inner-product vector indexes, partitioned by (tenant, generation signature).

Two interchangeable backends return the same neighbours on the same data:

* `FaissFlatIndex`: FAISS ``IndexFlatIP`` behind an id map (CPU), or the
  faiss-gpu flat index when faiss-gpu is installed and the index lives on CUDA.
  GPU FAISS indexes cannot remove rows, so removals become tombstones there.
* `TorchFlatIndex`: a device-resident matrix searched with one matmul + topk;
  the GPU index where faiss-gpu is missing (it is, for CUDA 13). Removal is a
  tombstone; the matrix is compacted once tombstones pass a threshold.

Both are exact. A CPU partition past ``index.approximate_above`` live rows
becomes an approximate FAISS index (`engine.approximate_index`: HNSW or IVF),
whose searches may miss true neighbours; `PartitionedIndex` makes the switch.

Vectors must be unit-norm float32 so inner product is cosine similarity.
"""

from __future__ import annotations

import warnings
from collections.abc import Hashable

import numpy as np
import torch

from flexcache.core.config import IndexConfig
from flexcache.core.errors import BackendUnavailableError, ConfigError
from flexcache.engine.approximate_index import build_approximate_index
from flexcache.engine.embedder import resolve_device
from flexcache.engine.vector_index import (  # noqa: F401  (TIE_TOLERANCE, VectorIndex: public here too)
    MISSING_ID,
    TIE_TOLERANCE,
    VectorIndex,
    pad_results,
    sort_ties_by_id,
    tied_count,
)


class TorchFlatIndex(VectorIndex):
    """Flat inner-product index as a torch matrix on `device` (GPU-resident on CUDA)."""

    def __init__(self, dim: int, device: torch.device | str = "cpu", compact_fraction: float = 0.25) -> None:
        self.dim = dim
        self.device = torch.device(device)
        self.compact_fraction = compact_fraction
        self._vectors = torch.empty((0, dim), dtype=torch.float32, device=self.device)
        self._ids = torch.empty((0,), dtype=torch.int64, device=self.device)
        self._live = torch.empty((0,), dtype=torch.bool, device=self.device)
        self._row_of: dict[int, int] = {}

    def add(self, ids: torch.Tensor, vectors: torch.Tensor) -> None:
        ids_list = [int(i) for i in ids.reshape(-1).tolist()]
        start = self._ids.shape[0]
        self._vectors = torch.cat([self._vectors, vectors.to(self.device, torch.float32)])
        self._ids = torch.cat([self._ids, ids.to(self.device, torch.int64).reshape(-1)])
        self._live = torch.cat([self._live, torch.ones(len(ids_list), dtype=torch.bool, device=self.device)])
        for offset, item in enumerate(ids_list):
            self._row_of[item] = start + offset

    def remove(self, ids: torch.Tensor) -> int:
        rows = [self._row_of.pop(int(i)) for i in ids.reshape(-1).tolist() if int(i) in self._row_of]
        if rows:
            self._live[torch.tensor(rows, device=self.device)] = False
            if self.tombstones > self.compact_fraction * self._ids.shape[0]:
                self.compact()
        return len(rows)

    @property
    def tombstones(self) -> int:
        return self._ids.shape[0] - len(self._row_of)

    def compact(self) -> None:
        """Drop tombstoned rows (one gather; amortised by `compact_fraction`)."""
        keep = self._live
        self._vectors, self._ids = self._vectors[keep], self._ids[keep]
        self._live = torch.ones(self._ids.shape[0], dtype=torch.bool, device=self.device)
        self._row_of = {int(i): row for row, i in enumerate(self._ids.tolist())}

    def live_rows(self) -> tuple[torch.Tensor, torch.Tensor]:
        ids, vectors = self._ids[self._live].cpu(), self._vectors[self._live].cpu()
        order = torch.argsort(ids)
        return ids[order], vectors[order]

    @property
    def nbytes(self) -> int:
        return sum(tensor.element_size() * tensor.nelement() for tensor in (self._vectors, self._ids, self._live))

    def search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        queries = queries.to(self.device, torch.float32)
        n_rows = self._ids.shape[0]
        if len(self) == 0:
            empty = torch.empty((queries.shape[0], 0), device=self.device)
            return pad_results(empty, empty.to(torch.int64), k)
        sims = queries @ self._vectors.T
        sims = sims.masked_fill(~self._live, float("-inf"))
        top = min(k, n_rows)
        best, rows = torch.topk(sims, top, dim=1)
        widened = tied_count(sims, best[:, -1])
        if widened > top:  # rows tied with the k-th lie beyond the cut; let the id tie-break see them
            best, rows = torch.topk(sims, widened, dim=1)
        ids = self._ids[rows]
        ids = ids.masked_fill(torch.isinf(best), MISSING_ID)
        best, ids = sort_ties_by_id(best, ids)
        return pad_results(best[:, :k], ids[:, :k], k)

    def __len__(self) -> int:
        return len(self._row_of)


class FaissFlatIndex(VectorIndex):
    """FAISS flat inner-product index with ids; faiss-gpu when `device` is CUDA.

    GPU FAISS indexes cannot remove rows, so there (or with ``tombstones=True``)
    a removal only marks the id dead; once dead rows pass `compact_fraction`
    of the index, or a dead id is added again, the index is rebuilt from a host
    copy of the live vectors.
    """

    def __init__(self, dim: int, device: torch.device | str = "cpu", compact_fraction: float = 0.25,
                 tombstones: bool | None = None) -> None:
        try:
            import faiss
        except ImportError:
            raise BackendUnavailableError(
                "index.backend 'faiss' needs faiss; pip install faiss-cpu (or faiss-gpu-cu12 on CUDA 12), "
                "or set index.backend to 'torch'"
            ) from None
        self._faiss = faiss
        self.dim = dim
        self.device = torch.device(device)
        self.compact_fraction = compact_fraction
        self._on_gpu = self.device.type == "cuda"
        if self._on_gpu and not hasattr(faiss, "StandardGpuResources"):
            raise BackendUnavailableError(
                "index.backend 'faiss' on CUDA needs faiss-gpu; install it or use index.backend 'torch'"
            )
        self._resources = faiss.StandardGpuResources() if self._on_gpu else None
        self._tombstoning = self._on_gpu if tombstones is None else tombstones
        self._index = self._new_index()
        self._live: set[int] = set()
        self._host_vectors: dict[int, np.ndarray] = {}  # kept only when tombstoning, for rebuilds

    def _new_index(self):
        faiss = self._faiss
        if self._on_gpu:
            config = faiss.GpuIndexFlatConfig()
            config.device = self.device.index or 0
            return faiss.IndexIDMap(faiss.GpuIndexFlatIP(self._resources, self.dim, config))
        return faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))

    @property
    def tombstones(self) -> int:
        return self._index.ntotal - len(self._live)

    def add(self, ids: torch.Tensor, vectors: torch.Tensor) -> None:
        array = np.ascontiguousarray(vectors.detach().to("cpu", torch.float32).numpy())
        id_array = np.ascontiguousarray(ids.detach().to("cpu", torch.int64).reshape(-1).numpy())
        if self._tombstoning:
            if self.tombstones and any(int(i) in self._host_vectors for i in id_array):
                self.compact()  # a dead row with this id would come back to life
            self._host_vectors.update((int(i), row) for i, row in zip(id_array, array))
        self._index.add_with_ids(array, id_array)
        self._live.update(int(i) for i in id_array)

    def remove(self, ids: torch.Tensor) -> int:
        present = [int(i) for i in ids.reshape(-1).tolist() if int(i) in self._live]
        if not present:
            return 0
        self._live.difference_update(present)
        if not self._tombstoning:
            self._index.remove_ids(np.asarray(present, dtype=np.int64))
        elif self.tombstones > self.compact_fraction * self._index.ntotal:
            self.compact()
        return len(present)

    def compact(self) -> None:
        """Rebuild from the live rows (tombstoning mode only)."""
        if not self._tombstoning:
            return
        live = sorted(self._live)
        self._host_vectors = {i: self._host_vectors[i] for i in live}
        self._index = self._new_index()
        if live:
            self._index.add_with_ids(np.stack([self._host_vectors[i] for i in live]), np.asarray(live, dtype=np.int64))

    def live_rows(self) -> tuple[torch.Tensor, torch.Tensor]:
        live = np.asarray(sorted(self._live), dtype=np.int64)
        if not len(live):
            vectors = np.empty((0, self.dim), dtype=np.float32)
        elif self._tombstoning:  # GPU id maps cannot reconstruct; the host copy can
            vectors = np.stack([self._host_vectors[i] for i in live])
        else:
            vectors = self._index.reconstruct_batch(live)
        return torch.from_numpy(live), torch.from_numpy(vectors)

    @property
    def nbytes(self) -> int:
        return self._index.ntotal * (self.dim * 4 + 8)  # float32 rows and their int64 ids

    def search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        array = np.ascontiguousarray(queries.detach().to("cpu", torch.float32).numpy())
        total = self._index.ntotal
        # On GPU removed rows stay as tombstones: over-fetch and filter them out. One row past the
        # k-th shows whether a tie continues beyond the cut (fetching exactly k always looked tied).
        fetch = min(total, k + 1 + (total - len(self._live)))
        if fetch == 0:
            empty = torch.empty((array.shape[0], 0))
            return pad_results(empty, empty.to(torch.int64), k)
        while True:
            sims_np, ids_np = self._index.search(array, fetch)
            sims, ids = torch.from_numpy(sims_np), torch.from_numpy(ids_np)
            if len(self._live) == total:  # no tombstones (always so on CPU): every fetched row is live
                dead = torch.zeros(ids.shape, dtype=torch.bool)
            else:
                dead = torch.tensor([[int(i) not in self._live for i in row] for row in ids_np.tolist()],
                                    dtype=torch.bool).reshape(ids.shape)
            sims = sims.masked_fill(dead | (ids < 0), float("-inf"))
            live_sorted = sims.sort(dim=1, descending=True).values
            kth = live_sorted[:, min(k, fetch) - 1]
            # Rows tied with the k-th may lie beyond what was fetched: fetch more.
            if fetch >= total or tied_count(torch.from_numpy(sims_np)[:, -1:], kth) == 0:
                break
            fetch = min(total, 2 * fetch)
        ids = ids.masked_fill(torch.isinf(sims), MISSING_ID)
        sims, ids = sort_ties_by_id(sims, ids)
        sims, ids = pad_results(sims[:, :k], ids[:, :k], k)
        return sims.to(self.device), ids.to(self.device)

    def __len__(self) -> int:
        return len(self._live)


def _faiss_importable(need_gpu: bool) -> bool:
    try:
        import faiss
    except ImportError:
        return False
    return hasattr(faiss, "StandardGpuResources") if need_gpu else True


def build_index(dim: int, config: IndexConfig) -> VectorIndex:
    """The index the config asks for, on the device it names (see `IndexConfig`)."""
    device = resolve_device(config.device)
    backend = config.backend
    if backend == "auto":
        backend = "faiss" if _faiss_importable(need_gpu=device.type == "cuda") else "torch"
    if backend == "faiss":
        return FaissFlatIndex(dim, device, config.compact_fraction)
    if backend == "torch":
        return TorchFlatIndex(dim, device, config.compact_fraction)
    raise ConfigError(f"unknown index backend {backend!r}")


class PartitionedIndex:
    """One `VectorIndex` per partition key (tenant namespace, signature key).

    A search only ever sees its own partition, which is how tenants stay
    apart and how a different resolution or step count can never match. A CPU
    partition whose live rows pass ``config.approximate_above`` is rebuilt,
    once, as the approximate index (`engine.approximate_index`), from its rows.
    """

    def __init__(self, dim: int, config: IndexConfig) -> None:
        self.dim = dim
        self.config = config
        self._partitions: dict[Hashable, VectorIndex] = {}
        self._approximate_unavailable = False

    def add(self, partition: Hashable, ids: torch.Tensor, vectors: torch.Tensor) -> None:
        index = self._partitions.get(partition)
        if index is None:
            index = self._partitions[partition] = build_index(self.dim, self.config)
        if self._goes_approximate(index, ids.numel()):
            self._partitions[partition] = self._rebuilt_approximate(index, ids, vectors)
            return
        index.add(ids, vectors)

    def _goes_approximate(self, index: VectorIndex, adding: int) -> bool:
        threshold = self.config.approximate_above
        return (bool(threshold) and not index.approximate and not self._approximate_unavailable
                and len(index) + adding > threshold and getattr(index, "device", torch.device("cpu")).type == "cpu")

    def _rebuilt_approximate(self, flat: VectorIndex, ids: torch.Tensor, vectors: torch.Tensor) -> VectorIndex:
        try:
            approximate = build_approximate_index(self.dim, self.config)
        except BackendUnavailableError as exc:  # no faiss: stay flat (exact, slower) rather than fail inserts
            warnings.warn(f"{exc}; partitions stay flat", RuntimeWarning, stacklevel=3)
            self._approximate_unavailable = True
            flat.add(ids, vectors)
            return flat
        old_ids, old_vectors = flat.live_rows()
        approximate.add(torch.cat([old_ids, ids.to("cpu", torch.int64).reshape(-1)]),
                        torch.cat([old_vectors, vectors.to("cpu", torch.float32).reshape(-1, self.dim)]))
        return approximate

    def remove(self, partition: Hashable, ids: torch.Tensor) -> int:
        index = self._partitions.get(partition)
        if index is None:
            return 0
        removed = index.remove(ids)
        if len(index) == 0:
            del self._partitions[partition]
        return removed

    def search(self, partition: Hashable, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        index = self._partitions.get(partition)
        if index is None:
            empty = torch.empty((queries.shape[0], 0))
            return pad_results(empty, empty.to(torch.int64), k)
        return index.search(queries, k)

    def __len__(self) -> int:
        return sum(len(index) for index in self._partitions.values())

    def partition_index(self, partition: Hashable) -> VectorIndex | None:
        """The index that holds `partition` (flat or approximate), or None if it holds nothing."""
        return self._partitions.get(partition)

    @property
    def partitions(self) -> int:
        return len(self._partitions)
