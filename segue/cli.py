"""The ``segue`` command line (typer).

Every command that prints results takes ``--json`` for machine-readable output. User
errors (bad data, unknown ids, bad options, damaged run directories) print one line,
``error: ...``, and exit with status 2.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from segue.errors import ConfigError, SegueError

app = typer.Typer(
    name="segue",
    help="Music recommendation: train, evaluate, and recommend with published models on real data.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True)


def _version(value: bool) -> None:
    if value:
        import segue

        out.print(f"segue {segue.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Music recommendation: train, evaluate, and recommend with published models on real data."""


DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Dataset directory (default: $SEGUE_DATA_DIR, else ~/.cache/segue)."),
]
Json = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


def _emit_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def _table(title: str, columns: list[str], rows: list[list[Any]]) -> Table:
    t = Table(title=title, title_justify="left")
    for c in columns:
        t.add_column(c)
    for r in rows:
        t.add_row(*[_fmt(v) for v in r])
    return t


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    return "" if v is None else str(v)


@app.command()
def datasets(data_dir: DataDir = None, as_json: Json = False) -> None:
    """List the known datasets and whether their files are in the data directory."""
    from segue.data.datasets import is_present, list_datasets, resolve_data_dir

    rows = [
        {
            "name": s.name,
            "present": is_present(s.name, data_dir),
            "files": list(s.files),
            "description": s.description,
            "terms": s.terms,
        }
        for s in list_datasets()
    ]
    if as_json:
        _emit_json({"data_dir": str(resolve_data_dir(data_dir)), "datasets": rows})
        return
    out.print(
        _table(
            f"Datasets (data dir: {resolve_data_dir(data_dir)})",
            ["name", "present", "files", "description"],
            [[r["name"], "yes" if r["present"] else "no", ", ".join(r["files"]), r["description"]] for r in rows],
        )
    )


@app.command()
def describe(dataset: str, data_dir: DataDir = None, as_json: Json = False) -> None:
    """Print a dataset's statistics: users, items, interactions, density, time span."""
    from segue.data.datasets import describe as describe_ds

    info = describe_ds(dataset, data_dir, download=True)
    if as_json:
        _emit_json(info)
        return
    out.print(_table(f"{dataset}", ["statistic", "value"], [[k, v] for k, v in info.items()]))


@app.command()
def models(as_json: Json = False) -> None:
    """List the available models and their options (with defaults)."""
    import dataclasses

    from segue.models.base import list_models

    rows = []
    for name, cls in list_models().items():
        opts = {
            f.name: (None if f.default is dataclasses.MISSING else f.default) for f in dataclasses.fields(cls.Config)
        }
        doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        rows.append(
            {
                "name": name,
                "trainable": cls.trainable,
                "measure": cls.measure,
                "options": opts,
                "needs": sorted(cls.needs),
                "train_defaults": cls.train_defaults,
                "description": doc,
            }
        )
    if as_json:
        _emit_json(rows)
        return
    out.print(
        _table(
            "Models",
            ["name", "options", "description"],
            [[r["name"], ", ".join(f"{k}={v}" for k, v in r["options"].items()), r["description"]] for r in rows],
        )
    )


def _parse_sets(values: list[str] | None) -> dict[str, Any]:
    opts: dict[str, Any] = {}
    for item in values or []:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}.")
        k, v = item.split("=", 1)
        try:
            opts[k.strip()] = json.loads(v)
        except json.JSONDecodeError:
            opts[k.strip()] = v
    return opts


def _split_sets(model_cls: Any, sets: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Route each ``--set`` key to the model's options or the trainer's (model keys win a clash)."""
    import dataclasses

    from segue.training.trainer import TrainConfig

    model_keys = {f.name for f in dataclasses.fields(model_cls.Config)}
    train_keys = {f.name for f in dataclasses.fields(TrainConfig)}
    model_opts, train_opts = {}, {}
    for k, v in sets.items():
        if k in model_keys:
            model_opts[k] = v
        elif k in train_keys:
            train_opts[k] = v
        else:
            raise ConfigError(
                f"--set {k}: not an option of model {model_cls.name!r} ({', '.join(sorted(model_keys)) or 'none'}) "
                f"nor of the trainer ({', '.join(sorted(train_keys))})."
            )
    return model_opts, train_opts


@app.command()
def train(
    model: Annotated[str, typer.Argument(help="Model name, e.g. pop, itemknn, mf-bpr, wmf (see `segue models`).")],
    dataset: Annotated[str, typer.Argument(help="Dataset name (see `segue datasets`).")],
    config: Annotated[Path | None, typer.Option(help="TOML file with \\[model] and \\[train] tables.")] = None,
    protocol: Annotated[
        str | None, typer.Option(help="Evaluation protocol (default: the dataset's, loo-sampled for most).")
    ] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Run directory to write.")] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="A model or trainer option, key=value (repeatable; see `segue models`)."),
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="Most epochs to train (\\[train] epochs).")] = None,
    max_seconds: Annotated[
        float | None, typer.Option(help="Wall-clock cap on training, checked after every step.")
    ] = None,
    patience: Annotated[int | None, typer.Option(help="Dev evaluations without improvement before stopping.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Training rows per step.")] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate.")] = None,
    negatives: Annotated[
        int | None, typer.Option(help="Sampled negatives per evaluation case (sampled protocols).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed for the split, candidates and training.")] = 0,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing run directory.")] = False,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="Hide progress bars.")] = False,
    data_dir: DataDir = None,
    as_json: Json = False,
    nproc: Annotated[
        int, typer.Option("--nproc", help="Train and evaluate in N local processes (torch.distributed, DDP).")
    ] = 1,
) -> None:
    """Train MODEL on DATASET under a protocol, evaluate on test, and write a run directory."""
    from segue.data.datasets import get_dataset, load_dataset
    from segue.evaluation.protocols import get_protocol
    from segue.models.base import get_model_class
    from segue.pipeline import load_config_file, run, train_config_for

    # validate every option before loading data, so a typo fails at once
    model_cls = get_model_class(model)
    protocol = protocol or get_dataset(dataset).default_protocol
    proto = get_protocol(protocol, seed=seed, n_negatives=negatives)
    model_opts, train_opts = load_config_file(config) if config else ({}, {})
    set_model, set_train = _split_sets(model_cls, _parse_sets(set_))
    model_opts.update(set_model)
    train_opts.update(set_train)
    model_cls.config_from_dict(model_opts)
    train_opts.setdefault("seed", seed)
    flags = {"epochs": epochs, "max_seconds": max_seconds, "patience": patience, "batch_size": batch_size, "lr": lr}
    train_opts.update({k: v for k, v in flags.items() if v is not None})
    if device is not None:
        train_opts["device"] = device
    if no_progress or as_json:
        train_opts["progress"] = False
    cfg = train_config_for(model, train_opts)
    if nproc != 1 or _torchrun():  # docs/scale.md: every rank runs segue.pipeline.train_job
        job = {"model": model, "dataset": dataset, "protocol": protocol, "negatives": negatives, "seed": seed}
        job |= {"model_options": model_opts, "train": cfg.to_dict(), "data_dir": data_dir, "overwrite": overwrite}
        job |= {
            "out": out_dir or Path("runs") / f"{model}-{dataset}-{protocol}-s{seed}",
            "log": None if as_json else "default",
        }
        return _train_distributed(nproc, job, cfg.device, as_json)
    data = load_dataset(dataset, data_dir, progress=not no_progress)
    out_dir = out_dir or Path("runs") / f"{model}-{dataset}-{protocol}-s{seed}"
    res = run(
        model,
        data,
        protocol=proto,
        model_options=model_opts,
        train_config=cfg,
        out=out_dir,
        seed=seed,
        overwrite=overwrite,
        log=None if as_json else "default",
    )
    result = {
        "model": model,
        "dataset": dataset,
        "protocol": protocol,
        "run_dir": str(res.run_dir),
        "test": res.metrics,
        "valid": res.valid_metrics,
        "fit_seconds": res.seconds,
        "best_epoch": res.history.best_epoch,
    }
    if as_json:
        _emit_json(result)
        return
    out.print(
        _table(
            f"{model} on {dataset} ({protocol}), fit in {res.seconds:.1f}s -> {res.run_dir}",
            ["metric", "test", "dev"],
            [[k, v, (res.valid_metrics or {}).get(k)] for k, v in res.metrics.items()],
        )
    )


def _torchrun() -> bool:
    from segue.training.distributed import torchrun_env

    return torchrun_env() is not None


def _train_distributed(nproc: int, job: dict[str, Any], device: str, as_json: bool) -> None:
    """``train`` over torch.distributed: ``--nproc N`` local processes, or this process as one rank of torchrun."""
    from segue.dirs import check_target
    from segue.pipeline import train_job
    from segue.training import distributed

    if _torchrun():
        result = distributed.run_in_torchrun(train_job, job, device)
        if result is None:  # ranks other than 0 print nothing
            return
    else:
        distributed.check_nproc(nproc, device)
        check_target(Path(job["out"]), "run", overwrite=job["overwrite"])
        result = distributed.launch(nproc, train_job, job, device=device, out_dir=job["out"])
    if as_json:
        _emit_json(result)
        return
    title = f"{result['model']} on {result['dataset']} ({result['protocol']}, {result['nproc']} processes)"
    out.print(
        _table(
            f"{title}, fit in {result['fit_seconds']:.1f}s -> {result['run_dir']}",
            ["metric", "test", "dev"],
            [[k, v, (result["valid"] or {}).get(k)] for k, v in result["test"].items()],
        )
    )


@app.command()
def evaluate(
    run_dir: Path,
    part: Annotated[str, typer.Option(help="test or valid.")] = "test",
    as_json: Json = False,
) -> None:
    """Re-evaluate a run directory on its saved evaluation set and compare with its metrics.json."""
    from segue.evaluation.protocols import evaluate as evaluate_model
    from segue.training.checkpoint import load_run

    if part not in ("test", "valid"):
        raise ConfigError(f"--part must be test or valid, got {part!r}.")
    r = load_run(run_dir)
    es = r.evalset(part)
    proto = r.config.get("protocol", {})
    ks = tuple(sorted(set(proto.get("ks", [10])) | {10}))
    metrics = evaluate_model(
        r.model,
        es,
        ks=ks,
        metrics=tuple(proto.get("metrics", ["HR", "NDCG"])),
        recall_denominator="min_k" if proto.get("kind") == "full" and "Recall" in proto.get("metrics", []) else "n_pos",
    )
    saved = (r.metrics or {}).get(part) or {}
    if as_json:
        _emit_json({"run_dir": str(run_dir), "part": part, "metrics": metrics, "saved": saved, "cases": len(es)})
        return
    out.print(
        _table(
            f"{r.config['model']} on {r.config.get('dataset')} ({part}, {len(es)} cases)",
            ["metric", "now", "saved"],
            [[k, v, saved.get(k)] for k, v in metrics.items()],
        )
    )


def _history_context(r: Any, uid: Any, history: str | None) -> Any:
    """The ``Context(history=...)`` a sequential model reads: ``--history`` or the run's saved recent items."""
    import torch

    from segue.data.batch import Context

    if "history" not in r.model.needs:
        if history is not None:
            raise ConfigError(f"--history is for sequential models; {r.config['model']} does not read a history.")
        return None
    w = r.model.history_length()
    if history is not None:
        raw = [h.strip() for h in history.split(",") if h.strip()]
        if not raw:
            raise ConfigError("--history needs at least one item id (comma-separated, oldest first).")
        items = r.item_map.to_internal(raw)[-w:]
        row = [0] * (w - len(items)) + items.tolist()
        return Context(history=torch.tensor([row], dtype=torch.long))
    if r.recent is None:
        raise ConfigError(
            f"{r.config['model']} reads the user's recent items, which this run directory does not hold "
            "(it predates recent.npz); pass --history a,b,c."
        )
    return Context(history=torch.as_tensor(r.recent[uid][:, -w:], dtype=torch.long))


@app.command()
def recommend(
    run_dir: Path,
    user: Annotated[str, typer.Option(help="Raw user id, as in the dataset.")],
    k: Annotated[int, typer.Option("-k", "--k", help="Number of items.")] = 10,
    include_seen: Annotated[bool, typer.Option(help="Also recommend items the user already consumed.")] = False,
    unknown: Annotated[
        str, typer.Option(help="For an unknown user: 'error' or 'popular' (flagged fallback).")
    ] = "error",
    history: Annotated[
        str | None,
        typer.Option(
            help="Sequential models: the listening history to continue, raw item ids oldest first, comma-separated "
            "(default: the user's latest training items)."
        ),
    ] = None,
    as_json: Json = False,
) -> None:
    """Top-k items (raw ids and scores) for one user of a run directory."""
    from segue.training.checkpoint import load_run

    if unknown not in ("error", "popular"):
        raise ConfigError(f"--unknown must be error or popular, got {unknown!r}.")
    r = load_run(run_dir)
    if k < 1 or k > r.model.n_items:
        raise ConfigError(f"k must be between 1 and the catalogue size {r.model.n_items}, got {k}.")
    fallback = False
    if user not in r.user_map and unknown == "popular":
        import numpy as np

        counts = np.asarray(r.seen.sum(axis=0)).ravel()
        counts[0] = -1
        ids = np.argsort(-counts, kind="stable")[:k]
        scores = counts[ids].astype(float)
        fallback = True
    else:
        uid = r.user_map.to_internal([user])
        context = _history_context(r, uid, history)
        ids_t, scores_t = r.model.recommend(uid, k, context, exclude=None if include_seen else r.seen)
        ids, scores = ids_t[0].numpy(), scores_t[0].numpy()
    keep = ids > 0
    items = r.item_map.to_raw(ids[keep]).tolist()
    rows = [
        {"rank": i + 1, "item": it, "score": float(s)}
        for i, (it, s) in enumerate(zip(items, scores[keep], strict=True))
    ]
    if as_json:
        _emit_json({"user": user, "k": k, "fallback": "popular" if fallback else None, "items": rows})
        return
    title = f"Top {k} for user {user}" + (" (unknown user: popularity fallback)" if fallback else "")
    out.print(_table(title, ["rank", "item", "score"], [[r_["rank"], r_["item"], r_["score"]] for r_ in rows]))


@app.command()
def quickstart(
    data_dir: DataDir = None,
    out_dir: Annotated[Path, typer.Option("--out", help="Where to write the three run directories.")] = Path(
        "runs/quickstart"
    ),
    as_json: Json = False,
) -> None:
    """Train Popularity, ItemKNN and MF-BPR on ml-100k (leave-one-out, 100 negatives) and compare them."""
    from segue.data.datasets import load_dataset
    from segue.evaluation.protocols import get_protocol
    from segue.pipeline import prepare, run, train_config_for

    data = load_dataset("ml-100k", data_dir, progress=not as_json)
    proto = get_protocol("loo-sampled", seed=0)
    _, split, valid, test = prepare(data, proto)
    rows = []
    for name in ("pop", "itemknn", "mf-bpr"):
        if not as_json:
            err.print(f"[bold]training {name}[/bold]")
        res = run(
            name,
            data,
            protocol=proto,
            train_config=train_config_for(name, {"progress": not as_json}),
            out=out_dir / name,
            overwrite=True,
            log=None if as_json else "default",
            prepared=(split, valid, test),
        )
        rows.append({"model": name, **res.metrics, "fit_seconds": res.seconds, "run_dir": str(res.run_dir)})
    if as_json:
        _emit_json({"dataset": "ml-100k", "protocol": proto.to_dict(), "rows": rows})
        return
    out.print(
        _table(
            "ml-100k, leave-last-out + 100 sampled negatives (test)",
            ["model", "HR@10", "NDCG@10", "fit s", "run dir"],
            [[r["model"], r["HR@10"], r["NDCG@10"], r["fit_seconds"], r["run_dir"]] for r in rows],
        )
    )
    out.print(f"Recommend: segue recommend {out_dir / 'mf-bpr'} --user 196 -k 10")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def reproduce(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Argument(help="Table to reproduce (see --list).")] = None,
    list_: Annotated[bool, typer.Option("--list", help="List the reproductions and exit.")] = False,
) -> None:
    """Reproduce a paper's table into docs/results/ (extra arguments go to the script; try NAME --help)."""
    from segue.reproduce import REPRODUCTIONS, run_reproduction

    if list_ or name is None:
        out.print(_table("reproductions", ["name", "what"], [[k, v[1]] for k, v in REPRODUCTIONS.items()]))
        return
    run_reproduction(name, list(ctx.args))


# serving: the options live in segue.serving.commands, which imports only typer until a command runs
from segue.serving.commands import export_cmd, serve_cmd  # noqa: E402

app.command("export")(export_cmd)
app.command("serve")(serve_cmd)

# audio: segue audio index FOLDER / fetch / cache (segue.audio.cli imports only typer at load time)
from segue.audio.cli import audio_app  # noqa: E402

app.add_typer(audio_app, name="audio")


def main() -> None:
    """Entry point: run the app, turning user errors into one-line messages (exit status 2)."""
    try:
        app()
    except SegueError as e:
        err.print(f"[red]error:[/red] {e}", highlight=False, soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
