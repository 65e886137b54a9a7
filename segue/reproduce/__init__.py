"""Reproduction scripts: each writes a side-by-side table (ours vs the paper) into docs/results/.

Run one with ``segue reproduce NAME [ARGS...]`` or ``python -m segue.reproduce.<module> [ARGS...]``;
``segue reproduce --list`` shows the names. Every script takes ``--help``.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

from segue.errors import ConfigError

#: table name -> (module under segue.reproduce, what it reproduces)
REPRODUCTIONS: dict[str, tuple[str, str]] = {
    "foundation": ("foundation", "foundation baselines (Pop, ItemKNN, MF-BPR, WMF) on ml-100k / ml-1m"),
    "sdmr-table-5.3": ("sdmr_table", "SDMR Table 5.3, general task, ml-100k and ml-1m"),
    "sdmr-table-5.4": ("sdmr_basket", "SDMR Table 5.4, basket task, on the Instacart sample"),
    "rme-table-4.2": ("rme_table", "RME Table 4.2 on ml-100k and Last.fm-2K"),
    "masr-table-4.4": ("masr_table", "MDR/MASS/MASR Table 4.4 on the playlist stand-ins"),
    "quaternion-table-5.6": ("quaternion_table", "QUALE/QUASE/QUALSE Table 5.6 on Toys and Yelp"),
    "cosernn-table-2": ("cosernn_table", "CoSeRNN Table 2 on listening sessions"),
    "dcue-tables": ("dcue_table", "DCUE and TripletRec on the Debian soundtrack corpus"),
}


def run_reproduction(name: str, argv: list[str]) -> Any:
    """Run reproduction ``name`` with command-line arguments ``argv``."""
    if name not in REPRODUCTIONS:
        raise ConfigError(f"Unknown reproduction {name!r}; known: {', '.join(REPRODUCTIONS)}.")
    module_name = REPRODUCTIONS[name][0]
    try:
        module = importlib.import_module(f"segue.reproduce.{module_name}")
    except ModuleNotFoundError as e:
        if e.name == f"segue.reproduce.{module_name}":
            raise ConfigError(f"Reproduction {name!r} is not available in this version of segue.") from e
        raise
    sys.argv = [f"segue reproduce {name}", *argv]
    return module.main(argv)
