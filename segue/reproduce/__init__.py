"""Reproductions: each writes a side-by-side table (ours vs the paper) into docs/results/.

Run one with ``segue reproduce NAME [--quick] [ARGS...]``; ``segue reproduce --list`` shows the
names. Every table is a spec file (``segue/reproduce/specs/NAME.toml``) run by the shared runner
(:mod:`segue.reproduce.runner`: cache and resume, dev grid or scan, caps and budget, seeds, one
writer, the claims checked); its table-specific logic is a few hooks in a module beside it. Every one
takes ``--help`` and ``--quick`` (a smoke test in minutes). A module entry (not ``spec:``) would
still run its own ``main(argv)``; none is left.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

from segue.errors import ConfigError

#: table name -> (spec file "spec:NAME" or the module under segue.reproduce of a script not migrated yet, what)
REPRODUCTIONS: dict[str, tuple[str, str]] = {
    "foundation-baselines": (
        "spec:foundation-baselines",
        "foundation baselines (Pop, ItemKNN, MF-BPR, WMF) on ml-100k / ml-1m",
    ),
    "sdmr-table-5.3": ("spec:sdmr-table-5.3", "SDMR Table 5.3, general task, ml-100k and ml-1m"),
    "sdmr-table-5.4": ("spec:sdmr-table-5.4", "SDMR Table 5.4, basket task, on the Instacart sample"),
    "rme-table-4.2": ("spec:rme-table-4.2", "RME Table 4.2 on ml-100k and Last.fm-2K"),
    "rme-table-4.2-per-user": (
        "spec:rme-table-4.2-per-user",
        "RME Table 4.2, per-user temporal split of ml-100k (sensitivity check)",
    ),
    "masr-table-4.4": ("spec:masr-table-4.4", "MDR/MASS/MASR Table 4.4 on the playlist stand-ins"),
    "quaternion-table-5.6": ("spec:quaternion-table-5.6", "QUALE/QUASE/QUALSE Table 5.6 on Toys and Yelp"),
    "cosernn-table-2": ("spec:cosernn-table-2", "CoSeRNN Table 2 on listening sessions"),
    "dcue-tables": ("spec:dcue-tables", "DCUE and TripletRec on the Debian soundtrack corpus"),
}


#: older names still accepted
ALIASES = {"foundation": "foundation-baselines"}


def run_reproduction(name: str, argv: list[str]) -> Any:
    """Run reproduction ``name`` with command-line arguments ``argv``."""
    name = ALIASES.get(name, name)
    if name not in REPRODUCTIONS:
        raise ConfigError(f"Unknown reproduction {name!r}; known: {', '.join(REPRODUCTIONS)}.")
    module_name = REPRODUCTIONS[name][0]
    if module_name.startswith("spec:"):
        from segue.reproduce.runner import main

        return main(module_name.removeprefix("spec:"), argv)
    try:
        module = importlib.import_module(f"segue.reproduce.{module_name}")
    except ModuleNotFoundError as e:
        if e.name == f"segue.reproduce.{module_name}":
            raise ConfigError(f"Reproduction {name!r} is not available in this version of segue.") from e
        raise
    sys.argv = [f"segue reproduce {name}", *argv]
    return module.main(argv)
