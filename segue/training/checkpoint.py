"""Run directories: everything one training run produced, without pickles.

::

    RUN_DIR/
      config.json          model name and options, dataset, protocol, train config, seed, versions
      id_maps.parquet      raw <-> internal ids (users, items, groups)
      weights.safetensors  the model's state_dict
      seen.npz             the training user x item matrix (CSR), for excluding consumed items
      recent.npz           sequential models: each user's most recent training items (oldest first, 0-padded)
      valid.npz, test.npz  the fixed evaluation sets (see segue.evaluation.protocols.EvalSet)
      history.json         per-epoch loss, dev metrics, seconds
      metrics.json         final test metrics
      curves.png           training curves

A run is written into a temporary sibling directory and renamed into place, so a killed
run never leaves a directory that looks complete. A write that fails (read-only or full disk)
raises one :class:`~segue.errors.WriteError` sentence and leaves nothing behind.

:func:`load_run` checks every file before anything uses it (segue/files.py): JSON types, array
dtypes and shapes, ids within the run's sizes, weights without NaN. Damage to a required file is
one :class:`~segue.errors.RunDirError` sentence naming the file; a damaged ``metrics.json`` or
``history.json`` (optional) is ignored with a :class:`~segue.files.RunFileWarning`.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from segue.data.interactions import IdMap
from segue.dirs import check_target, new_sibling, swap_in, write_failed
from segue.errors import RunDirError, SegueError, WriteError
from segue.files import check_ids, first_line, is_count, load_arrays, load_csr, read_json, read_optional_json
from segue.models.base import Recommender, get_model_class

REQUIRED = ("config.json", "id_maps.parquet", "weights.safetensors", "seen.npz")
FORMAT_VERSION = 1


def versions() -> dict[str, Any]:
    from segue.version import __version__

    return {
        "segue": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "cores": os.cpu_count(),
    }


@dataclass
class Run:
    """A loaded run directory."""

    path: Path
    model: Recommender
    config: dict[str, Any]
    user_map: IdMap
    item_map: IdMap
    seen: sp.csr_matrix
    metrics: dict[str, Any] | None
    history: dict[str, Any] | None
    recent: np.ndarray | None = None  # (n_users + 1, s) for sequential models, row 0 = padding

    def evalset(self, part: str = "test") -> Any:
        from segue.evaluation.protocols import EvalSet

        f = self.path / f"{part}.npz"
        if not f.exists():
            raise RunDirError(f"Run directory {self.path} has no {part} evaluation set ({f.name}).")
        try:
            es = EvalSet.load(f)
        except SegueError as e:
            raise RunDirError(str(e)) from e
        return check_evalset(es, f, self.model.n_users, self.model.n_items)


def check_evalset(es: Any, path: Path, n_users: int, n_items: int) -> Any:
    """An evaluation set read from ``path``, checked against the run's sizes (ids, shapes)."""
    n = len(es.users)
    if es.users.ndim != 1:
        raise RunDirError(f"{path} holds users of shape {es.users.shape}, not a list.")
    check_ids(es.users, path, "user ids", 1, n_users)
    if es.targets.shape != (n, n_items + 1):
        raise RunDirError(f"{path} has targets of shape {es.targets.shape}; expected {(n, n_items + 1)}.")
    check_ids(es.targets.indices, path, "target item ids", 1, n_items)
    if es.candidates is not None:
        if es.candidates.ndim != 2 or len(es.candidates) != n or es.n_pos is None or es.n_pos.shape != (n,):
            raise RunDirError(f"{path} has candidates of shape {es.candidates.shape} for {n} cases.")
        check_ids(es.candidates, path, "candidate item ids", 0, n_items)
        check_ids(es.n_pos, path, "positive counts", 0, es.candidates.shape[1])
    if es.exclude is not None:
        if es.exclude.shape != (n, n_items + 1):
            raise RunDirError(f"{path} has an exclusion matrix of shape {es.exclude.shape}.")
        check_ids(es.exclude.indices, path, "excluded item ids", 0, n_items)
    if es.context is not None:
        for key in es.context.present():
            t = getattr(es.context, key)
            if len(t) != n:
                raise RunDirError(f"{path} holds a {key} context of {len(t)} rows for {n} cases.")
            if key in ("history", "group"):
                check_ids(t.numpy(), path, f"{key} item ids", 0, n_items)
    if not isinstance(es.meta, dict):
        raise RunDirError(f"{path} holds metadata that is not a JSON object.")
    return es


def _save_csr(path: Path, m: sp.csr_matrix) -> None:
    m = m.tocsr()
    np.savez_compressed(path, indptr=m.indptr, indices=m.indices, shape=np.asarray(m.shape))


def save_run(
    run_dir: str | Path,
    model: Recommender,
    *,
    user_map: IdMap,
    item_map: IdMap,
    seen: sp.csr_matrix,
    config: dict[str, Any],
    history: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    evalsets: dict[str, Any] | None = None,
    group_maps: dict[str, IdMap] | None = None,
    overwrite: bool = False,
    recent: np.ndarray | None = None,
) -> Path:
    """Write a run directory atomically (temporary directory, then rename)."""
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    run_dir = Path(run_dir)
    check_target(run_dir, "run", overwrite=overwrite)
    try:
        tmp = new_sibling(run_dir)
    except OSError as e:
        raise WriteError(write_failed(run_dir, e) + ".") from e
    try:
        full_config = {
            "format": FORMAT_VERSION,
            "model": model.name,
            "model_options": model.config_dict(),
            "n_users": model.n_users,
            "n_items": model.n_items,
            "measure": model.measure,
            "versions": versions(),
            **config,
        }
        (tmp / "config.json").write_text(json.dumps(full_config, indent=2, default=str))
        frames = [user_map.to_frame(), item_map.to_frame()] + [m.to_frame() for m in (group_maps or {}).values()]
        pd.concat(frames, ignore_index=True).to_parquet(tmp / "id_maps.parquet", index=False)
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / "weights.safetensors"))
        _save_csr(tmp / "seen.npz", seen)
        if recent is not None:
            np.savez_compressed(tmp / "recent.npz", items=np.asarray(recent, dtype=np.int64))
        for part, es in (evalsets or {}).items():
            if es is not None:
                es.save(tmp / f"{part}.npz")
        if history is not None:
            (tmp / "history.json").write_text(json.dumps(history, indent=2, default=float))
            _plot_curves(history, tmp / "curves.png")
        if metrics is not None:
            (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2))
        swap_in(tmp, run_dir, "run")
    except (OSError, SafetensorError) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise WriteError(write_failed(run_dir, e) + ".") from e
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return run_dir


def load_run(run_dir: str | Path, device: str = "cpu") -> Run:
    """Load a run directory, checking every file (module docstring); damage is one sentence naming the file."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(f"Run directory {run_dir} does not exist.")
    missing = [f for f in REQUIRED if not (run_dir / f).exists()]
    if missing:
        raise RunDirError(f"Run directory {run_dir} is incomplete: missing {', '.join(missing)}.")
    config = read_config(run_dir / "config.json")
    user_map, item_map = read_id_maps(run_dir / "id_maps.parquet", config["n_users"], config["n_items"])
    model = build_from_config(config, run_dir / "config.json")
    load_weights(model, run_dir / "weights.safetensors", device)
    model.to(device).eval()
    seen = load_csr(run_dir / "seen.npz", model.n_users + 1, model.n_items + 1)
    metrics = read_optional_json(run_dir / "metrics.json", _check_metrics)
    history = read_optional_json(run_dir / "history.json", _check_history)
    return Run(run_dir, model, config, user_map, item_map, seen, metrics, history, _load_recent(run_dir, model))


def read_config(path: Path, error: type[RunDirError] = RunDirError) -> dict[str, Any]:
    """``config.json`` of a run: an object with a model name, its options and positive sizes."""
    config = read_json(path, error=error)
    for key in ("model", "model_options", "n_users", "n_items"):
        if key not in config:
            raise error(f"{path} lacks the {key!r} entry.")
    if not isinstance(config["model"], str) or not isinstance(config["model_options"], dict):
        raise error(f"{path} must name the model as a string and its options as an object.")
    if not is_count(config["n_users"], 1) or not is_count(config["n_items"], 1):
        raise error(f"{path} must give n_users and n_items as positive integers.")
    for key, kind in (("protocol", dict), ("train", dict), ("dataset", str)):
        if config.get(key) is not None and not isinstance(config[key], kind):
            raise error(f"{path} has a {key!r} entry of the wrong type ({type(config[key]).__name__}).")
    proto = config.get("protocol") or {}
    ks, metrics = proto.get("ks", [10]), proto.get("metrics", ["HR"])
    if not (isinstance(ks, list) and all(is_count(k, 1) for k in ks)):
        raise error(f"{path} has protocol cut-offs 'ks' that are not positive integers.")
    if not (isinstance(metrics, list) and all(isinstance(m, str) for m in metrics)):
        raise error(f"{path} has protocol 'metrics' that are not a list of names.")
    return config


def read_id_maps(
    path: Path, n_users: int, n_items: int, error: type[RunDirError] = RunDirError, source: str = "config.json"
) -> tuple[IdMap, IdMap]:
    """The user and item id maps of ``id_maps.parquet``, checked against the directory's sizes."""
    try:
        maps = pd.read_parquet(path)
        user_map, item_map = IdMap.from_frame(maps, "user"), IdMap.from_frame(maps, "item")
    except Exception as e:  # parquet, arrow or column errors: the file is damaged
        raise error(f"{path} is unreadable or damaged ({first_line(e)}).") from e
    if len(user_map) != n_users or len(item_map) != n_items:
        raise error(
            f"{path.parent} is inconsistent: {path.name} has {len(user_map)} users and {len(item_map)} items "
            f"but {source} says {n_users} and {n_items}."
        )
    return user_map, item_map


def build_from_config(config: dict[str, Any], path: Path, error: type[RunDirError] = RunDirError) -> Recommender:
    """The model that ``config`` (read from ``path``) names, built with its options."""
    try:
        cls = get_model_class(config["model"])
        return cls(config["n_users"], config["n_items"], cls.config_from_dict(config["model_options"]))
    except SegueError as e:
        raise error(f"{path} does not describe a model segue can build ({str(e).rstrip('.')}).") from e
    except (TypeError, ValueError) as e:
        raise error(f"{path} has model options segue cannot use ({first_line(e)}).") from e


def load_weights(model: Recommender, path: Path, device: str = "cpu", error: type[RunDirError] = RunDirError) -> None:
    """Load ``weights.safetensors`` into ``model``: same names, shapes and dtypes, no NaN."""
    from safetensors.torch import load_file

    try:
        state = load_file(str(path), device=device)
    except Exception as e:  # SafetensorError, OSError, header errors: the file is damaged
        raise error(f"{path} is corrupt ({first_line(e)}).") from e
    expected = model.state_dict()
    for name, t in state.items():
        want = expected.get(name)
        if want is not None and t.dtype != want.dtype:
            raise error(f"{path} holds {name} as {t.dtype}; model {model.name!r} needs {want.dtype}.")
        if t.is_floating_point() and bool(torch.isnan(t).any()):
            raise error(f"{path} holds NaN values in {name}.")
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        lines = [x.strip() for x in str(e).splitlines() if x.strip() and not x.startswith("Error(s) in loading")]
        detail = (lines[0] if lines else first_line(e)).rstrip(".")[:200]
        raise error(f"The weights in {path} do not match model {model.name!r} ({detail}).") from e


def _check_metrics(m: Any) -> str | None:
    if not isinstance(m, dict):
        return "is not a JSON object"
    for part in ("test", "valid"):
        v = m.get(part)
        if v is not None and not (
            isinstance(v, dict) and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v.values())
        ):
            return f"has a {part!r} entry that is not an object of numbers"
    return None


def _check_history(h: Any) -> str | None:
    if not isinstance(h, dict):
        return "is not a JSON object"
    epochs = h.get("epochs", [])
    if not isinstance(epochs, list) or not all(isinstance(e, dict) for e in epochs):
        return "has an 'epochs' entry that is not a list of objects"
    return None


def _load_recent(run_dir: Path, model: Recommender) -> np.ndarray | None:
    """The saved recent items of a sequential model's users, checked against the model (None if absent)."""
    path = run_dir / "recent.npz"
    if not path.exists():
        return None
    recent = load_arrays(path, ("items",))["items"]
    if recent.ndim != 2 or recent.shape[0] != model.n_users + 1:
        raise RunDirError(f"{path} must hold an integer ({model.n_users + 1}, s) array, got {recent.shape}.")
    return check_ids(recent, path, "item ids", 0, model.n_items)


def _plot_curves(history: dict[str, Any], path: Path) -> None:
    epochs = history.get("epochs") or []
    xs = [e["epoch"] for e in epochs if e.get("loss") is not None]
    if not xs:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(9, 3.2))
    ax[0].plot(xs, [e["loss"] for e in epochs if e.get("loss") is not None], marker="o", ms=3)
    ax[0].set_xlabel("epoch")
    ax[0].set_ylabel("training loss")
    keys = sorted({k for e in epochs for k in e.get("valid", {})})
    for k in keys:
        pts = [(e["epoch"], e["valid"][k]) for e in epochs if k in e.get("valid", {})]
        ax[1].plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, label=k)
    if history.get("best_epoch"):
        ax[1].axvline(history["best_epoch"], color="grey", ls="--", lw=0.8)
    ax[1].set_xlabel("epoch")
    ax[1].set_ylabel("dev metric")
    if keys:
        ax[1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
