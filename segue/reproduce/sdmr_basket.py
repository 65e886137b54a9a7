"""SDMR Table 5.4 (basket task) on the Instacart sample: the hooks of ``specs/sdmr-table-5.4.toml``.

Run with ``segue reproduce sdmr-table-5.4 [--quick]`` (the shared runner, :mod:`segue.reproduce.runner`).
Prose (data, caps, the orderings, ties) lives in ``docs/results/sdmr-table-5.4.notes.md``.

Protocol ``basket-holdout`` (spec A.1.2, A.6): baskets of 5..20 items, de-duplicated per (basket, item);
per basket one random item is the test item and one the dev item, the rest is training. A row's context is
the rest of its basket's training items (``s`` covers every basket whole). Each case ranks the held-out item
with 100 fixed items its user never interacted with; HR@10 / NDCG@10 with pessimistic ties. Early stopping
and the dev grid read a fixed random subset of ``caps.dev_cases`` dev cases (speed). SDMR fuses the
dev-chosen SDP and SDM, frozen (Eq. 5.21).

Every row also reports the tie diagnostic of its test set (share of tied test cases; HR / NDCG under
optimistic ties and under the authors' evaluator's tie rule): an explanation beside our pessimistic result.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from segue.data.datasets import load_dataset
from segue.evaluation.protocols import get_protocol
from segue.pipeline import prepare as prepare_split
from segue.reproduce.sdmr_table import run_row
from segue.training.trainer import TrainConfig

#: the sequential baselines of the paper's 'Imprv.' rows
BASELINES = ("prme", "prme-s", "transrec", "caser")
#: the paper's 'Imprv.' rows on Ta-Feng (SDM, SDMR over the best sequential baseline)
PAPER_IMPRV = {"sdm": ("+3.86%", "+9.48%"), "sdmr": ("+0.80%", "+39.40%")}


def prepare(dataset: str, spec: Any, caps: dict[str, Any]) -> dict[str, Any]:
    """The basket-holdout split shared by every row, the dev subset (``caps.dev_cases``) and the split sizes."""
    p = spec.protocol
    proto = get_protocol(p.get("name", "basket-holdout"), seed=int(p.get("seed", 0)))
    data = load_dataset(dataset, progress=False)
    _, split, valid, test = prepare_split(data, proto)
    n_dev = int(caps.get("dev_cases") or 0)
    if valid is not None and n_dev and len(valid) > n_dev:
        rng = np.random.default_rng(int(p.get("seed", 0)))
        valid = valid.subset(np.sort(rng.choice(len(valid), size=n_dev, replace=False)))
    stats = split.describe() | {
        "users": int(split.train.n_users),
        "items": int(split.train.n_items),
        "test_cases": len(test),
        "dev_cases_used": 0 if valid is None else len(valid),
        "dropped_test_cases_unseen_item": test.meta.get("dropped_unseen_targets"),
    }
    return {"data": data, "protocol": proto, "shared": (split, valid, test), "stats": stats}


def fit(prepared: dict[str, Any], row: Any) -> dict[str, Any]:
    """One row through ``segue.pipeline.run`` on the shared split; SDMR fuses the trained SDP and SDM rows.

    Train options: the row's ``train`` (the spec's fixed values) and the caps ``epochs``, ``patience``,
    ``max_seconds``, ``threads``.
    """
    capped = {k: row.caps[k] for k in ("epochs", "patience", "max_seconds", "threads") if k in row.caps}
    cfg = TrainConfig.from_dict({"progress": False, "seed": row.seed, **row.train, **capped})
    r, ties = run_row(prepared, row, cfg)
    out = {
        "dev": {k: round(float(v), 4) for k, v in (r.valid_metrics or {}).items()},
        "test": {k: round(float(v), 4) for k, v in r.metrics.items()},
        "fit_seconds": round(r.seconds, 1),
        "history": r.history,  # the runner records stopped_by, epochs run, best epoch and the dev curve
        "ties": {k: round(float(v), 4) for k, v in ties.items()},
        "model": r.model,
    }
    if row.model.label == "pop":
        out["dataset_stats"] = prepared["stats"]
    return out


def _improvement(rows: list[dict[str, Any]], ours: str, metric: str) -> str:
    by = {r["model"]: r["metrics"][metric] for r in rows}
    base = [by[m] for m in BASELINES if m in by]
    if ours not in by or not base:
        return "n/a"
    return f"{100 * (by[ours] / max(base) - 1):+.2f}%"


def _f(x: Any) -> str:
    return "-" if x is None else f"{x:.4f}"


def markdown(result: dict[str, Any]) -> str:
    """The paper's two columns, the 'Imprv.' rows, the tie diagnostic per row and the dataset statistics."""
    rows = result["rows"]
    lines = ["## Side by side: ours (Instacart sample) vs the paper's IJCAI-15 and Ta-Feng (other data)", ""]
    lines += [
        "| model | HR@10 | NDCG@10 | paper Ta-Feng HIT / NDCG | paper IJCAI-15 HIT / NDCG |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        p = r.get("paper") or {}
        o = (r.get("paper_other") or {}).get("IJCAI-15") or {}
        pp = f"{p['HR@10']:.3f} / {p['NDCG@10']:.3f}" if p else "-"
        oo = f"{o['HR@10']:.3f} / {o['NDCG@10']:.3f}" if o else "-"
        lines.append(f"| {r['model']} | {r['metrics']['HR@10']:.4f} | {r['metrics']['NDCG@10']:.4f} | {pp} | {oo} |")
    lines += ["", "## Improvement over the best sequential baseline (PRME, PRME_s, TransRec, Caser), as 'Imprv.'", ""]
    for m, (ph, pn) in PAPER_IMPRV.items():
        lines.append(f"- {m}: HIT {_improvement(rows, m, 'HR@10')}, NDCG {_improvement(rows, m, 'NDCG@10')} "
                     f"(paper, Ta-Feng: {ph} / {pn})")  # fmt: skip
    lines += [
        "",
        "## Ties: our pessimistic rank (the result) beside optimistic ties and the authors' evaluator's tie rule",
        "",
        "| model | tied test cases | HR@10 ours | optimistic | authors' rule | NDCG@10 ours | optimistic | authors' rule |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        t = r.get("ties") or {}
        lines.append(
            f"| {r['model']} | {100 * t.get('tied_share', float('nan')):.1f}% | {r['metrics']['HR@10']:.4f} | "
            f"{_f(t.get('HR@10_optimistic'))} | {_f(t.get('HR@10_authors'))} | {r['metrics']['NDCG@10']:.4f} | "
            f"{_f(t.get('NDCG@10_optimistic'))} | {_f(t.get('NDCG@10_authors'))} |"
        )
    stats = [r["dataset_stats"] for r in rows if r.get("dataset_stats")]
    if stats:
        lines += ["", "## Data", "", "- " + ", ".join(f"{k} {v}" for k, v in stats[0].items())]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> Any:
    """``segue reproduce sdmr-table-5.4 [--quick] ...`` (the runner's command line)."""
    from segue.reproduce.runner import main as run_main

    return run_main("sdmr-table-5.4", argv)


__all__ = ["fit", "main", "markdown", "prepare"]
