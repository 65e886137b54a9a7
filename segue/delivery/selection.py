"""Feature selection of chapter 3 (spec B.3.2 linguistic t-test, B.4 VIF + Boruta, B.4/B.6 stepAIC).

- :func:`ttest_select`: keep the lexicon categories whose on-time and late means differ by a
  two-sample (Student) t-test at alpha = 0.05 / (number of categories) per text source (the text:
  0.00078 = 0.05/64).
- :func:`vif_filter`: VIF_i = 1/(1 - R_i^2); while some VIF >= 10, drop the one with the largest VIF and
  recompute. VIF_i is read off the diagonal of the inverse correlation matrix (the same R_i^2 as
  regressing feature i on the others with an intercept). Constant columns are dropped first (their
  R^2 is undefined). [AMBIG] (segue's) the categorical project category is not put through VIF.
- :func:`boruta`: Boruta with a random forest (Kursa & Rudnicki; BorutaPy's procedure): each iteration
  adds a permuted "shadow" copy of every feature, fits the forest, and counts a hit for each feature
  whose importance beats the best shadow; a feature is confirmed when its hits are significantly many
  (binomial test, p < alpha / features tested), rejected when significantly few; undecided after
  ``max_iter`` = tentative. Only confirmed features are kept. [AMBIG] spec choice: BorutaPy's
  defaults, ``max_iter=100``, ``alpha=0.05``, ``n_estimators='auto'``, a fixed seed. The reported
  z-score of a feature (Table 3.2) is the mean over iterations of its impurity importance divided by
  its standard error over the forest's trees.
- :func:`step_aic`: R's ``MASS::stepAIC(lm(y ~ .), direction="both")``: start from the full OLS model,
  at each step take the single drop or add that lowers AIC = n*log(RSS/n) + 2*(p+1) most; stop when none does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from segue.errors import ConfigError


@dataclass
class BorutaConfig:
    """Boruta's settings (spec B.4 [AMBIG] choice: BorutaPy defaults)."""

    max_iter: int = 100
    alpha: float = 0.05
    n_estimators: int | None = None  # None: BorutaPy's 'auto' rule
    max_depth: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_iter < 1 or not 0 < self.alpha < 1:
            raise ConfigError("BorutaConfig needs max_iter >= 1 and 0 < alpha < 1.")


@dataclass
class BorutaResult:
    confirmed: list[str]
    tentative: list[str]
    rejected: list[str]
    z: dict[str, float] = field(default_factory=dict)
    iterations: int = 0


def ttest_select(x: pd.DataFrame, y: np.ndarray, alpha: float | None = None) -> list[str]:
    """Columns of ``x`` whose means differ between ``y == 1`` and ``y == 0`` at ``alpha`` (default 0.05/columns)."""
    if x.shape[1] == 0:
        return []
    a = 0.05 / x.shape[1] if alpha is None else alpha
    y = np.asarray(y).astype(bool)
    v = x.to_numpy(float)
    keep = []
    for j, c in enumerate(x.columns):
        g1, g0 = v[y, j], v[~y, j]
        if len(g1) < 2 or len(g0) < 2 or (g1.std() == 0 and g0.std() == 0):
            continue
        p = stats.ttest_ind(g1, g0).pvalue
        if np.isfinite(p) and p < a:
            keep.append(c)
    return keep


def vif(x: np.ndarray) -> np.ndarray:
    """VIF of each column (inf where a column is an exact linear combination of the others)."""
    if x.shape[1] == 1:
        return np.ones(1)
    r = np.corrcoef(x, rowvar=False)
    try:
        inv = np.linalg.inv(r)
        d = np.diag(inv)
        if not np.all(np.isfinite(d)) or np.any(d < 0.999) or np.linalg.cond(r) > 1e12:
            raise np.linalg.LinAlgError
    except np.linalg.LinAlgError:
        d = np.empty(x.shape[1])
        for i in range(x.shape[1]):
            others = np.column_stack([np.ones(len(x)), np.delete(x, i, axis=1)])
            coef, *_ = np.linalg.lstsq(others, x[:, i], rcond=None)
            res = x[:, i] - others @ coef
            tss = ((x[:, i] - x[:, i].mean()) ** 2).sum()
            r2 = 1 - (res @ res) / tss
            d[i] = np.inf if r2 >= 1 - 1e-10 else 1 / (1 - r2)
    return d


def vif_filter(x: pd.DataFrame, threshold: float = 10.0) -> list[str]:
    """The columns left after iteratively dropping the largest VIF while any VIF >= ``threshold`` (spec B.4 step 1)."""
    cols = [c for c in x.columns if x[c].std() > 0]
    while len(cols) > 1:
        v = vif(x[cols].to_numpy(float))
        i = int(np.argmax(v))
        if v[i] < threshold:
            break
        cols.pop(i)
    return cols


def _auto_trees(n_feat: int, depth: int) -> int:
    multi = (n_feat * 2) / (np.sqrt(n_feat * 2) * depth)
    return max(int(multi * 100), 10)


def boruta(
    x: pd.DataFrame, y: np.ndarray, config: BorutaConfig | None = None, task: str = "classification"
) -> BorutaResult:
    """Boruta all-relevant selection with a random forest (see the module docstring)."""
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

    cfg = config or BorutaConfig()
    names = list(x.columns)
    v = x.to_numpy(float)
    p = v.shape[1]
    if p == 0:
        return BorutaResult([], [], [])
    rng = np.random.default_rng(cfg.seed)
    hits = np.zeros(p)
    zsum = np.zeros(p)
    status = np.zeros(p, dtype=int)  # 0 undecided, 1 confirmed, -1 rejected
    it = 0
    Forest = RandomForestClassifier if task == "classification" else RandomForestRegressor
    for it in range(1, cfg.max_iter + 1):
        active = np.flatnonzero(status >= 0)  # rejected features leave the forest, as in BorutaPy
        shadow = rng.permuted(v[:, active], axis=0)
        trees = cfg.n_estimators or _auto_trees(len(active), cfg.max_depth)
        rf = Forest(n_estimators=trees, max_depth=cfg.max_depth, n_jobs=1, random_state=int(rng.integers(2**31 - 1)))
        rf.fit(np.hstack([v[:, active], shadow]), y)
        per_tree = np.array([t.feature_importances_ for t in rf.estimators_])
        imp = per_tree.mean(0)
        se = per_tree.std(0) / np.sqrt(len(per_tree)) + 1e-12
        z = imp / se
        real, shad = z[: len(active)], z[len(active) :]
        hits[active] += real > shad.max()
        zsum[active] += real
        undecided = np.flatnonzero(status == 0)
        if len(undecided) == 0:
            break
        a = cfg.alpha / len(undecided)
        p_acc = stats.binom.sf(hits[undecided] - 1, it, 0.5)
        p_rej = stats.binom.cdf(hits[undecided], it, 0.5)
        status[undecided[p_acc < a]] = 1
        status[undecided[p_rej < a]] = -1
        if not (status == 0).any():
            break
    zmean = zsum / max(it, 1)
    return BorutaResult(
        confirmed=[names[i] for i in np.flatnonzero(status == 1)],
        tentative=[names[i] for i in np.flatnonzero(status == 0)],
        rejected=[names[i] for i in np.flatnonzero(status == -1)],
        z={names[i]: float(zmean[i]) for i in range(p)},
        iterations=it,
    )


def _rss(g: np.ndarray, b: np.ndarray, yy: float, idx: list[int]) -> float:
    """RSS of OLS on columns ``idx`` of the (intercept-first) design, from the Gram matrix."""
    s = [0, *idx]
    gs = g[np.ix_(s, s)]
    try:
        coef = np.linalg.solve(gs + 1e-10 * np.eye(len(s)), b[s])
    except np.linalg.LinAlgError:
        coef = np.linalg.lstsq(gs, b[s], rcond=None)[0]
    return float(max(yy - coef @ b[s], 1e-12))


def step_aic(x: np.ndarray, y: np.ndarray, names: list[str], max_steps: int = 1000) -> list[str]:
    """Bidirectional stepwise OLS by AIC from the full model (R's stepAIC default); the kept column names."""
    n = len(y)
    d = np.column_stack([np.ones(n), x])
    g, b, yy = d.T @ d, d.T @ y, float(y @ y)

    def aic(idx: list[int]) -> float:
        return n * np.log(_rss(g, b, yy, idx) / n) + 2 * (len(idx) + 1)

    cur = list(range(1, x.shape[1] + 1))
    cur_aic = aic(cur)
    for _ in range(max_steps):
        cands = [[j for j in cur if j != k] for k in cur]
        cands += [sorted([*cur, k]) for k in range(1, x.shape[1] + 1) if k not in cur]
        if not cands:
            break
        scores = [aic(c) for c in cands]
        i = int(np.argmin(scores))
        if scores[i] >= cur_aic - 1e-9:
            break
        cur, cur_aic = cands[i], scores[i]
    return [names[j - 1] for j in cur]
