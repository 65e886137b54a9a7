"""The README's first Python block runs as written (in a temporary directory)."""

from __future__ import annotations

import os
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_runs(tmp_path: Path, monkeypatch) -> None:
    text = README.read_text()
    marker = text.index("<!-- this block runs as a test (tests/test_readme.py) -->")
    block = re.search(r"```python\n(.*?)```", text[marker:], re.S)
    assert block is not None, "the marked README block is gone"
    monkeypatch.chdir(tmp_path)
    env: dict = {}
    exec(compile(block.group(1), "README.md", "exec"), env)
    model = env["model"]
    assert (tmp_path / "runs" / "my-mf").is_dir() and model.model.name == "mf-bpr"
    assert model.recommend("new-user", k=5).query == "popular-fallback"
    assert os.getcwd() == str(tmp_path)
