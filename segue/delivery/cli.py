"""``segue delivery ...``: chapter 3's reward-delivery prediction from the command line.

Mounted by the main CLI with ``app.add_typer(delivery_app, name="delivery")``. Heavy imports happen
inside the commands. User errors print one line (``error: ...``) and exit with status 2.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from segue.errors import ConfigError, SegueError

delivery_app = typer.Typer(
    name="delivery",
    help="Crowdfunding reward-delivery prediction (dissertation chapter 3): features, evaluate, train, predict.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

TimePointOpt = Annotated[str, typer.Option("--time-point", "-t", help="TP1 (launch), TP2 (mid), TP3 (end), TP4.")]
LexiconOpt = Annotated[
    str,
    typer.Option("--lexicon", help="'empath' (default), 'none', or a LIWC-format .dic file you hold a licence for."),
]
WordK = Annotated[str, typer.Option("--word-k", help="K1 range LOW:HIGH for the word clusters (Eq. 3.1).")]
RewardK = Annotated[str, typer.Option("--reward-k", help="K range LOW:HIGH for the semantic reward clusters.")]
MinCount = Annotated[int, typer.Option("--min-count", help="word2vec vocabulary minimum count.")]
NInit = Annotated[int, typer.Option("--n-init", help="k-means restarts per K (the spec's choice: 10).")]
Json = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


def _fail(e: Exception) -> None:
    typer.echo(f"error: {e}", err=True)
    raise typer.Exit(2)


def _range(s: str, name: str) -> tuple[int, int]:
    try:
        lo, hi = (int(v) for v in s.split(":"))
    except ValueError as e:
        raise ConfigError(f"{name} must look like LOW:HIGH (e.g. 1:100), not {s!r}.") from e
    return lo, hi


def _prepare(data_dir: Path, word_k: str, reward_k: str, min_count: int, n_init: int = 10):
    from segue.delivery.clusters import ClusterConfig, SemanticRewardClusters
    from segue.delivery.schema import load_data

    data = load_data(data_dir)
    cfg = ClusterConfig(
        word_k=_range(word_k, "--word-k"), reward_k=_range(reward_k, "--reward-k"), min_count=min_count, n_init=n_init
    )
    clusters = SemanticRewardClusters.fit(list(data.rewards["description"]), config=cfg)
    return data, clusters


def _banner(data) -> None:
    if data.synthetic:
        typer.echo("SYNTHETIC data (segue.delivery.synthetic): not Kickstarter projects.", err=True)


@delivery_app.command("generate")
def generate_cmd(
    out: Annotated[Path, typer.Argument(help="Directory to write the SYNTHETIC tables into.")],
    n_projects: Annotated[int, typer.Option("--n-projects", help="Number of SYNTHETIC projects.")] = 2198,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    fmt: Annotated[str, typer.Option("--format", help="parquet or csv.")] = "parquet",
) -> None:
    """Write a SYNTHETIC dataset (projects, rewards, comments, updates) with planted delivery effects."""
    try:
        from segue.delivery.synthetic import SyntheticConfig, generate

        d = generate(SyntheticConfig(n_projects=n_projects, seed=seed)).save(out, fmt)
    except SegueError as e:
        _fail(e)
    typer.echo(f"wrote SYNTHETIC delivery data ({n_projects} projects, seed {seed}) to {d}")


@delivery_app.command("features")
def features_cmd(
    data_dir: Annotated[
        Path, typer.Argument(help="Directory with projects/rewards[/comments/updates] .parquet or .csv.")
    ],
    time_point: TimePointOpt = "TP4",
    out: Annotated[Path | None, typer.Option("--out", help="Write the feature table (.csv or .parquet).")] = None,
    lexicon: LexiconOpt = "empath",
    word_k: WordK = "1:100",
    reward_k: RewardK = "1:100",
    min_count: MinCount = 5,
    n_init: NInit = 10,
    as_json: Json = False,
) -> None:
    """Compute the Table 3.1 features of every project at a time point."""
    try:
        from segue.delivery.features import TimePoint, build_features
        from segue.delivery.lexicon import get_lexicon

        time_point = TimePoint.parse(time_point).value  # fail on a bad option before the slow work
        data, clusters = _prepare(data_dir, word_k, reward_k, min_count, n_init)
        _banner(data)
        ft = build_features(data, time_point, clusters, get_lexicon(lexicon))
        if out is not None:
            if out.suffix not in (".csv", ".parquet"):
                raise ConfigError(f"--out must end in .csv or .parquet, not {out.name!r}.")
            ft.frame.to_parquet(out) if out.suffix == ".parquet" else ft.frame.to_csv(out)
    except SegueError as e:
        _fail(e)
    groups: dict[str, int] = {}
    for g in ft.groups.values():
        groups[g] = groups.get(g, 0) + 1
    info = {
        "time_point": ft.time_point.value,
        "projects": len(ft.frame),
        "features": ft.frame.shape[1],
        "groups": groups,
        "word_clusters": clusters.k1,
        "semantic_clusters": clusters.k,
        "synthetic": data.synthetic,
        "out": str(out) if out else None,
    }
    if as_json:
        sys.stdout.write(json.dumps(info, indent=2) + "\n")
    else:
        for k, v in info.items():
            typer.echo(f"{k}: {v}")


@delivery_app.command("evaluate")
def evaluate_cmd(
    data_dir: Annotated[Path, typer.Argument(help="Directory with the delivery tables (labels in projects).")],
    time_point: TimePointOpt = "TP1",
    task: Annotated[str, typer.Option("--task", help="classification, regression or both.")] = "both",
    folds: Annotated[int, typer.Option("--folds", help="Cross-validation folds.")] = 10,
    paper_mode: Annotated[
        bool,
        typer.Option("--paper-mode", help="Select features once on all data and fix lambda=0.11 (the text's way)."),
    ] = False,
    boruta_iter: Annotated[int, typer.Option("--boruta-iter", help="Boruta iterations.")] = 100,
    tune: Annotated[bool, typer.Option("--tune", help="Also report the inner 3-fold grid-tuned classifier.")] = False,
    lexicon: LexiconOpt = "empath",
    word_k: WordK = "1:100",
    reward_k: RewardK = "1:100",
    min_count: MinCount = 5,
    n_init: NInit = 10,
    as_json: Json = False,
) -> None:
    """Cross-validate the Table 3.3 classifiers (3.4 ablation at TP4) and Table 3.5 regressors at a time point."""
    try:
        from segue.delivery.features import TimePoint, build_features
        from segue.delivery.lexicon import get_lexicon
        from segue.delivery.models import EvalConfig, evaluate_classification, evaluate_regression
        from segue.delivery.selection import BorutaConfig

        if task not in ("classification", "regression", "both"):
            raise ConfigError(f"--task must be classification, regression or both, not {task!r}.")
        cfg = EvalConfig(n_folds=folds, paper_mode=paper_mode, tune=tune, boruta=BorutaConfig(max_iter=boruta_iter))
        time_point = TimePoint.parse(time_point).value  # fail on a bad option before the slow work
        data, clusters = _prepare(data_dir, word_k, reward_k, min_count, n_init)
        _banner(data)
        ft = build_features(data, time_point, clusters, get_lexicon(lexicon))
        res: dict = {"synthetic": data.synthetic}
        if task in ("classification", "both"):
            res["classification"] = evaluate_classification(ft, data, cfg).summary()
        if task in ("regression", "both"):
            res["regression"] = evaluate_regression(ft, data, cfg).summary()
    except SegueError as e:
        _fail(e)
    if as_json:
        sys.stdout.write(json.dumps(res, indent=2, default=str) + "\n")
        return
    if "classification" in res:
        c = res["classification"]
        typer.echo(f"classification at {c['time_point']} ({c['projects']} projects, {c['folds']} folds): accuracy")
        for k, v in {**c["accuracy"], **c["ablation"]}.items():
            typer.echo(f"  {k:<24} {100 * v:.1f}%")
        typer.echo("  top features: " + ", ".join(f"{r['feature']} ({r['z']:.1f})" for r in c["top_features"]))
    if "regression" in res:
        r = res["regression"]
        typer.echo(f"regression at {r['time_point']} ({r['n']} projects): RMSE days / NRMSE@A / NRMSE@B")
        for k in r["rmse"]:
            typer.echo(f"  {k:<10} {r['rmse'][k]:.1f} / {r['nrmse_a'][k]:.3f} / {r['nrmse_b'][k]:.3f}")


@delivery_app.command("train")
def train_cmd(
    data_dir: Annotated[Path, typer.Argument(help="Directory with the labelled delivery tables.")],
    out: Annotated[Path, typer.Option("--out", help="Directory for the model (model.json + classifier.txt).")],
    time_point: TimePointOpt = "TP1",
    boruta_iter: Annotated[int, typer.Option("--boruta-iter", help="Boruta iterations.")] = 100,
    lexicon: LexiconOpt = "empath",
    word_k: WordK = "1:100",
    reward_k: RewardK = "1:100",
    min_count: MinCount = 5,
    n_init: NInit = 10,
) -> None:
    """Train the classifier and duration regressor on all labelled projects; save them (no pickles)."""
    try:
        from segue.delivery.features import TimePoint
        from segue.delivery.models import EvalConfig, train
        from segue.delivery.selection import BorutaConfig

        if out.exists() and any(out.iterdir()) and not (out / "model.json").is_file():
            raise ConfigError(f"{out} exists and is not a delivery model directory; choose another --out.")
        time_point = TimePoint.parse(time_point).value  # fail on a bad option before the slow work
        data, clusters = _prepare(data_dir, word_k, reward_k, min_count, n_init)
        _banner(data)
        model = train(data, time_point, clusters, lexicon, EvalConfig(boruta=BorutaConfig(max_iter=boruta_iter)))
        model.save(out)
    except SegueError as e:
        _fail(e)
    typer.echo(f"wrote {out} ({model.time_point.value}, {len(model.columns)} classifier features)")


@delivery_app.command("predict")
def predict_cmd(
    model_dir: Annotated[Path, typer.Argument(help="A model written by 'segue delivery train'.")],
    project: Annotated[Path, typer.Argument(help="PROJECT.json: {project: {...}, rewards: [...], comments, updates}.")],
    as_json: Json = False,
) -> None:
    """Predict on-time delivery and delivery days for one project."""
    try:
        from segue.delivery.models import DeliveryModel
        from segue.delivery.schema import load_project_json

        model = DeliveryModel.load(model_dir)
        pred = model.predict(load_project_json(project))
    except SegueError as e:
        _fail(e)
    row = pred.iloc[0]
    res = {
        "project_id": str(pred.index[0]),
        "time_point": model.time_point.value,
        "p_on_time": float(row["p_on_time"]),
        "on_time": bool(row["on_time"]),
        "delivery_days": float(row["delivery_days"]) if "delivery_days" in row else None,
        "model_trained_on_synthetic_data": model.synthetic,
    }
    if as_json:
        sys.stdout.write(json.dumps(res, indent=2) + "\n")
        return
    if model.synthetic:
        typer.echo("note: this model was trained on SYNTHETIC data.", err=True)
    for k, v in res.items():
        typer.echo(f"{k}: {v}")
