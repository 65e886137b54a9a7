"""The reproduction runner (segue/reproduce/runner.py) on a toy spec, and every table's --quick run (slow)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from segue.errors import ConfigError
from segue.reproduce import REPRODUCTIONS, run_reproduction
from segue.reproduce.runner import (
    RunCache,
    TableSpec,
    cache_root,
    config_key,
    history_summary,
    load_spec,
    parse_caps,
    resolve,
    run_table,
    select_on_dev,
    spec_names,
    training_summary,
    write_table,
)

from .conftest import make_frame

CALLS: list[tuple[str, str, dict[str, Any]]] = []


def toy_prepare(dataset: str, spec: Any, caps: dict[str, Any]) -> dict[str, Any]:
    return {"dataset": dataset, "scale": 1.0 if dataset == "toy-a" else 0.5}


def toy_fit(prepared: dict[str, Any], row: Any) -> dict[str, Any]:
    """dev rises with ``options.x``, test falls with it: choosing on test would pick the other end."""
    CALLS.append((row.dataset, row.model.label, dict(row.options)))
    x = float(row.options.get("x", 1.0))
    s = prepared["scale"]
    base = row.trained.get(row.model.depends[0]).value if row.model.depends else 0.0
    model = type("Trained", (), {"value": base + x})()
    return {
        "dev": {"HR@10": s * x / 10, "NDCG@10": s * x / 20},
        "test": {"HR@10": s * (1 - x / 10), "NDCG@10": s * (1 - x / 20) / 2},
        "model": model,
        "depends_value": base,
    }


def _toy_spec(**over: Any) -> TableSpec:
    data: dict[str, Any] = {
        "name": "toy-table",
        "title": "a toy",
        "paper": "nowhere",
        "metrics": ["HR@10", "NDCG@10"],
        "datasets": ["toy-a", "toy-b"],
        "prepare": "tests.test_reproduce:toy_prepare",
        "caps": {"budget_seconds": 1000},
        "quick": {"tiny": True},
        "same_data": ["toy-a"],
        "notes": "toy-table.notes.md",
        "models": [
            {
                "label": "base",
                "fit": "tests.test_reproduce:toy_fit",
                "grid": [{"options": {"x": 1.0}}, {"options": {"x": 3.0}}, {"options": {"x": 2.0}}],
                "paper": {"toy-a": {"HR@10": 0.5, "NDCG@10": 0.25}},
            },
            {
                "label": "stacked",
                "fit": "tests.test_reproduce:toy_fit",
                "depends": ["base"],
                "options": {"x": 0.5},
                "paper": {"*": {"HR@10": 0.9}},
            },
        ],
        "checks": [{"better": "stacked", "than": ["base"]}],
    }
    data.update(over)
    return TableSpec.from_dict(data, "toy")


@pytest.fixture(autouse=True)
def _reset_calls() -> None:
    CALLS.clear()


def test_cache_hit_skips_training_and_a_changed_config_retrains(tmp_path: Path) -> None:
    spec = _toy_spec()
    first = run_table(spec, cache=RunCache(tmp_path / "runs.jsonl"), log=lambda s: None)
    assert first.trained == 2 * (3 + 1) and first.cached == 0 and len(CALLS) == 8
    CALLS.clear()
    again = run_table(spec, cache=RunCache(tmp_path / "runs.jsonl"), log=lambda s: None)
    assert again.trained == 0 and again.cached == 8 and CALLS == []
    assert again.row_seconds == pytest.approx(first.row_seconds) and first.row_seconds > 0  # compute kept in the cache
    assert [r["metrics"] for r in again.rows] == [r["metrics"] for r in first.rows]
    # one option changed: only that row (and nothing else) trains again
    spec.models[1].options = {"x": 0.25}
    third = run_table(spec, cache=RunCache(tmp_path / "runs.jsonl"), log=lambda s: None)
    assert {c[1] for c in CALLS} == {"base", "stacked"}  # base retrained once per dataset to hand over its model
    assert third.trained == 2 * (1 + 1) and third.cached == 2 * 2
    # the key is a hash of the row's whole config
    assert config_key({"a": 1, "b": [1, 2]}) == config_key({"b": [1, 2], "a": 1}) != config_key({"a": 2, "b": [1, 2]})


def test_dev_grid_selection_uses_dev_only(tmp_path: Path) -> None:
    out = run_table(_toy_spec(), cache=RunCache(None), log=lambda s: None)
    base = [r for r in out.rows if r["model"] == "base"]
    assert [r["options"]["x"] for r in base] == [3.0, 3.0]  # the best dev point ...
    grid_tests = [g["test"]["HR@10"] for g in out.grid if g["dataset"] == "toy-a"]
    assert base[0]["metrics"]["HR@10"] == min(grid_tests) < max(grid_tests)  # ... although test is worst there
    # the dependent row got the selected model
    stacked = next(r for r in out.rows if r["model"] == "stacked" and r["dataset"] == "toy-a")
    assert stacked["depends_value"] == 3.0
    assert (
        select_on_dev([{"dev": {"a": 1, "b": 5}}, {"dev": {"a": 1, "b": 6}}, {"dev": {"a": 0, "b": 9}}], ["a", "b"])
        == 1
    )


def test_writer_has_paper_vs_ours_columns_checks_and_notes_link(tmp_path: Path) -> None:
    spec = _toy_spec()
    out = run_table(spec, cache=RunCache(None), log=lambda s: None)
    path = write_table(spec, out, tmp_path, command="segue reproduce toy-table")
    result = json.loads(path.read_text())
    md = path.with_suffix(".md").read_text()
    assert "| model | HR@10 ours | HR@10 paper | HR@10 diff | NDCG@10 ours | NDCG@10 paper | NDCG@10 diff |" in md
    a = next(r for r in result["rows"] if r["model"] == "base" and r["dataset"] == "toy-a")
    assert a["paper"] == {"HR@10": 0.5, "NDCG@10": 0.25} and a["same_data_as_paper"] is True
    ours = a["metrics"]["HR@10"]
    assert f"| base | {ours:.4f} | 0.5000 | {ours - 0.5:+.3f} |" in md
    b = next(r for r in result["rows"] if r["model"] == "base" and r["dataset"] == "toy-b")
    assert b["paper"] is None and b["same_data_as_paper"] is False
    assert any("stacked HR@10" in line and "max(base)" in line for line in result["checks"])
    assert "## Dev grid (selection on dev only" in md and "[toy-table.notes.md](toy-table.notes.md)" in md
    assert "budget_seconds=1000" in md


def history_fit(prepared: dict[str, Any], row: Any) -> dict[str, Any]:
    """A hook returning its trainer History: ``options.stop`` says how it stopped (dev rising when capped)."""
    from segue.training.trainer import History

    stop = row.options["stop"]
    vals = [0.2, 0.3, 0.35, 0.34, 0.33, 0.32] if stop == "patience" else [0.2, 0.3, 0.35, 0.39]
    recs = [{"epoch": e, "loss": 1.0, "valid": {"HR@10": v, "NDCG@10": v / 2}} for e, v in enumerate(vals, 1)]
    best = int(np.argmax(vals)) + 1
    hist = History(epochs=recs, best_epoch=best, monitor="HR@10,NDCG@10", stopped_by=stop)
    return {"dev": {"HR@10": vals[best - 1]}, "test": {"HR@10": 0.1}, "history": hist}


def test_runner_records_how_each_row_stopped_and_the_last_slope_of_capped_rows(tmp_path: Path) -> None:
    models = [
        {"label": "conv", "fit": "tests.test_reproduce:history_fit", "options": {"stop": "patience"}},
        {"label": "capped", "fit": "tests.test_reproduce:history_fit", "options": {"stop": "time_cap"}},
        {"label": "short", "fit": "tests.test_reproduce:history_fit", "options": {"stop": "epochs"}},
        {"label": "gridded", "fit": "tests.test_reproduce:history_fit",
         "grid": [{"options": {"stop": "patience"}}, {"options": {"stop": "time_cap"}}]},
    ]  # fmt: skip
    spec = _toy_spec(models=models, checks=[], datasets=["toy-a"], metrics=["HR@10"])
    cache = RunCache(tmp_path / "runs.jsonl")
    out = run_table(spec, cache=cache, log=lambda s: None)
    rows = {r["model"]: r for r in out.rows}
    conv, capped = rows["conv"], rows["capped"]
    assert (conv["stopped_by"], conv["epochs_run"], conv["best_epoch"]) == ("patience", 6, 3)
    assert conv["dev_curve"][0] == [1, 0.2] and conv["dev_last_slope"] == pytest.approx(-0.01)
    assert (capped["stopped_by"], capped["epochs_run"], capped["best_epoch"]) == ("time cap", 4, 4)
    assert capped["dev_last_slope"] == pytest.approx(0.04) and rows["short"]["stopped_by"] == "epoch cap"
    assert "history" not in capped  # the History object itself is not kept, only its summary
    # cached rows keep the summary; the writer shows it and names the capped rows
    again = run_table(spec, cache=RunCache(tmp_path / "runs.jsonl"), log=lambda s: None)
    assert again.trained == 0 and {r["model"]: r["stopped_by"] for r in again.rows}["capped"] == "time cap"
    md = write_table(spec, again, tmp_path, command="segue reproduce toy-table").with_suffix(".md").read_text()
    assert "| toy-a | capped | time cap | 4 | 4 | +0.0400 (capped) |" in md
    assert "Stopped by a cap, not by patience: toy-a/capped, toy-a/short" in md
    # every dev-grid point a cap stopped is named, chosen or not
    assert "Dev-grid points stopped by a cap" in md and "toy-a/gridded {'stop': 'time_cap'} (time cap, epoch 4" in md
    assert "toy-a/gridded {'stop': 'patience'}" not in md
    # an APR row's earlier BPR stage is summarised too
    s = training_summary(
        {"epochs": [], "stopped_by": "patience", "stages": {"bpr": {"epochs": [], "stopped_by": "epochs"}}}
    )
    assert s["stages"]["bpr"]["stopped_by"] == "epoch cap" and s["dev_last_slope"] is None


def test_budget_stops_starting_rows_and_names_them() -> None:
    out = run_table(_toy_spec(), cache=RunCache(None), budget=0.0, log=lambda s: None)
    assert out.trained == 0 and CALLS == [] and out.rows == []
    assert any("toy-a/base" in s and "budget" in s for s in out.not_run)


def test_quick_takes_the_first_dataset_grid_point_and_seed_with_quick_caps() -> None:
    spec = _toy_spec(seeds=[0, 1, 2])
    out = run_table(spec, quick=True, cache=RunCache(None), log=lambda s: None)
    assert {c[0] for c in CALLS} == {"toy-a"} and len(CALLS) == 2
    assert spec.caps_for("toy-a", True)["tiny"] is True and "tiny" not in spec.caps_for("toy-a", False)
    assert all(r["same_data_as_paper"] is False for r in out.rows)  # a quick run is never the paper's setting


def test_seeds_are_averaged_and_models_filter_keeps_dependencies() -> None:
    out = run_table(_toy_spec(seeds=[0, 1]), models=["stacked"], datasets=["toy-b"], log=lambda s: None)
    assert {r["model"] for r in out.rows} == {"base", "stacked"}
    assert all(r["seeds"] == [0, 1] and r["std"]["HR@10"] == 0.0 for r in out.rows)
    with pytest.raises(ConfigError, match="no model"):
        run_table(_toy_spec(), models=["nope"], log=lambda s: None)
    with pytest.raises(ConfigError, match="no dataset"):
        run_table(_toy_spec(), datasets=["nope"], log=lambda s: None)


def test_history_summary_says_how_a_row_stopped_and_its_last_dev_slope() -> None:
    from segue.training.trainer import History

    h = History(monitor="HR@10,NDCG@10", stopped_by="time_cap", best_epoch=4)
    h.epochs = [{"epoch": e, "valid": {"HR@10": 0.1 * e, "NDCG@10": 0.0}} for e in range(1, 5)] + [{"epoch": 5}]
    s = history_summary(h)
    assert s["stopped_by"] == "time_cap" and s["epochs"] == 5 and s["best_epoch"] == 4
    assert s["dev_slope"] == pytest.approx(0.1) and s["dev_slope_metric"] == "HR@10"  # over epochs 2..4
    one = History(monitor="HR@10", stopped_by="epochs")
    one.epochs = [{"epoch": 0, "valid": {"HR@10": 0.0}}, {"epoch": 1, "valid": {"HR@10": 0.5}}]
    assert history_summary(one)["dev_slope"] is None and history_summary(one)["epochs"] == 1


def test_parse_caps_reads_toml_values() -> None:
    assert parse_caps(["text_loss=true", "max_seconds=30", "name=abc", "x = 1.5"]) == {
        "text_loss": True,
        "max_seconds": 30,
        "name": "abc",
        "x": 1.5,
    }
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_caps(["oops"])


def test_a_spent_budget_does_not_retrain_a_dependency(tmp_path: Path) -> None:
    spec = _toy_spec(datasets=["toy-a"])
    cache = RunCache(tmp_path / "runs.jsonl")
    run_table(spec, models=["base"], cache=cache, log=lambda s: None)  # base cached, its model is not
    CALLS.clear()
    out = run_table(spec, cache=RunCache(tmp_path / "runs.jsonl"), budget=0.0, log=lambda s: None)
    assert CALLS == [] and [r["model"] for r in out.rows] == ["base"]
    assert any("stacked" in s for s in out.not_run) and any("base's model" in s for s in out.not_run)


def test_writer_lists_how_rows_stopped(tmp_path: Path) -> None:
    spec = _toy_spec()
    out = run_table(spec, cache=RunCache(None), log=lambda s: None)
    out.rows[0].update({"stopped_by": "time_cap", "epochs": 7, "best_epoch": 7, "dev_slope": 0.012,
                        "dev_slope_metric": "HR@10"})  # fmt: skip
    md = write_table(spec, out, tmp_path, command="x").with_suffix(".md").read_text()
    assert "| toy-a | base | time_cap | 7 | 7 | +0.0120 (capped) |" in md


def test_sdmr_table_spec() -> None:
    """Table 5.3's spec: both datasets, loo-sampled with 100 negatives, every row of the table, the claims."""
    spec = load_spec("sdmr-table-5.3")
    assert spec.datasets == ["ml-100k", "ml-1m"] and spec.same_data == ["ml-100k"]
    assert spec.protocol == {"name": "loo-sampled", "negatives": 100, "seed": 0}
    labels = [m.label for m in spec.models]
    assert labels[:3] == ["random", "pop", "itemknn"] and labels[-3:] == ["sdp", "sdm", "sdmr"]
    assert {"mf-bpr", "cml", "neumf++", "cmn++", "prme", "prme-s", "transrec", "caser"} <= set(labels)
    by = {m.label: m for m in spec.models}
    assert by["pop"].reference and by["random"].reference and by["sdmr"].depends == ["sdp", "sdm"]
    assert by["sdm"].paper_for("ml-100k") == {"HR@10": 0.713, "NDCG@10": 0.435}
    assert by["sdmr"].paper_for("ml-1m") == {"HR@10": 0.810, "NDCG@10": 0.662}
    assert all(m.paper_for("ml-1m") for m in spec.models if not m.reference)
    # the dev grid: the first point runs everywhere, the others on ml-100k only; the authors' 3 hops first
    assert by["sdm"].grid[0]["options"]["hops"] == 3 and len(by["sdp"].grid) == 3
    assert all(g.get("datasets") == ["ml-100k"] for m in spec.models for g in m.grid[1:])
    assert {(c["better"], tuple(c["than"])) for c in spec.checks} >= {
        ("sdm", ("mf-bpr", "cml", "neumf++")),
        ("sdmr", ("mf-bpr", "cml", "neumf++")),
    }
    # trained to convergence: patience, a large epoch cap, a per-row time net; --quick is tiny
    caps = spec.caps_for("ml-100k", False)
    assert caps["patience"] == 3 and caps["epochs"] >= 100 and caps["max_seconds"] > 0
    assert spec.caps_for("ml-1m", False)["max_seconds"] > 0
    assert spec.caps_for("ml-100k", True)["epochs"] == 1
    assert REPRODUCTIONS["sdmr-table-5.3"][0] == "spec:sdmr-table-5.3"


def test_spec_validation() -> None:
    with pytest.raises(ConfigError, match="unknown key"):
        _toy_spec(colour="red")
    with pytest.raises(ConfigError, match="depends on"):
        _toy_spec(models=[{"label": "a", "depends": ["b"]}, {"label": "b"}])
    with pytest.raises(ConfigError, match="a check is"):
        _toy_spec(checks=[{"better": "base", "than": "stacked"}])
    with pytest.raises(ConfigError, match="hook"):
        resolve("no-colon")


def test_packaged_specs_load_and_their_hooks_resolve() -> None:
    names = spec_names()
    assert {"foundation-baselines", "masr-table-4.4", "sdmr-table-5.3"} <= set(names)
    for name in names:
        spec = load_spec(name)
        assert REPRODUCTIONS[name][0] == f"spec:{name}"
        resolve(spec.prepare)
        for m in spec.models:
            resolve(m.fit or "segue.reproduce.runner:pipeline_row")
            assert m.paper_for(spec.datasets[0]) is None or set(m.paper_for(spec.datasets[0])) <= set(spec.metrics)
        assert spec.quick and spec.caps.get("budget_seconds")


@pytest.mark.parametrize("name", spec_names())
def test_every_spec_validates_its_hooks_resolve_and_its_models_are_registered(name: str) -> None:
    """Each packaged spec loads, names itself, has quick caps and a budget, and every row names a known model."""
    import importlib

    from segue.models.base import list_models

    spec = load_spec(name)
    assert spec.name == name and REPRODUCTIONS[name][0] == f"spec:{name}"
    assert spec.quick and spec.caps.get("budget_seconds") and spec.notes == f"{name}.notes.md"
    assert (Path(__file__).resolve().parents[1] / "docs" / "results" / spec.notes).exists()
    assert set(spec.quick_datasets) <= set(spec.datasets) and set(spec.same_data) <= set(spec.datasets)
    for ref in [spec.prepare, *([spec.markdown] if spec.markdown else [])]:
        assert callable(resolve(ref))
    registry = set(list_models())
    labels = [m.label for m in spec.models]
    for m in spec.models:
        hook = m.fit or "segue.reproduce.runner:pipeline_row"
        assert callable(resolve(hook))
        assert set(m.datasets) <= set(spec.datasets), m.label
        # the registry name: options.model / options.kind (a hook's own switch), model, the label (masr_ps: masr)
        names = {m.options.get("model"), m.options.get("kind"), m.model or m.label, m.label.split("_")[0]} - {None}
        unregistered = set(getattr(importlib.import_module(hook.split(":")[0]), "UNREGISTERED_ROWS", ()))
        assert names & (registry | unregistered), f"{name}/{m.label}: none of {names} is a registered model"
        for ds in spec.datasets:
            paper = m.paper_for(ds)
            assert paper is None or set(paper) <= set(spec.metrics), f"{name}/{m.label}: paper metrics"
        for g in m.grid:
            assert set(g) <= {"options", "train", "datasets"}, f"{name}/{m.label}: grid point {g}"
    for c in spec.checks:
        assert c["better"] in labels and set(c["than"]) <= set(labels), c


def test_no_machine_path_in_reproduce_code_or_specs() -> None:
    root = Path(__file__).resolve().parents[1] / "segue" / "reproduce"
    for p in [*root.glob("*.py"), *root.glob("specs/*.toml")]:
        text = p.read_text()
        for bad in ("/work/", "/home/", "/tmp/segue"):
            assert bad not in text, f"{p.name} holds a machine path ({bad})"


def test_parse_caps_reads_numbers_and_refuses_a_bare_key() -> None:
    from segue.reproduce.runner import parse_caps

    assert parse_caps(["epochs=3", "text_loss=true", "name=abc", "lr=1e-3"]) == {
        "epochs": 3, "text_loss": True, "name": "abc", "lr": 1e-3}  # fmt: skip
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_caps(["epochs"])


def test_checks_read_ranks_as_lower_is_better_and_skip_undefined_metrics() -> None:
    from segue.reproduce.runner import check_lines

    spec = _toy_spec(metrics=["MRR", "Rank", "Track"], lower_is_better=["Rank"])
    rows = [
        {"model": "base", "dataset": "d", "metrics": {"MRR": 0.2, "Rank": 9.0, "Track": float("nan")}},
        {"model": "stacked", "dataset": "d", "metrics": {"MRR": 0.3, "Rank": 8.0, "Track": float("nan")}},
    ]
    lines = check_lines(spec, rows)
    assert any("Rank 8.0000 <= min(base) 9.0000: holds" in x for x in lines)
    assert any("MRR 0.3000 >= max(base) 0.2000: holds" in x for x in lines) and not any("Track" in x for x in lines)


def test_a_check_may_name_the_metrics_the_paper_claims_it_on() -> None:
    """``metrics = [..]`` limits a check to those metrics; a metric the table lacks is refused when the spec loads."""
    from segue.reproduce.runner import check_lines

    spec = _toy_spec(checks=[{"better": "stacked", "than": ["base"], "metrics": ["NDCG@10"]}])
    rows = [
        {"model": "base", "dataset": "d", "metrics": {"HR@10": 0.5, "NDCG@10": 0.2}},
        {"model": "stacked", "dataset": "d", "metrics": {"HR@10": 0.4, "NDCG@10": 0.3}},
    ]
    assert check_lines(spec, rows) == ["- d: stacked NDCG@10 0.3000 >= max(base) 0.2000: holds"]
    with pytest.raises(ConfigError, match="a check's metrics"):
        _toy_spec(checks=[{"better": "stacked", "than": ["base"], "metrics": ["MAP"]}])
    with pytest.raises(ConfigError, match="a check's metrics"):
        _toy_spec(checks=[{"better": "stacked", "than": ["base"], "metrics": "HR@10"}])


def test_cache_root_follows_segue_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SEGUE_CACHE", str(tmp_path))
    assert cache_root() == tmp_path / "reproduce"
    monkeypatch.delenv("SEGUE_CACHE")
    assert cache_root() == Path("~/.cache/segue/reproduce").expanduser()


def test_command_line_on_the_pipeline_hook(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """``segue reproduce NAME`` through the runner: a spec on segue.pipeline.run with a tiny synthetic dataset."""
    import segue.reproduce.runner as runner
    from segue.data.interactions import Interactions

    frame = make_frame(n_users=60, n_items=300, per_user=10)
    data = Interactions.from_frame(frame, timestamp="ts", weight="rating", name="toy")
    monkeypatch.setattr("segue.data.datasets.load_dataset", lambda name, progress=False: data)
    spec = _toy_spec(
        datasets=["toy"],
        same_data=[],
        prepare="segue.reproduce.runner:prepare_protocol",
        protocol={"name": "loo-sampled", "seed": 0},
        quick={"epochs": 1},
        models=[
            {"label": "pop", "reference": True},
            {"label": "mf-bpr", "options": {"dim": 8}, "grid": [{"train": {"lr": 0.01}}, {"train": {"lr": 0.05}}]},
        ],
        checks=[{"better": "mf-bpr", "than": ["pop"]}],
    )
    monkeypatch.setattr(runner, "load_spec", lambda name: spec)
    monkeypatch.setitem(REPRODUCTIONS, "toy-table", ("spec:toy-table", "a toy"))
    monkeypatch.setenv("SEGUE_CACHE", str(tmp_path / "cache"))
    out = run_reproduction("toy-table", ["--quick"])
    assert out.trained == 2 and {r["model"] for r in out.rows} == {"pop", "mf-bpr"}
    written = tmp_path / "cache" / "reproduce" / "quick" / "toy-table.json"
    result = json.loads(written.read_text())
    assert result["command"] == "segue reproduce toy-table --quick" and result["quick"] is True
    assert all(0.0 <= r["metrics"]["HR@10"] <= 1.0 and r["dev"] for r in result["rows"])
    again = run_reproduction("toy-table", ["--quick", "--out", str(tmp_path / "o")])
    assert again.trained == 0 and again.cached == 2 and (tmp_path / "o" / "toy-table.md").exists()
    full = run_reproduction("toy-table", ["--out", str(tmp_path / "full")])  # both grid points, dev decides
    assert full.trained == 3 and len(full.grid) == 2  # its own cache (full caps): pop + both grid points


def test_segue_reproduce_list_shows_migrated_and_script_tables() -> None:
    from typer.testing import CliRunner

    from segue.cli import app

    r = CliRunner().invoke(app, ["reproduce", "--list"])
    assert r.exit_code == 0
    for name in ("foundation-baselines", "masr-table-4.4", "sdmr-table-5.3", "cosernn-table-2"):
        assert name in r.stdout


def scan_fit(prepared: dict[str, Any], row: Any) -> dict[str, Any]:
    """dev peaks at x = 4 (and, for y, at y = 20), test rises with x: choosing on test would pick the largest x."""
    CALLS.append((row.dataset, row.model.label, {**row.options, "seed": row.seed}))
    x, y = float(row.options.get("x", 0.0)), float(row.options.get("y", 20.0))
    dev = 1.0 - (x - 4.0) ** 2 / 100 - (y - 20.0) ** 2 / 1000
    return {"dev": {"HR@10": dev}, "test": {"HR@10": x / 10 + row.seed / 100, "NDCG@10": 0.1}}


def _scan_spec(**over: Any) -> TableSpec:
    scan = [
        {"key": "options.x", "values": [1.0, 2.0, 3.0], "start": 3.0, "patience": 2, "widen": [4.0, 5.0, 6.0]},
        {"key": "options.y", "values": [10, 20, 30, 40], "start": 30, "patience": 1, "datasets": ["toy-a"]},
    ]
    models = [
        {"label": "scanned", "fit": "tests.test_reproduce:scan_fit", "scan": scan},
        {"label": "follower", "fit": "tests.test_reproduce:scan_fit", "options_from": "scanned",
         "options": {"z": 1}},
    ]  # fmt: skip
    return _toy_spec(models=models, checks=[], seeds=[0, 1], **over)


def test_coordinate_scan_walks_both_ways_with_patience_then_widens_while_the_top_is_best() -> None:
    from segue.reproduce.runner import ScanAxis, coordinate_scan

    scored: list[tuple[float, float]] = []

    def score(point: dict[str, dict[str, Any]]) -> tuple[float]:
        o = point["options"]
        scored.append((o["a"], o["b"]))
        return (-abs(o["a"] - 7.0) - abs(o["b"] - 2.0),)

    a = ScanAxis("options.a", [1.0, 2.0, 3.0, 4.0], start=2.0, patience=1, widen=[5.0, 6.0, 7.0, 8.0, 9.0])
    b = ScanAxis("options.b", [1, 2, 3, 4, 5], start=4, patience=1)
    point, summary = coordinate_scan([a, b], {"options": {"c": 0}}, score)
    assert point == {"options": {"a": 7.0, "b": 2, "c": 0}, "train": {}}
    # a: up 2 -> 4 then widened 5, 6, 7 and 8 (worse: stop); down 2 -> 1 (worse: patience 1 stops)
    assert summary[0] == {"key": "options.a", "chosen": 7.0, "scanned": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0],
                          "interior": True}  # fmt: skip
    # b starts at 4 with a = 7 (scored already): up 4 -> 5 (worse), down 4 -> 3 -> 2 -> 1 (worse)
    assert summary[1]["chosen"] == 2 and summary[1]["scanned"] == [1, 2, 3, 4, 5]
    assert [s for s in scored if s[0] == 7.0] == [(7.0, 4), (7.0, 5), (7.0, 3), (7.0, 2), (7.0, 1)]
    assert len(scored) == len(set(scored))  # every distinct point scored once
    # the largest value best without a widen list: the summary says it is on the edge
    _, edge = coordinate_scan([ScanAxis("options.b", [1, 2], patience=1)], {}, lambda p: (p["options"]["b"],))
    assert edge == [{"key": "options.b", "chosen": 2, "scanned": [1, 2], "interior": False}]


def test_scan_rows_select_on_dev_run_every_seed_cache_and_hand_their_options_on(tmp_path: Path) -> None:
    spec = _scan_spec()
    cache = RunCache(tmp_path / "runs.jsonl")
    out = run_table(spec, cache=cache, log=lambda s: None)
    rows = {(r["dataset"], r["model"]): r for r in out.rows}
    a = rows[("toy-a", "scanned")]
    assert a["options"] == {"x": 4.0, "y": 20}  # the dev peak, although test rises with x
    assert a["seeds"] == [0, 1] and len(a["per_seed"]) == 2 and a["per_seed"][1]["HR@10"] == pytest.approx(0.41)
    assert [s["key"] for s in a["scan"]] == ["options.x", "options.y"] and a["scan"][0]["interior"] is True
    assert rows[("toy-b", "scanned")]["options"] == {"x": 4.0}  # the y axis is toy-a's only
    # scan points run on the first seed only, each once; the chosen point then on every seed
    scan_calls = [c for c in CALLS if c[0] == "toy-a" and c[1] == "scanned"]
    assert sum(c[2]["seed"] == 1 for c in scan_calls) == 1 and len(scan_calls) == len({str(c) for c in scan_calls})
    grid_a = [g for g in out.grid if g["dataset"] == "toy-a" and g["model"] == "scanned"]
    assert len(grid_a) == len(scan_calls) - 1 and all(g["seed"] == 0 for g in grid_a)
    assert max(g["test"]["HR@10"] for g in grid_a) > a["per_seed"][0]["HR@10"]  # test never chose
    # options_from: the dev-chosen options of the earlier row under the row's own, part of its cache key
    assert rows[("toy-a", "follower")]["options"] == {"x": 4.0, "y": 20, "z": 1}
    CALLS.clear()
    again = run_table(spec, cache=RunCache(tmp_path / "runs.jsonl"), log=lambda s: None)
    assert again.trained == 0 and CALLS == [] and [r["options"] for r in again.rows] == [r["options"] for r in out.rows]
    # a spent budget stops the scan, and the row that takes its options is listed too
    spent = run_table(_scan_spec(), cache=RunCache(None), budget=0.0, datasets=["toy-a"], log=lambda s: None)
    assert spent.rows == [] and any("spent in its scan" in s for s in spent.not_run)
    assert any("follower" in s and "did not run" in s for s in spent.not_run)


def test_scan_and_options_from_are_validated() -> None:
    axis = {"key": "options.x", "values": [1.0, 2.0]}
    bad = [
        ({"scan": [axis], "grid": [{}]}, "both a grid and a scan"),
        ({"scan": [{**axis, "key": "x"}]}, "'options.NAME' or 'train.NAME'"),
        ({"scan": [{**axis, "values": [2.0, 1.0]}]}, "strictly increasing"),
        ({"scan": [{**axis, "widen": [1.5]}]}, "strictly increasing"),
        ({"scan": [{**axis, "values": ["a"]}]}, "numbers"),
        ({"scan": [{**axis, "start": 3.0}]}, "not one of its values"),
        ({"scan": [{**axis, "patience": 0}]}, "patience >= 1"),
        ({"scan": [{**axis, "datasets": ["nope"]}]}, "datasets the table does not have"),
        ({"scan": [{**axis, "colour": 1}]}, "unknown key"),
        ({"scan": ["options.x"]}, "a list of tables"),
    ]
    for extra, message in bad:
        with pytest.raises(ConfigError, match=message):
            _toy_spec(models=[{"label": "a", **extra}], checks=[])
    with pytest.raises(ConfigError, match="must be a model listed before it"):
        _toy_spec(models=[{"label": "a", "options_from": "b"}, {"label": "b"}], checks=[])


def test_rme_table_spec() -> None:
    """Table 4.2's spec: both datasets, 5 repeats, the scans (lambda widened past 10, k, tau on implicit data),
    the extra rows with the chosen hyper-parameters, the paper's three columns and the claimed orderings."""
    spec = load_spec("rme-table-4.2")
    assert spec.datasets == ["ml-100k", "lastfm-2k"] and spec.seeds == [0, 1, 2, 3, 4] and spec.select == ["NDCG@100"]
    assert spec.protocol["split"] == {"ml-100k": "movielens", "lastfm-2k": "playcount"} and not spec.same_data
    by = {m.label: m for m in spec.models}
    for label in ("wmf-als", "cofactor", "u-rme", "i-rme", "rme"):
        reg, k = by[label].scan[:2]
        assert (reg.key, reg.start, reg.patience, reg.widen[-1]) == ("options.reg", 10.0, 2, 10000.0)
        assert (k.key, k.start, k.values[0], k.values[-1]) == ("options.factors", 40, 30, 100)
        assert [a.datasets for a in by[label].scan[2:]] == ([["lastfm-2k"]] if label in ("i-rme", "rme") else [])
    assert by["item2vec"].options == {"dim": 40} and not by["itemknn"].scan
    assert (by["wmf"].options_from, by["rme-separate"].options_from, by["rme-inferred"].datasets) == (
        "wmf-als", "rme", ["ml-100k"])  # fmt: skip
    assert all(by[x].reference for x in ("random", "wmf", "rme-separate", "rme-inferred")) and not by["rme"].reference
    assert by["rme"].paper_for("ml-100k") == {"Recall@5": 0.1562, "NDCG@20": 0.1458, "MAP@10": 0.0841}
    assert by["rme"].paper_for("lastfm-2k") == {"Recall@5": 0.1876, "NDCG@20": 0.1954, "MAP@10": 0.1025}
    assert by["wmf-als"].paper_other["ML-20M"] == {"Recall@5": 0.1348, "NDCG@20": 0.1290, "MAP@10": 0.0720}
    assert {(c["better"], tuple(c["than"])) for c in spec.checks} >= {
        ("rme", ("cofactor",)),
        ("cofactor", ("wmf-als",)),
    }
    assert spec.caps["threads"] == 1 and spec.caps_for("ml-100k", True)["max_iter"] == 5
    assert REPRODUCTIONS["rme-table-4.2"][0] == "spec:rme-table-4.2"
    per_user = load_spec("rme-table-4.2-per-user")
    assert per_user.protocol["split"] == {"ml-100k": "movielens-per-user"} and "item2vec" not in {
        m.label for m in per_user.models}  # fmt: skip


# -- every table's --quick run (slow: real data, minutes each) ------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(REPRODUCTIONS))
def test_quick_reproduction(name: str, tmp_path: Path) -> None:
    """``segue reproduce NAME --quick`` finishes and writes its results (into a temporary folder)."""
    from .conftest import real_data_dir

    data_dir = real_data_dir()
    if name == "dcue-tables":
        from segue.audio.corpus import audio_dir

        if not (audio_dir(None) / "manifest.json").is_file():
            pytest.skip(f"the DSC-7 audio corpus is not at {audio_dir(None)}: `segue audio fetch` needs the internet")
    env = {**os.environ, "SEGUE_DATA_DIR": str(data_dir), "SEGUE_CACHE": str(tmp_path / "cache"),
           "OMP_NUM_THREADS": "1"}  # fmt: skip
    out = tmp_path / "out"
    p = subprocess.run(
        [sys.executable, "-m", "segue.cli", "reproduce", name, "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=1200,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    written = list(out.glob("*.json"))
    assert written, f"{name} wrote no results"
    result = json.loads(written[0].read_text())
    assert result["rows"] and all(np.isfinite(list(r["metrics"].values())).all() for r in result["rows"])


def test_quaternion_adversarial_row_starts_from_the_plain_models_config_and_weights() -> None:
    """quaternion-table-5.6: an A* row (and its lambda_adv = 0 control) takes the dev-chosen plain model as it is."""
    import torch

    from segue.models.base import build_model
    from segue.reproduce.quaternion_table import _from_plain

    plain = build_model("quale", 20, 30, {"dim": 8, "l": 3, "init_std": 0.1})
    adv = _from_plain("aquale", plain, {"l": 3, "adv_epochs": 2, "adv_weight": 0.0}, 20, 30)
    c = adv.config
    assert (c.init_std, c.adversarial, c.adv_weight, c.adv_epochs) == (0.1, True, 0.0, 2)
    for k, v in plain.state_dict().items():
        assert torch.equal(adv.state_dict()[k], v), k


@pytest.mark.slow
def test_sdmr_table_quick_reports_ties_and_how_rows_stopped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``segue reproduce sdmr-table-5.3 --quick`` in-process: every row has its tie diagnostic and stopped_by."""
    from .conftest import real_data_dir

    monkeypatch.setenv("SEGUE_DATA_DIR", str(real_data_dir()))
    monkeypatch.setenv("SEGUE_CACHE", str(tmp_path / "cache"))
    out = run_reproduction("sdmr-table-5.3", ["--quick", "--out", str(tmp_path / "out")])
    assert {r["model"] for r in out.rows} >= {"pop", "mf-bpr", "sdp", "sdm", "sdmr"}
    assert all("HR@10_authors" in r["ties"] for r in out.rows)
    assert all(r["stopped_by"] for r in out.rows if r["model"] not in ("random", "pop", "itemknn"))  # no training
    md = (tmp_path / "out" / "sdmr-table-5.3.md").read_text()
    assert "authors' evaluator's tie rule" in md and "## Convergence" in md


def test_claims_at_a_glance_and_the_results_index(tmp_path: Path) -> None:
    """Each claim per dataset is summarised (holds / does not hold / mixed) in the table and in the folder index."""
    from segue.reproduce.runner import claim_summary, write_index

    spec = _toy_spec(metrics=["MRR", "Rank"], lower_is_better=["Rank"])
    rows = [
        {"model": "base", "dataset": "d", "metrics": {"MRR": 0.2, "Rank": 7.0}},
        {"model": "stacked", "dataset": "d", "metrics": {"MRR": 0.3, "Rank": 8.0}},
        {"model": "base", "dataset": "e", "metrics": {"MRR": 0.2, "Rank": 9.0}},
        {"model": "stacked", "dataset": "e", "metrics": {"MRR": 0.3, "Rank": 8.0}},
    ]
    assert claim_summary(spec, rows) == [  # the rank (lower is better) fails on d only
        {"dataset": "d", "claim": "stacked >= base", "held": 1, "of": 2},
        {"dataset": "e", "claim": "stacked >= base", "held": 2, "of": 2},
    ]
    from segue.reproduce.runner import summarise_checks, verdict

    line = "- d: dcue AUC (C) 0.6910 >= max(wmf-regression) 0.6455: holds"  # brackets in a metric's name
    assert summarise_checks([line]) == [{"dataset": "d", "claim": "dcue >= wmf-regression", "held": 1, "of": 1}]

    assert [verdict(1, 2), verdict(2, 2), verdict(0, 2)] == ["mixed (1 of 2 metrics)", "holds", "does not hold"]
    out = run_table(_toy_spec(), cache=RunCache(None), log=lambda s: None)
    path = write_table(_toy_spec(), out, tmp_path, command="segue reproduce toy-table")
    md = path.with_suffix(".md").read_text()
    assert "| dataset | claim | verdict |" in md and "| toy-a | stacked >= base |" in md
    (tmp_path / "broken.json").write_text("{not json")
    index = write_index(tmp_path).read_text()
    assert "## [toy-table](toy-table.md)" in index and "`segue reproduce toy-table`" in index
    assert "| toy-a | stacked >= base |" in index


@pytest.mark.slow
def test_rme_table_quick_scans_lambda_on_dev_and_reports_the_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``segue reproduce rme-table-4.2 --quick`` in-process: every ALS row's lambda and k come from its dev scan
    (the chosen point is the best dev point scanned), the extra rows take RME's / WMF's choice, the Markdown
    has the side-by-side table, the chosen hyper-parameters and the orderings."""
    from .conftest import real_data_dir

    monkeypatch.setenv("SEGUE_DATA_DIR", str(real_data_dir()))
    monkeypatch.setenv("SEGUE_CACHE", str(tmp_path / "cache"))
    out = run_reproduction("rme-table-4.2", ["--quick", "--out", str(tmp_path / "out")])
    rows = {r["model"]: r for r in out.rows}
    assert set(rows) == {"random", "itemknn", "item2vec", "wmf-als", "cofactor", "u-rme", "i-rme", "rme", "wmf",
                         "rme-separate", "rme-inferred"} and out.not_run == []  # fmt: skip
    assert rows["random"]["metrics"]["NDCG@20"] < rows["itemknn"]["metrics"]["NDCG@20"]  # chance, the reference
    for label in ("wmf-als", "cofactor", "u-rme", "i-rme", "rme"):
        r = rows[label]
        reg = r["scan"][0]
        assert reg["key"] == "options.reg" and r["options"]["reg"] == reg["chosen"] and 10.0 in reg["scanned"]
        points = [g for g in out.grid if g["model"] == label]
        assert r["dev"]["NDCG@100"] == max(g["dev"]["NDCG@100"] for g in points)  # chosen on dev, among its scan
        assert r["stopped_by"] in ("patience", "epoch cap") and 0.0 <= r["metrics"]["NDCG@20"] <= 1.0
    assert rows["rme-separate"]["options"] == {**rows["rme"]["options"], "separate": True}
    assert rows["wmf"]["options"] == rows["wmf-als"]["options"] and rows["wmf"]["iterations"] >= 1
    md = (tmp_path / "out" / "rme-table-4.2.md").read_text()
    assert "## ml-100k (ours) beside ML-10M, ML-20M (paper, different data)" in md and "**Different data.**" in md
    assert "- RME: reg=" in md and "ml-100k: rme Recall@5" in md and "## Dev grid" in md
    assert "87 test users" in md  # the paper protocol's global temporal cut on ml-100k
