"""End-to-end runs: dataset -> protocol split -> fit -> evaluate -> run directory.

This is what ``segue train`` and ``segue quickstart`` call, and what the reproduction
scripts build on. It is the only place that wires the stages together; each stage stays
ignorant of the others.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from segue.data.interactions import IdMap, Interactions
from segue.data.preprocess import dedup
from segue.data.sequences import last_items
from segue.dirs import check_target, check_writable
from segue.errors import ConfigError, RunDirError, WriteError
from segue.evaluation.protocols import EvalSet, Protocol, evaluate, get_protocol
from segue.models.base import Recommender, build_model
from segue.training import fit
from segue.training.checkpoint import save_run
from segue.training.distributed import is_main, world
from segue.training.resume import EpochCheckpoint, resume_dir
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
    resume: bool = False,
) -> RunResult:
    """Train ``model`` on ``data`` under ``protocol`` and (optionally) write a run directory.

    ``model`` is a registry name (built with ``model_options``) or a model already built for
    the split, e.g. an SDMR over trained parts. ``prepared`` (split, valid, test) lets several
    models share one split and its fixed candidates, as the reproduction tables require.

    With ``out``, the target is checked before training (:func:`preflight`), every epoch is
    checkpointed in ``.NAME.resume`` beside it (removed once the run is written), and ``resume=True``
    continues from that checkpoint (segue/training/resume.py), over several processes too (the same N). If the run directory cannot be written
    after training, the run is written to a temporary directory instead and the error says where.
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
    checkpoint = None
    if out is not None:  # over several processes: every rank checkpoints with rank 0, which alone writes
        if is_main():
            preflight(out, overwrite=overwrite, model=model, n_rows=len(split.train))
        checkpoint = EpochCheckpoint(resume_dir(out), resume=resume, log=_logger(log))
    elif resume:
        raise ConfigError("resume needs the run directory (out) whose epoch checkpoint to continue.")
    t0 = time.perf_counter()
    history = fit(model, split.train, valid, cfg, log=log, **({"checkpoint": checkpoint} if checkpoint else {}))
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
        run_dir = _save_or_rescue(
            Path(out),
            checkpoint,
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


def train_job(spec: dict[str, Any]) -> dict[str, Any]:
    """``segue train`` in one process of a distributed run (every rank: load, split, fit, evaluate; rank 0 logs
    and writes the run directory). ``spec`` holds the command's resolved options; returns the result summary."""
    from segue.data.files import open_dataset

    w = world()
    main = is_main()
    cfg = TrainConfig.from_dict(spec["train"])
    if not main:
        cfg = dataclasses.replace(cfg, progress=False)
    if w is not None and w.device.type == "cuda":
        cfg = dataclasses.replace(cfg, device=str(w.device))
    source = open_dataset(
        spec["dataset"], spec.get("data_dir"), format=spec.get("format"), columns=spec.get("columns"), progress=False
    )
    protocol = spec.get("protocol") or source.default_protocol
    proto = get_protocol(protocol, seed=spec["seed"], n_negatives=spec.get("negatives"), dev=spec.get("dev", "random"))
    res = run(
        spec["model"],
        source.data,
        protocol=proto,
        model_options=spec.get("model_options"),
        train_config=cfg,
        out=spec.get("out"),
        seed=spec["seed"],
        overwrite=spec.get("overwrite", False),
        log=spec.get("log", "default") if main else None,
        resume=spec.get("resume", False),
    )
    return {**summary(spec["model"], spec["dataset"], protocol, res), "nproc": 1 if w is None else w.size}


def summary(model: str, dataset: str, protocol: str, res: RunResult) -> dict[str, Any]:
    """What ``segue train`` reports of a run (``--json``): where it is, its test and dev metrics, the dev rule."""
    return {
        "model": model,
        "dataset": dataset,
        "protocol": protocol,
        "dev_rule": res.protocol.dev_rule,
        "run_dir": str(res.run_dir),
        "test": res.metrics,
        "valid": res.valid_metrics,
        "fit_seconds": res.seconds,
        "best_epoch": res.history.best_epoch,
    }


def preflight(out: str | Path, *, overwrite: bool = False, model: Recommender | None = None, n_rows: int = 0) -> None:
    """Fail before any work, in one sentence, when the run directory ``out`` could not be written: it may not be
    replaced, its parent cannot be created or written, or the disk lacks room for an estimate of the run
    (with ``model``: parameter bytes x 10 for the run and its epoch checkpoints, plus 64 bytes per training row)."""
    check_target(Path(out), "run", overwrite=overwrite)
    need = 0
    if model is not None:
        params = sum(t.numel() * t.element_size() for t in model.state_dict().values())
        need = 10 * params + 64 * n_rows
    check_writable(Path(out), need)


def _save_or_rescue(out: Path, checkpoint: EpochCheckpoint | None, model: Recommender, **kwargs: Any) -> Path:
    """``save_run``; if the run directory cannot be written, the run goes to a temporary directory instead."""
    try:
        run_dir = save_run(out, model, **kwargs)
    except (WriteError, RunDirError) as e:
        reason = str(e).rstrip(".")
        try:
            rescue = Path(tempfile.mkdtemp(prefix=f"segue-{out.name}-")) / out.name
            save_run(rescue, model, **{**kwargs, "overwrite": False})
        except (OSError, RunDirError) as e2:
            kept = f"; the epoch checkpoint in {checkpoint.directory} still holds it" if checkpoint else ""
            raise WriteError(
                f"{reason}, and the trained model could not be saved elsewhere either ({str(e2).rstrip('.')}){kept}."
            ) from e
        if checkpoint is not None:
            checkpoint.discard()
        raise WriteError(f"{reason}; the trained run was saved to {rescue} instead (move it into place).") from e
    if checkpoint is not None:
        checkpoint.discard()
    return run_dir


def _logger(log: Any) -> Any:
    if log == "default":
        from rich.console import Console

        console = Console(stderr=True)
        return lambda line: console.print(line, highlight=False)
    return log
