"""Ranking metrics computed from the ranks of each user's positive candidates.

Every metric here is a function of the 1-based ranks of one row's positive candidates among
that row's *valid* candidates, so the ranks are computed once (:func:`rank_positives`) and all
metrics are derived from them (:func:`compute_metrics`). Everything is batched, vectorised
torch and runs on the device of the scores.

Ranks (pessimistic ties)
------------------------
For a row with scores ``s``, positive mask ``pos`` and valid mask ``valid`` (invalid
candidates, e.g. items the user saw in training, are not candidates at all), the rank of a
positive ``p`` is::

    r_p = 1 + #{valid c : s_c > s_p}
            + #{valid negative c : s_c == s_p}
            + #{positive q : s_q == s_p and q comes before p (column index)}

Ties are broken against the model: a negative tied with a positive is ranked above it, so a
constant model gets the worst possible ranks (a single positive among ``C`` valid candidates
gets rank ``C``), and positives tied with each other get consecutive ranks ``r, r+1, ...``. The
ranks of one row's positives are therefore distinct; they are returned sorted ascending, written
``r_(1) < r_(2) < ... < r_(n_pos)`` below.

Metrics (per row; ``n_pos`` positives, ``n_neg`` valid negatives, ``hits@k = |{p : r_p <= k}|``)
-------------------------------------------------------------------------------------------------
``HR@k``
    Hit ratio ("any-hit"): 1 if some positive has rank ``<= k``, else 0.
``HIT@k``
    The recall-style hit of the QUALSE spec: ``hits@k / n_pos``.
``Recall@k``
    ``hits@k / n_pos``; with ``recall_denominator="min_k"`` it is ``hits@k / min(n_pos, k)``
    (the Cofactor / RME definition, which reaches 1 when the top k are all positives).
``Precision@k``
    ``hits@k / k``.
``NDCG@k``
    ``DCG / IDCG`` with ``DCG = sum_{p : r_p <= k} 1 / log2(r_p + 1)`` and
    ``IDCG = sum_{i=1}^{min(n_pos, k)} 1 / log2(i + 1)`` (binary relevance). With one positive
    this is ``1 / log2(rank + 1)`` when ``rank <= k`` and 0 otherwise.
``MAP@k``
    ``(1 / min(n_pos, k)) * sum_{j : r_(j) <= k} j / r_(j)``: the mean over positives of the
    precision at each positive's rank, truncated at k. With ``k >= n_pos + n_neg`` it is the
    (non-interpolated) average precision.
``MRR``
    ``1 / r_(1)``, the reciprocal rank of the first positive. ``MRR@k`` is the same but 0 when
    ``r_(1) > k``.
``AUC``
    ``1 - mean_j (r_(j) - j) / n_neg``: the fraction of (positive, valid negative) pairs in
    which the positive scores strictly higher (``r_(j) - j`` is the number of negatives ranked
    above the j-th positive). Tied pairs count as wrong, not as one half. By convention 1.0 when
    ``n_neg == 0``.

Metric keys are ``"<name>@<k>"`` for every k in ``ks`` (``HR@10``, ``NDCG@10``, ``Recall@5``,
``Precision@10``, ``MAP@10``, ``HIT@10``) and the bare name for ``MRR`` and ``AUC``; a name
given with its own cut-off (``"MRR@10"``, ``"NDCG@20"``) yields exactly that key.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from numbers import Integral

import torch
from torch import Tensor

from segue.errors import ConfigError, DataError

__all__ = [
    "KNOWN_METRICS",
    "compute_metrics",
    "evaluate_scores",
    "mean_metrics",
    "rank_positives",
    "tied_rows",
]

#: Metrics that take a cut-off k, and those that take none (``MRR`` also accepts ``MRR@k``).
K_METRICS = ("HR", "HIT", "NDCG", "Recall", "Precision", "MAP")
NO_K_METRICS = ("MRR", "AUC")
KNOWN_METRICS = K_METRICS + NO_K_METRICS
_CANONICAL = {name.upper(): name for name in KNOWN_METRICS}
RECALL_DENOMINATORS = ("n_pos", "min_k")

# Memory bound: a chunk of rows never materialises more than about this many elements at once
# (chunk_rows * P * C for the direct comparison, chunk_rows * C for the histogram). On CPU,
# chunks that stay in cache and reuse the allocator's memory are several times faster than big
# ones (fresh multi-megabyte temporaries cost page faults), so the CPU budget is much smaller.
_CHUNK_ELEMENTS_CPU = 1 << 21
_CHUNK_ELEMENTS_ACCELERATOR = 20_000_000
# Above this many positives per row, binary-searching every candidate among the row's sorted
# positives (O(C log P)) beats comparing every positive with every candidate (O(P C)); on CPU
# the two cost about the same near P = 16 for C = 3707.
_HISTOGRAM_MIN_POSITIVES = 16


def _chunk_rows(per_row: int, device: torch.device) -> int:
    budget = _CHUNK_ELEMENTS_CPU if device.type == "cpu" else _CHUNK_ELEMENTS_ACCELERATOR
    return max(1, budget // max(1, per_row))


def _row_sum(mask: Tensor) -> Tensor:
    """Count the True entries of a bool tensor along its last dimension (int64)."""
    # Summing a uint8 view with an int32 accumulator is several times faster than summing bools.
    return mask.view(torch.uint8).sum(-1, dtype=torch.int32).long()


def _count_ge(
    scores: Tensor, valid: Tensor | None, pos_scores: Tensor, pad: Tensor, use_histogram: bool
) -> tuple[Tensor, Tensor]:
    """``(ge, n_valid)``: for each row, ``#{valid c : s_c >= s_p}`` per positive, and the valid count.

    ``ge`` is ``(B, P)`` in no particular order within a row (the caller sorts it); entries at
    ``pad`` are meaningless. The direct path compares every positive with every candidate. The
    histogram path sorts the row's positive scores ``v_0 <= ... <= v_{P-1}``, finds for every
    candidate ``h_c = #{j : v_j <= s_c}`` by binary search, and uses ``s_c >= v_j`` iff
    ``h_c >= j + 1``, so ``ge_j`` is the number of valid candidates with ``h_c > j``.
    """
    n_rows, n_cand = scores.shape
    n_slots = pos_scores.shape[1]
    device = scores.device
    ge = torch.empty((n_rows, n_slots), dtype=torch.long, device=device)
    n_valid = torch.full((n_rows,), n_cand, dtype=torch.long, device=device)
    if use_histogram:
        # Pads go to +inf, after every real positive; a candidate at +inf lands past n_pos, which
        # still counts it as >= every real positive.
        pos_scores = pos_scores.masked_fill(pad, math.inf).sort(dim=1).values
    chunk = _chunk_rows(n_cand if use_histogram else n_slots * n_cand, device)
    for start in range(0, n_rows, chunk):
        stop = min(start + chunk, n_rows)
        block, pos_block = scores[start:stop], pos_scores[start:stop]
        valid_block = None if valid is None else valid[start:stop]
        if valid_block is not None:
            n_valid[start:stop] = _row_sum(valid_block)
        if use_histogram:
            below = torch.searchsorted(pos_block, block, right=True)  # h_c, (rows, C)
            if valid_block is not None:
                below.masked_fill_(~valid_block, 0)  # bin 0 counts towards no positive
            hist = torch.zeros((stop - start, n_slots + 1), dtype=torch.long, device=device)
            hist.scatter_add_(1, below, torch.ones((), dtype=torch.long, device=device).expand_as(below))
            ge[start:stop] = hist[:, 1:].flip(1).cumsum(1).flip(1)  # ge_j = sum_{m > j} hist[m]
        else:
            hit = block[:, None, :] >= pos_block[:, :, None]  # (rows, P, C)
            if valid_block is not None:
                hit &= valid_block[:, None, :]
            ge[start:stop] = _row_sum(hit)
    return ge, n_valid


def rank_positives(scores: Tensor, positive: Tensor, valid: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Pessimistic 1-based ranks of each row's positive candidates among its valid candidates.

    Args:
        scores: ``(B, C)`` real scores, higher is better. NaN is an error on valid candidates
            (scores of invalid candidates are ignored, whatever they are).
        positive: ``(B, C)`` bool, the relevant candidates; every row needs at least one, and a
            positive must be valid.
        valid: ``(B, C)`` bool or ``None`` (all valid). Invalid candidates are not candidates:
            they neither outrank a positive nor count as negatives.

    Returns:
        ``(ranks, n_pos, n_neg)``: ``ranks`` is ``(B, P)`` float32 (float64 beyond 2**24
        candidates) with ``P`` the largest number
        of positives in a row, each row's ranks sorted ascending and padded with ``+inf``;
        ``n_pos`` and ``n_neg`` are ``(B,)`` int64, the numbers of positives and of valid
        negatives per row. See the module docstring for the tie rule.

    Raises:
        DataError: on mismatched shapes, NaN scores, a row without positives or a positive
            marked invalid.
    """
    if scores.dim() != 2:
        raise DataError(f"scores must be a 2-D (rows, candidates) tensor, got shape {tuple(scores.shape)}.")
    if positive.shape != scores.shape:
        raise DataError(
            f"positive has shape {tuple(positive.shape)} but scores have shape {tuple(scores.shape)}; they must match."
        )
    if valid is not None and valid.shape != scores.shape:
        raise DataError(
            f"valid has shape {tuple(valid.shape)} but scores have shape {tuple(scores.shape)}; they must match."
        )
    device = scores.device
    if not scores.is_floating_point():
        scores = scores.to(torch.float64)
    positive = positive.to(device=device, dtype=torch.bool)
    if valid is not None:
        valid = valid.to(device=device, dtype=torch.bool)

    n_rows, n_cand = scores.shape
    # NaN propagates through max, so one cheap reduction tells whether to look closer.
    if scores.numel() and bool(torch.isnan(scores.max())):
        nan = torch.isnan(scores) if valid is None else torch.isnan(scores) & valid
        if bool(nan.any()):
            row = int(nan.any(dim=1).nonzero()[0, 0])
            raise DataError(f"scores contain NaN (first in row {row}); a model must score every valid candidate.")

    # Each row's positives, left-aligned in column order into (B, P) slots.
    rows, cols = positive.nonzero(as_tuple=True)
    n_pos = torch.bincount(rows, minlength=n_rows)
    if n_rows and bool((n_pos == 0).any()):
        empty = (n_pos == 0).nonzero()[:, 0]
        raise DataError(
            f"row {int(empty[0])} has no positive candidate ({empty.numel()} such rows); "
            "every evaluated row needs at least one."
        )
    if valid is not None and not bool(valid[rows, cols].all()):
        row = int(rows[~valid[rows, cols]][0])
        raise DataError(f"row {row} has a positive candidate that valid marks invalid; positives must be candidates.")
    n_slots = int(n_pos.max()) if n_rows else 0
    offsets = torch.cumsum(n_pos, 0) - n_pos
    slots = torch.arange(rows.numel(), device=device) - offsets[rows]
    # Pads are NaN (NaN compares False, so a pad counts nothing) and are masked out below.
    pos_scores = torch.full((n_rows, n_slots), math.nan, dtype=scores.dtype, device=device)
    pos_scores[rows, slots] = scores[rows, cols]

    pad = torch.arange(n_slots, device=device)[None, :] >= n_pos[:, None]
    ge, n_valid = _count_ge(scores, valid, pos_scores, pad, use_histogram=n_slots > _HISTOGRAM_MIN_POSITIVES)
    n_neg = n_valid - n_pos

    # ge_p = #{valid c : s_c >= s_p} = rank of p if it were the last of its tied positives.
    # Positives with equal scores have equal ge (and unequal scores give unequal ge), so after
    # sorting, a run of m tied positives with value g takes the ranks g-m+1, ..., g.
    ge = ge.masked_fill(pad, n_cand + 1).sort(dim=1).values
    last = torch.searchsorted(ge, ge, right=True) - 1  # index of the last element of each run
    ranks = ge - (last - torch.arange(n_slots, device=device)[None, :])
    # float32 holds every integer rank exactly up to 2**24 candidates.
    ranks = ranks.to(torch.float32 if n_cand < 1 << 24 else torch.float64).masked_fill(pad, math.inf)
    return ranks, n_pos, n_neg


def tied_rows(scores: Tensor, positive: Tensor, valid: Tensor | None = None) -> Tensor:
    """``(B,)`` bool: rows in which some positive has exactly the score of some valid negative.

    These are the rows whose ranks the pessimistic tie rule (module docstring) lowers; their
    share is the ``tie_rate`` that every evaluation reports.
    """
    positive = positive.to(device=scores.device, dtype=torch.bool)
    neg = ~positive if valid is None else valid.to(device=scores.device, dtype=torch.bool) & ~positive
    s = scores if scores.is_floating_point() else scores.to(torch.float64)
    n_neg = _row_sum(neg)
    negs = s.masked_fill(~neg, math.inf).sort(dim=1).values  # valid negatives first, ascending
    pos = s.masked_fill(~positive, math.nan).contiguous()
    idx = torch.searchsorted(negs, pos.nan_to_num(nan=math.inf)).clamp(max=max(0, negs.shape[1] - 1))
    found = negs.gather(1, idx) if negs.shape[1] else torch.zeros_like(pos)
    return ((found == pos) & (idx < n_neg[:, None]) & positive.any(1, keepdim=True)).any(1)


# --------------------------------------------------------------------------------------------
# metrics
# --------------------------------------------------------------------------------------------


def _check_k(k: object) -> int:
    if isinstance(k, bool) or not isinstance(k, Integral) or k < 1:
        raise ConfigError(f"metric cut-off k must be a positive integer, got {k!r}.")
    return int(k)


def _parse_metrics(metrics: Iterable[str], ks: Sequence[int]) -> list[tuple[str, str, int | None]]:
    """Expand metric names into ``(key, name, k)``; ``k`` is None for MRR and AUC."""
    if isinstance(metrics, str):
        metrics = (metrics,)
    known = ", ".join(KNOWN_METRICS)
    wanted: list[tuple[str, str, int | None]] = []
    for raw in metrics:
        if not isinstance(raw, str):
            raise ConfigError(f"metric names must be strings, got {raw!r}; known metrics are {known}.")
        base, sep, k_text = raw.strip().partition("@")
        name = _CANONICAL.get(base.strip().upper())
        if name is None:
            raise ConfigError(f"unknown metric {raw!r}; known metrics are {known} (optionally with @k).")
        if sep:
            if name == "AUC":
                raise ConfigError(f"metric {raw!r} is invalid: AUC takes no cut-off k.")
            try:
                k = int(k_text)
            except ValueError:
                raise ConfigError(f"metric {raw!r} has a cut-off that is not a positive integer.") from None
            _check_k(k)
            wanted.append((f"{name}@{k}", name, k))
        elif name in NO_K_METRICS:
            wanted.append((name, name, None))
        else:
            wanted.extend((f"{name}@{k}", name, k) for k in ks)
    return wanted


def _check_config(
    ks: Sequence[int] | int, metrics: Iterable[str], recall_denominator: str
) -> list[tuple[str, str, int | None]]:
    """Validate the metric options and expand them into ``(key, name, k)``."""
    if isinstance(ks, Integral):
        ks = (ks,)
    ks = [_check_k(k) for k in ks]
    if recall_denominator not in RECALL_DENOMINATORS:
        raise ConfigError(
            f"recall_denominator must be one of {', '.join(RECALL_DENOMINATORS)}, got {recall_denominator!r}."
        )
    return _parse_metrics(metrics, ks)


def compute_metrics(
    ranks: Tensor,
    n_pos: Tensor,
    n_neg: Tensor,
    ks: Sequence[int] | int = (10,),
    metrics: Iterable[str] = ("HR", "NDCG"),
    recall_denominator: str = "n_pos",
) -> dict[str, Tensor]:
    """Per-row metric values from the output of :func:`rank_positives`.

    Args:
        ranks: ``(B, P)`` sorted ascending per row, padded with ``+inf``.
        n_pos: ``(B,)`` number of positives per row (``>= 1``).
        n_neg: ``(B,)`` number of valid negatives per row.
        ks: cut-offs for the metrics that take one (an int is one cut-off).
        metrics: names among ``HR, HIT, NDCG, Recall, Precision, MAP, MRR, AUC`` (case does not
            matter); ``"NAME@k"`` asks for one cut-off explicitly (``"MRR@10"``).
        recall_denominator: ``"n_pos"`` (``hits@k / n_pos``) or ``"min_k"``
            (``hits@k / min(n_pos, k)``).

    Returns:
        ``{key: (B,) tensor}`` in the order asked, keys like ``HR@10``, ``NDCG@10``, ``MRR``,
        ``AUC``. Definitions are in the module docstring.

    Raises:
        ConfigError: on an unknown metric name, a bad k or a bad recall denominator.
        DataError: on inconsistent shapes or a row without positives.
    """
    wanted = _check_config(ks, metrics, recall_denominator)
    if ranks.dim() != 2 or n_pos.shape != ranks.shape[:1] or n_neg.shape != ranks.shape[:1]:
        raise DataError(
            f"ranks must be (B, P) with n_pos and n_neg of shape (B,), got {tuple(ranks.shape)}, "
            f"{tuple(n_pos.shape)} and {tuple(n_neg.shape)}."
        )
    if n_pos.numel() and bool((n_pos < 1).any()):
        raise DataError(f"row {int((n_pos < 1).nonzero()[0, 0])} has no positive; every row needs at least one.")

    ranks = ranks if ranks.is_floating_point() else ranks.to(torch.float32)
    dtype, device = ranks.dtype, ranks.device
    n_slots = ranks.shape[1]
    n_pos_f = n_pos.to(dtype)
    j = torch.arange(1, n_slots + 1, dtype=dtype, device=device)  # 1-based position among positives
    first = ranks[:, 0] if n_slots else torch.full(n_pos.shape, math.inf, dtype=dtype, device=device)

    out: dict[str, Tensor] = {}
    for key, name, k in wanted:
        if key in out:
            continue
        if name == "AUC":
            is_pos = j[None, :] <= n_pos_f[:, None]
            above = torch.where(is_pos, ranks - j, 0).sum(1)  # negatives ranked above each positive
            pairs = n_pos_f * n_neg.to(dtype)
            out[key] = torch.where(pairs > 0, 1 - above / pairs.clamp(min=1), 1.0)
            continue
        if name == "MRR":
            rr = 1.0 / first
            out[key] = rr if k is None else torch.where(first <= k, rr, 0.0)
            continue
        assert k is not None
        in_top = ranks <= k
        hits = in_top.sum(1).to(dtype)
        if name == "HR":
            out[key] = (first <= k).to(dtype)
        elif name == "HIT":
            out[key] = hits / n_pos_f
        elif name == "Recall":
            denom = n_pos_f if recall_denominator == "n_pos" else n_pos_f.clamp(max=k)
            out[key] = hits / denom
        elif name == "Precision":
            out[key] = hits / k
        elif name == "NDCG":
            dcg = torch.where(in_top, 1.0 / torch.log2(ranks + 1), 0.0).sum(1)
            ideal = torch.cumsum(1.0 / torch.log2(torch.arange(2, k + 2, dtype=dtype, device=device)), 0)
            idcg = ideal[n_pos.clamp(max=k) - 1]
            out[key] = dcg / idcg
        elif name == "MAP":
            precision_at_hits = torch.where(in_top, j / ranks, 0.0).sum(1)
            out[key] = precision_at_hits / n_pos_f.clamp(max=k)
    return out


def mean_metrics(per_row: dict[str, Tensor]) -> dict[str, float]:
    """Average each per-row metric over rows (accumulated in float64); NaN for zero rows."""
    return {key: float(values.double().mean()) if values.numel() else math.nan for key, values in per_row.items()}


def evaluate_scores(
    scores: Tensor,
    positive: Tensor,
    valid: Tensor | None = None,
    ks: Sequence[int] | int = (10,),
    metrics: Iterable[str] = ("HR", "NDCG"),
    recall_denominator: str = "n_pos",
) -> dict[str, float]:
    """Rank, score and average in one call: ``mean_metrics(compute_metrics(*rank_positives(...)))``.

    The metric options are checked before any ranking work is done.
    """
    _check_config(ks, metrics, recall_denominator)
    ranks, n_pos, n_neg = rank_positives(scores, positive, valid)
    return mean_metrics(compute_metrics(ranks, n_pos, n_neg, ks, metrics, recall_denominator))
