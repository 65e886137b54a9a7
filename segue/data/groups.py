"""Playlist (group) tables the playlist models and their trainer read: membership matrices and owners."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from segue.data.interactions import Interactions
from segue.errors import DataError


def playlist_matrix(part: Interactions, n_playlists: int) -> sp.csr_matrix:
    """Playlist x song 0/1 matrix, shape (n_playlists + 1, n_items + 1)."""
    p = part.df["playlist"].to_numpy()
    i = part.df["item"].to_numpy()
    m = sp.csr_matrix((np.ones(len(p), np.float32), (p, i)), shape=(n_playlists + 1, part.n_items + 1))
    m.sum_duplicates()
    m.data[:] = 1
    return m


def member_matrix(train: Interactions, n_playlists: int, width: int | None = None) -> np.ndarray:
    """(n_playlists + 1, l) training songs of each playlist, padded with 0; l = the longest playlist."""
    m = playlist_matrix(train, n_playlists)
    lens = np.diff(m.indptr)
    width = int(lens.max()) if width is None else width
    if lens.max() > width:
        raise DataError(f"A playlist has {lens.max()} training songs, more than the member width {width}.")
    out = np.zeros((n_playlists + 1, max(1, width)), dtype=np.int64)
    rows = np.repeat(np.arange(n_playlists + 1), lens)
    cols = np.arange(m.nnz) - np.repeat(m.indptr[:-1], lens)
    out[rows, cols] = m.indices
    return out


def playlist_owners(data: Interactions) -> np.ndarray:
    """(n_playlists + 1,) owner user id of each playlist (0 for the pad row)."""
    n_p = len(data.group_maps["playlist"])
    owner = np.zeros(n_p + 1, dtype=np.int64)
    owner[data.df["playlist"].to_numpy()] = data.df["user"].to_numpy()
    return owner


__all__ = ["member_matrix", "playlist_matrix", "playlist_owners"]
