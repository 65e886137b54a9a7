"""``segue audio ...``: build a track catalogue from a folder, fetch the DSC-7 corpus, cache clips.

Mounted by the main CLI with ``app.add_typer(audio_app, name="audio")``. User errors print one
line (``error: ...``) and exit with status 2, like the rest of the CLI.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from segue.errors import SegueError

audio_app = typer.Typer(
    name="audio",
    help="Audio: index a folder of music into a catalogue, fetch the DSC-7 corpus, cache log-mels.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _fail(e: Exception) -> None:
    typer.echo(f"error: {e}", err=True)
    raise typer.Exit(2)


@audio_app.command("index")
def index(
    folder: Annotated[
        Path, typer.Argument(help="A folder of audio files (ogg, opus, flac, wav, mp3), searched recursively.")
    ],
    out: Annotated[Path | None, typer.Option("--out", help="Write the track table here (.csv or .parquet).")] = None,
    clips: Annotated[bool, typer.Option("--clips", help="One row per 30-s clip instead of per track.")] = False,
    clips_per_track: Annotated[int | None, typer.Option("--clips-per-track", help="Cap on clips per track.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """Build a catalogue (track, path, title, source, album, composer, bpm, tags, seconds) of FOLDER."""
    from segue.audio.catalogue import clips_table, index_folder

    try:
        table = index_folder(folder)
        skipped = table.attrs.get("skipped", 0)
        if clips:
            table = clips_table(table, clips_per_track=clips_per_track)
    except SegueError as e:
        _fail(e)
        return
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.suffix == ".parquet":
            table.to_parquet(out, index=False)
        else:
            table.to_csv(out, index=False)
    summary = {
        "folder": str(folder),
        "rows": len(table),
        "kind": "clips" if clips else "tracks",
        "hours": round(float(table.drop_duplicates("track")["seconds"].sum()) / 3600, 3),
        "sources": table["source"].value_counts().to_dict(),
        "skipped_files": int(skipped),
        "out": str(out) if out else None,
    }
    if as_json:
        sys.stdout.write(json.dumps(summary, indent=2) + "\n")
    else:
        typer.echo(
            f"{summary['rows']} {summary['kind']} ({summary['hours']} h) from {folder}; skipped {skipped} unreadable file(s)"
        )
        for s, n in summary["sources"].items():
            typer.echo(f"  {s}: {n}")
        if out:
            typer.echo(f"wrote {out}")


@audio_app.command("fetch")
def fetch(
    data_dir: Annotated[
        Path | None,
        typer.Option("--data-dir", help="Audio data directory (default: $SEGUE_AUDIO_DIR, else ~/.cache/segue/audio)."),
    ] = None,
    sources: Annotated[str, typer.Option("--sources", help="Comma list of DSC-7 sources (default: all seven).")] = "",
    keep_debs: Annotated[bool, typer.Option("--keep-debs", help="Keep the downloaded .deb files.")] = False,
) -> None:
    """Download the DSC-7 Debian soundtrack packages (apt-get download + dpkg -x) and write manifest.json."""
    from segue.audio.corpus import audio_dir
    from segue.audio.corpus import fetch as fetch_corpus

    try:
        chosen = [s.strip() for s in sources.split(",") if s.strip()] or None
        m = fetch_corpus(data_dir, chosen, keep_debs=keep_debs, log=typer.echo)
    except SegueError as e:
        _fail(e)
        return
    typer.echo(f"{m['n_files']} files, {m['hours']} h in {audio_dir(data_dir)} ({m['fetch_seconds']} s)")


@audio_app.command("cache")
def cache(
    folder: Annotated[Path, typer.Argument(help="A folder of audio files (or a DSC-7 data directory).")],
    out: Annotated[Path, typer.Option("--out", help="Cache directory (mels.f16, mfcc.f16, index.json).")],
    clips_per_track: Annotated[int | None, typer.Option("--clips-per-track", help="Cap on clips per track.")] = None,
) -> None:
    """Decode every 30-s clip of FOLDER once into a float16 memory-mapped log-mel (and MFCC) cache."""
    from segue.audio.catalogue import clips_table, index_folder
    from segue.audio.frontend import ClipCache, ClipSpec

    try:
        items = clips_table(index_folder(folder), clips_per_track=clips_per_track)
        c = ClipCache.build(out, [ClipSpec(r.item, r.path, r.start) for r in items.itertuples()], root=folder)
    except SegueError as e:
        _fail(e)
        return
    typer.echo(f"{len(c)} clips cached in {out} ({c.meta.get('x_real_time')} x real time when built)")
