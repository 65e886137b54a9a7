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

import torch
from torch import Tensor

from segue.errors import ConfigError, DataError

__all__ = [
    "KNOWN_METRICS",
    "compute_metrics",
    "evaluate_scores",
    "mean_metrics",
    "rank_positives",
]

#: Metrics that take a cut-off k, and those that take none (``MRR`` also accepts ``MRR@k``).
K_METRICS = ("HR", "HIT", "NDCG", "Recall", "Precision", "MAP")
NO_K_METRICS = ("MRR", "AUC")
KNOWN_METRICS = K_METRICS + NO_K_METRICS
_CANONICAL = {name.upper(): name for name in KNOWN_METRICS}
RECALL_DENOMINATORS = ("n_pos", "min_k")

# Memory bound: a chunk of rows never materialises more than this many elements at once
# (chunk_rows * P * C for the direct comparison, chunk_rows * C for the sort).
_MAX_CHUNK_ELEMENTS = 20_000_000
# Above this many positives per row, sorting each row once beats comparing every positive
# against every candidate (measured on CPU: the two cost the same near P = 14 for C = 3707).
_SORT_MIN_POSITIVES = 16


# --------------------------------------------------------------------------------------------
# ranks
# --------------------------------------------------------------------------------------------


def _row_sum(mask: Tensor) -> Tensor:
    """Count the True entries of a bool tensor along its last dimension (int64)."""
    # Summing a uint8 view with an int32 accumulator is several times faster than summing bools.
    return mask.view(torch.uint8).sum(-1, dtype=torch.int32).long()


def _count_ge_compare(scores: Tensor, valid: Tensor | None, pos_scores: Tensor) -> Tensor:
    """#{valid c : s_c >= s_p} for every (row, positive slot), by direct comparison."""
    n_rows, n_cand = scores.shape
    n_slots = pos_scores.shape[1]
    chunk = max(1, _MAX_CHUNK_ELEMENTS // max(1, n_slots * n_cand))
    out = torch.empty((n_rows, n_slots), dtype=torch.long, device=scores.device)
    for start in range(0, n_rows, chunk):
        stop = min(start + chunk, n_rows)
        ge = scores[start:stop, None, :] >= pos_scores[start:stop, :, None]  # (rows, P, C)
        if valid is not None:
            ge &= valid[start:stop, None, :]
        out[start:stop] = _row_sum(ge)
    return out


def _count_ge_sorted(scores: Tensor, valid: Tensor | None, pos_scores: Tensor, n_valid: Tensor) -> Tensor:
    """#{valid c : s_c >= s_p} for every (row, positive slot), by sorting each row once."""
    n_rows, n_cand = scores.shape
    chunk = max(1, _MAX_CHUNK_ELEMENTS // max(1, n_cand))
    out = torch.empty(pos_scores.shape, dtype=torch.long, device=scores.device)
    for start in range(0, n_rows, chunk):
        stop = min(start + chunk, n_rows)
        block = scores[start:stop]
        if valid is not None:
            block = block.masked_fill(~valid[start:stop], -math.inf)
        ordered = block.sort(dim=1).values
        below = torch.searchsorted(ordered, pos_scores[start:stop].contiguous())  # #{c : s_c < s_p}
        # Invalid candidates sit at -inf: they are never >= a finite s_p, and when s_p is -inf
        # every valid candidate is >= s_p, hence the clamp to the number of valid candidates.
        out[start:stop] = torch.minimum(n_cand - below, n_valid[start:stop, None])
    return out


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
        ``(ranks, n_pos, n_neg)``: ``ranks`` is ``(B, P)`` float32 with ``P`` the largest number
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
    nan = torch.isnan(scores)
    if bool(nan.any()) and (valid is None or bool((nan & valid).any())):
        row = int((nan if valid is None else nan & valid).any(dim=1).nonzero()[0, 0])
        raise DataError(f"scores contain NaN (first in row {row}); a model must score every valid candidate.")
    if valid is not None and bool((positive & ~valid).any()):
        row = int((positive & ~valid).any(dim=1).nonzero()[0, 0])
        raise DataError(f"row {row} has a positive candidate that valid marks invalid; positives must be candidates.")

    n_pos = _row_sum(positive) if n_cand else torch.zeros(n_rows, dtype=torch.long, device=device)
    if n_rows and bool((n_pos == 0).any()):
        empty = (n_pos == 0).nonzero()[:, 0]
        raise DataError(
            f"row {int(empty[0])} has no positive candidate ({empty.numel()} such rows); "
            "every evaluated row needs at least one."
        )
    n_valid = torch.full_like(n_pos, n_cand) if valid is None else _row_sum(valid)
    n_neg = n_valid - n_pos
    n_slots = int(n_pos.max()) if n_rows else 0

    # Gather each row's positive scores into (B, P), left-aligned in column order; pads are NaN
    # (NaN compares False, so the pads count nothing).
    rows, cols = positive.nonzero(as_tuple=True)
    offsets = torch.cumsum(n_pos, 0) - n_pos
    slots = torch.arange(rows.numel(), device=device) - offsets[rows]
    pos_scores = torch.full((n_rows, n_slots), math.nan, dtype=scores.dtype, device=device)
    pos_scores[rows, slots] = scores[rows, cols]

    if n_slots > _SORT_MIN_POSITIVES:
        ge = _count_ge_sorted(scores, valid, pos_scores, n_valid)
    else:
        ge = _count_ge_compare(scores, valid, pos_scores)

    # ge_p = #{valid c : s_c >= s_p} = rank of p if it were the last of its tied positives.
    # Positives with equal scores have equal ge (and unequal scores give unequal ge), so after
    # sorting, a run of m tied positives with value g takes the ranks g-m+1, ..., g.
    pad = torch.arange(n_slots, device=device)[None, :] >= n_pos[:, None]
    ge = ge.masked_fill(pad, n_cand + 1).sort(dim=1).values
    last = torch.searchsorted(ge, ge, right=True) - 1  # index of the last element of each run
    ranks = ge - (last - torch.arange(n_slots, device=device)[None, :])
    ranks = ranks.to(torch.float32).masked_fill(pad, math.inf)
    return ranks, n_pos, n_neg


# --------------------------------------------------------------------------------------------
# metrics
# --------------------------------------------------------------------------------------------


def _check_k(k: object) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(f"metric cut-off k must be a positive integer, got {k!r}.")
    return k


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
    if isinstance(ks, int):
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
