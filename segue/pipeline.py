"""End-to-end runs: dataset -> protocol split -> fit -> evaluate -> run directory.

This is what ``segue train`` and ``segue quickstart`` call, and what the reproduction
scripts build on. It is the only place that wires the stages together; each stage stays
ignorant of the others.
"""

from __future__ import annotations

import dataclasses
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from segue.data.interactions import Interactions
from segue.data.preprocess import dedup
from segue.data.sequences import last_items
from segue.errors import ConfigError
from segue.evaluation.protocols import EvalSet, Protocol, evaluate, get_protocol
from segue.models.base import Recommender, build_model
from segue.training import fit
from segue.training.checkpoint import save_run
from segue.training.distributed import is_main, prepare_checkpoints, world
from segue.training.trainer import History, TrainConfig, seed_everything


@dataclass
class RunResult:
    model: Recommender
    metrics: dict[str, float]
    valid_metrics: dict[str, float] | None
    history: History
    seconds: float
    run_dir: Path | None
    protocol: Protocol
    test: EvalSet


def load_config_file(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read a TOML config: a ``[model]`` table (model options) and a ``[train]`` table (TrainConfig)."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"Config file {path} does not exist.")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"Config file {path} is not valid TOML ({e}).") from e
    unknown = sorted(set(data) - {"model", "train"})
    if unknown:
        raise ConfigError(f"Config file {path} has unknown table(s) {', '.join(unknown)}; use [model] and [train].")
    return dict(data.get("model", {})), dict(data.get("train", {}))


def train_config_for(model_name: str, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """TrainConfig for a model: generic defaults < the model's ``train_defaults`` < ``overrides``."""
    from segue.models.base import get_model_class

    return TrainConfig.from_dict({**get_model_class(model_name).train_defaults, **(overrides or {})})


def prepare(data: Interactions, protocol: Protocol) -> tuple[Interactions, Any, EvalSet | None, EvalSet]:
    """De-duplicate, split and build the fixed dev/test evaluation sets."""
    data = dedup(data, on=protocol.dedup_on)
    split = protocol.split(data)
    valid, test = protocol.evalsets(split)
    return data, split, valid, test


def run(
    model: str | Recommender,
    data: Interactions,
    *,
    protocol: str | Protocol = "loo-sampled",
    model_options: dict[str, Any] | None = None,
    train_config: TrainConfig | None = None,
    out: str | Path | None = None,
    seed: int = 0,
    overwrite: bool = False,
    log: Any = "default",
    prepared: tuple[Any, EvalSet | None, EvalSet] | None = None,
) -> RunResult:
    """Train ``model`` on ``data`` under ``protocol`` and (optionally) write a run directory.

    ``model`` is a registry name (built with ``model_options``) or a model already built for
    the split, e.g. an SDMR over trained parts. ``prepared`` (split, valid, test) lets several
    models share one split and its fixed candidates, as the reproduction tables require.
    """
    proto = protocol if isinstance(protocol, Protocol) else get_protocol(protocol, seed=seed)
    if prepared is None:
        _, split, valid, test = prepare(data, proto)
    else:
        split, valid, test = prepared
    seed_everything(seed)
    if isinstance(model, str):
        model = build_model(model, split.train.n_users, split.train.n_items, model_options)
    elif model_options:
        raise ConfigError("model_options apply only to a model given by name; build the model with them instead.")
    cfg = train_config or train_config_for(model.name, {"seed": seed})
    if cfg.context != proto.context:  # the protocol decides what a training row's context is
        cfg = dataclasses.replace(cfg, context=proto.context)
    s = model.history_length() if "history" in model.needs else 0
    if s:
        valid = None if valid is None else valid.with_history(split.train, s)
        test = test.with_history(split.train, s)
    if world() is not None:  # rank 0 checkpoints every epoch into the run directory
        prepare_checkpoints(None if out is None else Path(out), overwrite)
    t0 = time.perf_counter()
    history = fit(model, split.train, valid, cfg, log=log)
    seconds = time.perf_counter() - t0
    ks = tuple(sorted(set(proto.ks) | {10}))
    metrics = evaluate(model, test, ks=ks, metrics=proto.metrics, recall_denominator=proto.recall_denominator)
    valid_metrics = None
    if valid is not None:
        valid_metrics = evaluate(
            model, valid, ks=ks, metrics=proto.metrics, recall_denominator=proto.recall_denominator
        )
    run_dir = None
    if out is not None and is_main():  # written once, by rank 0
        seen = split.train.to_csr()
        seen.data[:] = 1
        recent = None
        if s:  # what `segue recommend` feeds a sequential model: each user's latest training items
            recent = np.zeros((split.train.n_users + 1, s), dtype=np.int64)
            recent[1:] = last_items(split.train, np.arange(1, split.train.n_users + 1), s)
        run_dir = save_run(
            out,
            model,
            user_map=split.train.user_map,
            item_map=split.train.item_map,
            seen=seen,
            config={
                "dataset": data.name,
                "protocol": proto.to_dict(),
                "split": split.params,
                "seed": seed,
                "train": cfg.to_dict(),
                "fit_seconds": seconds,
            },
            history=history.to_dict(),
            metrics={"test": metrics, "valid": valid_metrics, "fit_seconds": seconds},
            evalsets={"valid": valid, "test": test},
            group_maps=split.train.group_maps,
            overwrite=overwrite or world() is not None,  # the checkpoints' directory, checked before training
            recent=recent,
        )
    return RunResult(model, metrics, valid_metrics, history, seconds, run_dir, proto, test)


def train_job(spec: dict[str, Any]) -> dict[str, Any]:
    """``segue train`` in one process of a distributed run (every rank: load, split, fit, evaluate; rank 0 logs
    and writes the run directory). ``spec`` holds the command's resolved options; returns the result summary."""
    from segue.data.datasets import load_dataset

    w = world()
    main = is_main()
    cfg = TrainConfig.from_dict(spec["train"])
    if not main:
        cfg = dataclasses.replace(cfg, progress=False)
    if w is not None and w.device.type == "cuda":
        cfg = dataclasses.replace(cfg, device=str(w.device))
    data = load_dataset(spec["dataset"], spec.get("data_dir"), progress=False)
    proto = get_protocol(spec["protocol"], seed=spec["seed"], n_negatives=spec.get("negatives"))
    res = run(
        spec["model"],
        data,
        protocol=proto,
        model_options=spec.get("model_options"),
        train_config=cfg,
        out=spec.get("out"),
        seed=spec["seed"],
        overwrite=spec.get("overwrite", False),
        log=spec.get("log", "default") if main else None,
    )
    return {
        "model": spec["model"],
        "dataset": spec["dataset"],
        "protocol": spec["protocol"],
        "run_dir": str(res.run_dir),
        "test": res.metrics,
        "valid": res.valid_metrics,
        "fit_seconds": res.seconds,
        "best_epoch": res.history.best_epoch,
        "nproc": 1 if w is None else w.size,
    }
