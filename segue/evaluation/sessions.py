"""CoSeRNN evaluation (spec A.9): cosine, session ranking and track ranking, with a per-context breakdown.

All ranks come from :func:`segue.evaluation.metrics.rank_positives` (pessimistic ties: a
candidate tied with the target is ranked above it, so the rank is
``1 + #{j != t : cos_j >= cos_t}``) and the metrics from
:func:`~segue.evaluation.metrics.compute_metrics`.

* **Cosine**: mean ``u_t . s_t^+`` over the evaluated sessions.
* **Session ranking, K in {20, 50}**: the candidates of session t are the ``s^+`` of the user's
  sessions ``t-K+1 .. t`` (any split; sessions without a played track are not candidates), so
  fewer than K when the user has fewer predecessors ([AMBIG] default; the full-window subset is
  reported too). ``Sess MRR K=k`` = mean 1/r (``MRR`` of metrics.py), ``Sess Rank K=k`` = mean r.
* **Track ranking, K in {25, 100}**: the candidates are the K distinct tracks the user streamed
  most recently (played or skipped, kept first-10 tracks of all earlier sessions, deduplicated by
  the most recent occurrence); relevant = the tracks played in session t's first 10 ([AMBIG]
  default ``relevant="played"``). ``Track mAP K=k`` = average precision over the candidate list
  (``MAP@K`` of metrics.py with K = the list length), ``Track Rec@10 K=k`` = the fraction of the
  relevant candidates in the top 10 (``Recall@10``). Sessions without a relevant candidate are
  excluded and counted. Tracks without a vector (below the embedding's ``min_count``) cannot be
  scored: they would all score exactly 0 and, under pessimistic ties, push relevant tracks down.
  By default (``vectorless="drop"``) they are dropped from the K most recent tracks before
  ranking, and the share of candidates and of relevant candidates dropped is reported
  (``track_vectorless``); ``vectorless="keep"`` ranks them (the earlier behaviour).
* Session ranking is also reported on the evaluated sessions whose window is full (K
  candidates): ``Sess MRR K=k (full window)`` and ``Sess Rank K=k (full window)``.
* Averages are micro-averages over (user, test session) pairs (A.7 [AMBIG] default).

Build the candidate sets once per split with :func:`build_session_eval`, then score any number
of predictions with :func:`evaluate_sessions`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from segue.errors import DataError
from segue.evaluation.metrics import compute_metrics, rank_positives
from segue.models.cosernn import SessionInputs

SESSION_KS = (20, 50)
TRACK_KS = (25, 100)
METRIC_KEYS = (
    "Cosine",
    "Sess MRR K=20",
    "Sess Rank K=20",
    "Sess MRR K=50",
    "Sess Rank K=50",
    "Track mAP K=25",
    "Track Rec@10 K=25",
    "Track mAP K=100",
    "Track Rec@10 K=100",
)


@dataclass
class SessionEval:
    """Fixed candidate sets of a set of evaluated session rows."""

    rows: np.ndarray  # (N,) evaluated session rows (have a played target)
    s_pos: np.ndarray  # (S, d)
    vectors: np.ndarray  # (n_tracks + 1, d)
    session_cands: dict[int, np.ndarray] = field(default_factory=dict)  # K -> (N, K) rows, -1 pad, target last
    track_rows: dict[int, np.ndarray] = field(default_factory=dict)  # K -> (M_K,) indices into rows
    track_cands: dict[int, np.ndarray] = field(default_factory=dict)  # K -> (M_K, K) track ids, 0 pad
    track_pos: dict[int, np.ndarray] = field(default_factory=dict)  # K -> (M_K, K) bool relevant
    track_excluded: dict[int, int] = field(default_factory=dict)
    #: K -> counts of the dropped vectorless tracks: candidates / of all candidates, relevant / of all relevant
    track_vectorless: dict[int, dict[str, int]] = field(default_factory=dict)


def build_session_eval(
    inputs: SessionInputs,
    rows: np.ndarray,
    session_ks: Sequence[int] = SESSION_KS,
    track_ks: Sequence[int] = TRACK_KS,
    relevant: str = "played",
    vectorless: str = "drop",
) -> SessionEval:
    """Candidate sets for the session rows ``rows`` (those without a played target are dropped).

    ``vectorless="drop"`` ranks only the tracks that have a vector (see the module docstring).
    """
    if vectorless not in ("drop", "keep"):
        raise DataError(f"vectorless must be 'drop' or 'keep', got {vectorless!r}.")
    has_vector = np.linalg.norm(inputs.vectors, axis=1) > 0.5
    d = inputs.data
    rows = np.asarray(rows, dtype=np.int64)
    rows = rows[inputs.has_target[rows]]
    if len(rows) == 0:
        raise DataError("No evaluated session has a played track with a vector.")
    rows = np.sort(rows)
    ev = SessionEval(rows=rows, s_pos=inputs.emb["played"], vectors=inputs.vectors)
    has = inputs.has_target
    for k in session_ks:
        cands = np.full((len(rows), k), -1, dtype=np.int64)
        for j, i in enumerate(rows):
            lo = d.offsets[d.user[i] - 1]
            prev = np.arange(lo, i)
            prev = prev[has[prev]][-(k - 1) :] if k > 1 else prev[:0]
            c = np.r_[prev, i]
            cands[j, k - len(c) :] = c
        ev.session_cands[k] = cands
    want = set(rows.tolist())
    rel_mask = d.played if relevant == "played" else d.tracks > 0
    kmax = max(track_ks)
    per_k: dict[int, list[tuple[int, np.ndarray, np.ndarray]]] = {k: [] for k in track_ks}
    excluded = dict.fromkeys(track_ks, 0)
    dropped = {k: {"candidates": 0, "candidates_total": 0, "relevant": 0, "relevant_total": 0} for k in track_ks}
    for u in np.unique(d.user[rows]):
        recent: OrderedDict[int, None] = OrderedDict()
        for i in range(d.offsets[u - 1], d.offsets[u]):
            if i in want:
                hist = np.fromiter(reversed(recent), dtype=np.int64, count=len(recent))[:kmax]
                rel = set(d.tracks[i][rel_mask[i]].tolist())
                for k in track_ks:
                    cand = hist[:k]
                    pos = np.fromiter((t in rel for t in cand), dtype=bool, count=len(cand))
                    if vectorless == "drop":
                        vec = has_vector[cand]
                        c = dropped[k]
                        c["candidates"] += int((~vec).sum())
                        c["candidates_total"] += len(cand)
                        c["relevant"] += int((pos & ~vec).sum())
                        c["relevant_total"] += int(pos.sum())
                        cand, pos = cand[vec], pos[vec]
                    if pos.any():
                        per_k[k].append((int(np.searchsorted(rows, i)), cand, pos))
                    else:
                        excluded[k] += 1
            for t in d.tracks[i][d.tracks[i] > 0].tolist():
                recent.pop(t, None)
                recent[t] = None
    for k in track_ks:
        items = per_k[k]
        ev.track_rows[k] = np.asarray([r for r, _, _ in items], dtype=np.int64)
        c = np.zeros((len(items), k), dtype=np.int64)
        p = np.zeros((len(items), k), dtype=bool)
        for j, (_, cand, pos) in enumerate(items):
            c[j, : len(cand)] = cand
            p[j, : len(pos)] = pos
        ev.track_cands[k], ev.track_pos[k] = c, p
        ev.track_excluded[k] = excluded[k]
        if vectorless == "drop":
            ev.track_vectorless[k] = dropped[k]
    return ev


def per_session_metrics(u: np.ndarray, ev: SessionEval) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per evaluated row: ``{key: (row indices into ev.rows, values)}`` for every metric of the table."""
    if u.shape[1] != ev.s_pos.shape[1]:
        raise DataError(f"Predictions have dimension {u.shape[1]}, the session vectors {ev.s_pos.shape[1]}.")
    q = torch.from_numpy(np.ascontiguousarray(u[ev.rows], dtype=np.float32))
    all_idx = np.arange(len(ev.rows))
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {
        "Cosine": (all_idx, (q * torch.from_numpy(ev.s_pos[ev.rows])).sum(1).double().numpy())
    }
    for k, cands in ev.session_cands.items():
        valid = torch.from_numpy(cands >= 0)
        vecs = torch.from_numpy(ev.s_pos[np.maximum(cands, 0)])
        scores = torch.einsum("nkd,nd->nk", vecs, q).masked_fill(~valid, float("-inf"))
        positive = torch.zeros_like(valid)
        positive[:, -1] = True
        ranks, n_pos, n_neg = rank_positives(scores, positive, valid)
        m = compute_metrics(ranks, n_pos, n_neg, ks=(k,), metrics=("MRR",))
        out[f"Sess MRR K={k}"] = (all_idx, m["MRR"].double().numpy())
        out[f"Sess Rank K={k}"] = (all_idx, ranks[:, 0].double().numpy())
        full = (cands >= 0).all(1)
        out[f"Sess MRR K={k} (full window)"] = (all_idx[full], m["MRR"].double().numpy()[full])
        out[f"Sess Rank K={k} (full window)"] = (all_idx[full], ranks[:, 0].double().numpy()[full])
    for k, cands in ev.track_cands.items():
        idx = ev.track_rows[k]
        if len(idx) == 0:
            out[f"Track mAP K={k}"] = (idx, np.zeros(0))
            out[f"Track Rec@10 K={k}"] = (idx, np.zeros(0))
            continue
        valid = torch.from_numpy(cands > 0)
        vecs = torch.from_numpy(ev.vectors[cands])
        scores = torch.einsum("nkd,nd->nk", vecs, q[idx]).masked_fill(~valid, float("-inf"))
        ranks, n_pos, n_neg = rank_positives(scores, torch.from_numpy(ev.track_pos[k]), valid)
        m = compute_metrics(ranks, n_pos, n_neg, ks=(10, k), metrics=(f"MAP@{k}", "Recall@10"))
        out[f"Track mAP K={k}"] = (idx, m[f"MAP@{k}"].double().numpy())
        out[f"Track Rec@10 K={k}"] = (idx, m["Recall@10"].double().numpy())
    return out


def random_reference(ev: SessionEval) -> dict[str, float]:
    """The metrics a uniformly random ranking of the same candidate sets gets in expectation.

    Session ranking with ``n`` candidates: ``E[1/r] = H_n / n`` and ``E[r] = (n + 1) / 2``. Track
    ranking with ``C`` candidates of which ``R`` are relevant: ``E[Recall@10] = min(10, C) / C`` and
    ``E[AP] = (H_C + (R - 1) / (C - 1) * (C - H_C)) / C`` (the rank of a relevant candidate is uniform
    on ``1..C`` and each of the other ``R - 1`` relevant ones lies above it with probability
    ``(r - 1) / (C - 1)``). Cosine: 0 (a random direction).
    """
    out: dict[str, float] = {"Cosine": 0.0}
    for k, cands in ev.session_cands.items():
        n = (cands >= 0).sum(1)
        harmonic = np.array([np.sum(1.0 / np.arange(1, m + 1)) for m in n])
        out[f"Sess MRR K={k}"] = float(np.mean(harmonic / n))
        out[f"Sess Rank K={k}"] = float(np.mean((n + 1) / 2))
    for k, cands in ev.track_cands.items():
        if len(cands) == 0:
            out[f"Track mAP K={k}"] = out[f"Track Rec@10 K={k}"] = float("nan")
            continue
        c = (cands > 0).sum(1).astype(np.float64)
        r = ev.track_pos[k].sum(1).astype(np.float64)
        h = np.array([np.sum(1.0 / np.arange(1, int(m) + 1)) for m in c])
        ap = (h + np.where(c > 1, (r - 1) / np.maximum(c - 1, 1), 0.0) * (c - h)) / c
        out[f"Track mAP K={k}"] = float(ap.mean())
        out[f"Track Rec@10 K={k}"] = float(np.mean(np.minimum(10, c) / c))
    return out


def _mean(v: np.ndarray) -> float:
    return float(v.mean()) if len(v) else float("nan")


def evaluate_sessions(u: np.ndarray, ev: SessionEval, groups: Mapping[str, np.ndarray] | None = None) -> dict[str, Any]:
    """Table-2 metrics of predictions ``u`` (S, d), plus counts and an optional per-context breakdown.

    ``groups`` maps a breakdown name to a per-session label array (S,), e.g.
    :func:`segue.models.cosernn.context_groups`; the breakdown reports the Figure-5 metrics
    (Cosine, Sess MRR K=50, Track mAP / Rec@10 K=100) and the number of sessions per label.
    """
    per = per_session_metrics(u, ev)
    out: dict[str, Any] = {"metrics": {k: _mean(v) for k, (_, v) in per.items()}}
    out["counts"] = {
        "sessions": len(ev.rows),
        **{f"full windows K={k}": int((c >= 0).all(1).sum()) for k, c in ev.session_cands.items()},
        **{f"track-ranked K={k}": len(ev.track_rows[k]) for k in ev.track_rows},
        **{f"no relevant candidate K={k}": ev.track_excluded[k] for k in ev.track_excluded},
    }
    for k, c in ev.track_vectorless.items():
        out["counts"][f"vectorless candidates dropped K={k}"] = c["candidates"]
        out["counts"][f"vectorless share of candidates K={k}"] = c["candidates"] / max(1, c["candidates_total"])
        out["counts"][f"vectorless share of relevant K={k}"] = c["relevant"] / max(1, c["relevant_total"])
    if groups:
        fig5 = [k for k in ("Cosine", "Sess MRR K=50", "Track mAP K=100", "Track Rec@10 K=100") if k in per]
        br: dict[str, dict[str, dict[str, float]]] = {}
        for gname, labels in groups.items():
            lab = np.asarray(labels)[ev.rows]
            br[gname] = {}
            for value in sorted(set(lab.tolist()), key=str):
                sel = lab == value
                cell = {"n": int(sel.sum())}
                for key in fig5:
                    idx, vals = per[key]
                    cell[key] = _mean(vals[sel[idx]])
                br[gname][str(value)] = cell
        out["by_context"] = br
    out["per_session"] = per
    return out


__all__ = [
    "METRIC_KEYS",
    "SESSION_KS",
    "TRACK_KS",
    "SessionEval",
    "build_session_eval",
    "evaluate_sessions",
    "per_session_metrics",
    "random_reference",
]
