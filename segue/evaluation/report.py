"""Reproduction tables: the results file of docs/results/ as JSON (for tools) and Markdown (for people).

A result is a dict in the format of ``docs/design.md``::

    {"table": "...", "paper": "...", "command": "...", "protocol": {...},
     "rows": [{"model": ..., "dataset": ..., "metrics": {...}, "paper": {...} | None,
               "same_data_as_paper": bool, "seconds": float, ...}],
     "environment": {...}, "notes": "..."}

:func:`write_results` adds the environment and writes ``<stem>.json`` and ``<stem>.md``; the
Markdown puts ours, the paper's number and the difference side by side for every metric.
"""

from __future__ import annotations

import json
import math
import os
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch


def environment() -> dict[str, Any]:
    from segue.version import __version__

    return {
        "segue": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
    }


def fmt_number(x: Any) -> str:
    """A table cell: ``–`` for a missing or undefined (NaN) value, 4 decimals for a float, else ``str``."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:.4f}" if isinstance(x, float) else str(x)


def _diff(ours: Any, paper: Any) -> str:
    if fmt_number(ours) == "–" or fmt_number(paper) == "–":  # missing or undefined (NaN) on either side
        return "–"
    return f"{ours - paper:+.3f}"


#: tables with more metrics than this print one "ours (paper)" cell per metric instead of three columns
COMPACT_OVER = 5


def results_markdown(result: dict[str, Any], metrics: Sequence[str] | None = None) -> str:
    """A Markdown table per dataset: model, then ours / paper / difference per metric.

    With more than :data:`COMPACT_OVER` metrics each metric is one column, ``ours (paper)``, so wide tables stay
    readable (the JSON keeps both numbers either way).
    """
    rows = result["rows"]
    metrics = list(metrics or dict.fromkeys(k for r in rows for k in r["metrics"]))
    lines = [f"# {result['table']}", ""]
    if result.get("paper"):
        lines += [f"Paper: {result['paper']}", ""]
    lines += [f"Command: `{result['command']}`", ""]
    if result.get("protocol"):
        lines += ["Protocol: " + ", ".join(f"{k}={v}" for k, v in result["protocol"].items()), ""]
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        part = [r for r in rows if r["dataset"] == dataset]
        same = {r.get("same_data_as_paper") for r in part}
        label = "same data as the paper" if same == {True} else "different data from the paper"
        lines += [f"## {dataset} ({label})", ""]
        compact = len(metrics) > COMPACT_OVER
        parts = ("ours (paper)",) if compact else ("ours", "paper", "diff")
        head = ["model"] + [f"{m} {p}" for m in metrics for p in parts] + ["seconds"]
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "---|" * len(head))
        for r in part:
            paper = r.get("paper") or {}
            cells = [r["model"]]
            for m in metrics:
                ours, theirs = r["metrics"].get(m), paper.get(m)
                if compact:
                    cells.append(fmt_number(ours) + ("" if fmt_number(theirs) == "–" else f" ({fmt_number(theirs)})"))
                else:
                    cells.append(f"{fmt_number(ours)} | {fmt_number(theirs)} | {_diff(ours, theirs)}")
            seconds = r.get("seconds")
            cells.append(
                f"{seconds:.1f}" if isinstance(seconds, float) and math.isfinite(seconds) else fmt_number(seconds)
            )
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    if result.get("notes"):
        lines += ["## Notes", "", result["notes"], ""]
    env = result.get("environment") or {}
    if env:
        lines += ["Environment: " + ", ".join(f"{k} {v}" for k, v in env.items()), ""]
    return "\n".join(lines)


def write_results(result: dict[str, Any], out_dir: str | Path, stem: str, metrics: Sequence[str] | None = None) -> Path:
    """Write ``<stem>.json`` and ``<stem>.md`` into ``out_dir`` (environment added); returns the JSON path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result = {**result, "environment": {**environment(), **(result.get("environment") or {})}}
    path = out / f"{stem}.json"
    path.write_text(json.dumps(result, indent=2, default=_default) + "\n")
    (out / f"{stem}.md").write_text(results_markdown(result, metrics))
    return path


def _default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)
