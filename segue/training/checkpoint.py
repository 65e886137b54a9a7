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
run never leaves a directory that looks complete.
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
from segue.dirs import check_target, new_sibling, swap_in
from segue.errors import RunDirError
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
        return EvalSet.load(f)


def _save_csr(path: Path, m: sp.csr_matrix) -> None:
    m = m.tocsr()
    np.savez_compressed(path, indptr=m.indptr, indices=m.indices, shape=np.asarray(m.shape))


def _load_csr(path: Path) -> sp.csr_matrix:
    with np.load(path, allow_pickle=False) as z:
        ind = z["indices"]
        return sp.csr_matrix((np.ones(len(ind), np.float32), ind, z["indptr"]), shape=tuple(z["shape"]))


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
    from safetensors.torch import save_file

    run_dir = Path(run_dir)
    check_target(run_dir, "run", overwrite=overwrite)
    tmp = new_sibling(run_dir)
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
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return run_dir


def load_run(run_dir: str | Path, device: str = "cpu") -> Run:
    """Load a run directory, checking that it is complete and consistent."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(f"Run directory {run_dir} does not exist.")
    missing = [f for f in REQUIRED if not (run_dir / f).exists()]
    if missing:
        raise RunDirError(f"Run directory {run_dir} is incomplete: missing {', '.join(missing)}.")
    try:
        config = json.loads((run_dir / "config.json").read_text())
    except json.JSONDecodeError as e:
        raise RunDirError(f"{run_dir / 'config.json'} is not valid JSON ({e.msg}).") from e
    for key in ("model", "model_options", "n_users", "n_items"):
        if key not in config:
            raise RunDirError(f"{run_dir / 'config.json'} lacks the {key!r} entry.")
    try:
        maps = pd.read_parquet(run_dir / "id_maps.parquet")
        user_map, item_map = IdMap.from_frame(maps, "user"), IdMap.from_frame(maps, "item")
    except Exception as e:
        raise RunDirError(f"{run_dir / 'id_maps.parquet'} is unreadable ({e}).") from e
    if len(user_map) != config["n_users"] or len(item_map) != config["n_items"]:
        raise RunDirError(
            f"Run directory {run_dir} is inconsistent: the id maps have {len(user_map)} users and "
            f"{len(item_map)} items but config.json says {config['n_users']} and {config['n_items']}."
        )
    cls = get_model_class(config["model"])
    model = cls(config["n_users"], config["n_items"], cls.config_from_dict(config["model_options"]))
    try:
        state = load_file(str(run_dir / "weights.safetensors"), device=device)
    except (SafetensorError, OSError) as e:
        raise RunDirError(f"{run_dir / 'weights.safetensors'} is corrupt ({e}).") from e
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise RunDirError(f"The weights in {run_dir} do not match model {config['model']!r} ({first}).") from e
    model.to(device).eval()
    try:
        seen = _load_csr(run_dir / "seen.npz")
    except (OSError, KeyError, ValueError) as e:
        raise RunDirError(f"{run_dir / 'seen.npz'} is unreadable ({e}).") from e
    metrics = json.loads((run_dir / "metrics.json").read_text()) if (run_dir / "metrics.json").exists() else None
    history = json.loads((run_dir / "history.json").read_text()) if (run_dir / "history.json").exists() else None
    return Run(run_dir, model, config, user_map, item_map, seen, metrics, history, _load_recent(run_dir, model))


def _load_recent(run_dir: Path, model: Recommender) -> np.ndarray | None:
    """The saved recent items of a sequential model's users, checked against the model (None if absent)."""
    path = run_dir / "recent.npz"
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            recent = np.asarray(z["items"])
    except (OSError, KeyError, ValueError) as e:
        raise RunDirError(f"{path} is unreadable ({e}).") from e
    if recent.ndim != 2 or recent.shape[0] != model.n_users + 1 or not np.issubdtype(recent.dtype, np.integer):
        raise RunDirError(f"{path} must hold an integer ({model.n_users + 1}, s) array, got {recent.shape}.")
    if recent.size and (recent.min() < 0 or recent.max() > model.n_items):
        raise RunDirError(f"{path} holds item ids outside 0..{model.n_items}.")
    return recent


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
