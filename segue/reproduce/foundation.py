"""Foundation baselines under the SDMR protocol (Table 5.3 rows ItemKNN and MF-BPR), with the MF-BPR search.

Runs Popularity, ItemKNN, MF-BPR and WMF on ml-100k (and ml-1m) under ``loo-sampled`` (leave-last-out
test, one random dev item per user, 100 sampled negatives, HR@10 / NDCG@10), all models sharing one split
and one set of candidates, and writes ``docs/results/foundation-baselines.{md,json}``.

With ``--grid``, MF-BPR is first searched over a small grid on ml-100k; every configuration's dev *and*
test numbers are recorded, and the one with the best dev HR@10 (ties: dev NDCG@10) is the one the
table reports. Test numbers of the other configurations are shown for transparency only and never used
to choose. The selected configuration is MF-BPR's default in ``segue.models.mf``.

    python -m segue.reproduce.foundation [--datasets ml-100k ml-1m] [--grid]
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import torch

from segue.data.datasets import load_dataset
from segue.evaluation.protocols import get_protocol
from segue.evaluation.report import write_results
from segue.pipeline import prepare, run, train_config_for

# Table 5.3 of the SDMR spec (seed-001-sdmr-quaternion.md, A.10): HIT@10 / NDCG@10
PAPER = {
    "ml-100k": {"itemknn": (0.166, 0.073), "mf-bpr": (0.554, 0.316)},
    "ml-1m": {"itemknn": (0.235, 0.110), "mf-bpr": (0.595, 0.352)},
}

GRID: list[dict[str, Any]] = [
    {"model": {"reg": 1e-4}, "train": {"lr": 5e-3, "batch_size": 1024, "n_negatives": 1}},
    {"model": {"reg": 1e-2}, "train": {"lr": 5e-3, "batch_size": 1024, "n_negatives": 1}},
    {"model": {"reg": 2e-2}, "train": {"lr": 5e-3, "batch_size": 1024, "n_negatives": 1}},
    {"model": {"reg": 1e-2, "dim": 128}, "train": {"lr": 5e-3, "batch_size": 1024, "n_negatives": 1}},
    {"model": {"reg": 1e-2, "item_bias": True}, "train": {"lr": 5e-3, "batch_size": 1024, "n_negatives": 1}},
    {"model": {"reg": 1e-2}, "train": {"lr": 5e-3, "batch_size": 1024, "n_negatives": 4}},
    {"model": {"reg": 5e-3}, "train": {"lr": 5e-3, "batch_size": 1024, "n_negatives": 4}},
    {"model": {"reg": 2e-2}, "train": {"lr": 5e-3, "batch_size": 1024, "n_negatives": 4}},
    {"model": {"reg": 5e-3}, "train": {"lr": 1e-2, "batch_size": 4096, "n_negatives": 4}},
    {"model": {"reg": 5e-3}, "train": {"lr": 2e-2, "batch_size": 4096, "n_negatives": 4}},
    {"model": {"reg": 2e-3}, "train": {"lr": 1e-2, "batch_size": 2048, "n_negatives": 4}},
]

MODELS = ("pop", "itemknn", "mf-bpr", "wmf")

DEFAULT_NOTE = (
    " The default MF-BPR (reg 0.005, lr 0.01, batch 4096, 4 negatives) is not that best-dev configuration but the"
    " one whose dev HR@10 (0.8303) is within 0.001 of it (dev NDCG@10 0.5555 vs 0.5571) at less than half the"
    " training time; the choice used dev numbers and time only."
)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", nargs="+", default=["ml-100k", "ml-1m"])
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--grid", action="store_true", help="also run the MF-BPR dev-set search on ml-100k")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default="docs/results")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    proto = get_protocol("loo-sampled", seed=0)
    rows: list[dict[str, Any]] = []
    search: list[dict[str, Any]] = []
    for name in args.datasets:
        data = load_dataset(name, progress=False)
        _, split, valid, test = prepare(data, proto)
        if args.grid and name == "ml-100k" and "mf-bpr" in args.models:
            for g in GRID:
                t0 = time.perf_counter()
                cfg = train_config_for("mf-bpr", {"progress": False, **g["train"]})
                r = run(
                    "mf-bpr",
                    data,
                    protocol=proto,
                    model_options=g["model"],
                    train_config=cfg,
                    log=None,
                    prepared=(split, valid, test),
                )
                search.append(
                    {
                        **g,
                        "dev": r.valid_metrics,
                        "test": r.metrics,
                        "best_epoch": r.history.best_epoch,
                        "seconds": time.perf_counter() - t0,
                    }
                )
                print(f"grid {g}: dev {r.valid_metrics} test {r.metrics}", file=sys.stderr)
        for model in args.models:
            t0 = time.perf_counter()
            r = run(
                model,
                data,
                protocol=proto,
                train_config=train_config_for(model, {"progress": False}),
                log=None,
                prepared=(split, valid, test),
            )
            seconds = time.perf_counter() - t0
            paper = PAPER.get(name, {}).get(model)
            rows.append(
                {
                    "model": model,
                    "dataset": name,
                    "metrics": r.metrics,
                    "dev": r.valid_metrics,
                    "paper": None if paper is None else {"HR@10": paper[0], "NDCG@10": paper[1]},
                    "same_data_as_paper": name == "ml-100k",
                    "seconds": seconds,
                    "fit_seconds": r.seconds,
                    "epochs": len(r.history.epochs),
                }
            )
            print(f"{name} {model}: {r.metrics} ({seconds:.1f}s)", file=sys.stderr)
    notes = (
        "ml-100k is the data of the paper (MovieLens 100K, all ratings binarised, real timestamps). ml-1m is the "
        "CFM all-pairs copy of MovieLens 1M: it has no timestamps, but its rows keep each user's time order and "
        "its held-out row per user is the user's latest, so leave-last-out picks the same kind of item; the "
        "random dev item and the 100 negatives are ours (seed 0), not the paper's files. The paper's ItemKNN "
        "row (0.166 HR@10 on ml-100k) is far below ours and below popularity; its neighbourhood size and "
        "similarity are not given, ours is cosine with 100 neighbours. "
        "seconds = wall time of fit + evaluation on the machine below, with other jobs sharing its 2 cores."
    )
    if search:
        best = max(search, key=lambda s: (s["dev"]["HR@10"], s["dev"]["NDCG@10"]))
        notes += (
            f" MF-BPR search ({len(search)} configurations, dev-set selection): best dev HR@10 "
            f"{best['dev']['HR@10']:.4f} with {best['model']} / {best['train']}; see `search` in the JSON."
            + DEFAULT_NOTE
        )
    result = {
        "table": "foundation-baselines (SDMR Table 5.3 rows ItemKNN, MF-BPR)",
        "paper": "Section 5.2, Table 5.3 of ../shared/seeds/001_*.txt (SDMR spec A.10)",
        "command": "python -m segue.reproduce.foundation " + " ".join(argv if argv is not None else sys.argv[1:]),
        "protocol": proto.to_dict(),
        "rows": rows,
        "search": search,
        "notes": notes,
    }
    path = write_results(result, args.out, "foundation-baselines", metrics=("HR@10", "NDCG@10"))
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
