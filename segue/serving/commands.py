"""The ``segue export`` and ``segue serve`` commands (typer), registered by :mod:`segue.cli`.

This module imports only typer at import time, so the CLI starts fast; faiss, FastAPI and
uvicorn load when a command runs. User errors are :class:`segue.errors.SegueError` and
reach the CLI's one-line error handler (exit status 2).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from segue.errors import ConfigError

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def export_cmd(
    run_dir: Annotated[Path, typer.Argument(help="Run directory written by `segue train`.")],
    out_dir: Annotated[Path, typer.Argument(help="Export directory to write.")],
    index: Annotated[str, typer.Option(help="auto (HNSW from 20,000 items on), hnsw or exact.")] = "auto",
    m: Annotated[int, typer.Option("--m", help="HNSW links per node.")] = 32,
    ef_construction: Annotated[int, typer.Option(help="HNSW build breadth.")] = 100,
    ef_search: Annotated[int, typer.Option(help="HNSW search breadth (can be overridden by `serve`).")] = 128,
    dot_strategy: Annotated[
        str, typer.Option(help="Inner-product search on HNSW: auto (measured), ip or l2-transform.")
    ] = "auto",
    candidates: Annotated[int, typer.Option(help="ANN candidates re-scored by memory/attention models.")] = 200,
    threads: Annotated[int | None, typer.Option(help="Threads for building the index.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing export directory.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the export's metadata as JSON.")] = False,
) -> None:
    """Export a trained run for serving: item (and user) vectors, an ANN index, id maps and metadata."""
    from segue.serving.export import export_run

    out = export_run(
        run_dir,
        out_dir,
        index=index,
        m=m,
        ef_construction=ef_construction,
        ef_search=ef_search,
        dot_strategy=dot_strategy,
        candidates=candidates,
        threads=threads,
        overwrite=overwrite,
    )
    meta = json.loads((out / "metadata.json").read_text())
    if as_json:
        sys.stdout.write(json.dumps(meta, indent=2) + "\n")
        return
    idx = meta.get("index") or {}
    extra = ""
    if idx.get("kind") == "hnsw":
        extra = f", HNSW m={idx['m']} ef_search={idx['ef_search']}, sampled recall@10 {idx.get('recall_at_10')}"
        if idx.get("dot_strategy"):
            extra += f", dot strategy {idx['dot_strategy']}"
    typer.echo(
        f"Exported {meta['model']} ({meta['n_users']} users, {meta['n_items']} items) to {out}: "
        f"retrieval {meta['retrieval']}, index {idx.get('kind', 'none')}{extra}, in {meta['export_seconds']:.1f}s."
    )
    typer.echo(f"Serve it: segue serve {out}")


def serve_cmd(
    out_dir: Annotated[Path, typer.Argument(help="Export directory written by `segue export`.")],
    host: Annotated[str, typer.Option(help="Interface to bind (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    exact: Annotated[bool, typer.Option(help="Answer by exact search instead of the ANN index.")] = False,
    ef_search: Annotated[int | None, typer.Option(help="Override the HNSW search breadth.")] = None,
    access_log: Annotated[bool, typer.Option(help="Log every request.")] = False,
) -> None:
    """Serve an export directory over HTTP (FastAPI + uvicorn): /recommend, /similar, /health, /docs."""
    from segue.serving.app import serve
    from segue.serving.export import ServingModel

    if not 0 < port < 65536:
        raise ConfigError(f"--port must be between 1 and 65535, got {port}.")
    if ef_search is not None and ef_search < 1:
        raise ConfigError(f"--ef-search must be >= 1, got {ef_search}.")
    if host not in LOOPBACK:
        typer.echo(
            f"warning: binding to {host} exposes the API beyond this machine; it has no authentication.", err=True
        )
    model = ServingModel.load(out_dir, exact=exact, ef_search=ef_search, threads=1)
    meta = model.metadata
    typer.echo(
        f"Serving {meta['model']} ({meta['retrieval']}) from {out_dir} on http://{host}:{port} (OpenAPI page: /docs).",
        err=True,
    )
    serve(model, host=host, port=port, access_log=access_log)
