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
    workers: Annotated[int, typer.Option(help="Server processes; each loads the export.")] = 1,
    exact: Annotated[bool, typer.Option(help="Answer by exact search instead of the ANN index.")] = False,
    ef_search: Annotated[int | None, typer.Option(help="Override the HNSW search breadth.")] = None,
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar="SEGUE_API_KEY",
            show_default=False,
            help="Require this key in the X-API-Key header of every request but GET /health; "
            "also allows exclude_seen=false. Prefer the environment variable (argv is visible to other users).",
        ),
    ] = None,
    allowed_host: Annotated[
        list[str] | None,
        typer.Option(
            "--allowed-host",
            help="Also accept this Host header (repeatable; '*.example.com' or '*' for any). "
            "Default: localhost, 127.0.0.1, ::1 and --host.",
        ),
    ] = None,
    docs: Annotated[bool, typer.Option(help="Serve the /docs page (Swagger UI, loaded from a CDN).")] = False,
    max_items: Annotated[int, typer.Option(help="Most items in a POST /recommend body.")] = 1000,
    max_work: Annotated[int, typer.Option(help="Most k x items in a POST /recommend body.")] = 100_000,
    max_body_bytes: Annotated[int, typer.Option(help="Largest request body in bytes (413 above).")] = 1 << 20,
    timeout: Annotated[
        float, typer.Option(help="Seconds a client has to send a request's head, and then its body (slow clients).")
    ] = 10.0,
    keep_alive: Annotated[float, typer.Option(help="Seconds an idle keep-alive connection stays open.")] = 5.0,
    access_log: Annotated[bool, typer.Option(help="Log every request.")] = False,
) -> None:
    """Serve an export directory over HTTP (FastAPI + uvicorn): /recommend, /similar, /health."""
    from segue.serving.app import ServerSettings, allowed_hosts_for, bind_socket, serve
    from segue.serving.export import ServingModel

    if not 0 < port < 65536:
        raise ConfigError(f"--port must be between 1 and 65535, got {port}.")
    if ef_search is not None and ef_search < 1:
        raise ConfigError(f"--ef-search must be >= 1, got {ef_search}.")
    if workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}.")
    settings = ServerSettings(
        api_key=api_key,
        allowed_hosts=allowed_hosts_for(host, allowed_host or ()),
        docs=docs,
        max_items=max_items,
        max_work=max_work,
        max_body_bytes=max_body_bytes,
        timeout=timeout,
        keep_alive=keep_alive,
    )
    if host not in LOOPBACK and api_key is None:
        typer.echo(
            f"warning: binding to {host} exposes the API beyond this machine and no API key is set "
            "(--api-key or SEGUE_API_KEY).",
            err=True,
        )
    if host in ("0.0.0.0", "::") and not allowed_host:
        typer.echo(
            "warning: only the Host names localhost, 127.0.0.1 and ::1 are accepted; "
            "add the names clients use with --allowed-host.",
            err=True,
        )
    sock = bind_socket(host, port)  # a taken port fails here, in one sentence, before the export is loaded
    try:
        model = ServingModel.load(out_dir, exact=exact, ef_search=ef_search, threads=1)
        meta = model.metadata
        key = "API key required" if api_key else "no API key (exclude_seen=false refused)"
        page = "/docs and /openapi.json" if docs else "/openapi.json"
        typer.echo(
            f"Serving {meta['model']} ({meta['retrieval']}) from {out_dir} on http://{host}:{port} "
            f"({workers} worker{'s' if workers > 1 else ''}, {key}, schema at {page}).",
            err=True,
        )
        if workers > 1:
            model = None  # type: ignore[assignment]  # each worker loads its own copy
        serve(
            model if model is not None else out_dir,
            host=host,
            port=port,
            workers=workers,
            exact=exact,
            ef_search=ef_search,
            settings=settings,
            access_log=access_log,
            sock=sock,
        )
    finally:
        sock.close()
