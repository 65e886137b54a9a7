"""Table 5.6 of the QUALSE section (HIT / NDCG @ 100 and @ 10) on Toys and Yelp: the hooks of
``specs/quaternion-table-5.6.toml``.

Run with ``segue reproduce quaternion-table-5.6 [--quick]`` (the shared runner, :mod:`segue.reproduce.runner`).
Prose (data, split, caps, the orderings and the investigation) lives in
``docs/results/quaternion-table-5.6.notes.md``.

Protocol B.8: chronological 70/10/20 split, every test user's test items ranked together with 1,000
fixed sampled items the user never interacted with; HIT@N (recall-style, the share of the user's test
items in the top N) and NDCG@N (binary gains, IDCG over ``min(|P_u|, N)``) for N in {1, 10, 20, 50, 100};
only users with a train history. Toys and Yelp are the S3-Rec per-user sequences **without timestamps**:
the split is per user by position (``protocol.per_user_split``), not the paper's global time split.
History read by the models (B.1): train items for the dev set, train + dev items for the test set;
``l`` (the long-term window) is ``Q3 + 1.5 IQR`` of the sequence lengths (capped at ``caps.max_l``),
``s = 5``.

Rows: a registry model trained with the spec's train options and the caps ``epochs``, ``patience``,
``max_seconds`` (a per-stage safety net) on dev NDCG@100 (:func:`fit_row`). A row with
``train.start = LABEL`` (the adversarial models and the lambda_adv = 0 controls) starts from the
trained, dev-selected model of that row (the runner's ``depends``) and runs only the QABPR stage, at
most ``caps.adv_epochs`` epochs with patience; ``train.init_from = [QUALE, QUASE]`` is B.5's optional
QUALSE whose encoders start from the trained parts.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np

from segue.data.datasets import load_dataset
from segue.data.interactions import Interactions
from segue.data.preprocess import dedup, kcore
from segue.evaluation.protocols import evaluate
from segue.evaluation.sequential import attach_history, sequential_protocol, subsample_users
from segue.models.base import Recommender, build_model
from segue.models.qualse import whisker_length
from segue.training import fit
from segue.training.trainer import TrainConfig, seed_everything

KS = (1, 10, 20, 50, 100)
MONITOR = "NDCG@100"
#: models whose long-term window is ``l`` (SASRec reads ``max_len = l``)
LONG_WINDOW = ("quale", "qualse", "aquale", "aqualse", "aasvd")
#: the hook's own train keys (the rest are TrainConfig options)
HOOK_KEYS = ("start", "init_from")


def load(name: str, users: int, seed: int) -> tuple[Interactions, dict[str, Any]]:
    """The dataset, deduplicated (first play kept), 5-core, then users subsampled (no second k-core: it collapses)."""
    data = dedup(load_dataset(name, download=False, progress=False))
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


def prepare(dataset: str, spec: Any, caps: dict[str, Any]) -> dict[str, Any]:
    """Load, 5-core, subsample ``caps.users`` users, split (B.8), build dev (capped) and test sets, and ``l``."""
    p = spec.protocol
    seed = int(p.get("seed", 0))
    data, stats = load(dataset, int(caps.get("users") or 0), seed)
    per_user = dataset in p.get("per_user_split", [])
    proto = sequential_protocol(per_user=per_user, n_negatives=int(p.get("negatives", 1000)), seed=seed)
    split = proto.split(data)
    valid, test = proto.evalsets(split)
    assert valid is not None
    n_dev = int(caps.get("max_eval_users") or 0)
    if n_dev and len(valid) > n_dev:
        valid = valid.subset(np.random.default_rng(seed).choice(len(valid), n_dev, replace=False))
    whisker = whisker_length(data)
    long_l = min(whisker, int(caps["max_l"]))
    stats |= {
        "split": split.describe(),
        "split_kind": proto.name,
        "dev_users": len(valid),
        "test_users": len(test),
        "l": long_l,
        "l_rule": f"Q3 + 1.5 IQR of the users' sequence lengths = {whisker}, capped at {caps['max_l']}",
    }
    return {"split": split, "valid": valid, "test": test, "l": long_l, "stats": stats}


def _options(name: str, row: Any, prepared: dict[str, Any]) -> dict[str, Any]:
    """The row's model options, with ``l`` (or SASRec's ``max_len``) of the dataset and the QABPR epoch cap."""
    options = dict(row.options)
    if name in LONG_WINDOW:
        options["l"] = prepared["l"]
    if name == "sasrec":
        options["max_len"] = prepared["l"]
    if name.startswith("aqua"):
        options["adv_epochs"] = int(row.caps["adv_epochs"])
    return options


def _from_plain(name: str, plain: Recommender, options: dict[str, Any], n_users: int, n_items: int) -> Recommender:
    """The adversarial model ``name`` with the trained plain model's config (its dev choice) and weights."""
    own = {f.name for f in dataclasses.fields(plain.config)} - {"adversarial"}
    base = {k: v for k, v in dataclasses.asdict(plain.config).items() if k in own}
    model = build_model(name, n_users, n_items, {**base, **options})
    model.load_state_dict(plain.state_dict())
    return model


def fit_row(prepared: dict[str, Any], row: Any) -> dict[str, Any]:
    """Train one row (see the module docstring) and evaluate it on dev and test with B.1's histories."""
    split, valid, test = prepared["split"], prepared["valid"], prepared["test"]
    name = row.model.model or row.model.label
    train = dict(row.train)
    start, init_from = train.pop("start", None), train.pop("init_from", None)
    options = _options(name, row, prepared)
    c = row.caps
    n_users, n_items = split.train.n_users, split.train.n_items
    seed_everything(row.seed)
    if start is not None:
        model = _from_plain(name, row.trained[start], options, n_users, n_items)
    else:
        model = build_model(name, n_users, n_items, options)
    w = model.history_length()
    if w > 0:  # the models that read a history (Pop and ItemKNN read none; ItemKNN uses its train rows)
        valid, test = attach_history(valid, [split.train], w), attach_history(test, [split.train, split.valid], w)
    capped = {k: c[k] for k in ("epochs", "patience", "max_seconds", "threads") if k in c}
    cfg = TrainConfig(**{"lr": 1e-3, "monitor": MONITOR, "seed": row.seed, "progress": False, **train, **capped})
    t0 = time.perf_counter()
    if init_from is not None:  # B.5's optional variant: QUALSE's encoders from the trained QUALE and QUASE
        model.init_from(*(row.trained[label].state_dict() for label in init_from))
    history = fit(model, split.train, valid, cfg, log=None, pretrained=start is not None)
    seconds = time.perf_counter() - t0
    t1 = time.perf_counter()
    test_m = evaluate(model, test, ks=KS, metrics=("HIT", "NDCG"), batch_size=256)
    eval_seconds = time.perf_counter() - t1
    dev_m = evaluate(model, valid, ks=KS, metrics=("HIT", "NDCG"), batch_size=256)
    out: dict[str, Any] = {
        "dev": {k: round(float(v), 4) for k, v in dev_m.items()},
        "test": {k: round(float(v), 4) for k, v in test_m.items()},
        "seconds": round(seconds, 1),
        "eval_seconds": round(eval_seconds, 1),
        "window": w,
        "model": model,
    }
    if model.trainable:
        out["history"] = history  # the runner records stopped_by, epochs run, best epoch, the dev curve and slope
    if name in ("pop", "quale"):
        out["dataset_stats"] = prepared["stats"]
    return out


def markdown(result: dict[str, Any]) -> str:
    """The datasets after preprocessing (users, items, split, dev / test users, the long window ``l``)."""
    stats: dict[str, Any] = {}
    for r in result["rows"]:
        if r.get("dataset_stats"):
            stats.setdefault(r["dataset"], r["dataset_stats"])
    lines = ["## Datasets after preprocessing (5-core, users subsampled)", ""]
    lines.append(
        "| dataset | users | items | interactions | before subsampling (users / rows) | split | dev / test users | l |"
    )
    lines.append("|---|---|---|---|---|---|---|---|")
    for d, s in stats.items():
        b = s["before_subsampling"]
        lines.append(f"| {d} | {s['users']} | {s['items']} | {s['rows']} | {b['users']} / {b['rows']} "
                     f"| {s['split']} ({s['split_kind']}) | {s['dev_users']} / {s['test_users']} | {s['l']} |")  # fmt: skip
    if not stats:
        lines.append("| (no QUALE or Pop row in this run) | | | | | | | |")
    return "\n".join(lines) + "\n"


__all__ = ["fit_row", "load", "markdown", "prepare"]
