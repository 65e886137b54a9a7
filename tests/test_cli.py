"""The `segue` command line: JSON output, run directories, and one-line errors with exit status 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from segue.cli import app

from .conftest import make_frame

runner = CliRunner()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A data directory holding a tiny ml-100k-format u.data (tab-separated, no header)."""
    d = tmp_path / "data"
    (d / "ml-100k").mkdir(parents=True)
    f = make_frame(n_users=25, n_items=30, per_user=8)
    f["user"] = f["user"].str[1:].astype(int) + 1
    f[["user", "item", "rating", "ts"]].to_csv(d / "ml-100k" / "u.data", sep="\t", header=False, index=False)
    return d


def _segue(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the real entry point in a subprocess (exit codes and stderr as a user sees them)."""
    code = "from segue.cli import main; main()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)


def test_models_and_datasets_json(data_dir: Path) -> None:
    r = runner.invoke(app, ["models", "--json"])
    assert r.exit_code == 0
    names = {m["name"] for m in json.loads(r.stdout)}
    assert {"pop", "itemknn", "mf-bpr", "wmf"} <= names
    r = runner.invoke(app, ["datasets", "--json", "--data-dir", str(data_dir)])
    assert r.exit_code == 0
    ds = {d["name"]: d["present"] for d in json.loads(r.stdout)["datasets"]}
    assert ds["ml-100k"] is True and ds["ml-1m"] is False


def test_train_evaluate_recommend_round_trip(tmp_path: Path, data_dir: Path) -> None:
    run_dir = tmp_path / "run"
    r = runner.invoke(
        app,
        [
            "train",
            "mf-bpr",
            "ml-100k",
            "--data-dir",
            str(data_dir),
            "--out",
            str(run_dir),
            "--epochs",
            "2",
            "--set",
            "dim=8",
            "--negatives",
            "10",
            "--json",
        ],
    )
    assert r.exit_code == 0, r.output
    trained = json.loads(r.stdout)
    assert set(trained["test"]) == {"HR@10", "NDCG@10", "tie_rate"} and trained["run_dir"] == str(run_dir)

    r = runner.invoke(app, ["evaluate", str(run_dir), "--json"])
    assert r.exit_code == 0, r.output
    ev = json.loads(r.stdout)
    assert ev["metrics"] == pytest.approx(ev["saved"]) and ev["cases"] == 25

    r = runner.invoke(app, ["recommend", str(run_dir), "--user", "3", "-k", "5", "--json"])
    assert r.exit_code == 0, r.output
    rec = json.loads(r.stdout)
    assert len(rec["items"]) == 5 and rec["fallback"] is None
    # consumed (training) items are excluded unless --include-seen
    from segue.training.checkpoint import load_run

    loaded = load_run(run_dir)
    train_items = set(loaded.item_map.to_raw(loaded.seen[loaded.user_map.to_internal([3])[0]].indices).tolist())
    assert not train_items & {it["item"] for it in rec["items"]}
    r = runner.invoke(app, ["recommend", str(run_dir), "--user", "3", "-k", "30", "--include-seen", "--json"])
    assert r.exit_code == 0 and train_items <= {it["item"] for it in json.loads(r.stdout)["items"]}


def test_training_flags_and_sets_reach_the_trainer(tmp_path: Path, data_dir: Path) -> None:
    r = runner.invoke(
        app,
        ["train", "mf-bpr", "ml-100k", "--data-dir", str(data_dir), "--out", str(tmp_path / "r"), "--negatives", "10",
         "--set", "dim=4", "--set", "max_seconds=30", "--epochs", "2", "--patience", "3", "--batch-size", "32",
         "--lr", "0.05", "--seed", "4", "--json"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    saved = json.loads((tmp_path / "r" / "config.json").read_text())
    assert saved["model_options"]["dim"] == 4
    train = saved["train"]
    assert (
        train["max_seconds"],
        train["epochs"],
        train["patience"],
        train["batch_size"],
        train["lr"],
        train["seed"],
    ) == (
        30,
        2,
        3,
        32,
        0.05,
        4,
    )


def test_train_help_shows_the_config_tables() -> None:
    r = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "200"})
    assert "[model] and [train] tables" in r.output and "--max-seconds" in r.output


def test_toml_config_is_used(tmp_path: Path, data_dir: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[model]\ndim = 4\n[train]\nepochs = 1\nprogress = false\n")
    r = runner.invoke(
        app,
        [
            "train",
            "mf-bpr",
            "ml-100k",
            "--data-dir",
            str(data_dir),
            "--out",
            str(tmp_path / "r"),
            "--config",
            str(cfg),
            "--negatives",
            "10",
            "--json",
        ],
    )
    assert r.exit_code == 0, r.output
    saved = json.loads((tmp_path / "r" / "config.json").read_text())
    assert saved["model_options"]["dim"] == 4 and saved["train"]["epochs"] == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "nope", "ml-100k"], "Unknown model 'nope'"),
        (["train", "pop", "netflix"], "Unknown dataset 'netflix'"),
        (["train", "pop", "ml-1m"], "cfm/ml-1m.zip not found"),
        (["train", "mf-bpr", "ml-100k", "--set", "dimension=3"], "--set dimension: not an option of model 'mf-bpr'"),
        (["train", "mf-bpr", "ml-100k", "--max-seconds", "0"], "max_seconds must be > 0"),
        (["train", "mf-bpr", "ml-100k", "--set", "lr=fast"], "Option lr of the trainer"),
        (["train", "mf-bpr", "ml-100k", "--set", "dim"], "--set expects key=value"),
        (["train", "pop", "ml-100k", "--protocol", "everything"], "Unknown protocol 'everything'"),
        (["train", "pop", "ml-100k"], "leaving fewer than 100 to sample as negatives"),
        (["evaluate", "/nonexistent/run"], "does not exist"),
        (["reproduce", "table-99"], "Unknown reproduction 'table-99'"),
    ],
)
def test_errors_are_one_line_with_status_2(args: list[str], message: str, data_dir: Path) -> None:
    r = _segue(*args, "--data-dir", str(data_dir)) if args[0] == "train" else _segue(*args)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr
    assert "Traceback" not in r.stderr
    assert len([ln for ln in r.stderr.strip().splitlines() if ln.strip()]) <= 3  # one sentence, maybe wrapped


def test_recommend_unknown_user_and_bad_k(tmp_path: Path, data_dir: Path) -> None:
    run_dir = tmp_path / "run"
    r = runner.invoke(
        app,
        ["train", "pop", "ml-100k", "--data-dir", str(data_dir), "--out", str(run_dir), "--negatives", "10", "--json"],
    )
    assert r.exit_code == 0, r.output
    p = _segue("recommend", str(run_dir), "--user", "999999", "--unknown", "error")
    assert p.returncode == 2 and "Unknown user id '999999'" in p.stderr
    p = _segue("recommend", str(run_dir), "--user", "999999", "--json")  # the flagged fallback is the default
    assert p.returncode == 0 and json.loads(p.stdout)["fallback"] == "popular"
    assert json.loads(p.stdout)["query"] == "popular-fallback"
    p = _segue("recommend", str(run_dir), "--user", "1", "-k", "100000")
    assert p.returncode == 2 and "catalogue size" in p.stderr


def test_corrupt_run_directory(tmp_path: Path, data_dir: Path) -> None:
    run_dir = tmp_path / "run"
    runner.invoke(
        app,
        ["train", "pop", "ml-100k", "--data-dir", str(data_dir), "--out", str(run_dir), "--negatives", "10", "--json"],
    )
    (run_dir / "id_maps.parquet").write_bytes(b"not parquet")
    p = _segue("recommend", str(run_dir), "--user", "1")
    assert p.returncode == 2 and "id_maps.parquet is unreadable" in p.stderr


def test_malformed_data_file(tmp_path: Path) -> None:
    d = tmp_path / "data" / "ml-100k"
    d.mkdir(parents=True)
    (d / "u.data").write_text("1\t2\t5\t881250949\nnot-a-row\n")
    p = _segue("train", "pop", "ml-100k", "--data-dir", str(tmp_path / "data"))
    assert p.returncode == 2 and "Traceback" not in p.stderr and "u.data" in p.stderr


def test_reproduce_lists_every_table_and_forwards_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    import segue.reproduce.runner as spec_runner

    r = runner.invoke(app, ["reproduce", "--list"])
    assert r.exit_code == 0 and "sdmr-table-5.4" in r.stdout and "masr-table-4.4" in r.stdout
    seen: list[tuple[str, list[str]]] = []
    monkeypatch.setattr(spec_runner, "main", lambda name, argv: seen.append((name, argv)))
    r = runner.invoke(app, ["reproduce", "sdmr-table-5.4", "--caps", "epochs=1", "--models", "pop"])
    assert r.exit_code == 0, r.output
    assert seen == [("sdmr-table-5.4", ["--caps", "epochs=1", "--models", "pop"])]
    r = runner.invoke(app, ["reproduce", "sdmr-table-5.4", "--help"])  # NAME --help reaches the table's parser
    assert r.exit_code == 0 and seen[-1] == ("sdmr-table-5.4", ["--help"])
    r = runner.invoke(app, ["reproduce", "--help"])
    assert r.exit_code == 0 and "Reproduce a paper's table" in r.stdout


def test_reproduce_name_help_prints_the_tables_options() -> None:
    p = _segue("reproduce", "sdmr-table-5.4", "--help")
    assert p.returncode == 0 and "--quick" in p.stdout and "--caps" in p.stdout, p.stdout + p.stderr


def _train_caser(run_dir: Path, data_dir: Path) -> Path:
    """A one-epoch Caser run (a sequential model with a 3-item window) in ``run_dir``."""
    r = runner.invoke(
        app,
        ["train", "caser", "ml-100k", "--data-dir", str(data_dir), "--out", str(run_dir), "--negatives", "10",
         "--epochs", "1", "--set", "s=3", "--json"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    return run_dir


def test_recommend_for_a_sequential_model_uses_recent_items_or_history(tmp_path: Path, data_dir: Path) -> None:
    run_dir = _train_caser(tmp_path / "seq", data_dir)
    from segue.training.checkpoint import load_run

    loaded = load_run(run_dir)
    assert loaded.recent is not None and loaded.recent.shape == (loaded.model.n_users + 1, 3)
    uid = loaded.user_map.to_internal(["3"])
    r = runner.invoke(app, ["recommend", str(run_dir), "--user", "3", "-k", "4", "--json"])
    assert r.exit_code == 0, r.output
    default = [it["item"] for it in json.loads(r.stdout)["items"]]
    assert len(default) == 4
    # the default history is the user's latest training items: passing them explicitly gives the same list
    latest = loaded.item_map.to_raw(loaded.recent[uid][0][loaded.recent[uid][0] > 0]).tolist()
    r = runner.invoke(
        app, ["recommend", str(run_dir), "--user", "3", "-k", "4", "--history", ",".join(map(str, latest)), "--json"]
    )
    assert r.exit_code == 0 and [it["item"] for it in json.loads(r.stdout)["items"]] == default
    bad = _segue("recommend", str(run_dir), "--user", "3", "--history", "999999")
    assert bad.returncode == 2 and "Unknown item id '999999'" in bad.stderr


def test_history_is_refused_for_a_model_that_reads_none(tmp_path: Path, data_dir: Path) -> None:
    run_dir = tmp_path / "pop"
    r = runner.invoke(
        app, ["train", "pop", "ml-100k", "--data-dir", str(data_dir), "--out", str(run_dir), "--negatives", "10"]
    )
    assert r.exit_code == 0, r.output
    bad = _segue("recommend", str(run_dir), "--user", "3", "--history", "101")
    assert bad.returncode == 2 and "history is for sequential models; pop does not read one" in bad.stderr


def test_a_damaged_recent_file_is_named(tmp_path: Path, data_dir: Path) -> None:
    import numpy as np

    from segue.errors import RunDirError
    from segue.training.checkpoint import load_run

    run_dir = _train_caser(tmp_path / "seq", data_dir)
    np.savez_compressed(run_dir / "recent.npz", items=np.full((2, 3), 10**6))
    with pytest.raises(RunDirError, match=r"recent\.npz must hold an integer"):
        load_run(run_dir)


def test_train_overwrite_never_deletes_a_foreign_directory(tmp_path: Path, data_dir: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "notes.txt").write_text("keep me")
    r = _segue("train", "pop", "ml-100k", "--data-dir", str(data_dir), "--out", str(home), "--negatives", "10",
               "--overwrite")  # fmt: skip
    assert r.returncode == 2 and "refusing to delete it" in r.stderr and "Traceback" not in r.stderr
    assert (home / "notes.txt").read_text() == "keep me"
