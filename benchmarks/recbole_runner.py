"""RecBole's training rows per second on a given atomic dataset (run by bench_training.py in benchmarks/.venv-recbole).

For each model spec (JSON list: model, batch_size, negatives, lr, params) it builds RecBole's dataset,
dataloader and model through RecBole's own API, then trains for ``--batches`` batches (or one epoch,
whichever is shorter) with Adam, as RecBole's trainer does, on one CPU thread. rows/s counts positive
rows (targets): a pairwise batch holds one row per (positive, negative) pair, so its length is divided
by the number of negatives; a pointwise batch counts its rows labelled 1 (RecBole's batch size is scaled
so that a batch holds ``batch_size`` positives, as segue's does). Batch building (negative
sampling, sequence augmentation) is inside the timed loop, as segue's epoch timing includes its own.

Prints one JSON line: {"version", "torch", "models": {name: {rows, seconds, rows_per_s, ...} or {error}}}.

Usage::

    benchmarks/.venv-recbole/bin/python benchmarks/recbole_runner.py --data-path DIR --dataset NAME \
        --specs '[{"model": "BPR", "batch_size": 4096, "negatives": 4, "lr": 0.01, "params": {}}]'
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import warnings
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def run_one(spec: dict[str, Any], data_path: str, dataset: str, batches: int) -> dict[str, Any]:
    import torch
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import InputType, get_model, init_seed

    config_dict = {
        "data_path": data_path,
        "USER_ID_FIELD": "user_id",
        "ITEM_ID_FIELD": "item_id",
        "TIME_FIELD": "timestamp",
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        "epochs": 1,
        "train_batch_size": spec["batch_size"],
        "learning_rate": spec["lr"],
        "train_neg_sample_args": {
            "distribution": "uniform",
            "sample_num": spec["negatives"],
            "alpha": 1.0,
            "dynamic": False,
            "candidate_num": 0,
        },
        "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user", "mode": "full"},
        "use_gpu": False,
        "device": "cpu",
        "seed": 0,
        "reproducibility": True,
        "show_progress": False,
        "worker": 0,
        "checkpoint_dir": os.path.join(os.getcwd(), "recbole-saved"),
        **spec.get("params", {}),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        config = Config(model=spec["model"], dataset=dataset, config_dict=config_dict)
        # RecBole's train_batch_size counts rows after negative sampling (positive x negatives when pairwise,
        # positive + negatives when pointwise); scale it so a batch holds ``batch_size`` positives as in segue
        pointwise = config["MODEL_INPUT_TYPE"] == InputType.POINTWISE
        times = spec["negatives"] + 1 if pointwise else spec["negatives"]
        config["train_batch_size"] = spec["batch_size"] * times
        init_seed(config["seed"], config["reproducibility"])
        torch.set_num_threads(1)
        data = create_dataset(config)
        train_data, _, _ = data_preparation(config, data)
        model = get_model(config["model"])(config, train_data._dataset).to("cpu")
    opt = torch.optim.Adam(model.parameters(), lr=spec["lr"])
    neg_field = config["NEG_PREFIX"] + config["ITEM_ID_FIELD"]
    label_field = config["LABEL_FIELD"]
    model.train()
    rows, done = 0, 0
    t0 = time.perf_counter()
    for interaction in train_data:
        loss = model.calculate_loss(interaction)
        if isinstance(loss, tuple):
            loss = sum(loss)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if label_field in interaction.interaction:
            rows += int((interaction[label_field] > 0).sum())
        elif neg_field in interaction.interaction:
            rows += len(interaction) // max(spec["negatives"], 1)
        else:
            rows += len(interaction)
        done += 1
        if done >= batches:
            break
    seconds = time.perf_counter() - t0
    return {
        "rows": rows,
        "seconds": seconds,
        "rows_per_s": rows / seconds,
        "batches": done,
        "batch_size": spec["batch_size"],
        "negatives": spec["negatives"],
        "loss_type": config.final_config_dict.get("loss_type"),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-path", required=True, help="folder holding <dataset>/<dataset>.inter")
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--specs", required=True, help="JSON list of model specs")
    ap.add_argument("--batches", type=int, default=100)
    args = ap.parse_args()
    logging.disable(logging.WARNING)
    import recbole
    import torch

    torch.set_num_threads(1)
    out: dict[str, Any] = {"version": recbole.__version__, "torch": torch.__version__, "models": {}}
    for spec in json.loads(args.specs):
        try:
            out["models"][spec["model"]] = run_one(spec, args.data_path, args.dataset, args.batches)
        except Exception as e:  # one model's failure is reported, the others still run
            out["models"][spec["model"]] = {"error": f"{type(e).__name__}: {e}".splitlines()[0][:300]}
        print(f"recbole {spec['model']}: {out['models'][spec['model']]}", file=sys.stderr, flush=True)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
