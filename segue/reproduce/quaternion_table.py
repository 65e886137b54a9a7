"""Reproduce Table 5.6 of the QUALSE section (HIT / NDCG @ 100 and @ 10) on Toys and Yelp, ours vs the paper.

Usage::

    python -m segue.reproduce.quaternion_table [--datasets toys,yelp] [--models quale,...]
        [--users 1500] [--max-epochs 15] [--max-seconds 60] [--adv-epochs 6] [--quick]
        [--out docs/results] [--resume]

Protocol B.8: chronological 70/10/20 split, every test user's test items ranked together
with 1,000 fixed sampled items the user never interacted with; HIT@N (recall-style, the
share of the user's test items in the top N) and NDCG@N (binary gains, IDCG over
``min(|P_u|, N)``) for N in {1, 10, 20, 50, 100}; only users with a train history. Toys and
Yelp are the S3-Rec per-user sequences **without timestamps**: the split is per user by
position (the first 70% of each user's sequence is train, the next 10% dev, the last 20%
test), not the paper's global time split. ml-100k and lastfm-1k-414 (real timestamps) use
the global split. History read by the models (B.1): train items for the dev set, train +
dev items for the test set; ``l`` (the long-term window) is ``Q3 + 1.5 IQR`` of the train
sequence lengths, ``s = 5``.

Compute caps (2 shared CPU cores): users are subsampled (``--users``, seeded), every model
trains for at most ``--max-epochs`` epochs and ``--max-seconds`` seconds (checked after each
epoch), keeping the best epoch by dev NDCG@100. Hyper-parameters are the spec's / the
authors' defaults (``GRID``); where a grid has several entries the choice is made on the dev
set only. The adversarial models start from the best-dev checkpoint of their plain model and
run ``--adv-epochs`` QABPR epochs (eps = 0.5, lambda_adv = 1), keeping the best dev epoch.
Every cap lands in the results file.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segue.data.datasets import load_dataset
from segue.data.interactions import Interactions
from segue.data.preprocess import dedup, kcore
from segue.errors import ConfigError
from segue.evaluation.protocols import EvalSet, evaluate
from segue.evaluation.report import write_results
from segue.evaluation.sequential import attach_history, sequential_protocol, subsample_users
from segue.models.base import Recommender, build_model
from segue.models.qualse import whisker_length
from segue.training import fit
from segue.training.trainer import TrainConfig, seed_everything

TABLE = "quaternion-table-5.6"
DATASETS = ("toys", "yelp", "ml-100k", "lastfm-1k-414")
PER_USER = {"toys": True, "yelp": True, "ml-100k": False, "lastfm-1k-414": False}
#: table rows: (key, registry model, options, label)
ROWS: dict[str, tuple[str, dict[str, Any], str]] = {
    "aasvd": ("aasvd", {}, "(a) AASVD"),
    "fpmc": ("fpmc", {}, "(e) FPMC"),
    "agru": ("agru", {}, "(f) AGRU"),
    "alstm": ("alstm", {}, "(g) ALSTM"),
    "caser": ("caser", {"dim": 50, "s": 5}, "(h) Caser"),
    "sasrec": ("sasrec", {"dim": 64, "dropout": 0.5}, "(i) SASRec"),
    "quale": ("quale", {}, "QUALE"),
    "quase-gru": ("quase", {"cell": "gru"}, "QUASE (GRU)"),
    "quase-lstm": ("quase", {"cell": "lstm"}, "QUASE (LSTM)"),
    "qualse": ("qualse", {}, "QUALSE"),
    "aquale": ("aquale", {}, "AQUALE"),
    "aquase-lstm": ("aquase", {"cell": "lstm"}, "AQUASE (LSTM)"),
    "aqualse": ("aqualse", {}, "AQUALSE"),
    # controls: the QABPR phase with lambda_adv = 0, i.e. the same number of extra plain BPR epochs
    "quale-more": ("aquale", {"adv_weight": 0.0}, "QUALE + extra BPR epochs (control)"),
    "qualse-more": ("aqualse", {"adv_weight": 0.0}, "QUALSE + extra BPR epochs (control)"),
    # B.5's optional variant: QUALSE whose encoders start from the trained QUALE and QUASE (LSTM)
    "qualse-init": ("qualse", {}, "QUALSE (encoders initialised from QUALE + QUASE)"),
}
MODELS = tuple(ROWS)[:13]  # the table's rows; the controls and qualse-init below run on request
#: the plain model an adversarial one starts from (its best-dev BPR checkpoint)
PLAIN = {
    "aquale": "quale",
    "aquase-lstm": "quase-lstm",
    "aqualse": "qualse",
    "quale-more": "quale",
    "qualse-more": "qualse",
}
#: every model whose run needs saved checkpoints of others
DEPENDS: dict[str, tuple[str, ...]] = {**{a: (p,) for a, p in PLAIN.items()}, "qualse-init": ("quale", "quase-lstm")}
SAVED = {p for deps in DEPENDS.values() for p in deps}
LOSS = {"caser": "bce", "sasrec": "bce"}  # their papers' log loss; the rest BPR (B.6)
#: small dev grids (the first entry only with --quick); the long window l is filled in per dataset
GRID: dict[str, list[dict[str, Any]]] = {
    "qualse": [{"init_std": 0.01}, {"init_std": 0.1}],
    "quale": [{"init_std": 0.01}, {"init_std": 0.1}],
}
#: Table 5.6 (spec B.11): (HIT@100, NDCG@100); QUASE (GRU) is the spec's reconstruction of a garbled row.
PAPER: dict[str, dict[str, tuple[float, float]]] = {
    "toys": {
        "aasvd": (0.4343, 0.1809),
        "fpmc": (0.3370, 0.1335),
        "agru": (0.3747, 0.1400),
        "alstm": (0.3886, 0.1419),
        "caser": (0.3889, 0.1507),
        "sasrec": (0.4009, 0.1545),
        "quale": (0.4696, 0.1997),
        "quase-gru": (0.4080, 0.1632),
        "quase-lstm": (0.4095, 0.1664),
        "qualse": (0.4760, 0.2043),
        "aquale": (0.4831, 0.2055),
        "aquase-lstm": (0.4495, 0.1847),
        "aqualse": (0.4921, 0.2098),
    },
    "yelp": {
        "aasvd": (0.7212, 0.3580),
        "fpmc": (0.6704, 0.3204),
        "agru": (0.4722, 0.1995),
        "alstm": (0.5644, 0.2519),
        "caser": (0.6718, 0.3201),
        "sasrec": (0.7193, 0.3381),
        "quale": (0.7391, 0.3723),
        "quase-gru": (0.6917, 0.3324),
        "quase-lstm": (0.6929, 0.3311),
        "qualse": (0.7442, 0.3781),
        "aquale": (0.7440, 0.3786),
        "aquase-lstm": (0.7048, 0.3450),
        "aqualse": (0.7448, 0.3814),
    },
}
KS = (1, 10, 20, 50, 100)
SHOWN = ("HIT@100", "NDCG@100", "HIT@10", "NDCG@10")
MONITOR = "NDCG@100"


def load(name: str, users: int, seed: int, data_dir: str | None = None) -> tuple[Interactions, dict[str, Any]]:
    """The dataset, deduplicated (first play kept), 5-core, then users subsampled (no second k-core: it collapses)."""
    data = dedup(load_dataset(name, data_dir=data_dir))
    raw = {"users": int(data.n_users), "items": int(data.n_items), "rows": len(data)}
    data = kcore(data, 5, 5)
    if users:
        data = subsample_users(data, users, seed=seed)
    stats = {
        "before_subsampling": raw,
        "users": int(data.n_users),
        "items": int(data.n_items),
        "rows": len(data),
        "density": round(len(data) / (data.n_users * data.n_items), 6),
    }
    return data, stats


def train_config(key: str, args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(
        epochs=args.max_epochs,
        batch_size=256 if key != "sasrec" else 128,
        lr=1e-3,
        n_negatives=4 if LOSS.get(key) is None else 1,
        loss=LOSS.get(key, "bpr"),
        patience=args.patience,
        monitor=MONITOR,
        seed=args.seed,
        progress=False,
        max_seconds=args.max_seconds,
    )


def fit_eval(
    key: str,
    options: dict[str, Any],
    split: Any,
    valid: EvalSet,
    test: EvalSet,
    args: argparse.Namespace,
    start: dict[str, torch.Tensor] | tuple[dict[str, torch.Tensor], ...] | None = None,
) -> tuple[Recommender, dict[str, Any]]:
    """Train one model (from ``start`` for the adversarial ones) and evaluate dev and test."""
    name = ROWS[key][0]
    seed_everything(args.seed)
    model = build_model(name, split.train.n_users, split.train.n_items, options)
    if name.startswith("aqua") and not args.adv_from_scratch:
        model.config.adv_epochs = args.adv_epochs
    w = model.history_length()
    valid_h = attach_history(valid, [split.train], w)
    test_h = attach_history(test, [split.train, split.valid], w)
    cfg = train_config(key, args)

    def log(line: str) -> None:
        print(f"    {line}", flush=True)

    t0 = time.perf_counter()
    if isinstance(start, tuple):  # QUALSE from trained QUALE and QUASE, then trained as usual
        model.init_from(*start)
        history = fit(model, split.train, valid_h, cfg, log=log)
    elif start is not None:
        model.load_state_dict(start)
        history = fit(model, split.train, valid_h, cfg, log=log, pretrained=True)
    else:
        history = fit(model, split.train, valid_h, cfg, log=log)
    seconds = time.perf_counter() - t0
    t1 = time.perf_counter()
    test_m = evaluate(model, test_h, ks=KS, metrics=("HIT", "NDCG"), batch_size=256)
    eval_seconds = time.perf_counter() - t1
    dev_m = evaluate(model, valid_h, ks=KS, metrics=("HIT", "NDCG"), batch_size=256)
    body = {
        "metrics": {k: round(float(v), 4) for k, v in test_m.items()},
        "dev": {k: round(float(v), 4) for k, v in dev_m.items()},
        "seconds": round(seconds, 1),
        "eval_seconds": round(eval_seconds, 1),
        "epochs_run": len([e for e in history.epochs if e.get("epoch", 0) > 0]),
        "best_epoch": history.best_epoch,
        "stopped_early": history.stopped_early,
        "window": w,
    }
    return model, body


def reproduce(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # tiny Adam moments as denormals slow CPU math ~100x
    cache_path = _cache_path(args)
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    cache: dict[str, dict[str, Any]] = {}
    state_dir = cache_path.parent / "states"
    state_dir.mkdir(parents=True, exist_ok=True)
    if args.resume and cache_path.exists():
        for line in cache_path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                cache[row["key"]] = row
    result: dict[str, Any] = {
        "table": TABLE,
        "paper": "Section 5.3, Table 5.6 of 001_*.txt (HIT@100 / NDCG@100); paper numbers are on different data",
        "command": " ".join(["python -m segue.reproduce.quaternion_table", *sys.argv[1:]])
        if args.argv is None
        else " ".join(["python -m segue.reproduce.quaternion_table", *args.argv]),
        "protocol": {
            "name": "B.8 temporal-sampled",
            "split": "70/10/20 (toys, yelp: per user by position; ml-100k, lastfm-1k-414: global by time)",
            "negatives": 1000,
            "ks": list(KS),
            "seed": args.seed,
        },
        "caps": {
            "users": args.users,
            "max_epochs": args.max_epochs,
            "max_seconds_per_model": args.max_seconds,
            "adv_epochs": args.adv_epochs,
            "patience": args.patience,
            "dim": 64,
            "batch_size": 256,
            "monitor": MONITOR,
        },
        "rows": [],
        "datasets": {},
        "selection": {},
        "checks": {},
        "notes": "",
    }
    out_dir = Path(args.out)
    t_all = time.perf_counter()
    for dataset in args.datasets:
        print(f"== {dataset}", flush=True)
        data, stats = load(dataset, args.users, args.seed, args.data_dir)
        proto = sequential_protocol(per_user=PER_USER[dataset], n_negatives=1000, seed=args.seed)
        split = proto.split(data)
        valid, test = proto.evalsets(split)
        assert valid is not None
        if args.max_eval_users and len(valid) > args.max_eval_users:
            valid = valid.subset(
                np.random.default_rng(args.seed).choice(len(valid), args.max_eval_users, replace=False)
            )
        long_l = min(whisker_length(data), args.max_l)
        stats |= {
            "split": split.describe(),
            "split_kind": proto.name,
            "dev_users": len(valid),
            "test_users": len(test),
            "l": long_l,
            "l_rule": f"Q3 + 1.5 IQR of the users' sequence lengths = {whisker_length(data)}, capped at {args.max_l}",
        }
        result["datasets"][dataset] = stats
        print(f"   {stats}", flush=True)
        for key in args.models:
            name, base, _label = ROWS[key]
            base = dict(base)
            if name in ("quale", "qualse", "aquale", "aqualse", "aasvd"):
                base["l"] = long_l
            if name == "sasrec":
                base["max_len"] = long_l
            grid_key = "qualse" if key == "qualse-init" else PLAIN.get(key, key)
            grid = GRID.get(grid_key, [{}])
            if args.quick or args.first_grid or key in DEPENDS:
                grid = grid[:1]
            if key in DEPENDS:  # use the dev choice of the plain model
                chosen = result["selection"].get(f"{dataset}/{grid_key}", {}).get("options", {})
                grid = [chosen]
            runs = []
            for extra in grid:
                options = {**base, **extra}
                ckey = json.dumps([dataset, key, options, vars_key(args)], sort_keys=True)
                row = cache.get(ckey)
                # a plain model is retrained when a dependent model still to run needs its checkpoint
                needed = [a for a in args.models if key in DEPENDS.get(a, ()) and pending(cache, dataset, a, args)]
                stale = row is not None and bool(needed) and not Path(row.get("state", "")).exists()
                if row is None or stale:
                    print(f"-- {dataset} {key} {options}", flush=True)
                    start = None
                    if key == "qualse-init":
                        parts = [saved_state(cache, result, dataset, p, args) for p in DEPENDS[key]]
                        if any(x is None for x in parts):
                            print(f"   skip {key}: QUALE / QUASE (LSTM) have no saved checkpoint", flush=True)
                            continue
                        start = tuple(parts)
                    elif key in PLAIN and not args.adv_from_scratch:
                        own = set(ROWS[key][1]) - set(ROWS[PLAIN[key]][1])  # e.g. the controls' adv_weight
                        plain_options = {k: v for k, v in options.items() if k not in own}
                        plain_key = json.dumps([dataset, PLAIN[key], plain_options, vars_key(args)], sort_keys=True)
                        plain = cache.get(plain_key)
                        if plain is None or not Path(plain.get("state", "")).exists():
                            print(f"   skip {key}: its plain model {PLAIN[key]} has no saved checkpoint", flush=True)
                            continue
                        start = torch.load(plain["state"], weights_only=True)
                    model, body = fit_eval(key, options, split, valid, test, args, start)
                    if key in SAVED:  # keep the best-dev BPR checkpoint for the models that start from it
                        path = state_dir / f"{hashlib.sha1(ckey.encode()).hexdigest()[:16]}.pt"
                        torch.save(model.state_dict(), path)
                        body["state"] = str(path)
                    row = {"key": ckey, "dataset": dataset, "model": key, "options": options, **body}
                    cache[ckey] = row
                    with cache_path.open("a") as f:
                        f.write(json.dumps(row) + "\n")
                    print(
                        f"   -> test HIT@100 {row['metrics']['HIT@100']:.4f} NDCG@100 {row['metrics']['NDCG@100']:.4f}"
                        f"  dev NDCG@100 {row['dev']['NDCG@100']:.4f}  {row['seconds']:.0f}s",
                        flush=True,
                    )
                runs.append((extra, row))
            if not runs:
                continue
            best_extra, best = max(runs, key=lambda r: r[1]["dev"][MONITOR])
            result["selection"][f"{dataset}/{key}"] = {
                "options": best_extra,
                "dev": [{"options": e, f"dev {MONITOR}": r["dev"][MONITOR]} for e, r in runs],
            }
            _add_row(result, dataset, key, best)
            result["checks"] = claims(result)
            result["notes"] = notes(args, result)
            write_results(result, out_dir, TABLE, metrics=SHOWN)
    if args.extra_runs:
        result["investigation"] = [
            {
                k: r.get(k)
                for k in ("dataset", "model", "options", "metrics", "dev", "epochs_run", "best_epoch", "seconds")
            }
            for r in (json.loads(line) for line in Path(args.extra_runs).read_text().splitlines() if line.strip())
        ]
    result["total_seconds"] = round(time.perf_counter() - t_all, 1)
    result["checks"] = claims(result)
    result["notes"] = notes(args, result)
    write_results(result, out_dir, TABLE, metrics=SHOWN)
    return result


def pending(cache: dict[str, dict[str, Any]], dataset: str, key: str, args: argparse.Namespace) -> bool:
    """Whether model ``key`` of ``dataset`` has no cached run under the current caps."""
    caps = vars_key(args)
    return not any(
        r["dataset"] == dataset and r["model"] == key and json.loads(r["key"])[3] == caps for r in cache.values()
    )


def saved_state(
    cache: dict[str, dict[str, Any]], result: dict[str, Any], dataset: str, key: str, args: argparse.Namespace
) -> dict[str, torch.Tensor] | None:
    """The saved best-dev checkpoint of ``key`` (its dev-chosen options) under the current caps, if any."""
    name, base, _ = ROWS[key]
    options = dict(base)
    if name in ("quale", "qualse"):
        options["l"] = result["datasets"][dataset]["l"]
    options.update(result["selection"].get(f"{dataset}/{key}", {}).get("options", {}))
    row = cache.get(json.dumps([dataset, key, options, vars_key(args)], sort_keys=True))
    if row is None or not Path(row.get("state", "")).exists():
        return None
    return torch.load(row["state"], weights_only=True)


def vars_key(args: argparse.Namespace) -> dict[str, Any]:
    return {
        k: getattr(args, k)
        for k in ("users", "max_epochs", "max_seconds", "adv_epochs", "patience", "seed", "max_l", "max_eval_users")
    }


def _add_row(result: dict[str, Any], dataset: str, key: str, row: dict[str, Any]) -> None:
    paper = PAPER.get(dataset, {}).get(key)
    entry = {
        "model": ROWS[key][2],
        "key": key,
        "dataset": dataset,
        "metrics": row["metrics"],
        "paper": None if paper is None else {"HIT@100": paper[0], "NDCG@100": paper[1]},
        "same_data_as_paper": False,
        "seconds": row["seconds"],
        "eval_seconds": row.get("eval_seconds"),
        "options": row["options"],
        "dev": row["dev"],
        "epochs_run": row.get("epochs_run"),
        "best_epoch": row.get("best_epoch"),
    }
    result["rows"] = [r for r in result["rows"] if not (r["key"] == key and r["dataset"] == dataset)] + [entry]
    order = {k: i for i, k in enumerate(MODELS)}
    dorder = {d: i for i, d in enumerate(DATASETS)}
    result["rows"].sort(key=lambda r: (dorder.get(r["dataset"], 9), order.get(r["key"], 99)))


def claims(result: dict[str, Any]) -> dict[str, Any]:
    """The paper's orderings (B.11) checked on our rows, per dataset and metric (N = 100 and 10)."""
    by = {(r["dataset"], r["key"]): r["metrics"] for r in result["rows"]}
    out: dict[str, Any] = {}
    for d in dict.fromkeys(r["dataset"] for r in result["rows"]):
        got = {k: by[(dd, k)] for (dd, k) in by if dd == d}
        checks: dict[str, Any] = {}
        for metric in SHOWN:

            def v(k: str, metric: str = metric, got: dict[str, Any] = got) -> float | None:
                return got[k][metric] if k in got else None

            def ge(a: float | None, b: float | None) -> bool | None:
                return None if a is None or b is None else bool(a >= b)

            parts = [v("quale"), v("quase-lstm")]
            best_part = None if None in parts else max(parts)  # type: ignore[type-var]
            checks[metric] = {
                "QUALSE >= max(QUALE, QUASE-LSTM)": ge(v("qualse"), best_part),
                "QUALSE initialised from parts >= max(QUALE, QUASE-LSTM)": ge(v("qualse-init"), best_part),
                "AQUALE >= QUALE": ge(v("aquale"), v("quale")),
                "AQUASE >= QUASE (LSTM)": ge(v("aquase-lstm"), v("quase-lstm")),
                "AQUALSE >= QUALSE": ge(v("aqualse"), v("qualse")),
                "QUALSE > SASRec": ge(v("qualse"), v("sasrec")),
                "QUALSE > Caser": ge(v("qualse"), v("caser")),
                "AQUALSE > SASRec": ge(v("aqualse"), v("sasrec")),
                "AQUALSE > Caser": ge(v("aqualse"), v("caser")),
                "QUALE > AASVD (quaternion vs real twin)": ge(v("quale"), v("aasvd")),
                "QUASE (LSTM) > ALSTM (quaternion vs real twin)": ge(v("quase-lstm"), v("alstm")),
            }
        out[d] = checks
    return out


def notes(args: argparse.Namespace, result: dict[str, Any]) -> str:
    ds = "; ".join(
        f"{d}: {s['users']} users, {s['items']} items, {s['rows']} interactions (of {s['before_subsampling']['users']} "
        f"users / {s['before_subsampling']['rows']} before subsampling), split {s['split']} ({s['split_kind']}), "
        f"{s['dev_users']} dev / {s['test_users']} test users, l = {s['l']} ({s['l_rule']})"
        for d, s in result["datasets"].items()
    )
    lines = [
        "**Different data from the paper** (same_data_as_paper = false everywhere): Toys and Yelp here are the later "
        "S3-Rec preprocessing (5-core, per-user item sequences, no timestamps), subsampled; the paper's rows come from "
        "its own Amazon 2014 / eALS Yelp copies. Paper numbers are shown for orientation only.",
        "",
        f"Datasets after preprocessing: {ds}.",
        "",
        "Split: Toys and Yelp have no timestamps (the loader's `timestamp` is the position in the user's sequence), so "
        "B.8's global time split is replaced by a per-user split by position (first 70% train, next 10% dev, last 20% "
        "test of each user's sequence). Every test user's test items are ranked together with 1,000 fixed sampled "
        "items the user never interacted with; HIT@N = share of the user's test items in the top N, NDCG@N with IDCG "
        "over min(|P_u|, N) (segue.evaluation.metrics, pessimistic ties).",
        "",
        f"Compute caps (2 shared CPU cores, ~40 CPU-minutes for everything): {args.users} users sampled per dataset "
        f"(seed {args.seed}); at most {args.max_epochs} epochs and {args.max_seconds:.0f} s of training per model "
        f"(checked after each epoch; patience {args.patience} on dev {MONITOR}); the adversarial models start from "
        f"their plain model's best-dev checkpoint and run at most {args.adv_epochs} QABPR epochs (the spec: 30) with "
        f"eps = 0.5 only (the spec's grid is {{0.5, 1, 2}}); d = 64 for every quaternion / real model (Caser 50, its "
        f"default), batch 256 (SASRec 128), Adam lr 1e-3, 4 negatives per positive for BPR models (B.6); Caser and "
        f"SASRec use their papers' log loss with 1 negative. Dev grid: `GRID` (init_std for QUALE / QUALSE); "
        f"dev users capped at {args.max_eval_users or 'all'}. No other hyper-parameter search.",
        "",
        "Rows not run: (b) QCF, (c) NeuMF++, (d) NAIS, (j) SLi-Rec, (k) ALSTM+AASVD (the spec's real-valued twin of "
        "QUALSE) are not implemented in this issue. Datasets ml-100k and lastfm-1k-414 are supported by the script "
        "(global time split) but were not run within the compute budget; Cellphone, Pet, Video and Apps are not "
        "available here. Repeated (user, item) pairs are collapsed to their first occurrence (Yelp: 316,354 -> "
        "304,524 rows).",
    ]
    checks = result.get("checks") or {}
    if checks:
        lines += ["", "### The paper's orderings on our rows", ""]
        for d, per_metric in checks.items():
            for metric, c in per_metric.items():
                held = [k for k, x in c.items() if x is True]
                failed = [k for k, x in c.items() if x is False]
                lines.append(
                    f"- {d} {metric}: held: {', '.join(held) or 'none'}; did not hold: {', '.join(failed) or 'none'}"
                )
    if FINDINGS:
        lines += ["", "### Investigation", "", FINDINGS]
    return "\n".join(lines)


#: written after the runs of 2026-11-23 (numbers quoted from them; see the closing note of issue #7)
FINDINGS = """\
Orderings that did **not** hold in the main table, and what we checked:

1. **QUALSE < QUALE on both datasets** (Toys NDCG@100 0.056 vs 0.080, Yelp 0.071 vs 0.148); QUALSE sits at
   QUASE's level. Two causes, separated by an equal-epoch re-run on Toys (all models 8 epochs, no time cap
   reached; command below):
   * *Time cap*: a QUALSE epoch costs ~3.5x a QUALE epoch on this CPU, so under the 50 s cap QUALSE got 3-4
     epochs against QUALE's 10. With 8 epochs each QUALSE improves (NDCG@100 0.061) but stays below QUALE (0.080).
   * *The short-term branch takes over in end-to-end training* (B.5's default, from scratch). Diagnosis of the
     8-epoch QUALSE on 1,000 Toys test users: the mean gate on the long-term branch is 0.22 (positives) / 0.25
     (negatives); the spread of the long-term term over the candidates is 0.046 against 1.79 for the short-term
     term, so the scores are essentially QUASE's. QUALSE's long-term branch evaluated alone (a QUALE with its
     weights) reaches NDCG@100 0.060, below the stand-alone QUALE's 0.080 after the same epochs: the
     short-term LSTM fits the training windows first (training loss 0.51 after 4 epochs vs QUALE's 0.68) and
     leaves the long-term tables little gradient. The per-user split makes this worse: a test user's test
     items are the last 20% of the sequence (1.7 items on average), and only the first of them directly follows
     the short-term window.
   * *B.5's optional initialisation from trained QUALE and QUASE* (`qualse-init`: encoders copied from the
     8-epoch QUALE and QUASE (LSTM), gate fresh, then 8 BPR epochs) fixes it: Toys HIT@100 0.263 / NDCG@100
     0.089 (dev 0.100) vs QUALE 0.232 / 0.080 and QUASE 0.195 / 0.055, i.e. QUALSE >= max(QUALE, QUASE) holds,
     and it is also above AASVD (0.242 / 0.087), the best baseline. The same on Yelp (8 epochs each): QUALE
     0.442 / 0.147, QUASE (LSTM) 0.231 / 0.071, QUALSE from scratch 0.277 / 0.090, QUALSE initialised from
     the parts 0.446 / 0.152 (HIT@10 0.132 vs QUALE's 0.118), again the best row.
2. **Adversarial >= plain** holds for AQUALSE at N = 100 on both datasets and for AQUASE in 3 of the 4 N = 100
   cells (not Toys NDCG@100, 0.0542 vs 0.0546), all by small margins; it fails for AQUALE at NDCG@100 (Toys
   0.0798 vs 0.0802; Yelp 0.1481 vs 0.1484) and in most N = 10 cells. Part of
   any gain is simply more training (the A* rows get extra epochs on top of an under-trained checkpoint), so
   the Toys re-run adds a control with lambda_adv = 0 (the same extra epochs of plain BPR from the same
   checkpoint): AQUALE 0.0786 vs control 0.0796 NDCG@100 (QABPR brings nothing beyond the extra epochs for
   QUALE); AQUALSE 0.0627 vs control 0.0614 (the control never beat its starting checkpoint on dev; QABPR
   moved dev NDCG@100 0.0670 -> 0.0704). Only eps = 0.5 was tried and only 4 QABPR epochs (spec: 30 and
   eps in {0.5, 1, 2}).
3. **Proposed > SASRec and Caser** holds everywhere for QUALSE and AQUALSE (and QUALE), but SASRec in the
   main table is badly under-trained: its epochs cost ~10-45 s on the shared CPU, so the cap left it 2 epochs
   (dev still rising). In the equal-epoch Toys re-run (8 epochs) SASRec reaches HIT@100 0.172 / NDCG@100
   0.046, still below QUALSE (0.214 / 0.061), Caser (0.186 / 0.050) and QUALE. SASRec's authors train for
   hundreds of epochs; its row is not a converged SASRec.
4. **QUALE > AASVD** (quaternion vs its real-valued twin) holds on Yelp (NDCG@100 0.148 vs 0.129) but not on
   Toys (0.080 vs 0.087). AASVD has an item bias (popularity) which QUALE's pure inner product lacks; with 10
   epochs from an N(0, 0.01) start QUALE was still improving when capped.

Absolute numbers are far below the paper's on every row (e.g. QUALE Toys HIT@100 0.23 vs 0.47): different
data (S3-Rec sequences, 3,000 sampled users: the median item has 1 training interaction, 85-89% have at most
3 and 16% none), a per-user split,
and 2-10 training epochs instead of 30 with tuning. Random ranking gives HIT@100 ~ 0.10 here.

Equal-epoch re-run (Toys; same split, users and candidates as the main table):
`python -m segue.reproduce.quaternion_table --datasets toys --models
quale,quase-lstm,qualse,aquale,aqualse,quale-more,qualse-more,sasrec,caser,qualse-init --first-grid --users 3000
--max-epochs 8 --max-seconds 150 --adv-epochs 4 --max-eval-users 1000` (HIT@100 / NDCG@100: QUALE 0.2323 /
0.0800, QUASE (LSTM) 0.1952 / 0.0546, QUALSE 0.2141 / 0.0614, QUALSE initialised from QUALE + QUASE
0.2628 / 0.0893, AQUALE 0.2289 / 0.0786, QUALE + 4 BPR epochs 0.2313 / 0.0796, AQUALSE 0.2102 / 0.0627,
QUALSE + BPR epochs 0.2141 / 0.0614, SASRec 0.1722 / 0.0455, Caser 0.1857 / 0.0498), and on Yelp
`--datasets yelp --models quale,quase-lstm,qualse,qualse-init` with the same options.

The main table was computed by `python -m segue.reproduce.quaternion_table --datasets toys,yelp --users 3000
--max-epochs 10 --max-seconds 50 --adv-epochs 4 --max-eval-users 1000` (plus `--data-dir`, `--out`, `--cache`);
the file was then re-rendered from that run's cache with the command at the top (`--resume`: no model
retrained), to add this text and the equal-epoch runs (JSON key `investigation`, from `--extra-runs`).
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--datasets", default="toys,yelp")
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--users", type=int, default=1500, help="users sampled per dataset (0 = all)")
    p.add_argument("--max-epochs", type=int, default=15)
    p.add_argument("--max-seconds", type=float, default=60.0, help="training time cap per model (s)")
    p.add_argument("--adv-epochs", type=int, default=6, help="QABPR epochs after the BPR checkpoint")
    p.add_argument("--adv-from-scratch", action="store_true", help="train A* models with their own BPR phase")
    p.add_argument("--patience", type=int, default=3)
    p.add_argument("--max-l", type=int, default=50, help="cap on the long-term window l")
    p.add_argument("--max-eval-users", type=int, default=0, help="cap on dev users (0 = all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--first-grid", action="store_true", help="only the first entry of each dev grid")
    p.add_argument("--quick", action="store_true", help="first grid entry, 2 epochs, 20 s per model, 300 users")
    p.add_argument("--out", default="docs/results")
    p.add_argument("--data-dir", default=None, help="data folder (default: $SEGUE_DATA_DIR or ~/.cache/segue)")
    p.add_argument(
        "--cache", default=None, help="runs cache (JSON lines; default: under $SEGUE_CACHE or ~/.cache/segue)"
    )
    p.add_argument("--extra-runs", default=None, help="a runs cache (JSON lines) to copy into the JSON's investigation")
    p.add_argument("--resume", action="store_true", help="reuse finished runs from the cache")
    args = p.parse_args(argv)
    args.argv = argv
    args.datasets = [d for d in args.datasets.split(",") if d]
    args.models = [m for m in args.models.split(",") if m]
    for d in args.datasets:
        if d not in DATASETS:
            raise ConfigError(f"Unknown dataset {d!r}; this table covers {', '.join(DATASETS)}.")
    for m in args.models:
        if m not in ROWS:
            raise ConfigError(f"Unknown model {m!r}; this table covers {', '.join(MODELS)}.")
    # an adversarial model needs its plain model trained first, in the same run
    for dependent, plains in DEPENDS.items():
        for plain in plains:
            if dependent in args.models and plain not in args.models and not args.adv_from_scratch:
                args.models.insert(args.models.index(dependent), plain)
    if args.quick:
        args.max_epochs, args.max_seconds, args.adv_epochs, args.users = 2, 20.0, 1, 300
    if args.users < 0 or args.max_epochs < 1 or args.max_seconds <= 0 or args.adv_epochs < 0:
        raise ConfigError("users >= 0, max-epochs >= 1, max-seconds > 0 and adv-epochs >= 0 are required.")
    return args


def main(argv: list[str] | None = None) -> int:
    reproduce(parse_args(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["GRID", "PAPER", "claims", "main", "reproduce"]


def _cache_path(args: argparse.Namespace) -> Path:
    """``--cache``, else ``$SEGUE_CACHE/reproduce/quaternion-table-5.6/runs.jsonl`` (or under ``~/.cache/segue``)."""
    from segue.reproduce.runner import cache_root

    return Path(args.cache) if args.cache else cache_root() / "quaternion-table-5.6" / "runs.jsonl"
