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

from segue.data.interactions import IdMap, Interactions
from segue.data.preprocess import dedup
from segue.data.sequences import last_items
from segue.errors import ConfigError
from segue.evaluation.protocols import EvalSet, Protocol, evaluate, get_protocol
from segue.models.base import Recommender, build_model
from segue.training import fit
from segue.training.checkpoint import save_run
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


def _playlist_queries(model: str | Recommender, split: Any) -> tuple[Any, str]:
    """Under a playlist protocol the cases are playlists: a playlist model reads them as they are
    (``"playlist-model"``); any other model is trained playlist -> song (each playlist a user), as the
    playlist->song baselines of the MASR table are (``"playlist"``)."""
    from segue.evaluation.playlist import keyed_train
    from segue.models.base import get_model_class

    cls = get_model_class(model) if isinstance(model, str) else type(model)
    if "group" in cls.needs:
        return split, "playlist-model"

    def keyed(part: Interactions | None) -> Interactions | None:
        if part is None:
            return None
        k = keyed_train(part, "playlist")  # the playlists become the users of a user -> song model
        return Interactions(k.df, IdMap(k.user_map.raw, kind="user"), k.item_map, {}, k.name)

    return dataclasses.replace(
        split, train=keyed(split.train), valid=keyed(split.valid), test=keyed(split.test)
    ), "playlist"


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
    query = "user"
    if proto.context == "playlist":
        split, query = _playlist_queries(model, split)
        if query == "playlist-model" and isinstance(model, str):
            model_options = {"n_playlists": len(split.train.group_maps["playlist"]), **(model_options or {})}
    if isinstance(model, str):
        model = build_model(model, split.train.n_users, split.train.n_items, model_options)
    elif model_options:
        raise ConfigError("model_options apply only to a model given by name; build the model with them instead.")
    cfg = train_config or train_config_for(model.name, {"seed": seed})
    context = "history" if query == "playlist" else proto.context  # playlist -> song rows: the playlist is the user
    if cfg.context != context:  # the protocol decides what a training row's context is
        cfg = dataclasses.replace(cfg, context=context)
    s = model.history_length() if "history" in model.needs else 0
    if s:
        valid = None if valid is None else valid.with_history(split.train, s)
        test = test.with_history(split.train, s)
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
    if out is not None:
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
                "query": "playlist" if query != "user" else "user",
                "train": cfg.to_dict(),
                "fit_seconds": seconds,
            },
            history=history.to_dict(),
            metrics={"test": metrics, "valid": valid_metrics, "fit_seconds": seconds},
            evalsets={"valid": valid, "test": test},
            group_maps=split.train.group_maps,
            overwrite=overwrite,
            recent=recent,
        )
    return RunResult(model, metrics, valid_metrics, history, seconds, run_dir, proto, test)
