"""What every vector index of the engine shares: the `VectorIndex` contract and its result rules.

A result is ``(similarities, ids)`` of shape ``(n, k)``: slots beyond the live
rows hold ``-inf`` / `MISSING_ID`, and similarities within `TIE_TOLERANCE` are
ties broken by the lower id. The flat indexes (`engine.index`) and the
approximate ones (`engine.approximate_index`) build their results with the
helpers here, so every backend pads and orders the same way.
"""

from __future__ import annotations

import abc

import torch

MISSING_ID = -1
# Cosines this close are ties. Identical rows are not bit-equal ties everywhere: under MKL,
# ten copies of one unit row times the same query gave 1.0 for eight rows and 0.99999994
# (1 ulp below) for the last two. The tolerance is far above float32 rounding of a cosine
# (~1e-7) and far below any similarity difference the planner acts on (0.01 and more).
TIE_TOLERANCE = 1e-6


class VectorIndex(abc.ABC):
    """An inner-product index over int64 ids: exact (flat) or approximate (`approximate`)."""

    approximate: bool = False

    dim: int

    @abc.abstractmethod
    def add(self, ids: torch.Tensor, vectors: torch.Tensor) -> None:
        """Add rows; ids are int64 and must not be present already."""

    @abc.abstractmethod
    def remove(self, ids: torch.Tensor) -> int:
        """Remove ids (unknown ids are ignored); returns how many were removed."""

    @abc.abstractmethod
    def search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k by inner product: ``(similarities, ids)`` of shape ``(n, k)``.

        Slots beyond the live row count hold similarity ``-inf`` and id ``-1``.
        Similarities within `TIE_TOLERANCE` of each other are ties, broken by
        the lower id, so backends (and BLAS kernels) agree. An approximate
        index may miss true neighbours (and then pads fewer slots or returns
        farther rows); what it returns follows the same rules.
        """

    @abc.abstractmethod
    def live_rows(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(ids, vectors)`` of the live rows on the CPU, ids ascending (to rebuild as another index)."""

    @property
    @abc.abstractmethod
    def nbytes(self) -> int:
        """Bytes of the arrays the index holds: vectors, ids, graph links or inverted lists.

        Hash maps from ids to rows (Python's or FAISS's) are not counted; the
        process RSS growth that ``flexcache bench index`` reports includes them.
        """

    @abc.abstractmethod
    def __len__(self) -> int:
        """Live (not removed) rows."""


def pad_results(sims: torch.Tensor, ids: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    missing = k - sims.shape[1]
    if missing > 0:
        n = sims.shape[0]
        sims = torch.cat([sims, sims.new_full((n, missing), float("-inf"))], dim=1)
        ids = torch.cat([ids, ids.new_full((n, missing), MISSING_ID)], dim=1)
    return sims, ids


def tied_count(sims: torch.Tensor, kth: torch.Tensor) -> int:
    """Per query, how many rows score within `TIE_TOLERANCE` of the k-th best or above; the largest."""
    kth = torch.where(torch.isinf(kth), torch.full_like(kth, float("inf")), kth)
    return int((sims >= (kth - TIE_TOLERANCE).unsqueeze(1)).sum(dim=1).max())


def sort_ties_by_id(sims: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Order each row by similarity, descending, with ties (within `TIE_TOLERANCE`) by id, ascending.

    A tie group is led by its highest similarity and holds every following
    value within the tolerance of that leader, so groups never chain.
    """
    order = torch.argsort(sims, dim=1, descending=True, stable=True)
    sims, ids = sims.gather(1, order), ids.gather(1, order)
    sims_rows, ids_rows = sims.tolist(), ids.tolist()
    out_sims, out_ids = [], []
    for row_sims, row_ids in zip(sims_rows, ids_rows):  # rows and k are small: one query, a few candidates
        pairs: list[tuple[float, int]] = []
        start = 0
        while start < len(row_sims):
            end = start + 1
            while end < len(row_sims) and row_sims[end] >= row_sims[start] - TIE_TOLERANCE:
                end += 1
            group = sorted(zip(row_sims[start:end], row_ids[start:end]), key=lambda pair: pair[1])
            pairs.extend(group)
            start = end
        out_sims.append([value for value, _ in pairs])
        out_ids.append([item for _, item in pairs])
    return (torch.tensor(out_sims, dtype=sims.dtype, device=sims.device).reshape(sims.shape),
            torch.tensor(out_ids, dtype=ids.dtype, device=ids.device).reshape(ids.shape))
