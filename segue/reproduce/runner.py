"""One runner for the reproduction tables: a table is a TOML spec file, the runner does the rest.

A spec (``segue/reproduce/specs/<name>.toml``, loaded into :class:`TableSpec`) names the
datasets, the protocol, the models with their options, dev grids and paper numbers, the compute
caps (and the tiny ``[quick]`` caps), the seeds, the orderings the paper claims and the notes
file. The runner

* **prepares** each dataset once with the spec's ``prepare`` hook (split, dev and test sets);
* runs every (model, grid point, seed) **row** through the model's ``fit`` hook (default
  :func:`pipeline_row`: ``segue.pipeline.run`` on a registry model); a hook returns the dev and
  the test metrics of one trained model;
* **caches** each row's result in a JSON-lines file keyed by a hash of the row's whole config
  (table, dataset, model, options, train options, caps, seed, protocol), so a rerun **resumes**:
  a cached row is not trained again (unless a row that depends on its trained model is not
  cached: then it is retrained to hand that model over);
* **selects** the grid point of a model on the dev metrics only (``select``, compared in order);
  the test metrics of the other points are kept for transparency and never used to choose;
* or, for a model with a ``scan`` instead of a grid, runs a **coordinate search** on dev
  (:func:`coordinate_scan`): one axis after the other (e.g. ``options.reg``, then ``options.factors``),
  each scanned from its ``start`` towards both ends until ``patience`` values in a row bring no new
  best, and widened (``widen``) past its last value while the largest value scanned is the best (so the choice
  ends interior). Scan points run on the first seed only, each a cached row (a rerun replays the scan
  from the cache); the chosen point then runs on every seed. ``--quick`` scans too, under its caps;
* hands a row with ``options_from = LABEL`` the dev-chosen options of that earlier row (same
  dataset) under its own (ablations "with the hyper-parameters of RME"); they are part of its cache key;
* averages the chosen point's seeds (mean, sample std and the per-seed test metrics, ``per_seed``);
* stops starting rows once the table's **time budget** is spent (the rows left are listed);
* **writes** one results file pair, ``<out>/<name>.json`` and ``.md``: ours, the paper's number and
  the difference per metric (:func:`segue.evaluation.report.write_results`), the orderings the
  paper claims checked on our test numbers, the caps, and a link to ``<name>.notes.md`` (prose).

Table-specific logic lives in small hooks referenced from the spec as ``"module:function"``.
Cache: ``--cache DIR``, else ``$SEGUE_CACHE/reproduce``, else ``~/.cache/segue/reproduce``.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib
import itertools
import json
import os
import sys
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from segue.errors import ConfigError

SPEC_PACKAGE = "segue.reproduce.specs"


def cache_root() -> Path:
    """``$SEGUE_CACHE/reproduce``, else ``~/.cache/segue/reproduce`` (never a path of one machine)."""
    base = os.environ.get("SEGUE_CACHE")
    return (Path(base).expanduser() if base else Path("~/.cache/segue").expanduser()) / "reproduce"


# -- the spec ---------------------------------------------------------------------------------


def _typed(cls: type, data: dict[str, Any], where: str) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}.")
    return cls(**data)


@dataclass
class ScanAxis:
    """One axis of a model's dev scan (:func:`coordinate_scan`); validated by :meth:`validate`."""

    key: str  # "options.NAME" or "train.NAME"
    values: list[float]  # strictly increasing
    start: float | None = None  # the value the scan starts from, towards both ends (default: the first)
    patience: int = 1  # values in a row without a new best before a direction stops
    widen: list[float] = field(default_factory=list)  # past the last value, scored while the largest is the best
    datasets: list[str] = field(default_factory=list)  # [] = every dataset of the table

    @property
    def origin(self) -> float:
        return self.values[0] if self.start is None else self.start

    def validate(self, where: str) -> None:
        part, _, name = self.key.partition(".")
        if part not in ("options", "train") or not name:
            raise ConfigError(f"{where}: a scan key is 'options.NAME' or 'train.NAME', got {self.key!r}.")
        nums = [*self.values, *self.widen]
        if not self.values or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in nums):
            raise ConfigError(f"{where}: scan {self.key} needs numbers as values and widen, got {nums}.")
        if any(b <= a for a, b in itertools.pairwise(nums)):
            raise ConfigError(f"{where}: scan {self.key} needs values, then widen, strictly increasing, got {nums}.")
        if self.start is not None and self.start not in self.values:
            raise ConfigError(f"{where}: scan {self.key} starts at {self.start}, which is not one of its values.")
        if isinstance(self.patience, bool) or not isinstance(self.patience, int) or self.patience < 1:
            raise ConfigError(f"{where}: scan {self.key} needs an integer patience >= 1, got {self.patience!r}.")


@dataclass
class ModelSpec:
    """One row of the table (per dataset): a model, its options, its dev grid and the paper's numbers."""

    label: str
    model: str = ""  # registry name for the default hook (default: the label)
    fit: str = ""  # "module:function" hook; "" = pipeline_row
    datasets: list[str] = field(default_factory=list)  # [] = every dataset of the table
    options: dict[str, Any] = field(default_factory=dict)  # model options
    train: dict[str, Any] = field(default_factory=dict)  # TrainConfig overrides (or the hook's own options)
    grid: list[dict[str, Any]] = field(default_factory=list)  # dev grid: points {options, train[, datasets]}
    scan: list[ScanAxis] = field(default_factory=list)  # or a dev coordinate search (instead of a grid)
    options_from: str = ""  # label of an earlier row whose dev-chosen options this row starts from
    depends: list[str] = field(default_factory=list)  # labels whose trained models the hook reads
    paper: dict[str, dict[str, float]] = field(default_factory=dict)  # dataset (or "*") -> metric -> value
    paper_other: dict[str, dict[str, float]] = field(default_factory=dict)  # other paper columns (e.g. "AOTM")
    reference: bool = False  # a reference row (popularity, random): not a model of the paper

    def paper_for(self, dataset: str) -> dict[str, float] | None:
        return self.paper.get(dataset) or self.paper.get("*")


@dataclass
class TableSpec:
    """A reproduction table as data (see the module docstring); load with :meth:`from_toml`."""

    name: str
    title: str
    paper: str
    metrics: list[str]
    datasets: list[str]
    models: list[ModelSpec]
    prepare: str  # "module:function" (dataset, spec, caps) -> prepared object
    select: list[str] = field(default_factory=list)  # dev metrics compared in order (default: metrics)
    protocol: dict[str, Any] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=lambda: [0])
    caps: dict[str, Any] = field(default_factory=dict)  # passed to every hook; budget_seconds = table budget
    dataset_caps: dict[str, dict[str, Any]] = field(default_factory=dict)  # per-dataset overrides of caps
    quick: dict[str, Any] = field(default_factory=dict)  # caps overrides of --quick (tiny, CI-sized)
    quick_datasets: list[str] = field(default_factory=list)  # datasets of --quick (default: the first)
    same_data: list[str] = field(default_factory=list)  # datasets that are the paper's own data
    checks: list[dict[str, Any]] = field(default_factory=list)  # {"better": label, "than": [labels][, "metrics"]}
    notes: str = ""  # file name beside the results (docs/results/<name>.notes.md)
    markdown: str = ""  # optional hook (result) -> extra Markdown appended to the table
    lower_is_better: list[str] = field(default_factory=list)  # metrics where less is better (ranks), for checks

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "spec") -> TableSpec:
        data = dict(data)
        models = [_model_spec(m, f"{where} [[models]]") for m in data.pop("models", [])]
        spec = _typed(cls, {**data, "models": models}, where)
        spec.validate(where)
        return spec

    @classmethod
    def from_toml(cls, path: str | Path) -> TableSpec:
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise ConfigError(f"Cannot read the reproduction spec {path} ({e}).") from e
        return cls.from_dict(data, str(path))

    def validate(self, where: str = "spec") -> None:
        labels = [m.label for m in self.models]
        if len(set(labels)) != len(labels):
            raise ConfigError(f"{where}: duplicate model labels.")
        known = set(labels)
        for m in self.models:
            for d in [*m.depends, *([m.options_from] if m.options_from else [])]:
                if d not in known or labels.index(d) >= labels.index(m.label):
                    raise ConfigError(f"{where}: {m.label} depends on {d!r}, which must be a model listed before it.")
            if m.scan and m.grid:
                raise ConfigError(f"{where}: {m.label} has both a grid and a scan; give one of them.")
            for a in m.scan:
                a.validate(f"{where} {m.label}")
                if set(a.datasets) - set(self.datasets):
                    raise ConfigError(f"{where}: {m.label}'s scan {a.key} names datasets the table does not have.")
        for c in self.checks:
            if set(c) - {"better", "than", "metrics"} or not isinstance(c.get("than"), list):
                raise ConfigError(f"{where}: a check is {{better = LABEL, than = [LABELS], metrics = [..]}}, got {c}.")
            if "metrics" in c and (not isinstance(c["metrics"], list) or set(c["metrics"]) - set(self.metrics)):
                raise ConfigError(f"{where}: a check's metrics must be a list of the table's metrics, got {c}.")
        if not self.metrics or not self.datasets:
            raise ConfigError(f"{where}: a table needs metrics and datasets.")

    def caps_for(self, dataset: str, quick: bool) -> dict[str, Any]:
        caps = {**self.caps, **self.dataset_caps.get(dataset, {})}
        return {**caps, **self.quick} if quick else caps


def _model_spec(data: Any, where: str) -> ModelSpec:
    if not isinstance(data, dict) or not all(isinstance(a, dict) for a in data.get("scan", [])):
        raise ConfigError(f"{where}: a model is a table and its scan a list of tables, got {data!r}.")
    scan = [_typed(ScanAxis, a, f"{where} scan") for a in data.get("scan", [])]
    return _typed(ModelSpec, {**data, "scan": scan}, where)


def spec_names() -> list[str]:
    """The tables that ship a spec file."""
    return sorted(p.name[:-5] for p in resources.files(SPEC_PACKAGE).iterdir() if p.name.endswith(".toml"))


def load_spec(name: str) -> TableSpec:
    """The packaged spec ``segue/reproduce/specs/<name>.toml``."""
    res = resources.files(SPEC_PACKAGE) / f"{name}.toml"
    if not res.is_file():
        raise ConfigError(f"No reproduction spec {name!r}; known: {', '.join(spec_names())}.")
    return TableSpec.from_dict(tomllib.loads(res.read_text()), f"{name}.toml")


def resolve(ref: str) -> Callable[..., Any]:
    """A hook ``"module:function"`` (a module under segue.reproduce may be given without the prefix)."""
    if ":" not in ref:
        raise ConfigError(f"A hook is 'module:function', got {ref!r}.")
    mod, fn = ref.split(":", 1)
    try:
        module = importlib.import_module(mod if "." in mod else f"segue.reproduce.{mod}")
        return getattr(module, fn)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"Cannot load the hook {ref!r} ({e}).") from e


# -- rows and the cache ---------------------------------------------------------------------


@dataclass
class Row:
    """What the runner hands a fit hook: one (dataset, model, grid point, seed) and the table's caps."""

    spec: TableSpec
    model: ModelSpec
    dataset: str
    options: dict[str, Any]
    train: dict[str, Any]
    caps: dict[str, Any]
    seed: int
    quick: bool
    trained: dict[str, Any]  # label -> trained model of this dataset (the rows this one depends on)

    def config(self) -> dict[str, Any]:
        return {
            "table": self.spec.name,
            "dataset": self.dataset,
            "model": self.model.label,
            "registry": self.model.model or self.model.label,
            "fit": self.model.fit,
            "options": self.options,
            "train": self.train,
            "caps": self.caps,
            "seed": self.seed,
            "protocol": self.spec.protocol,
            "depends": self.model.depends,
        }


def config_key(config: dict[str, Any]) -> str:
    """The cache key of a row: sha256 of its config as canonical JSON (first 16 hex digits)."""
    text = json.dumps(config, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class RunCache:
    """Finished rows as JSON lines ``{"key", "config", "result"}``; the last line of a key wins."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.rows: dict[str, dict[str, Any]] = {}
        if path is not None and path.exists():
            for line in path.read_text().splitlines():
                if line.strip():
                    entry = json.loads(line)
                    self.rows[entry["key"]] = entry["result"]

    def get(self, key: str) -> dict[str, Any] | None:
        return self.rows.get(key)

    def put(self, key: str, config: dict[str, Any], result: dict[str, Any]) -> None:
        self.rows[key] = result
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as f:
                f.write(json.dumps({"key": key, "config": config, "result": result}, default=_json) + "\n")


def _json(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


def select_on_dev(results: list[dict[str, Any]], keys: list[str]) -> int:
    """Index of the best grid point by its **dev** metrics compared in order (first wins ties); never test."""
    best, best_val = 0, None
    for i, r in enumerate(results):
        dev = r.get("dev") or {}
        val = tuple(float(dev.get(k, float("-inf"))) for k in keys)
        if best_val is None or val > best_val:
            best, best_val = i, val
    return best


Point = dict[str, dict[str, Any]]  # a grid or scan point: {"options": {...}, "train": {...}}


def coordinate_scan(
    axes: list[ScanAxis], point: Point, score: Callable[[Point], tuple[float, ...]]
) -> tuple[Point, list[dict[str, Any]]]:
    """The dev coordinate search of a model's ``scan``: the chosen point and a summary per axis.

    Every axis starts at its ``start`` value; then, one axis after the other (the others held at their
    current values), the values are scored from ``start`` towards the end and towards the front of the
    list, each direction stopping after ``patience`` values in a row without a new best; the better end
    wins (ties: towards the end). While the best is the largest value scored, the ``widen`` values are
    scored in order. ``score`` returns a point's **dev** metrics (compared as tuples; never test); it is
    called once per distinct point.
    Summary: ``{"key", "chosen", "scanned", "interior"}`` (interior: neither the smallest nor the largest
    value scanned).
    """
    point = {"options": dict(point.get("options", {})), "train": dict(point.get("train", {}))}
    for a in axes:
        part, name = a.key.split(".", 1)
        point[part][name] = a.origin
    scores: dict[str, tuple[float, ...]] = {}  # every distinct point is scored once, whichever axis meets it
    summary = []
    for a in axes:
        part, name = a.key.split(".", 1)
        seen: dict[float, tuple[float, ...]] = {}

        def at(v: float, part: str = part, name: str = name, seen: dict[float, Any] = seen) -> tuple[float, ...]:
            if v not in seen:
                cand = {**point, part: {**point[part], name: v}}
                key = json.dumps(cand, sort_keys=True, default=str)
                if key not in scores:
                    scores[key] = score(cand)
                seen[v] = scores[key]
            return seen[v]

        def walk(values: list[float], patience: int = a.patience) -> float:
            best, misses = values[0], 0
            at(best)
            for v in values[1:]:
                if at(v) > at(best):
                    best, misses = v, 0
                else:
                    misses += 1
                    if misses >= patience:
                        break
            return best

        i = a.values.index(a.origin)
        up, down = walk(a.values[i:]), walk(a.values[: i + 1][::-1])
        best = up if at(up) >= at(down) else down
        for v in a.widen:
            if best != max(seen):
                break
            if at(v) > at(best):
                best = v
        point[part][name] = best
        summary.append(
            {"key": a.key, "chosen": best, "scanned": sorted(seen), "interior": min(seen) < best < max(seen)}
        )
    return point, summary


# -- the default hook -------------------------------------------------------------------------


def pipeline_row(prepared: Any, row: Row) -> dict[str, Any]:
    """Train a registry model with ``segue.pipeline.run`` on the shared split; dev and test metrics.

    ``prepared`` is ``(data, protocol, (split, valid, test))`` (see :func:`prepare_protocol`).
    Caps: ``epochs``, ``max_seconds``, ``patience`` (and ``threads``) override the train options.
    """
    from segue.pipeline import run, train_config_for

    data, proto, shared = prepared
    name = row.model.model or row.model.label
    capped = {k: row.caps[k] for k in ("epochs", "max_seconds", "patience") if k in row.caps}
    cfg = train_config_for(name, {"progress": False, "seed": row.seed, **row.train, **capped})
    r = run(
        name,
        data,
        protocol=proto,
        model_options=row.options or None,
        train_config=cfg,
        log=None,
        prepared=shared,
        seed=row.seed,
    )
    return {
        "dev": r.valid_metrics or {},
        "test": r.metrics,
        "fit_seconds": r.seconds,
        **history_summary(r.history),
        "model": r.model,
    }


def history_summary(history: Any, last: int = 3) -> dict[str, Any]:
    """How a row's training ended: epochs run, the kept epoch, ``stopped_by`` (epochs | patience | time_cap)
    and ``dev_slope``, the change per epoch of the first monitored dev metric over the last ``last``
    dev evaluations (None with fewer than two): what a capped row was still gaining."""
    evals = [(e["epoch"], e["valid"]) for e in history.epochs if e.get("valid") and e.get("epoch", 0) > 0]
    key = (history.monitor or "").split(",")[0]
    if not key and evals:
        key = next(iter(evals[-1][1]))
    pts = [(ep, float(v[key])) for ep, v in evals if key in v][-last:]
    slope = None
    if len(pts) >= 2 and pts[-1][0] > pts[0][0]:
        slope = round((pts[-1][1] - pts[0][1]) / (pts[-1][0] - pts[0][0]), 5)
    return {
        "epochs": len([e for e in history.epochs if e.get("epoch", 0) > 0]),
        "best_epoch": history.best_epoch,
        "stopped_by": history.stopped_by,
        "dev_slope": slope,
        "dev_slope_metric": key or None,
    }


def prepare_protocol(dataset: str, spec: TableSpec, caps: dict[str, Any]) -> Any:
    """Default ``prepare`` hook: load ``dataset``, split it with the spec's named protocol (``protocol.name``)."""
    from segue.data.datasets import load_dataset
    from segue.evaluation.protocols import get_protocol
    from segue.pipeline import prepare

    proto = get_protocol(spec.protocol.get("name", "loo-sampled"), seed=int(spec.protocol.get("seed", 0)))
    data = load_dataset(dataset, progress=False)
    if caps.get("max_users"):
        data = _first_users(data, int(caps["max_users"]))
    _, split, valid, test = prepare(data, proto)
    return data, proto, (split, valid, test)


def _first_users(data: Any, n: int) -> Any:
    keep = np.isin(data.users, np.arange(1, n + 1))
    return data.take(keep)


# -- the run ---------------------------------------------------------------------------------


@dataclass
class Outcome:
    rows: list[dict[str, Any]]
    grid: list[dict[str, Any]]
    not_run: list[str]
    trained: int
    cached: int
    seconds: float
    row_seconds: float = 0.0  # training time of every row behind the table, cached ones included (compute budget)


def run_table(
    spec: TableSpec,
    *,
    quick: bool = False,
    datasets: list[str] | None = None,
    models: list[str] | None = None,
    cache: RunCache | None = None,
    budget: float | None = None,
    log: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True),
) -> Outcome:
    """Run the rows of ``spec`` (see the module docstring) and return them; :func:`write_table` writes them."""
    cache = cache or RunCache(None)
    if datasets is None:
        datasets = (spec.quick_datasets or spec.datasets[:1]) if quick else list(spec.datasets)
    unknown = sorted(set(datasets) - set(spec.datasets))
    if unknown:
        raise ConfigError(f"{spec.name} has no dataset(s) {', '.join(unknown)}; it has {', '.join(spec.datasets)}.")
    wanted = _with_dependencies(spec, models)
    budget = budget if budget is not None else spec.caps_for(datasets[0], quick).get("budget_seconds")
    t_start = time.perf_counter()
    prepare_fn = resolve(spec.prepare)
    out = Outcome([], [], [], 0, 0, 0.0)
    for dataset in datasets:
        caps = spec.caps_for(dataset, quick)
        runs = _Runs(spec, dataset, caps, quick, cache, out, budget, t_start, prepare_fn, log)
        plan = [m for m in spec.models if m.label in wanted and (not m.datasets or dataset in m.datasets)]
        # the rows known before the run (no scan, no options_from); the others are only known as it goes
        fixed = {m.label: _points(spec, m, dataset, caps, quick) for m in plan if not (m.scan or m.options_from)}
        keys = {label: [config_key(r.config()) for r in rs] for label, rs in fixed.items()}
        # rows whose trained model a row that will train needs (transitively): retrained if only cached
        needed_models: set[str] = set()
        for m in reversed(plan):
            if m.label in needed_models or m.label not in keys or not all(cache.get(k) for k in keys[m.label]):
                needed_models.update(m.depends)
        for m in plan:
            base: dict[str, Any] = {}
            if m.options_from:
                src = next((r for r in out.rows if r["dataset"] == dataset and r["model"] == m.options_from), None)
                if src is None:
                    out.not_run.append(f"{dataset}/{m.label} ({m.options_from}, whose options it takes, did not run)")
                    continue
                base = src["options"]
            summary: list[dict[str, Any]] = []
            scanned: list[dict[str, Any]] = []
            if m.scan:
                chosen = _run_scan(runs, m, base, scanned)
                if chosen is None:
                    out.not_run.append(f"{dataset}/{m.label} (budget of {budget:.0f} s spent in its scan)")
                    continue
                point, summary = chosen
                seeds = spec.seeds[:1] if quick else spec.seeds
                mrows = [_row(spec, m, dataset, point, caps, seed, quick, base) for seed in seeds]
            else:
                mrows = fixed.get(m.label) or _points(spec, m, dataset, caps, quick, base)
            mkeys = [config_key(r.config()) for r in mrows]
            results: list[dict[str, Any]] = []
            for row, key in zip(mrows, mkeys, strict=True):
                res = runs.get(m, row, key)
                if res is None:
                    out.not_run.append(f"{dataset}/{m.label} (budget of {budget:.0f} s spent)")
                    results = []
                    break
                results.append(res)
            if not results:
                continue
            behind = [*scanned, *results[1:]] if m.scan else results  # a scan's chosen seed-0 row is a scan point
            out.row_seconds += sum(float(r.get("seconds") or 0.0) for r in behind)
            best = list(range(len(results))) if m.scan else _best_point(spec, results)
            if m.label in needed_models and results[best[0]].get("_model") is None:
                # a later row needs this row's trained model, which the cache does not hold: train it again
                i = best[0]
                res = runs.get(m, mrows[i], mkeys[i], retrain=True)
                if res is None:
                    out.not_run.append(
                        f"{dataset}/{m.label}'s model for its dependents (budget of {budget:.0f} s spent)"
                    )
                else:
                    results[i] = res
                    out.cached -= 1
            agg = _aggregate(spec, m, dataset, [results[i] for i in best], runs.trained)
            if m.scan:
                agg["scan"] = summary
            out.rows.append(agg)
            if m.grid or m.scan:
                out.grid += [
                    {"dataset": dataset, "model": m.label, **{k: v for k, v in r.items() if k != "_model"}}
                    for r in (scanned if m.scan else results)
                ]
    out.seconds = time.perf_counter() - t_start
    return out


@dataclass
class _Runs:
    """Cache or train the rows of one dataset (the budget is the table's); the dataset is prepared once, lazily."""

    spec: TableSpec
    dataset: str
    caps: dict[str, Any]
    quick: bool
    cache: RunCache
    out: Outcome
    budget: float | None
    t_start: float
    prepare_fn: Callable[..., Any]
    log: Callable[[str], None]
    trained: dict[str, Any] = field(default_factory=dict)
    prepared: Any = None

    def get(self, m: ModelSpec, row: Row, key: str, *, retrain: bool = False) -> dict[str, Any] | None:
        """The row's cached result, else its freshly trained one; None once the budget is spent."""
        hit = None if retrain else self.cache.get(key)
        if hit is not None:
            self.out.cached += 1
            return hit
        if self.budget is not None and time.perf_counter() - self.t_start > self.budget:
            return None
        if self.prepared is None:
            self.prepared = self.prepare_fn(self.dataset, self.spec, self.caps)
        self.out.trained += 1
        return _train(self.spec, m, row, key, self.prepared, self.trained, self.cache, self.quick, self.log)


class _BudgetSpent(Exception):
    """A scan point could not run: the table's budget is spent."""


def _run_scan(
    runs: _Runs, m: ModelSpec, base: dict[str, Any], scanned: list[dict[str, Any]]
) -> tuple[Point, list[dict[str, Any]]] | None:
    """The dev scan of ``m`` on the first seed (each point a cached row); appends each point's result to
    ``scanned`` once, in scan order; returns the chosen point and the per-axis summary (None: budget spent)."""
    spec, dataset = runs.spec, runs.dataset
    axes = [a for a in m.scan if not a.datasets or dataset in a.datasets]
    keys = spec.select or spec.metrics

    def score(point: Point) -> tuple[float, ...]:  # called once per distinct point
        row = _row(spec, m, dataset, point, runs.caps, spec.seeds[0], runs.quick, base)
        res = runs.get(m, row, config_key(row.config()))
        if res is None:
            raise _BudgetSpent
        scanned.append({k: v for k, v in res.items() if k != "_model"})  # the models of the points are not kept
        dev = res.get("dev") or {}
        return tuple(float(dev.get(k, float("-inf"))) for k in keys)

    try:
        return coordinate_scan(axes, {"options": {}, "train": {}}, score)
    except _BudgetSpent:
        return None


def _train(
    spec: TableSpec,
    m: ModelSpec,
    row: Row,
    key: str,
    prepared: Any,
    trained: dict[str, Any],
    cache: RunCache,
    quick: bool,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Run one row's fit hook, record its result in the cache; the trained model rides along as ``_model``."""
    row.trained = trained
    t0 = time.perf_counter()
    res = dict(resolve(m.fit or "segue.reproduce.runner:pipeline_row")(prepared, row))
    res.setdefault("seconds", time.perf_counter() - t0)
    if res.get("history") is not None:  # how training stopped, recorded for every trained row
        res.update(training_summary(res.pop("history")))
    res.pop("history", None)
    model = res.pop("model", None)
    res["options"], res["train"], res["seed"], res["quick"] = row.options, row.train, row.seed, quick
    cache.put(key, row.config(), res)
    log(f"[{row.dataset}] {m.label} {row.options or ''}{row.train or ''} seed {row.seed}: dev "
        f"{_short(res.get('dev'))} ({res['seconds']:.0f} s)")  # fmt: skip
    return {**res, "_model": model}


STOPPED_BY = {"patience": "patience", "epochs": "epoch cap", "time_cap": "time cap"}


def training_summary(history: Any) -> dict[str, Any]:
    """How a row's training stopped, from its trainer History (or its dict): ``stopped_by`` (patience,
    epoch cap, time cap), ``epochs_run``, ``best_epoch``, the dev curve of the first monitored metric
    (``dev_curve``: [epoch, value] per dev evaluation) and ``dev_last_slope``, its change per epoch over
    the last two dev evaluations (the number to read for a row a cap stopped: > 0 means dev still rose).
    An earlier stage (the BPR stage before APR) is summarised under ``stages``."""
    h = history.to_dict() if hasattr(history, "to_dict") else dict(history)
    records = h.get("epochs") or []
    monitor = (h.get("monitor") or "").split(",")[0].strip()
    curve = []
    for r in records:
        valid = r.get("valid") or {}
        if valid:
            key = monitor if monitor in valid else next(iter(valid))
            curve.append([int(r["epoch"]), round(float(valid[key]), 5)])
    slope = None
    if len(curve) >= 2 and curve[-1][0] != curve[-2][0]:
        slope = round((curve[-1][1] - curve[-2][1]) / (curve[-1][0] - curve[-2][0]), 5)
    out: dict[str, Any] = {
        "stopped_by": STOPPED_BY.get(h.get("stopped_by") or "", h.get("stopped_by")),
        "epochs_run": max((int(r["epoch"]) for r in records), default=0),
        "best_epoch": h.get("best_epoch"),
        "dev_curve": curve,
        "dev_last_slope": slope,
    }
    stages = {k: training_summary(v) for k, v in (h.get("stages") or {}).items() if isinstance(v, dict)}
    if stages:
        out["stages"] = stages
    return out


def convergence_lines(rows: list[dict[str, Any]], grid: list[dict[str, Any]] | None = None) -> list[str]:
    """The Markdown table of how every trained row stopped (rows without ``stopped_by`` are left out).

    ``grid`` (every dev-grid point, the chosen ones included) adds a line naming the grid points a cap stopped.
    """
    trained = [r for r in rows if r.get("stopped_by")]
    if not trained:
        return []
    out = ["| dataset | model | stopped by | epochs run | best epoch | dev last slope / epoch | seconds |"]
    out.append("|---|---|---|---|---|---|---|")
    for r in trained:  # rows summarised by training_summary (hooks) or history_summary (pipeline_row)
        slope = r.get("dev_last_slope", r.get("dev_slope"))
        capped = r["stopped_by"] != "patience"
        shown = "-" if slope is None else f"{slope:+.4f}" + (" (capped)" if capped else "")
        out.append(f"| {r['dataset']} | {r['model']} | {r['stopped_by']} | {r.get('epochs_run', r.get('epochs', '-'))} "
                   f"| {r.get('best_epoch', '-')} | {shown} | {r.get('seconds', 0):.0f} |")  # fmt: skip
    capped = [f"{r['dataset']}/{r['model']}" for r in trained if r["stopped_by"] != "patience"]
    out += ["", "Stopped by a cap, not by patience: " + (", ".join(capped) if capped else "none")]
    points = []
    for g in grid or []:
        if g.get("stopped_by") in (None, "patience"):
            continue
        slope = g.get("dev_last_slope", g.get("dev_slope"))
        points.append(
            f"{g['dataset']}/{g['model']} {g.get('options') or ''}{g.get('train') or ''} ({g['stopped_by']}, epoch "
            f"{g.get('epochs_run', g.get('epochs', '-'))}, best {g.get('best_epoch', '-')}, last slope "
            + ("-" if slope is None else f"{slope:+.4f}")
            + ")"
        )
    if points:
        out += ["", "Dev-grid points stopped by a cap (their dev numbers are lower bounds): " + "; ".join(points)]
    return out


def _best_point(spec: TableSpec, results: list[dict[str, Any]]) -> list[int]:
    """Indices (one per seed) of the grid point with the best mean **dev** metrics; test is never read."""
    n_seeds = len({r["seed"] for r in results}) or 1
    points = [list(range(i, min(i + n_seeds, len(results)))) for i in range(0, len(results), n_seeds)]
    keys = spec.select or spec.metrics
    mean_dev = [{k: float(np.mean([results[i]["dev"].get(k, np.nan) for i in p])) for k in keys} for p in points]
    return points[select_on_dev([{"dev": d} for d in mean_dev], keys)]


def _short(m: dict[str, Any] | None) -> str:
    return "{" + ", ".join(f"{k} {v:.4f}" for k, v in (m or {}).items() if isinstance(v, float)) + "}"


def _with_dependencies(spec: TableSpec, models: list[str] | None) -> set[str]:
    labels = [m.label for m in spec.models]
    if not models:
        return set(labels)
    unknown = sorted(set(models) - set(labels))
    if unknown:
        raise ConfigError(f"{spec.name} has no model(s) {', '.join(unknown)}; it has {', '.join(labels)}.")
    by = {m.label: m for m in spec.models}
    todo, seen = list(models), set()
    while todo:
        label = todo.pop()
        if label not in seen:
            seen.add(label)
            todo += by[label].depends + ([by[label].options_from] if by[label].options_from else [])
    return seen


def _row(
    spec: TableSpec,
    m: ModelSpec,
    dataset: str,
    point: dict[str, Any],
    caps: dict[str, Any],
    seed: int,
    quick: bool,
    base: dict[str, Any] | None = None,
) -> Row:
    """The row of a grid or scan point: ``base`` (options_from), then the model's options, then the point's."""
    return Row(
        spec=spec,
        model=m,
        dataset=dataset,
        options={**(base or {}), **m.options, **point.get("options", {})},
        train={**m.train, **point.get("train", {})},
        caps=caps,
        seed=seed,
        quick=quick,
        trained={},
    )


def _points(
    spec: TableSpec,
    m: ModelSpec,
    dataset: str,
    caps: dict[str, Any],
    quick: bool,
    base: dict[str, Any] | None = None,
) -> list[Row]:
    grid = [g for g in m.grid or [{}] if not g.get("datasets") or dataset in g["datasets"]]
    if quick:
        grid = grid[:1]
    rows = []
    for point in grid:
        extra = sorted(set(point) - {"options", "train", "datasets"})
        if extra:
            raise ConfigError(f"{spec.name}/{m.label}: a grid point has options, train, datasets; got {extra}.")
        for seed in spec.seeds[:1] if quick else spec.seeds:
            rows.append(_row(spec, m, dataset, point, caps, seed, quick, base))
    return rows


def _aggregate(
    spec: TableSpec, m: ModelSpec, dataset: str, results: list[dict[str, Any]], trained: dict[str, Any]
) -> dict[str, Any]:
    """The table row of a model from the dev-selected grid point's results (one per seed), test averaged."""
    best = results
    n_seeds = len(best)
    if best[0].get("_model") is not None:
        trained[m.label] = best[0]["_model"]
    metrics = {k: float(np.mean([r["test"][k] for r in best])) for k in best[0]["test"]}
    row: dict[str, Any] = {
        "model": m.label,
        "dataset": dataset,
        "metrics": metrics,
        "dev": {k: float(np.mean([r["dev"][k] for r in best])) for k in best[0].get("dev") or {}},
        "paper": m.paper_for(dataset),
        **({"paper_other": m.paper_other} if m.paper_other else {}),
        "same_data_as_paper": dataset in spec.same_data and not results[0].get("quick", False),
        "seconds": round(float(sum(r.get("seconds", 0.0) for r in best)), 1),
        "options": best[0]["options"],
        "train": best[0]["train"],
        "reference": m.reference,
    }
    if n_seeds > 1:
        row["seeds"] = [r["seed"] for r in best]
        row["std"] = {k: float(np.std([r["test"][k] for r in best], ddof=1)) for k in metrics}
        row["per_seed"] = [r["test"] for r in best]  # the test metrics of each seed (e.g. for t-tests)
    skip = {"dev", "test", "options", "train", "seed", "seconds", "_model", "quick"}
    for k, v in best[0].items():
        if k not in skip:
            row[k] = v
    return row


# -- the writer -------------------------------------------------------------------------------


def check_lines(spec: TableSpec, rows: list[dict[str, Any]]) -> list[str]:
    """The orderings the paper claims, on our test numbers, per dataset and metric."""
    out = []
    for ds in dict.fromkeys(r["dataset"] for r in rows):
        got = {r["model"]: r["metrics"] for r in rows if r["dataset"] == ds}
        for c in spec.checks:
            a, bs = c["better"], [b for b in c["than"] if b in got]
            if a not in got or not bs:
                continue
            for m in c.get("metrics") or spec.metrics:  # a check may name the metrics the paper claims it on
                if m not in got[a] or not _finite(got[a][m]) or not all(_finite(got[b].get(m)) for b in bs):
                    continue
                if m in spec.lower_is_better:
                    best = min(got[b][m] for b in bs)
                    verdict = "holds" if got[a][m] <= best else "DOES NOT HOLD"
                    out.append(f"- {ds}: {a} {m} {got[a][m]:.4f} <= min({', '.join(bs)}) {best:.4f}: {verdict}")
                    continue
                best = max(got[b][m] for b in bs)
                verdict = "holds" if got[a][m] >= best else "DOES NOT HOLD"
                out.append(f"- {ds}: {a} {m} {got[a][m]:.4f} >= max({', '.join(bs)}) {best:.4f}: {verdict}")
    return out


def claim_summary(spec: TableSpec, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per dataset and claimed ordering: on how many of the compared metrics it holds (``held`` of ``of``)."""
    return summarise_checks(check_lines(spec, rows))


def summarise_checks(lines: list[str]) -> list[dict[str, Any]]:
    """:func:`claim_summary` from the check lines a results file holds (:func:`check_lines`' format)."""
    out: list[dict[str, Any]] = []
    for line in lines:
        ds, rest = line[2:].split(": ", 1)
        better = rest.split(" ", 1)[0]
        at = max(rest.find(" >= max("), rest.find(" <= min("))  # a metric's name may hold brackets: "AUC (C)"
        than = rest[at + len(" >= max(") : rest.index(")", at)]
        claim = f"{better} >= {than}"  # ">=": at least as good, whichever way the metric points
        entry = next((c for c in out if c["dataset"] == ds and c["claim"] == claim), None)
        if entry is None:
            entry = {"dataset": ds, "claim": claim, "held": 0, "of": 0}
            out.append(entry)
        entry["of"] += 1
        entry["held"] += line.endswith(": holds")
    return out


def verdict(held: int, of: int) -> str:
    """``holds`` / ``does not hold`` / ``mixed (k of n metrics)``."""
    return "holds" if held == of else "does not hold" if held == 0 else f"mixed ({held} of {of} metrics)"


def write_index(out_dir: str | Path) -> Path:
    """``<out_dir>/README.md``: every results file of the folder with its command and its claims at a glance."""
    out = Path(out_dir)
    lines = [
        "# Reproduction results",
        "",
        "Written by `segue reproduce NAME` (each table rewrites this index). Each table puts the paper's numbers "
        "beside ours; its `.notes.md` says what differs (data, caps) and what the investigation of each failed "
        "ordering found. The claims below are read on our test numbers, per dataset: *holds* on every compared "
        "metric, *does not hold* on any, or *mixed*; `a >= b, c` means a is at least as good as the best of b and c "
        "(lower for ranks).",
        "",
    ]
    for path in sorted(out.glob("*.json")):
        try:
            result = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if not isinstance(result, dict) or "table" not in result or result.get("quick"):
            continue
        run = result.get("run") or {}
        lines += [f"## [{result['table']}]({path.stem}.md)", ""]
        lines.append(f"`{result.get('command', '?')}`" + (
            f"; training time of the rows behind it: {run['row_seconds']:.0f} s" if run.get("row_seconds") else ""))  # fmt: skip
        checks = result.get("checks")
        claims = result.get("claims") or (summarise_checks(checks) if isinstance(checks, list) else [])
        if claims:
            lines += ["", "| dataset | claim | verdict |", "|---|---|---|"]
            lines += [f"| {c['dataset']} | {c['claim']} | {verdict(c['held'], c['of'])} |" for c in claims]
        lines.append("")
    index = out / "README.md"
    index.write_text("\n".join(lines))
    return index


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and bool(np.isfinite(x))


def write_table(spec: TableSpec, outcome: Outcome, out_dir: str | Path, *, command: str, quick: bool = False) -> Path:
    """Write ``<out_dir>/<name>.json`` and ``.md``: ours vs the paper, the checks, caps, budget and notes link."""
    from segue.evaluation.report import write_results

    caps = {d: spec.caps_for(d, quick) for d in dict.fromkeys(r["dataset"] for r in outcome.rows)}
    result: dict[str, Any] = {
        "table": spec.name,
        "paper": spec.paper,
        "command": command,
        "protocol": spec.protocol,
        "rows": outcome.rows,
        "grid": outcome.grid,
        "checks": check_lines(spec, outcome.rows),
        "claims": claim_summary(spec, outcome.rows),
        "caps": caps,
        "quick": quick,
        "not_run": outcome.not_run,
        "run": {
            "trained": outcome.trained,
            "cached": outcome.cached,
            "seconds": round(outcome.seconds, 1),
            "row_seconds": round(outcome.row_seconds, 1),
        },
        "notes": f"See {spec.notes}." if spec.notes else "",
    }
    path = write_results(result, out_dir, spec.name, list(spec.metrics))
    md = path.with_suffix(".md")
    extra = ["## What the paper claims (on our test numbers)", ""]
    if result["claims"]:
        extra += ["| dataset | claim | verdict |", "|---|---|---|"]
        extra += [f"| {c['dataset']} | {c['claim']} | {verdict(c['held'], c['of'])} |" for c in result["claims"]]
        extra += ["", "Per metric:", ""]
    extra += result["checks"] or ["(no claim checkable)"]
    extra += ["", "## Compute caps", ""]
    extra += [f"- {d}: " + ", ".join(f"{k}={v}" for k, v in c.items()) for d, c in caps.items()]
    extra.append(
        f"- this run: {outcome.trained} rows trained, {outcome.cached} from the cache, {outcome.seconds:.0f} s; "
        f"training time of all the rows behind the table (cached ones included): {outcome.row_seconds:.0f} s"
        + (" (--quick: tiny caps, a smoke test, not a result)" if quick else "")
    )
    if outcome.not_run:
        extra += ["", "Not run within the budget: " + ", ".join(outcome.not_run)]
    conv = convergence_lines(outcome.rows, outcome.grid)
    if conv:
        extra += ["", "## Convergence: how each row stopped (dev metric, patience vs caps)", "", *conv]
    if outcome.grid:
        extra += ["", "## Dev grid (selection on dev only; test shown for transparency, never used to choose)", ""]
        extra += ["| dataset | model | options | train | " + " | ".join(f"dev {k}" for k in spec.select or spec.metrics)
                  + " | " + " | ".join(f"test {k}" for k in spec.metrics) + " |"]  # fmt: skip
        extra.append("|" + "---|" * (4 + len(spec.select or spec.metrics) + len(spec.metrics)))
        for g in outcome.grid:
            dev = [f"{g['dev'].get(k, float('nan')):.4f}" for k in spec.select or spec.metrics]
            test = [f"{g['test'].get(k, float('nan')):.4f}" for k in spec.metrics]
            extra.append(f"| {g['dataset']} | {g['model']} | {g['options']} | {g['train']} | " + " | ".join(dev + test)
                         + " |")  # fmt: skip
    if spec.markdown:
        extra += ["", resolve(spec.markdown)(result)]
    if spec.notes:
        extra += ["", f"Notes, investigation and the [CODE-HINT] choices: [{spec.notes}]({spec.notes})."]
    md.write_text(md.read_text() + "\n" + "\n".join(extra) + "\n")
    return path


# -- the command line -------------------------------------------------------------------------


def parse_caps(items: list[str]) -> dict[str, Any]:
    """``["KEY=VALUE", ...]`` -> caps; each VALUE is read as a TOML value (a bare word is a string)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--caps takes KEY=VALUE, got {item!r}.")
        try:
            out[key.strip()] = tomllib.loads(f"v = {value.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            out[key.strip()] = value.strip()
    return out


def main(name: str, argv: list[str] | None = None) -> Outcome:
    """``segue reproduce NAME [--quick] [--out DIR] [--datasets ..] [--models ..] [--budget S] [--cache DIR]``."""
    spec = load_spec(name)
    ap = argparse.ArgumentParser(prog=f"segue reproduce {name}", description=spec.title)
    ap.add_argument("--quick", action="store_true", help="tiny caps on the first dataset: a smoke test in minutes")
    ap.add_argument("--out", default=None, help="results folder (default docs/results; --quick: under the cache)")
    ap.add_argument("--datasets", default=None, help=f"comma list (default: {','.join(spec.datasets)})")
    ap.add_argument("--models", default=None, help="comma list of row labels (their dependencies run too)")
    ap.add_argument("--budget", type=float, default=None, help="time budget in seconds (default: the spec's)")
    ap.add_argument("--cache", default=None, help="cache folder (default $SEGUE_CACHE/reproduce or ~/.cache/segue)")
    ap.add_argument("--no-cache", action="store_true", help="train every row (still records the results)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--caps", action="append", default=[], metavar="KEY=VALUE",
                    help="override a cap of every dataset (VALUE read as TOML, e.g. text_loss=true); repeatable")  # fmt: skip
    args = ap.parse_args(argv)
    if args.caps:
        over = parse_caps(args.caps)
        spec.caps.update(over)
        for c in spec.dataset_caps.values():
            c.update(over)
        if args.quick:
            spec.quick.update(over)
    import torch

    torch.set_num_threads(args.threads)
    root = Path(args.cache).expanduser() if args.cache else cache_root()
    cache_file = root / name / ("runs-quick.jsonl" if args.quick else "runs.jsonl")
    cache = RunCache(cache_file)
    if args.no_cache:
        cache.rows = {}
    out_dir = Path(args.out) if args.out else (root / "quick" if args.quick else Path("docs/results"))
    outcome = run_table(
        spec,
        quick=args.quick,
        datasets=args.datasets.split(",") if args.datasets else None,
        models=args.models.split(",") if args.models else None,
        cache=cache,
        budget=args.budget,
    )
    parts = [f"segue reproduce {name}"] + (["--quick"] if args.quick else [])
    parts += [f"--{k} {v}" for k, v in (("datasets", args.datasets), ("models", args.models)) if v]
    parts += [f"--caps {c}" for c in args.caps]
    path = write_table(spec, outcome, out_dir, command=" ".join(parts), quick=args.quick)
    if not args.quick:
        write_index(out_dir)
    print(f"wrote {path} and {path.with_suffix('.md')} ({outcome.trained} trained, {outcome.cached} cached, "
          f"{outcome.seconds:.0f} s)", file=sys.stderr)  # fmt: skip
    return outcome


__all__ = [
    "ModelSpec",
    "Outcome",
    "Point",
    "Row",
    "RunCache",
    "ScanAxis",
    "TableSpec",
    "cache_root",
    "check_lines",
    "claim_summary",
    "config_key",
    "convergence_lines",
    "coordinate_scan",
    "history_summary",
    "load_spec",
    "main",
    "parse_caps",
    "pipeline_row",
    "prepare_protocol",
    "resolve",
    "run_table",
    "select_on_dev",
    "spec_names",
    "summarise_checks",
    "training_summary",
    "verdict",
    "write_index",
    "write_table",
]
