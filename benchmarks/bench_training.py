"""Training throughput of every trainable model: before/after the one-trainer refactor (issue 14), % of peak, peers.

Prints, in one run pinned to one core (``taskset``, the first allowed core; one torch/BLAS/OpenMP thread):

1. Training rows per second of one epoch for every registered gradient-trained model, **before** (the
   commit the refactor started from, ``--before-rev``, checked out as a git worktree) and **after** (this
   working tree), on the same fixed subsample with the same options (the model's ``train_defaults`` of
   the working tree). Each version runs in its own worker process; the two workers take turns model by
   model, so a slow spell of the shared machine hits both. rows/s = training rows (targets: one per
   interaction, or per non-padding target of a sequence batch) / the epoch's ``train_seconds``.
   Pair and sequence models train on ml-1m users sampled whole (all their interactions); playlist models
   on yes-big playlists sampled whole (ml-1m has no playlists). Staged models are measured on their own
   last stage (parts built but not trained); adversarial models on one epoch of their adversarial stage.
2. The share of the single-core float32 matmul peak (measured in the same run): FLOPs of one training
   step (forward + backward of one batch's loss, ``torch.utils.flop_counter.FlopCounterMode``, which
   counts matrix products and convolutions only) per row, times rows/s, over the peak.
3. Peers on the same data and core: ``implicit``'s CPU BPR against mf-bpr (rows/s; implicit draws one
   sample per non-zero per iteration), ``implicit``'s ALS against segue's wmf (seconds per iteration),
   and RecBole (its own virtual environment, ``benchmarks/setup_recbole.sh``) on the same ml-1m rows.
4. A table: model | rows/s before | rows/s after | speed-up | % of peak | peer | peer rows/s | ratio,
   where ratio = segue's speed / the peer's (> 1: segue is faster).

Each version's epoch is run ``--repeats`` times (a fresh model each time, the versions alternating) and
the fastest kept. The core is shared with other work, which can halve its speed for a while: the matmul
peak is sampled between models (the best sample is the peak), a short matmul sample is taken before
every epoch, and a speed-up whose two fastest epochs met different machine states is flagged ``~``.

Usage::

    SEGUE_DATA_DIR=../shared/data python benchmarks/bench_training.py [--quick] [--models mf-bpr,sasrec]
        [--rows 30000] [--repeats 2] [--before-rev eb0d703] [--no-before] [--no-recbole] [--json out.json]

The "before" checkout is an existing git worktree at ``--before-rev`` or one made in benchmarks/out/;
RecBole needs ``bash benchmarks/setup_recbole.sh`` once (without it that section says so and the rest
runs). The default run takes about 10-15 minutes on one core, within run_all.py's time limit per script;
``--quick`` is a two-minute smoke run (three models, 5,000 rows, one repeat).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.append(str(REPO))  # last: a PYTHONPATH checkout of segue (the "before" worker) stays first
from benchmarks.timing import matmul_peak  # noqa: E402

OUT = HERE / "out"
RECBOLE_PY = HERE / ".venv-recbole" / "bin" / "python"
BEFORE_REV = "eb0d703"
#: fastest before/after epochs whose adjacent matmul samples differ by more than this are flagged as unsteady
STATE_GAP = 1.5
PAIR_DATA = "ml-1m"
PLAYLIST_DATA = "yes-big"
#: segue model -> RecBole model of the same method
RECBOLE_PEERS = {
    "mf-bpr": "BPR",
    "neumf": "NeuMF",
    "sasrec": "SASRec",
    "caser": "Caser",
    "fpmc": "FPMC",
    "transrec": "TransRec",
}
#: RecBole models without a segue counterpart, printed for scale, with their options
RECBOLE_ONLY = {"GRU4Rec": {"embedding_size": 64, "hidden_size": 64, "loss_type": "BPR", "MAX_ITEM_LIST_LENGTH": 50}}


# -- measurement (runs in either version of segue: only APIs both have, or feature-detected) -------------
def new_api() -> bool:
    """Whether the imported segue has the one trainer (segue.training.batches)."""
    import importlib.util

    return importlib.util.find_spec("segue.training.batches") is not None


def subsample(data: Any, rows: int, seed: int = 0, key: str = "user") -> Any:
    """Whole ``key`` groups (users or playlists) in a seeded random order until ``rows`` rows; ids re-numbered."""
    keys = data.df[key].to_numpy()
    order = np.random.default_rng(seed).permutation(np.unique(keys))
    counts = np.bincount(keys)[order]
    k = int(np.searchsorted(np.cumsum(counts), rows)) + 1
    return data.take(np.isin(keys, order[:k])).compact()


def load_table(kind: str, rows: int, seed: int = 0) -> Any:
    """The benchmark's training table of ``kind`` (``pairs``: ml-1m users, ``playlists``: yes-big playlists)."""
    from segue.data.datasets import load_dataset

    if kind == "pairs":
        return subsample(load_dataset(PAIR_DATA, download=False, progress=False), rows, seed)
    from segue.data.playlists import preprocess_playlists

    data = preprocess_playlists(load_dataset(PLAYLIST_DATA, download=False, progress=False))
    return subsample(data, rows, seed, key="playlist")


def table_digest(data: Any) -> str:
    import hashlib

    cols = [c for c in ("user", "item", "playlist") if c in data.df.columns]
    return hashlib.sha256(np.ascontiguousarray(data.df[cols].to_numpy(np.int64)).tobytes()).hexdigest()[:16]


def is_playlist_model(cls: type) -> bool:
    return "group" in getattr(cls, "needs", ())


def _trainer_config(options: dict[str, Any]) -> tuple[Any, list[str]]:
    """A TrainConfig of this version from ``options``; keys this version does not know are dropped and named."""
    from segue.training.trainer import TrainConfig

    known = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in options.items() if k in known}), sorted(set(options) - known)


def _playlist_config(options: dict[str, Any]) -> Any:
    import segue.training.playlist as tp

    if hasattr(tp, "playlist_config"):
        return tp.playlist_config(**options, progress=False, threads=1)
    return tp.PlaylistTrainConfig(**options)


def _fit_new(model: Any, train: Any, options: dict[str, Any], adversarial: bool) -> tuple[Any, Any]:
    """One epoch of the model's own stage through the one trainer; returns (history, the config used)."""
    from segue.training.recipes import adversarial_stage
    from segue.training.trainer import Trainer

    cfg, _ = _trainer_config(options)
    own = dataclasses.replace(cfg, **model.final_stage_options())
    if adversarial:
        adv = dataclasses.replace(own, **{**model.adversary_options(), "adv_epochs": 1})
        return adversarial_stage(model, train, None, adv, log=None), adv
    return Trainer(own, log=None).fit(model, train, None), own


def _fit_old(model: Any, train: Any, options: dict[str, Any], adversarial: bool) -> Any:
    """The same stage through the version before the refactor (its per-family entry points)."""
    from segue.training.trainer import Trainer

    cfg, _ = _trainer_config(options)
    if adversarial:  # QUALSE family: BPR skipped, one QABPR epoch (adv_epochs=1 in the model options)
        from segue.training.quaternion import fit_qabpr

        return fit_qabpr(model, train, None, cfg, log=None, pretrained=True)
    if hasattr(model, "sdp") and hasattr(model, "pretrained"):  # SDMR: parts as given, frozen, fusion trained
        model.pretrained = True
        return model.fit(train, None, cfg, log=None)
    if hasattr(model, "set_neighbourhood"):  # CMN builds its neighbourhood in fit
        model.set_neighbourhood(train)
    c = model.config
    if getattr(c, "pretrain", False) and hasattr(c, "finetune_optimizer"):  # NeuMF++ fine-tuning stage
        cfg = dataclasses.replace(cfg, optimizer=c.finetune_optimizer, lr=c.finetune_lr)
    return Trainer(cfg, log=None).fit(model, train, None)


def _count_flops(model: Any, train: Any, cfg: Any, adversarial: bool) -> tuple[float, int]:
    """(FLOPs of one training step per row, training rows of an epoch), with the one trainer's batches."""
    from torch.utils.flop_counter import FlopCounterMode

    from segue.training.batches import batches_for
    from segue.training.trainer import batch_loss

    rng = np.random.default_rng(cfg.seed)
    batches = batches_for(model, train, cfg, rng)
    targets = getattr(batches, "targets", None)
    total_rows = int((targets != 0).sum()) if targets is not None else batches.n_rows
    batch = next(iter(batches.epoch(rng)))
    batch_rows = int((batch.targets != 0).sum()) if hasattr(batch, "targets") else len(batch)
    spec = cfg.loss_spec()
    model.train()
    with FlopCounterMode(display=False) as counter:
        from segue.training.adversarial import Adversary

        adversary = Adversary.from_config(model.adversary_tables(), cfg) if adversarial else None
        batch_loss(model, batch, spec, adversary).backward()
    model.zero_grad(set_to_none=True)
    model.eval()
    return counter.get_total_flops() / max(batch_rows, 1), total_rows


def measure(
    name: str,
    train: Any,
    *,
    options: dict[str, Any] | None = None,
    train_options: dict[str, Any] | None = None,
    adversarial: bool | None = None,
    flops: bool = True,
) -> dict[str, Any]:
    """One training epoch of model ``name`` on ``train`` with the imported segue; rows/s and FLOPs per row.

    ``train_options`` default to the model's ``train_defaults`` with one epoch on one CPU thread;
    ``adversarial`` (default: what the model declares) measures its adversarial stage instead.
    Returns ``{"skipped": reason}`` for a model whose own stage trains nothing (a fusion of frozen parts).
    """
    from segue.models.base import get_model_class

    torch.set_num_threads(1)
    cls = get_model_class(name)
    playlist = is_playlist_model(cls)
    opts = dict(options or {})
    if playlist:
        opts.setdefault("n_playlists", len(train.group_maps["playlist"]))
    model = cls(train.n_users, train.n_items, cls.config_from_dict(opts))
    if adversarial is None:
        adversarial = bool(getattr(model, "adversarial", False))
    new = new_api()
    if train_options is None:
        train_options = default_train_options(cls)
    if new:  # the parts of a staged model, built but not trained, assembled as segue.training.fit does
        seed, context = train_options.get("seed", 0), train_options.get("context", "history")
        model.assemble(train, model.parts(), seed=seed, context=context)
    if not any(p.requires_grad for p in model.parameters()):
        return {"skipped": "a fusion of frozen parts: its own stage trains nothing"}
    dropped: list[str] = []
    cfg = None
    if playlist:
        from segue.training.playlist import fit_playlist

        history = fit_playlist(
            model, train, None, _playlist_config(train_options), apr=adversarial, skip_bpr=adversarial, log=None
        )
        cfg = _playlist_config(train_options) if new else None
    elif new:
        history, cfg = _fit_new(model, train, train_options, adversarial)
    else:
        _, dropped = _trainer_config(train_options)
        history = _fit_old(model, train, train_options, adversarial)
    rec = history.epochs[-1]
    seconds = float(rec.get("train_seconds", rec.get("seconds")))
    out: dict[str, Any] = {"stage": "adversarial" if adversarial else "plain", "seconds": seconds}
    if dropped:
        out["dropped_options"] = dropped
    rows = len(train)
    if new and flops and cfg is not None:
        if playlist:  # fit_playlist's adversarial config: the APR names mapped onto the trainer's
            cfg = dataclasses.replace(cfg, adv_epochs=1)
        out["flops_per_row"], rows = _count_flops(model, train, cfg, adversarial)
    out["rows"] = rows
    out["rows_per_s"] = rows / seconds
    if "flops_per_row" in out:
        out["flops_per_s"] = out["flops_per_row"] * out["rows_per_s"]
    return out


def default_train_options(cls: type) -> dict[str, Any]:
    """The options both versions train with: the model's train_defaults, one epoch, one CPU thread, no log."""
    if is_playlist_model(cls):
        return {"epochs": 1, "apr_epochs": 1, "device": "cpu"}
    keep = {k: v for k, v in getattr(cls, "train_defaults", {}).items() if k not in ("patience", "monitor")}
    return {**keep, "epochs": 1, "threads": 1, "progress": False, "device": "cpu", "seed": 0}


def model_options(cls: type, adversarial_epochs: int = 1) -> dict[str, Any]:
    """Model options of the benchmark: defaults, with one adversarial epoch where the model's config sets it."""
    fields = {f.name for f in dataclasses.fields(cls.Config)} if dataclasses.is_dataclass(cls.Config) else set()
    return {"adv_epochs": adversarial_epochs} if "adv_epochs" in fields else {}


def worker(rows: int, seed: int) -> int:
    """Answer one JSON request per stdin line with one JSON line (the subprocess side of ``main``)."""
    import segue

    torch.set_num_threads(1)
    tables: dict[str, Any] = {}
    print(json.dumps({"ready": True, "segue": segue.__file__, "new_api": new_api()}), flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        try:
            kind = req["data"]
            if kind not in tables:
                tables[kind] = load_table(kind, rows, seed)
            train = tables[kind]
            peak_at = matmul_peak(n=1024, reps=3)  # the state of the shared core just before this epoch
            res = measure(
                req["model"],
                train,
                options=req.get("options"),
                train_options=req.get("train_options"),
                adversarial=req.get("adversarial"),
                flops=req.get("flops", True),
            )
            res["digest"] = table_digest(train)
            res["peak_at"] = peak_at
        except Exception as e:  # one failing model must not stop the benchmark
            res = {"error": f"{type(e).__name__}: {e}".splitlines()[0][:300]}
        print(json.dumps(res, default=float), flush=True)
    return 0


# -- the orchestrating side (the working tree's segue) ----------------------------------------------------
def pin_prefix() -> list[str]:
    """``taskset -c N`` on the first core this process may use (every measurement runs there), if taskset exists."""
    if not shutil.which("taskset") or not hasattr(os, "sched_getaffinity"):
        return []
    return ["taskset", "-c", str(min(os.sched_getaffinity(0)))]


class Worker:
    """A ``--worker`` subprocess on one version of segue (``pythonpath``)."""

    def __init__(self, label: str, pythonpath: Path, rows: int, seed: int) -> None:
        env = {
            **os.environ,
            "PYTHONPATH": str(pythonpath),
            "OPENBLAS_NUM_THREADS": "1",
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "SEGUE_THREADS": "1",
        }
        cmd = [*pin_prefix(), sys.executable, str(Path(__file__).resolve()), "--worker", f"--rows={rows}"]
        cmd.append(f"--seed={seed}")
        self.label = label
        self.proc = subprocess.Popen(
            cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=str(REPO), bufsize=1
        )
        hello = self._read()
        self.info = hello

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"The {self.label} worker exited (code {self.proc.wait()}); see its stderr above.")
        return json.loads(line)

    def ask(self, request: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=60)


def before_tree(rev: str) -> Path:
    """A checkout of ``rev``: an existing git worktree at that commit, else a new detached one in benchmarks/out/."""

    def git(*a: str) -> str:
        return subprocess.run(["git", *a], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()

    full = git("rev-parse", f"{rev}^{{commit}}")
    for block in git("worktree", "list", "--porcelain").split("\n\n"):
        fields = dict(line.split(" ", 1) for line in block.splitlines() if " " in line)
        if fields.get("HEAD") == full and (Path(fields["worktree"]) / "segue").is_dir():
            return Path(fields["worktree"])
    path = OUT / f"before-{rev}"  # benchmarks/out/ is gitignored
    if not (path / "segue").is_dir():
        git("worktree", "add", "--detach", str(path), rev)
    return path


def peer_implicit(train: Any, dim: int, bpr_iterations: int, als_iterations: int) -> dict[str, Any]:
    """implicit's CPU BPR (rows/s over nnz samples per iteration) and ALS (s/iteration) beside segue's wmf."""
    try:
        from implicit.cpu.als import AlternatingLeastSquares
        from implicit.cpu.bpr import BayesianPersonalizedRanking
    except ImportError as e:
        return {"error": f"implicit is not installed ({e})"}
    import threadpoolctl

    from segue.models.mf import WMF

    x = train.to_csr()
    x.data[:] = 1
    x = x.astype(np.float32)
    out: dict[str, Any] = {"nnz": int(x.nnz)}

    def per_iteration(model: Any) -> float:
        stamps: list[float] = []
        t0 = time.perf_counter()
        model.fit(x, show_progress=False, callback=lambda *_: stamps.append(time.perf_counter()))
        gaps = np.diff([t0, *stamps])
        return float(np.median(gaps[1:] if len(gaps) > 1 else gaps))

    with threadpoolctl.threadpool_limits(1, "blas"):
        bpr = BayesianPersonalizedRanking(factors=dim, iterations=bpr_iterations, random_state=0, num_threads=1)
        s = per_iteration(bpr)
        out["bpr"] = {"seconds_per_iteration": s, "rows_per_s": x.nnz / s, "factors": dim}
        wcfg = WMF.Config(iterations=als_iterations)
        als = AlternatingLeastSquares(
            factors=wcfg.factors,
            regularization=wcfg.regularization,
            alpha=wcfg.alpha,
            iterations=als_iterations,
            random_state=0,
            calculate_training_loss=False,
        )
        out["als"] = {"seconds_per_iteration": per_iteration(als), "factors": wcfg.factors}
    wmf = WMF(train.n_users, train.n_items, wcfg)
    t0 = time.perf_counter()
    wmf.fit(train)
    out["wmf"] = {"seconds_per_iteration": (time.perf_counter() - t0) / als_iterations, "iterations": als_iterations}
    return out


def write_recbole_atomic(train: Any, name: str) -> Path:
    """The table as a RecBole atomic file ``<out>/recbole/<name>/<name>.inter`` (user, item, timestamp)."""
    folder = OUT / "recbole" / name
    folder.mkdir(parents=True, exist_ok=True)
    ts = train.df["timestamp"].to_numpy() if train.has_time else np.arange(len(train), dtype=np.float64)
    with open(folder / f"{name}.inter", "w") as f:
        f.write("user_id:token\titem_id:token\ttimestamp:float\n")
        for u, i, t in zip(train.users, train.items, ts, strict=True):
            f.write(f"{u}\t{i}\t{t:.0f}\n")
    return folder.parent


def recbole_spec(name: str, cls: type) -> dict[str, Any]:
    """The RecBole run matching segue model ``name``: its batch size, negatives, lr, sizes and window."""
    d = default_train_options(cls)
    c = {f.name: f.default for f in dataclasses.fields(cls.Config)}
    model = RECBOLE_PEERS[name]
    dim = int(c.get("dim", c.get("factors", 64)))
    params: dict[str, Any] = {"embedding_size": dim}
    if model == "NeuMF":
        params = {"mf_embedding_size": dim, "mlp_embedding_size": dim, "mlp_hidden_size": [4 * dim, 2 * dim, dim],
                  "dropout_prob": 0.0}  # fmt: skip
    elif model == "SASRec":
        params = {"hidden_size": dim, "inner_size": dim, "n_layers": c["n_blocks"], "n_heads": c["n_heads"],
                  "hidden_dropout_prob": c["dropout"], "attn_dropout_prob": c["dropout"], "loss_type": "BPR",
                  "MAX_ITEM_LIST_LENGTH": c["max_len"]}  # fmt: skip
    elif model == "Caser":
        params.update(n_h=c["n_h"], n_v=c["n_v"], dropout_prob=c["dropout"], loss_type="BPR",
                      MAX_ITEM_LIST_LENGTH=c["s"])  # fmt: skip
    elif model in ("FPMC", "TransRec"):
        params["MAX_ITEM_LIST_LENGTH"] = int(c.get("s", 1))
    return {
        "model": model,
        "segue": name,
        "batch_size": int(d.get("batch_size", 1024)),
        "negatives": int(d.get("n_negatives", 1)),
        "lr": float(d.get("lr", 1e-3)),
        "params": params,
    }


def peer_recbole(train: Any, models: list[str], batches: int, timeout: float) -> dict[str, Any]:
    """RecBole's rows/s on the same rows (benchmarks/recbole_runner.py in benchmarks/.venv-recbole)."""
    if not RECBOLE_PY.exists():
        return {"error": f"{RECBOLE_PY.relative_to(REPO)} is missing; run `bash benchmarks/setup_recbole.sh` first"}
    from segue.models.base import get_model_class

    specs = [recbole_spec(m, get_model_class(m)) for m in models]
    specs += [{"model": m, "segue": None, "batch_size": 256, "negatives": 1, "lr": 1e-3, "params": p}
              for m, p in RECBOLE_ONLY.items()]  # fmt: skip
    root = write_recbole_atomic(train, "segue_bench")
    cmd = [*pin_prefix(), str(RECBOLE_PY), str(HERE / "recbole_runner.py"), "--data-path", str(root)]
    cmd += ["--dataset", "segue_bench", "--batches", str(batches), "--specs", json.dumps(specs)]
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env.pop("PYTHONPATH", None)
    try:
        res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=str(OUT))
    except subprocess.TimeoutExpired:
        return {"error": f"RecBole did not finish in {timeout:.0f} s"}
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
    if res.returncode != 0 or not lines:
        tail = (res.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"RecBole runner failed (exit {res.returncode}): {tail[:300]}"}
    return json.loads(lines[-1])


def _best(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The fastest of repeated measurements (the FLOP count, taken once, carried over); else the first answer."""
    ok = [r for r in runs if "rows_per_s" in r]
    if not ok:
        return runs[0] if runs else {}
    best = dict(max(ok, key=lambda r: r["rows_per_s"]))
    if "flops_per_row" in ok[0]:
        best["flops_per_row"] = ok[0]["flops_per_row"]
        best["flops_per_s"] = best["flops_per_row"] * best["rows_per_s"]
    best["all_rows_per_s"] = [r["rows_per_s"] for r in ok]
    return best


def _si(v: float | None) -> str:
    if v is None or not math.isfinite(v) or v <= 0:
        return "-"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if v >= scale:
            return f"{v / scale:.3g}{unit}"
    return f"{v:.3g}"


def _fmt(v: float | None, digits: int = 0) -> str:
    if v is None or not math.isfinite(v):
        return "-"
    return f"{v:,.{digits}f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="", help="comma list of model names (default: every trainable model)")
    ap.add_argument("--rows", type=int, default=30000, help="training rows of the subsample (whole users/playlists)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3, help="epochs per model and version (fresh model each); best kept")
    ap.add_argument("--before-rev", default=BEFORE_REV, help="the commit the refactor started from")
    ap.add_argument("--before-path", help="a checkout of --before-rev (default: a worktree at it, made if missing)")
    ap.add_argument("--no-before", action="store_true", help="measure the working tree only")
    ap.add_argument("--no-recbole", action="store_true")
    ap.add_argument("--recbole-batches", type=int, default=100, help="RecBole batches per model (or one epoch)")
    ap.add_argument("--quick", action="store_true", help="a 2-minute smoke run: few models, 5k rows")
    ap.add_argument("--json", help="also write the figures to this JSON file")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker(args.rows, args.seed)
    if args.quick:
        args.rows = min(args.rows, 5000)
        args.repeats = 1
        args.recbole_batches = min(args.recbole_batches, 10)
        if not args.models:
            args.models = "mf-bpr,sasrec,mdr"

    if pin_prefix() and os.environ.get("_SEGUE_BENCH_PINNED") != "1":  # re-exec on core 0
        env = {**os.environ, "_SEGUE_BENCH_PINNED": "1"}
        cmd = [*pin_prefix(), sys.executable, str(Path(__file__).resolve()), *(argv or sys.argv[1:])]
        return subprocess.run(cmd, env=env).returncode
    torch.set_num_threads(1)
    t_start = time.perf_counter()

    from segue.models.base import list_models

    registry = list_models()
    wanted = [m.strip() for m in args.models.split(",") if m.strip()] or list(registry)
    unknown = [m for m in wanted if m not in registry]
    if unknown:
        print(f"Unknown model(s) {', '.join(unknown)}; known: {', '.join(registry)}.", file=sys.stderr)
        return 2
    skipped: dict[str, str] = {}
    todo: list[str] = []
    for name in wanted:
        cls = registry[name]
        if not cls.trainable:
            skipped[name] = "closed-form (trainable = False)"
        elif cls.batch_kind == "clips":
            skipped[name] = "audio model (batch_kind clips: trains on mel clips, not interaction rows)"
        else:
            todo.append(name)

    report: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "torch": torch.__version__, "pinned": " ".join(pin_prefix()) or None},
        "rows": args.rows,
        "data": {"pairs": PAIR_DATA, "playlists": PLAYLIST_DATA},
        "before_rev": None if args.no_before else args.before_rev,
        "models": {},
        "skipped": skipped,
    }
    peaks = [matmul_peak(reps=10)]
    print(f"single-core float32 matmul peak (2048^3, one thread, best of 10): {peaks[0] / 1e9:.1f} GFLOP/s", flush=True)

    after = Worker("after", REPO, args.rows, args.seed)
    before = None
    if not args.no_before:
        try:
            path = Path(args.before_path) if args.before_path else before_tree(args.before_rev)
            before = Worker("before", path, args.rows, args.seed)
            report["before_path"] = str(path)
        except (subprocess.CalledProcessError, RuntimeError, OSError) as e:
            print(f"note: no before measurement: {e}", file=sys.stderr)
    print(f"after: {after.info['segue']}" + (f"\nbefore: {before.info['segue']}" if before else ""), flush=True)
    print(f"\n1. one training epoch per model (best of {args.repeats}, the versions taking turns), "
          f"{args.rows:,}-row subsample: whole users of {PAIR_DATA}, playlist models whole playlists of "
          f"{PLAYLIST_DATA}")  # fmt: skip
    print(f"{'model':10} {'data':9} {'stage':11} {'rows':>7} {'before r/s':>11} {'after r/s':>10} {'x':>6} "
          f"{'FLOP/row':>9} {'GFLOP/s':>8}")  # fmt: skip
    for name in todo:
        cls = registry[name]
        kind = "playlists" if is_playlist_model(cls) else "pairs"
        req = {"model": name, "data": kind, "options": model_options(cls), "train_options": default_train_options(cls)}
        runs_a: list[dict[str, Any]] = []
        runs_b: list[dict[str, Any]] = []
        for r in range(args.repeats):
            if r % 2 and before is not None and runs_a:  # alternate which version goes first
                runs_b.append(before.ask({**req, "adversarial": runs_a[0]["stage"] == "adversarial", "flops": False}))
            runs_a.append(after.ask({**req, "flops": r == 0}))
            if "rows_per_s" not in runs_a[-1]:
                break
            if r % 2 == 0 and before is not None:
                runs_b.append(before.ask({**req, "adversarial": runs_a[0]["stage"] == "adversarial", "flops": False}))
        peaks.append(matmul_peak(reps=3))
        a, b = _best(runs_a), (_best(runs_b) if runs_b else {})
        if "skipped" in a:
            skipped[name] = a["skipped"]
            continue
        row: dict[str, Any] = {"data": PLAYLIST_DATA if kind == "playlists" else PAIR_DATA, "after": a}
        if runs_b:
            row["before"] = b
            if "digest" in b and b["digest"] != a.get("digest"):
                row["warning"] = "the two versions built different subsamples"
        report["models"][name] = row
        if "error" in a:
            print(f"{name:10} error (after): {a['error']}", flush=True)
            continue
        row["speedup"] = a["rows_per_s"] / b["rows_per_s"] if "rows_per_s" in b else None
        if "peak_at" in b and max(a["peak_at"], b["peak_at"]) > STATE_GAP * min(a["peak_at"], b["peak_at"]):
            row["unsteady"] = True
        print(
            f"{name:10} {row['data']:9} {a['stage']:11} {a['rows']:7d} {_fmt(b.get('rows_per_s')):>11} "
            f"{_fmt(a['rows_per_s']):>10} {_fmt(row['speedup'], 2):>6} {_si(a.get('flops_per_row')):>9} "
            f"{_fmt(a.get('flops_per_s', math.nan) / 1e9, 2):>8}"
            + ("  ~" if row.get("unsteady") else "")
            + (f"  (before: {b['error']})" if "error" in b else "")
            + (f"  ({row['warning']})" if "warning" in row else ""),
            flush=True,
        )
    after.close()
    if before is not None:
        before.close()
    if any(row.get("unsteady") for row in report["models"].values()):
        print(f"~: the fastest before and after epochs ran while the core's matmul speed differed by more than "
              f"{STATE_GAP}x (other work on the machine); that speed-up is not reliable")  # fmt: skip
    peaks.append(matmul_peak(reps=10))
    peak = max(peaks)
    report["peak_flops"] = {"samples": peaks, "used": peak}
    for row in report["models"].values():
        if row["after"].get("flops_per_s"):
            row["peak_share"] = row["after"]["flops_per_s"] / peak
    print(
        f"\n2. matmul peak: {peak / 1e9:.1f} GFLOP/s, the best of {len(peaks)} samples taken between models "
        f"(lowest {min(peaks) / 1e9:.1f}: the core is shared); % of peak = FLOP/row x rows/s / peak",
        flush=True,
    )

    # 3. peers, on the ml-1m subsample
    from segue.data.datasets import load_dataset

    try:
        pairs = subsample(load_dataset(PAIR_DATA, download=False, progress=False), args.rows, args.seed)
    except Exception as e:  # a missing dataset only loses the peers
        pairs = None
        report["peers_error"] = f"{PAIR_DATA} could not be loaded: {e}"
    peers: dict[str, Any] = {}
    if pairs is not None:
        from segue.models.mf import MFBPR

        its = (5, 3) if args.quick else (20, 5)
        peers["implicit"] = peer_implicit(pairs, MFBPR.Config().dim, *its)
        rb_models = [m for m in todo if m in RECBOLE_PEERS]
        if args.no_recbole:
            peers["recbole"] = {"error": "skipped (--no-recbole)"}
        else:
            peers["recbole"] = peer_recbole(pairs, rb_models, args.recbole_batches, timeout=600)
    report["peers"] = peers
    print("\n3. peers on the same ml-1m rows and core")
    imp = peers.get("implicit", {})
    if "error" in imp:
        print(f"implicit: {imp['error']}")
    elif imp:
        print(f"implicit BPR: {imp['bpr']['rows_per_s']:,.0f} rows/s ({imp['nnz']:,} samples per iteration, "
              f"{imp['bpr']['factors']} factors, 1 thread)")  # fmt: skip
        print(f"implicit ALS: {imp['als']['seconds_per_iteration']:.3f} s/iteration; segue wmf (ALS through "
              f"implicit, same options): {imp['wmf']['seconds_per_iteration']:.3f} s/iteration")  # fmt: skip
    rb = peers.get("recbole", {})
    if "error" in rb:
        print(f"RecBole: {rb['error']}")
    elif rb:
        print(f"RecBole {rb.get('version')} (torch {rb.get('torch')}):")
        for m, r in rb.get("models", {}).items():
            if "error" in r:
                print(f"  {m:9} error: {r['error']}")
            else:
                print(f"  {m:9} {r['rows_per_s']:>10,.0f} rows/s  ({r['rows']:,} rows, {r['batches']} batches of "
                      f"{r['batch_size']}, {r['negatives']} negative(s))")  # fmt: skip

    # 4. the table
    print("\n4. summary (rows/s; ratio = segue speed / peer speed, > 1: segue faster)")
    header = (f"{'model':10} | {'rows/s before':>13} | {'rows/s after':>12} | {'speed-up':>8} | {'% of peak':>9} | "
              f"{'peer':16} | {'peer rows/s':>11} | {'ratio':>6}")  # fmt: skip
    print(header)
    print("-" * len(header))
    table = []
    for name, row in report["models"].items():
        a, b = row["after"], row.get("before", {})
        peer, peer_rate = "", None
        if name == "mf-bpr" and "bpr" in imp:
            peer, peer_rate = "implicit BPR", imp["bpr"]["rows_per_s"]
        elif name in RECBOLE_PEERS and RECBOLE_PEERS[name] in rb.get("models", {}):
            r = rb["models"][RECBOLE_PEERS[name]]
            peer, peer_rate = f"RecBole {RECBOLE_PEERS[name]}", r.get("rows_per_s")
        after_rate = a.get("rows_per_s")
        ratio = after_rate / peer_rate if after_rate and peer_rate else None
        table.append({"model": name, "before": b.get("rows_per_s"), "after": after_rate, "speedup": row.get("speedup"),
                      "peak_share": row.get("peak_share"), "peer": peer or None, "peer_rows_per_s": peer_rate,
                      "ratio": ratio})  # fmt: skip
        share = row.get("peak_share")
        print(
            f"{name:10} | {_fmt(b.get('rows_per_s')):>13} | {_fmt(after_rate):>12} | {_fmt(row.get('speedup'), 2):>8} | "
            f"{_fmt(None if share is None else 100 * share, 3):>9} | {peer or '-':16} | {_fmt(peer_rate):>11} | "
            f"{_fmt(ratio, 2):>6}"
        )
        if name == "mf-bpr" and "als" in imp:
            s_w, s_a = imp["wmf"]["seconds_per_iteration"], imp["als"]["seconds_per_iteration"]
            print(f"{'wmf':10} | {'closed-form':>13} | {f'{s_w:.3f} s/it':>12} | {'-':>8} | {'-':>9} | "
                  f"{'implicit ALS':16} | {f'{s_a:.3f} s/it':>11} | {s_a / s_w:>6.2f}")  # fmt: skip
            table.append({"model": "wmf", "seconds_per_iteration": s_w, "peer": "implicit ALS",
                          "peer_seconds_per_iteration": s_a, "ratio": s_a / s_w})  # fmt: skip
    report["table"] = table
    print("% of peak '-': no matrix products in the loss (FlopCounterMode counts matmuls and convolutions only)")
    for name, why in skipped.items():
        print(f"skipped {name}: {why}")
    print(f"\ntotal {time.perf_counter() - t_start:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
