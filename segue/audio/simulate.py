"""A seeded listener simulator over a clip catalogue (content spec C.5.2). Results on it are SEMI-SYNTHETIC.

There is no real listening data for the DSC-7 audio (spec C.4), so DCUE's interactions are
simulated from real audio and real labels:

* users u = 1..U; each has a source-taste vector ``p_u ~ Dirichlet(taste_concentration * 1_S)``
  over the S sources and an audio-taste vector ``w_u ~ N(0, I_k)``;
* each clip has audio traits ``a_i``: the first k = 16 principal components of its per-band
  mean and standard deviation of log-mel, the PCA fitted on the **training clips only**, then
  standardised; and a popularity ``pi_i ~ LogNormal(0, 1)``;
* affinity ``z_ui = log p_u[src(i)] + beta * <w_u, a_i> / sqrt(k) + gamma * log pi_i``;
* user u listens to ``n_u ~ LogNormal(log n_mean, 0.5)`` clips (at least ``min_items``, at most
  the catalogue) drawn without replacement with probability ``softmax(z_u / tau)``;
* play counts ``1 + Poisson(lam * exp(z_ui))`` (clipped at ``max_plays``).

Knobs: ``beta`` (the audio-predictable share), ``gamma`` (the popularity share), ``tau``
(temperature), ``taste_concentration``. Deviation: the audio term is scaled by 1/sqrt(k) so
that ``beta`` is on the scale of one standardised trait (the spec writes beta * <w_u, a_i>).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from segue.errors import ConfigError, DataError

SEMI_SYNTHETIC = "semi-synthetic (real audio, simulated listeners: segue.audio.simulate)"


@dataclass
class SimulatorConfig:
    n_users: int = 2000
    n_traits: int = 16
    beta: float = 1.0
    gamma: float = 0.5
    tau: float = 1.0
    taste_concentration: float = 0.3
    n_mean: float = 30.0
    min_items: int = 5
    lam: float = 1.0
    max_plays: int = 200
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_users < 1 or self.n_traits < 1 or self.tau <= 0 or self.taste_concentration <= 0 or self.n_mean <= 0:
            raise ConfigError(f"Invalid simulator options: {self}.")


def audio_traits(mels: Any, train_rows: np.ndarray, k: int = 16, batch: int = 64) -> np.ndarray:
    """(n_clips, k) standardised PCA traits of each clip's per-band log-mel mean and std (PCA fitted on ``train_rows``)."""
    n = mels.shape[0]
    stats = np.empty((n, 2 * mels.shape[1]), dtype=np.float64)
    for s in range(0, n, batch):
        x = np.asarray(mels[s : s + batch], dtype=np.float32)
        stats[s : s + batch] = np.concatenate([x.mean(-1), x.std(-1)], axis=1)
    train_rows = np.asarray(train_rows)
    if len(train_rows) < 2:
        raise DataError("audio_traits needs at least two training clips to fit the PCA.")
    mu = stats[train_rows].mean(0)
    sd = stats[train_rows].std(0) + 1e-8
    z = (stats - mu) / sd
    _, _, vt = np.linalg.svd(z[train_rows], full_matrices=False)
    k = min(k, vt.shape[0])
    a = z @ vt[:k].T
    return (a - a[train_rows].mean(0)) / (a[train_rows].std(0) + 1e-8)


def simulate(items: pd.DataFrame, traits: np.ndarray, config: SimulatorConfig | None = None) -> pd.DataFrame:
    """Simulated plays ``(user, item, plays)`` for the clips of ``items`` (needs ``item`` and ``source`` columns).

    ``traits`` is (n_items, k) in the row order of ``items``. Users are ``u1..uU``. The frame's
    ``attrs`` hold the config, the popularity and the users' tastes for inspection.
    """
    c = config or SimulatorConfig()
    for col in ("item", "source"):
        if col not in items.columns:
            raise DataError(f"The item table needs a {col!r} column.")
    n = len(items)
    if traits.shape[0] != n:
        raise DataError(f"traits has {traits.shape[0]} rows for {n} items.")
    rng = np.random.default_rng(c.seed)
    src_codes, sources = pd.factorize(items["source"])
    k = traits.shape[1]
    taste = rng.dirichlet(np.full(len(sources), c.taste_concentration), size=c.n_users)  # (U, S)
    w = rng.standard_normal((c.n_users, k))
    log_pop = rng.normal(0.0, 1.0, n)  # log of LogNormal(0, 1)
    z = (
        np.log(np.maximum(taste[:, src_codes], 1e-12))
        + c.beta * (w @ traits.T) / np.sqrt(k)
        + c.gamma * log_pop[None, :]
    )  # (U, n)
    sizes = np.clip(np.round(rng.lognormal(np.log(c.n_mean), 0.5, c.n_users)), c.min_items, n).astype(int)
    rows_u, rows_i, plays = [], [], []
    for u in range(c.n_users):
        logits = z[u] / c.tau
        # sampling without replacement proportional to softmax: Gumbel top-k
        g = logits + rng.gumbel(size=n)
        chosen = np.argpartition(-g, sizes[u] - 1)[: sizes[u]]
        counts = 1 + rng.poisson(np.minimum(c.lam * np.exp(z[u, chosen]), c.max_plays))
        rows_u.append(np.full(len(chosen), u + 1))
        rows_i.append(chosen)
        plays.append(np.minimum(counts, c.max_plays))
    u_all = np.concatenate(rows_u)
    i_all = np.concatenate(rows_i)
    df = pd.DataFrame(
        {
            "user": [f"u{u}" for u in u_all],
            "item": items["item"].to_numpy()[i_all],
            "plays": np.concatenate(plays).astype(np.float32),
        }
    )
    df.attrs["config"] = asdict(c)
    df.attrs["label"] = SEMI_SYNTHETIC
    df.attrs["popularity"] = np.exp(log_pop)
    df.attrs["taste"] = taste
    return df
