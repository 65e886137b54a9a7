"""Results files: JSON + Markdown with ours, the paper's number and the difference side by side."""

from __future__ import annotations

import json
from pathlib import Path

from segue.evaluation.report import results_markdown, write_results
from segue.pipeline import train_config_for


def test_results_file_round_trip(tmp_path: Path) -> None:
    result = {
        "table": "t",
        "paper": "Table 1",
        "command": "python -m x",
        "protocol": {"name": "loo-sampled"},
        "rows": [
            {
                "model": "a",
                "dataset": "d",
                "metrics": {"HR@10": 0.5, "NDCG@10": 0.25},
                "paper": {"HR@10": 0.6, "NDCG@10": 0.2},
                "same_data_as_paper": True,
                "seconds": 1.5,
            },
            {
                "model": "b",
                "dataset": "d",
                "metrics": {"HR@10": 0.4, "NDCG@10": 0.2},
                "paper": None,
                "same_data_as_paper": True,
                "seconds": 2.0,
            },
        ],
        "notes": "n",
    }
    path = write_results(result, tmp_path, "t")
    back = json.loads(path.read_text())
    assert back["rows"] == result["rows"] and back["environment"]["torch"]
    md = (tmp_path / "t.md").read_text()
    assert "| a | 0.5000 | 0.6000 | -0.100 | 0.2500 | 0.2000 | +0.050 | 1.5 |" in md
    assert "| b | 0.4000 | – | – |" in md and "same data as the paper" in md
    header, rule = (ln for ln in md.splitlines() if ln.startswith("| model") or ln.startswith("|---"))
    assert header.count("|") == rule.count("|") == 9
    assert "Command: `python -m x`" in results_markdown(back)


def test_an_undefined_metric_has_no_difference() -> None:
    row = {"model": "a", "dataset": "d", "metrics": {"mAP": float("nan")}, "paper": {"mAP": 0.3}, "seconds": None}
    md = results_markdown({"table": "t", "command": "c", "rows": [row]})
    assert "| a | – | 0.3000 | – | – |" in md and "nan" not in md


def test_model_train_defaults_sit_between_generic_defaults_and_overrides() -> None:
    cfg = train_config_for("mf-bpr")
    assert cfg.n_negatives == 4 and cfg.batch_size == 4096
    assert train_config_for("mf-bpr", {"batch_size": 16}).batch_size == 16
    assert train_config_for("pop").n_negatives == 1


def test_a_table_with_many_metrics_is_compact() -> None:
    metrics = [f"M{i}" for i in range(6)]
    row = {"model": "a", "dataset": "d", "metrics": dict.fromkeys(metrics, 0.5), "paper": {"M0": 0.25}, "seconds": 2.0}
    md = results_markdown({"table": "t", "command": "c", "rows": [row]}, metrics)
    assert "| model | M0 ours (paper) | M1 ours (paper) |" in md
    assert "| a | 0.5000 (0.2500) | 0.5000 | 0.5000 |" in md
