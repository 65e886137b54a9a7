"""SDMR Table 5.3 (general task) on ml-100k and ml-1m: the hooks of ``specs/sdmr-table-5.3.toml``.

Run with ``segue reproduce sdmr-table-5.3 [--quick]`` (the shared runner, :mod:`segue.reproduce.runner`).
Prose (data, caps, the [CODE-HINT] choices, the orderings) lives in
``docs/results/sdmr-table-5.3.notes.md``.

Protocol (spec A.7, ``loo-sampled``): each user's latest interaction is the test item, one random
remaining interaction the dev item, the rest train; dev and test items are each ranked with 100 fixed
sampled unobserved items; HR@10 / NDCG@10 with pessimistic ranks on ties. All rows of a dataset share
one split and its candidates.

[CODE-HINT] SDP / SDM / SDMR train as thanhdtran/SDMR does (``segue.models.sdmr.SDMR_TRAIN_DEFAULTS``:
hardest of 4 negatives, summed BPR, Adam lr 1e-3, batch 256, 3 hops); the cap ``text_loss = true``
(``--caps text_loss=true``) keeps the text's reading (one BPR term per negative, averaged).

Every row also reports the tie diagnostic of its test set (share of tied test cases, and HR / NDCG under
the authors' evaluator's tie rule, :func:`segue.evaluation.protocols.authors_tie_ranks`): an explanation
column beside our pessimistic result, never the result.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segue.data.datasets import resolve_data_dir
from segue.data.interactions import Interactions
from segue.evaluation.protocols import tie_diagnostic
from segue.reproduce.runner import history_summary, prepare_protocol

SDMR_FAMILY = ("sdp", "sdm", "sdmr")


def ml1m_order_check(data: Interactions, data_dir: Path) -> dict[str, Any]:
    """Evidence about the order of the CFM ml-1m rows of each user, from movies.dat (no timestamps are available).

    1. Genre locality: the mean genre Jaccard similarity of *consecutive* train rows of a user
       vs that of the same rows in a per-user random order (a time order shows local coherence).
    2. Release years: the mean relative row position (0 = first, 1 = last) of movies released in
       2000 vs older ones (a weak test: most ML-1M users rated in one sitting).
    """
    path = data_dir / "ml-1m" / "movies.dat"
    if not path.exists():
        return {"checked": False, "why": "movies.dat is missing"}
    years: dict[int, int] = {}
    genres: dict[int, frozenset[str]] = {}
    for line in path.read_bytes().decode("latin-1").splitlines():
        mid, title, gen = line.split("::")
        genres[int(mid)] = frozenset(gen.strip().split("|"))
        m = re.search(r"\((\d{4})\)\s*$", title)
        if m:
            years[int(mid)] = int(m.group(1))
    df = data.df
    train = df[~df["is_test"].to_numpy(bool)]
    users = train["user"].to_numpy()
    order = np.lexsort((train["timestamp"].to_numpy(), users))
    u = users[order]
    starts = np.r_[0, np.flatnonzero(np.diff(u)) + 1]
    lens = np.diff(np.r_[starts, len(u)])
    pos = (np.arange(len(u)) - np.repeat(starts, lens)) / np.maximum(np.repeat(lens, lens) - 1, 1)
    raw = data.item_map.to_raw(train["item"].to_numpy()[order]).astype(int)
    yr = np.array([years.get(int(r), 0) for r in raw])
    out: dict[str, Any] = {"checked": True}
    for label, sel in (("2000", yr == 2000), ("1999", yr == 1999), ("<=1998", (yr > 0) & (yr <= 1998))):
        out[f"mean_position_{label}"] = round(float(pos[sel].mean()), 4)
        out[f"rows_{label}"] = int(sel.sum())
    rng = np.random.default_rng(0)
    gsets = [genres.get(int(r), frozenset()) for r in raw]
    perm = np.lexsort((rng.random(len(u)), u))  # rows shuffled within each user
    for label, idx in (("row_order", np.arange(len(u))), ("shuffled", perm)):
        same = u[idx][1:] == u[idx][:-1]
        a, b = idx[:-1][same], idx[1:][same]
        jac = [len(gsets[i] & gsets[j]) / max(len(gsets[i] | gsets[j]), 1) for i, j in zip(a, b, strict=True)]
        out[f"consecutive_genre_jaccard_{label}"] = round(float(np.mean(jac)), 4)
    return out


def prepare(dataset: str, spec: Any, caps: dict[str, Any]) -> dict[str, Any]:
    """The shared loo-sampled split (:func:`prepare_protocol`), its sizes, and on ml-1m the row-order check."""
    data, proto, (split, valid, test) = prepare_protocol(dataset, spec, caps)
    checks: dict[str, Any] = {
        "split": {**split.describe(), "users": int(split.train.n_users), "items": int(split.train.n_items)}
    }
    if dataset == "ml-1m" and not caps.get("max_users"):
        checks["ml-1m_order"] = ml1m_order_check(data, resolve_data_dir(None))
    return {"data": data, "protocol": proto, "shared": (split, valid, test), "checks": checks}


def run_row(prepared: dict[str, Any], row: Any, cfg: Any) -> tuple[Any, dict[str, float]]:
    """Train one row with ``cfg`` through ``segue.pipeline.run`` on the shared split (``prepared["shared"]``) and
    give its result with its tie diagnostic; SDMR fuses the trained, frozen SDP and SDM rows listed before it.
    Shared by Tables 5.3 and 5.4 (sdmr_basket.py)."""
    from segue.models.sdmr import SDMR
    from segue.pipeline import run
    from segue.training.trainer import seed_everything

    name = row.model.model or row.model.label
    target: Any = name
    if name == "sdmr":
        seed_everything(row.seed)  # the fusion layer's initialisation
        target = SDMR.from_parts(row.trained["sdp"], row.trained["sdm"], **row.options)
    r = run(
        target,
        prepared["data"],
        protocol=prepared["protocol"],
        model_options=None if name == "sdmr" else (row.options or None),
        train_config=cfg,
        log=None,
        prepared=prepared["shared"],
        seed=row.seed,
    )
    with torch.no_grad():  # a model without a no-grad score path (pop) would hand back tensors that need grad
        ties = tie_diagnostic(r.model, r.test)
    return r, ties


def fit(prepared: dict[str, Any], row: Any) -> dict[str, Any]:
    """One row through ``segue.pipeline.run`` on the shared split; SDMR fuses the trained SDP and SDM rows.

    Train options: the model's ``train_defaults`` < the row's ``train`` < the caps ``epochs``,
    ``max_seconds``, ``patience``. With the cap ``text_loss``, SDP/SDM/SDMR use the text's loss.
    """
    from segue.pipeline import train_config_for

    name = row.model.model or row.model.label
    capped = {k: row.caps[k] for k in ("epochs", "max_seconds", "patience") if k in row.caps}
    text = {"neg_reduce": "each", "reduction": "mean"} if row.caps.get("text_loss") and name in SDMR_FAMILY else {}
    cfg = train_config_for(name, {"progress": False, "seed": row.seed, **row.train, **text, **capped})
    r, ties = run_row(prepared, row, cfg)
    out = {
        "dev": r.valid_metrics or {},
        "test": r.metrics,
        "fit_seconds": r.seconds,
        **history_summary(r.history),
        "loss": {"neg_reduce": cfg.neg_reduce, "reduction": cfg.reduction, "loss": cfg.loss},
        "ties": {k: round(float(v), 4) for k, v in ties.items()},
        "model": r.model,
    }
    if row.model.label == "pop":
        out["dataset_checks"] = prepared["checks"]
    return out


def _f(x: Any) -> str:
    return "-" if x is None else f"{x:.3f}"


def markdown(result: dict[str, Any]) -> str:
    """Ties (ours vs the authors' tie rule), the training of each row, and the dataset checks."""
    rows = result["rows"]
    lines = [
        "## Ties: our pessimistic rank (the result) beside the authors' evaluator's tie rule (an explanation)",
        "",
        "| dataset | model | tied test cases | HR@10 ours | HR@10 authors' rule | NDCG@10 ours | NDCG@10 authors' rule |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        t = r.get("ties") or {}
        lines.append(
            f"| {r['dataset']} | {r['model']} | {100 * t.get('tied_share', float('nan')):.1f}% | "
            f"{r['metrics']['HR@10']:.4f} | {_f(t.get('HR@10_authors'))} | {r['metrics']['NDCG@10']:.4f} | "
            f"{_f(t.get('NDCG@10_authors'))} |"
        )
    lines += ["", "## Dataset checks", ""]
    for r in rows:
        if r.get("dataset_checks"):
            lines.append(f"- {r['dataset']}: " + ", ".join(f"{k} {v}" for k, v in r["dataset_checks"].items()))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> Any:
    """``segue reproduce sdmr-table-5.3 [--quick] ...`` (the runner's command line)."""
    from segue.reproduce.runner import main as run_main

    return run_main("sdmr-table-5.3", argv)


__all__ = ["fit", "main", "markdown", "ml1m_order_check", "prepare"]
