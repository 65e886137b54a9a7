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


DataFormat = Annotated[
    str | None,
    typer.Option(
        "--format",
        help="A data file's shape: interactions, sequences, playlists or sessions (default: from its extension and "
        "header; see docs/datasets.md).",
    ),
]
Columns = Annotated[
    str | None,
    typer.Option(
        "--columns",
        help="A data file's column names, canonical=name pairs, e.g. user=uid,item=track_id,timestamp=ts.",
    ),
]
DATASET_HELP = "Dataset name (see `segue datasets`) or a path to a CSV/TSV/Parquet/TXT data file."


@app.command()
def describe(
    dataset: Annotated[str, typer.Argument(help=DATASET_HELP)],
    data_dir: DataDir = None,
    format_: DataFormat = None,
    columns: Columns = None,
    as_json: Json = False,
) -> None:
    """Print a dataset's statistics: users, items, interactions, density, time span."""
    from segue.data.files import describe_source, open_dataset, parse_columns

    source = open_dataset(dataset, data_dir, format=format_, columns=parse_columns(columns), progress=False)
    info = describe_source(source)
    if as_json:
        _emit_json(info)
        return
    out.print(_table(f"{dataset}", ["statistic", "value"], [[k, v] for k, v in info.items()]))


@app.command()
def models(as_json: Json = False) -> None:
    """List the models: paper (seed file and section), task, inputs, default protocol, ANN serving and options."""
    import dataclasses

    from segue.models.base import list_models
    from segue.models.catalogue import catalogue_entry

    rows = []
    for name, cls in list_models().items():
        opts = {
            f.name: (None if f.default is dataclasses.MISSING else f.default) for f in dataclasses.fields(cls.Config)
        }
        doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        entry = catalogue_entry(name)
        rows.append(
            {
                "name": name,
                **(entry.to_dict() if entry else {"paper": None, "seed": None, "spec": None, "task": None}),
                "ann": cls.measure is not None,
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
            ["name", "task", "inputs", "protocol", "ANN", "paper", "seed"],
            [
                [
                    r["name"],
                    r["task"],
                    ", ".join(r.get("inputs") or []),
                    r.get("protocol"),
                    r["measure"] or "no",
                    r["paper"],
                    r["seed"],
                ]
                for r in rows
            ],
        )
    )
    out.print("Options and their defaults: segue models --json.", highlight=False)


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
    dataset: Annotated[str, typer.Argument(help=DATASET_HELP)],
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
    resume: Annotated[
        bool,
        typer.Option(
            help="Continue an interrupted run from its last epoch checkpoint (.NAME.resume beside --out); "
            "the result equals an uninterrupted run."
        ),
    ] = False,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="Hide progress bars.")] = False,
    dev: Annotated[
        str,
        typer.Option(
            help="Leave-last-out dev item: random (a random earlier item, the SDMR/NCF rule) or last "
            "(the second-to-last item)."
        ),
    ] = "random",
    format_: DataFormat = None,
    columns: Columns = None,
    data_dir: DataDir = None,
    as_json: Json = False,
    nproc: Annotated[
        int, typer.Option("--nproc", help="Train and evaluate in N local processes (torch.distributed, DDP).")
    ] = 1,
) -> None:
    """Train MODEL on DATASET (a name or a data file) under a protocol, evaluate on test, and write a run directory."""
    from segue.data.datasets import get_dataset
    from segue.data.files import DEFAULT_PROTOCOLS, detect_format, looks_like_path, open_dataset, parse_columns
    from segue.data.files import _stem as file_label
    from segue.evaluation.protocols import get_protocol
    from segue.models.base import get_model_class
    from segue.pipeline import load_config_file, preflight, run, summary, train_config_for

    # validate every option before loading data, so a typo fails at once
    model_cls = get_model_class(model)
    col_map = parse_columns(columns)
    if protocol is None:
        if Path(dataset).expanduser().is_file():
            protocol = DEFAULT_PROTOCOLS[format_ or detect_format(Path(dataset).expanduser(), col_map)]
        elif not looks_like_path(dataset):
            try:
                protocol = get_dataset(dataset).default_protocol
            except ConfigError:
                protocol = None  # open_dataset names the problem below
    proto = get_protocol(protocol, seed=seed, n_negatives=negatives, dev=dev) if protocol else None
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
        path = Path(dataset).expanduser()
        label = file_label(path) if path.is_file() else dataset
        job = {
            "model": model,
            "dataset": dataset,
            "protocol": protocol,
            "negatives": negatives,
            "seed": seed,
            "dev": dev,
        }
        job |= {"model_options": model_opts, "train": cfg.to_dict(), "data_dir": data_dir, "overwrite": overwrite}
        job |= {"format": format_, "columns": col_map, "log": None if as_json else "default", "resume": resume}
        job["out"] = out_dir or Path("runs") / f"{model}-{label}-{protocol}-s{seed}"
        return _train_distributed(nproc, job, cfg.device, as_json)
    path = Path(dataset).expanduser()
    label = file_label(path) if path.is_file() else dataset
    if out_dir is None:
        out_dir = Path("runs") / f"{model}-{label}-{protocol}-s{seed}"
    preflight(out_dir, overwrite=overwrite)  # a run directory that cannot be written fails before any work
    source = open_dataset(dataset, data_dir, format=format_, columns=col_map, progress=not no_progress)
    data = source.data
    if proto is None:
        protocol = source.default_protocol
        proto = get_protocol(protocol, seed=seed, n_negatives=negatives, dev=dev)
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
        resume=resume,
    )
    result = summary(model, dataset, protocol, res)
    if as_json:
        _emit_json(result)
        return
    out.print(
        _table(
            f"{model} on {label} ({protocol}), fit in {res.seconds:.1f}s -> {res.run_dir}",
            ["metric", "test", "dev"],
            [[k, v, (res.valid_metrics or {}).get(k)] for k, v in res.metrics.items()],
        )
    )
    out.print(
        f"Protocol {protocol}: {proto.description}; dev item: {proto.dev_rule}. tie_rate: the share of cases "
        "whose held-out item ties a negative (ties count against the model).",
        highlight=False,
    )


def _torchrun() -> bool:
    from segue.training.distributed import torchrun_env

    return torchrun_env() is not None


def _train_distributed(nproc: int, job: dict[str, Any], device: str, as_json: bool) -> None:
    """``train`` over torch.distributed: ``--nproc N`` local processes, or this process as one rank of torchrun."""
    from segue.pipeline import preflight, train_job
    from segue.training import distributed

    if _torchrun():
        result = distributed.run_in_torchrun(train_job, job, device)
        if result is None:  # ranks other than 0 print nothing
            return
    else:
        distributed.check_nproc(nproc, device)
        preflight(job["out"], overwrite=job["overwrite"])  # a run directory that cannot be written fails first
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


def _ids(text: str | None, flag: str) -> list[str] | None:
    """``a,b,c`` -> ``["a", "b", "c"]`` (None when the flag was not given)."""
    if text is None:
        return None
    ids = [t.strip() for t in text.split(",") if t.strip()]
    if not ids:
        raise ConfigError(f"{flag} needs at least one item id (comma-separated, oldest first).")
    return ids


def _print_recommendations(title: str, payload: dict[str, Any], rec: Any, as_json: bool) -> None:
    rows = [
        {"rank": i + 1, "item": it, "score": s} for i, (it, s) in enumerate(zip(rec.items, rec.scores, strict=True))
    ]
    if as_json:
        _emit_json({**payload, "query": rec.query, "retrieval": rec.retrieval, "ignored": rec.ignored, "items": rows})
        return
    out.print(_table(title, ["rank", "item", "score"], [[r["rank"], r["item"], r["score"]] for r in rows]))


@app.command()
def recommend(
    run_dir: Path,
    user: Annotated[str | None, typer.Option(help="Raw user id, as in the dataset.")] = None,
    k: Annotated[int, typer.Option("-k", "--k", help="Number of items.")] = 10,
    include_seen: Annotated[bool, typer.Option(help="Also recommend items the user already consumed.")] = False,
    unknown: Annotated[
        str, typer.Option(help="For an unknown user: 'popular' (flagged fallback, the default) or 'error'.")
    ] = "popular",
    history: Annotated[
        str | None,
        typer.Option(
            help="Sequential models: the listening history to continue, raw item ids oldest first, comma-separated "
            "(default: the user's latest training items)."
        ),
    ] = None,
    seed_tracks: Annotated[
        str | None,
        typer.Option("--seed-tracks", help="Continue a new playlist from these tracks (comma-separated raw ids)."),
    ] = None,
    session: Annotated[
        str | None,
        typer.Option(help="Next tracks for a listening session in progress (raw ids oldest first, comma-separated)."),
    ] = None,
    audio: Annotated[
        list[Path] | None,
        typer.Option(help="Cold start (dcue, wmf-regression): the catalogue tracks nearest each new audio file."),
    ] = None,
    as_json: Json = False,
) -> None:
    """Top-k items for a user, a new playlist (--seed-tracks), a session (--session) or new audio (--audio)."""
    from segue.api import Fitted

    asked = [name for name, v in (("--user", user), ("--seed-tracks", seed_tracks), ("--session", session),
                                  ("--audio", audio)) if v]  # fmt: skip
    if len(asked) != 1:
        raise ConfigError(
            "Give exactly one of --user, --seed-tracks, --session or --audio"
            + (f", not {' and '.join(asked)}." if asked else ".")
        )
    if history is not None and user is None:
        raise ConfigError("--history goes with --user; for a session without a user, use --session.")
    m = Fitted.load(run_dir)
    if user is not None:
        rec = m.recommend(user, k, history=_ids(history, "--history"), exclude_seen=not include_seen, unknown=unknown)
        fallback = "popular" if rec.query == "popular-fallback" else None
        title = f"Top {k} for user {user}" + (" (unknown user: popularity fallback)" if fallback else "")
        _print_recommendations(title, {"user": user, "k": k, "fallback": fallback}, rec, as_json)
    elif seed_tracks is not None:
        seeds = _ids(seed_tracks, "--seed-tracks")
        rec = m.continue_playlist(seeds, k)
        _print_recommendations(f"Top {k} to continue a playlist of {len(seeds)} tracks", {"seed_tracks": seeds, "k": k},
                               rec, as_json)  # fmt: skip
    elif session is not None:
        tracks = _ids(session, "--session")
        rec = m.next_track(tracks, k)
        _print_recommendations(f"Next {k} after a session of {len(tracks)} tracks", {"session": tracks, "k": k},
                               rec, as_json)  # fmt: skip
    else:
        assert audio is not None
        recs = m.from_audio(audio, k)
        if as_json:
            _emit_json({"k": k, "audio": [{"file": str(f), "items": r.items, "scores": r.scores}
                                          for f, r in zip(audio, recs, strict=True)]})  # fmt: skip
            return
        for f, r in zip(audio, recs, strict=True):
            _print_recommendations(f"Catalogue tracks nearest {f}", {}, r, False)


@app.command()
def similar(
    run_dir: Path,
    item: Annotated[str, typer.Argument(help="Raw item (track) id.")],
    k: Annotated[int, typer.Option("-k", "--k", help="Number of items.")] = 10,
    as_json: Json = False,
) -> None:
    """The k items most similar to ITEM under the model's own measure (models with item vectors)."""
    from segue.api import Fitted

    rec = Fitted.load(run_dir).similar(item, k)
    _print_recommendations(f"Top {k} similar to {item}", {"item": item, "k": k}, rec, as_json)


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


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True}, add_help_option=False)
def reproduce(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Argument(help="Table to reproduce (see --list).")] = None,
    list_: Annotated[bool, typer.Option("--list", help="List the reproductions and exit.")] = False,
) -> None:
    """Reproduce a paper's table into docs/results/ (extra arguments go to the script; try NAME --help)."""
    from segue.reproduce import REPRODUCTIONS, run_reproduction

    if name in ("--help", "-h") or (name is None and not list_ and {"--help", "-h"} & set(ctx.args)):
        out.print(ctx.get_help())  # NAME --help reaches the table's own parser (typer's --help is off here)
        return
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
app.add_typer(__import__("segue.delivery.cli", fromlist=["delivery_app"]).delivery_app, name="delivery")


def main() -> None:
    """Entry point: run the app, turning user errors into one-line messages (exit status 2)."""
    try:
        app()
    except SegueError as e:
        err.print(f"[red]error:[/red] {e}", highlight=False, soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
