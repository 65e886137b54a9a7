"""Classifiers and regressors of chapter 3 (spec B.5, B.6; Tables 3.2-3.5), cross-validation, saving.

**Classification** (spec B.5): on-time vs late. Our model is gradient-boosted trees on the selected
features (linguistic t-test, VIF, Boruta). The text uses XGBoost; segue uses LightGBM (4.x, the library's
defaults, ``n_jobs=1``), a deviation stated in docs/delivery.md. ``tune=True`` adds the spec's inner
3-fold grid (max_depth {3, 6}, n_estimators {100, 300}, learning_rate {0.05, 0.1}). Baselines:
majority class of the training fold (Baseline 1) and LightGBM on Kim et al.'s 8 features (Baseline 2).
Protocol: stratified 10-fold CV with a fixed seed ([AMBIG] spec choice), accuracy; one-sided Wilcoxon
signed-rank test of ours vs Baseline 2 over the folds.

**Regression** (spec B.6): delivery days of the projects that have them. Features: log(1 + x)
(category one-hot, not logged); target Box-Cox with lambda chosen on [-1, 1] by the profile
log-likelihood L = -(n/2) log(SSE/n) of OLS on the geometric-mean-normalised y ([TYPO] spec choice),
per training fold (``paper_mode``: fixed 0.11); stepAIC; elastic net (``ElasticNetCV``, inner 5-fold,
l1_ratio {0.1, 0.5, 0.9, 1.0}, on standardised features: sklearn scales the loss by 1/(2n));
predictions inverted with ``inv_boxcox`` and clipped at 0. Baseline: OLS on Kim's 8 features
predicting days. Metrics: RMSE, NRMSE@A = RMSE/(max y - min y), NRMSE@B = RMSE/mean y, normalisers
over the whole ground-truth set ([AMBIG] spec choice), RMSE over the pooled out-of-fold predictions.
Variants (Table 3.5): semantic clusters only; "other" (all but semantic and the longest delivery
duration); all (= both; never the longest delivery duration).

**Selection placement** ([AMBIG] spec choice): inside each training fold by default; ``paper_mode``
selects once on all labelled data (what the text appears to do) and fixes lambda = 0.11.

Saved models are a directory: ``model.json`` (features, selection, category levels, elastic-net
coefficients, Box-Cox lambda, the semantic-cluster model) and ``classifier.txt`` (LightGBM's text
format). No pickles.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats
from scipy.special import inv_boxcox

from segue.delivery.clusters import SemanticRewardClusters
from segue.delivery.features import FeatureTable, TimePoint, build_features, kim_features, labels
from segue.delivery.lexicon import get_lexicon
from segue.delivery.schema import DeliveryData
from segue.delivery.selection import BorutaConfig, boruta, step_aic, ttest_select, vif_filter
from segue.errors import ConfigError, DataError, RunDirError

PAPER_LAMBDA = 0.11
ABLATION_GROUPS = ("linguistic", "semantic", "backer", "creator")
GRID = [(d, n, lr) for d in (3, 6) for n in (100, 300) for lr in (0.05, 0.1)]
FORMAT_VERSION = 1


@dataclass
class EvalConfig:
    """Cross-validation and selection settings (defaults: the spec's choices)."""

    n_folds: int = 10
    seed: int = 0
    paper_mode: bool = False
    vif_threshold: float = 10.0
    use_boruta: bool = True
    boruta: BorutaConfig = field(default_factory=BorutaConfig)
    tune: bool = False
    l1_ratios: tuple[float, ...] = (0.1, 0.5, 0.9, 1.0)
    inner_folds: int = 5
    en_alphas: int = 100

    def __post_init__(self) -> None:
        if self.n_folds < 2:
            raise ConfigError(f"EvalConfig.n_folds must be at least 2, not {self.n_folds}.")
        if self.vif_threshold <= 1:
            raise ConfigError("EvalConfig.vif_threshold must exceed 1.")


# ---------------------------------------------------------------- encoding


def _numeric(ft: FeatureTable, cols: list[str]) -> list[str]:
    return [c for c in cols if c != "category"]


def _cls_matrix(frame: pd.DataFrame, cols: list[str], levels: list[str]) -> pd.DataFrame:
    x = frame[cols].copy()
    if "category" in cols:
        codes = pd.Categorical(frame["category"], categories=levels).codes.astype(float)
        x["category"] = np.where(codes < 0, np.nan, codes)
    return x.astype(float)


def _lgbm(seed: int, params: dict | None = None):
    import lightgbm as lgb

    return lgb.LGBMClassifier(n_jobs=1, verbose=-1, random_state=seed, **(params or {}))


def _fit_lgbm(x: pd.DataFrame, y: np.ndarray, seed: int, tune: bool):
    params = _tune(x, y, seed) if tune else {}
    m = _lgbm(seed, params)
    cat = ["category"] if "category" in x.columns else "auto"
    m.fit(x, y, categorical_feature=cat)
    return m, params


def _tune(x: pd.DataFrame, y: np.ndarray, seed: int) -> dict:
    from sklearn.model_selection import StratifiedKFold

    best, best_acc = {}, -1.0
    skf = StratifiedKFold(3, shuffle=True, random_state=seed)
    for d, n, lr in GRID:
        p = {"max_depth": d, "n_estimators": n, "learning_rate": lr}
        accs = []
        for tr, te in skf.split(x, y):
            m = _lgbm(seed, p)
            m.fit(x.iloc[tr], y[tr], categorical_feature=["category"] if "category" in x.columns else "auto")
            accs.append((m.predict(x.iloc[te]) == y[te]).mean())
        if np.mean(accs) > best_acc:
            best, best_acc = p, float(np.mean(accs))
    return best


# ---------------------------------------------------------------- selection pipelines


@dataclass
class Selection:
    columns: list[str]
    z: dict[str, float] = field(default_factory=dict)
    linguistic: list[str] = field(default_factory=list)
    boruta_fallback: bool = False


def select_classification(
    ft: FeatureTable, rows: np.ndarray, y: np.ndarray, cols: list[str], cfg: EvalConfig, levels: list[str]
) -> Selection:
    """Spec B.3.2 + B.4 on the rows ``rows``: linguistic t-test per source, VIF >= 10 removal, Boruta-confirmed."""
    f = ft.frame.iloc[rows]
    ling = _linguistic_ttest(f, y, [c for c in cols if ft.groups[c] == "linguistic"])
    pool = [c for c in cols if ft.groups[c] != "linguistic"] + ling
    kept = vif_filter(f[_numeric(ft, pool)], cfg.vif_threshold)
    if "category" in pool:
        kept = ["category", *kept]
    if not cfg.use_boruta:
        return Selection(kept, {}, ling)
    res = boruta(_cls_matrix(f, kept, levels).fillna(-1.0), y, cfg.boruta, "classification")
    if not res.confirmed:  # nothing significant: keep the VIF survivors rather than an empty model
        return Selection(kept, res.z, ling, boruta_fallback=True)
    return Selection(res.confirmed, res.z, ling)


def _linguistic_ttest(f: pd.DataFrame, y: np.ndarray, ling: list[str]) -> list[str]:
    out = []
    for prefix in ("liwc_updates_", "liwc_comments_"):
        block = [c for c in ling if c.startswith(prefix)]
        out += ttest_select(f[block], y) if block else []
    return out


# ---------------------------------------------------------------- classification CV


@dataclass
class ClassificationResult:
    """Per-fold accuracies of Table 3.3 (and 3.4 ablations at TP4), with the Table 3.2 importances."""

    time_point: str
    n: int
    majority: list[float]
    kim: list[float]
    ours: list[float]
    ours_tuned: list[float] | None
    ablation: dict[str, list[float]]
    importance: pd.DataFrame  # feature, z, times selected
    wilcoxon_p: float | None
    selected: list[list[str]]

    def summary(self) -> dict:
        m = lambda v: float(np.mean(v)) if v else None  # noqa: E731
        return {
            "time_point": self.time_point,
            "projects": self.n,
            "folds": len(self.ours),
            "accuracy": {
                "baseline1_majority": m(self.majority),
                "baseline2_kim": m(self.kim),
                "ours": m(self.ours),
                **({"ours_tuned": m(self.ours_tuned)} if self.ours_tuned else {}),
            },
            "ablation": {f"all - {g}": m(v) for g, v in self.ablation.items()},
            "wilcoxon_p_ours_gt_kim": self.wilcoxon_p,
            "top_features": self.importance.head(10).to_dict("records"),
        }


def _splits(y: np.ndarray, cfg: EvalConfig, stratified: bool):
    from sklearn.model_selection import KFold, StratifiedKFold

    if stratified:
        counts = np.bincount(y.astype(int), minlength=2)
        if counts.min() < cfg.n_folds:
            raise DataError(
                f"{cfg.n_folds}-fold stratified CV needs at least {cfg.n_folds} on-time and {cfg.n_folds} late projects; "
                f"the data has {counts[1]} on-time and {counts[0]} late."
            )
        return list(StratifiedKFold(cfg.n_folds, shuffle=True, random_state=cfg.seed).split(np.zeros(len(y)), y))
    if len(y) < cfg.n_folds:
        raise DataError(
            f"{cfg.n_folds}-fold CV needs at least {cfg.n_folds} projects with a delivery duration; got {len(y)}."
        )
    return list(KFold(cfg.n_folds, shuffle=True, random_state=cfg.seed).split(np.zeros(len(y))))


def _our_columns(ft: FeatureTable, drop_groups: tuple[str, ...] = ()) -> list[str]:
    return [c for c in ft.frame.columns if ft.groups[c] != "kim" and ft.groups[c] not in drop_groups]


def evaluate_classification(
    ft: FeatureTable, data: DeliveryData, cfg: EvalConfig | None = None, ablation: bool | None = None
) -> ClassificationResult:
    """Table 3.3 at ``ft.time_point`` (and Table 3.4 at TP4): CV accuracies of the baselines and ours."""
    cfg = cfg or EvalConfig()
    lab = labels(data)["on_time"].reindex(ft.frame.index)
    keep = lab.notna().to_numpy()
    if keep.sum() == 0:
        raise DataError(f"{data.source}: no project has an on_time label; classification needs labelled projects.")
    ft = FeatureTable(ft.frame[keep], ft.groups, ft.time_point)
    y = lab[keep].to_numpy().astype(int)
    levels = sorted(ft.frame["category"].unique())
    folds = _splits(y, cfg, stratified=True)
    kim = kim_features(data, ft.time_point).reindex(ft.frame.index)
    kim_cols = list(kim.columns)
    do_ablation = ft.time_point is TimePoint.TP4 if ablation is None else ablation
    variants = {"all": ()} | ({g: (g,) for g in ABLATION_GROUPS} if do_ablation else {})
    acc: dict[str, list[float]] = {k: [] for k in variants}
    tuned, maj, kimacc, selected = [], [], [], []
    zs: dict[str, list[float]] = {}
    counts: dict[str, int] = {}
    paper_sel = {}
    if cfg.paper_mode:
        for name, drop in variants.items():
            paper_sel[name] = select_classification(ft, np.arange(len(y)), y, _our_columns(ft, drop), cfg, levels)
    for k, (tr, te) in enumerate(folds):
        seed = cfg.seed + k
        maj_class = int(np.bincount(y[tr], minlength=2).argmax())
        maj.append(float((y[te] == maj_class).mean()))
        km, _ = _fit_lgbm(_cls_matrix(kim.iloc[tr], kim_cols, levels), y[tr], seed, False)
        kimacc.append(float((km.predict(_cls_matrix(kim.iloc[te], kim_cols, levels)) == y[te]).mean()))
        for name, drop in variants.items():
            sel = (
                paper_sel[name]
                if cfg.paper_mode
                else select_classification(ft, tr, y[tr], _our_columns(ft, drop), cfg, levels)
            )
            xtr = _cls_matrix(ft.frame.iloc[tr], sel.columns, levels)
            xte = _cls_matrix(ft.frame.iloc[te], sel.columns, levels)
            m, _ = _fit_lgbm(xtr, y[tr], seed, False)
            acc[name].append(float((m.predict(xte) == y[te]).mean()))
            if name == "all":
                selected.append(sel.columns)
                for c, z in sel.z.items():
                    zs.setdefault(c, []).append(z)
                for c in sel.columns:
                    counts[c] = counts.get(c, 0) + 1
                if cfg.tune:
                    mt, _ = _fit_lgbm(xtr, y[tr], seed, True)
                    tuned.append(float((mt.predict(xte) == y[te]).mean()))
    imp = pd.DataFrame(
        [{"feature": c, "z": float(np.mean(v)), "selected_in_folds": counts.get(c, 0)} for c, v in zs.items()]
    )
    imp = imp.sort_values("z", ascending=False).reset_index(drop=True) if len(imp) else imp
    p = None
    diff = np.array(acc["all"]) - np.array(kimacc)
    if np.any(diff != 0):
        p = float(stats.wilcoxon(acc["all"], kimacc, alternative="greater").pvalue)
    return ClassificationResult(
        ft.time_point.value,
        len(y),
        maj,
        kimacc,
        acc["all"],
        tuned or None,
        {g: acc[g] for g in variants if g != "all"},
        imp,
        p,
        selected,
    )


# ---------------------------------------------------------------- regression


def _design(frame: pd.DataFrame, cols: list[str], levels: list[str], log: bool = True) -> pd.DataFrame:
    """log(1 + x) of the numeric columns; category one-hot (first level dropped), not logged (spec B.6)."""
    num = [c for c in cols if c != "category"]
    x = frame[num].astype(float)
    if log:
        x = np.log1p(x.clip(lower=0))
    if "category" in cols:
        oh = pd.get_dummies(pd.Categorical(frame["category"], categories=levels), prefix="category", dtype=float)
        oh.index = frame.index
        x = pd.concat([x, oh.iloc[:, 1:]], axis=1)
    return x


def boxcox(y: np.ndarray, lam: float) -> np.ndarray:
    """y^(lambda) = (y^lambda - 1)/lambda, or log y at lambda = 0."""
    return np.log(y) if abs(lam) < 1e-12 else (np.power(y, lam) - 1) / lam


def boxcox_lambda(x: np.ndarray, y: np.ndarray, grid: np.ndarray | None = None) -> float:
    """lambda on [-1, 1] (step 0.01) maximising L = -(n/2) log(SSE/n), SSE of OLS on the GM-normalised y^(lambda)."""
    grid = np.round(np.arange(-1, 1.0001, 0.01), 2) if grid is None else grid
    if np.any(y <= 0):
        raise DataError("Box-Cox needs positive delivery durations.")
    n = len(y)
    d = np.column_stack([np.ones(n), x])
    gm = np.exp(np.mean(np.log(y)))
    q, _ = np.linalg.qr(d)
    best, best_l = -np.inf, 0.0
    for lam in grid:
        z = gm * np.log(y) if abs(lam) < 1e-12 else (np.power(y, lam) - 1) / (lam * gm ** (lam - 1))
        res = z - q @ (q.T @ z)
        ll = -n / 2 * np.log((res @ res) / n)
        if ll > best:
            best, best_l = ll, float(lam)
    return best_l


def _inv(z: np.ndarray, lam: float) -> np.ndarray:
    if lam > 0:
        z = np.maximum(z, -1 / lam + 1e-9)
    elif lam < 0:
        z = np.minimum(z, -1 / lam - 1e-9)
    return np.clip(np.nan_to_num(inv_boxcox(z, lam), nan=0.0, posinf=0.0), 0, None)


@dataclass
class ElasticNetModel:
    """A fitted duration regressor: columns, scaling, coefficients on the Box-Cox scale, lambda."""

    columns: list[str]
    design_columns: list[str]
    mean: list[float]
    scale: list[float]
    coef: list[float]
    intercept: float
    lam: float
    levels: list[str]
    alpha: float = 0.0
    l1_ratio: float = 0.0

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        x = _design(frame, self.columns, self.levels).reindex(columns=self.design_columns, fill_value=0.0)
        xs = (x.to_numpy(float) - np.array(self.mean)) / np.array(self.scale)
        return _inv(xs @ np.array(self.coef) + self.intercept, self.lam)


def fit_duration_model(
    frame: pd.DataFrame, y: np.ndarray, cols: list[str], levels: list[str], cfg: EvalConfig, on_time: np.ndarray | None
) -> ElasticNetModel:
    """One training fold of spec B.6: t-test (linguistic), log1p, Box-Cox, stepAIC, ElasticNetCV."""
    from sklearn.linear_model import ElasticNetCV

    ling = [c for c in cols if c.startswith("liwc_")]
    if ling and on_time is not None and np.isfinite(on_time).all():
        cols = [c for c in cols if c not in ling] + _linguistic_ttest(frame, on_time.astype(int), ling)
    x = _design(frame, cols, levels)
    x = x.loc[:, x.std() > 0]
    lam = PAPER_LAMBDA if cfg.paper_mode else boxcox_lambda(x.to_numpy(float), y)
    z = boxcox(y, lam)
    kept = step_aic(x.to_numpy(float), z, list(x.columns)) if x.shape[1] else []
    if not kept:
        kept = list(x.columns[:1])
    xk = x[kept].to_numpy(float)
    mu, sd = xk.mean(0), xk.std(0) + 1e-12
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        en = ElasticNetCV(l1_ratio=list(cfg.l1_ratios), cv=cfg.inner_folds, alphas=cfg.en_alphas, random_state=cfg.seed)
        en.fit((xk - mu) / sd, z)
    return ElasticNetModel(
        cols,
        kept,
        mu.tolist(),
        sd.tolist(),
        en.coef_.tolist(),
        float(en.intercept_),
        lam,
        levels,
        float(en.alpha_),
        float(en.l1_ratio_),
    )


@dataclass
class RegressionResult:
    """Table 3.5 at one time point: RMSE / NRMSE@A / NRMSE@B of the baseline and the three variants."""

    time_point: str
    n: int
    rmse: dict[str, float]
    nrmse_a: dict[str, float]
    nrmse_b: dict[str, float]
    lambdas: list[float]
    wilcoxon_p: float | None

    def summary(self) -> dict:
        return asdict(self)


def regression_variants(ft: FeatureTable) -> dict[str, list[str]]:
    """Table 3.5's feature sets: semantic only, other (no semantic, no longest duration), all (no longest duration)."""
    ours = [c for c in _our_columns(ft) if c != "longest_delivery_days"]
    sem = [c for c in ours if ft.groups[c] == "semantic"]
    other = [c for c in ours if ft.groups[c] != "semantic"]
    return {"semantic": sem, "other": other, "all": other + sem}


def nrmse(rmse: float, y: np.ndarray) -> tuple[float, float]:
    """(NRMSE@A, NRMSE@B) = (RMSE / (max y - min y), RMSE / mean y)."""
    rng = float(np.max(y) - np.min(y))
    return (rmse / rng if rng > 0 else float("nan")), rmse / float(np.mean(y))


def evaluate_regression(ft: FeatureTable, data: DeliveryData, cfg: EvalConfig | None = None) -> RegressionResult:
    """Table 3.5 at ``ft.time_point``: 10-fold CV of the Kim OLS baseline and the three elastic-net variants."""
    from sklearn.linear_model import LinearRegression

    cfg = cfg or EvalConfig()
    lab = labels(data).reindex(ft.frame.index)
    keep = lab["delivery_days"].notna().to_numpy()
    if keep.sum() == 0:
        raise DataError(f"{data.source}: no project has delivery_days; the duration regression needs some.")
    frame = ft.frame[keep]
    y = lab["delivery_days"][keep].to_numpy(float)
    on_time = lab["on_time"][keep].to_numpy(float)
    levels = sorted(ft.frame["category"].unique())
    kim = kim_features(data, ft.time_point).reindex(frame.index)
    variants = {k: v for k, v in regression_variants(ft).items() if v}
    preds = {k: np.zeros(len(y)) for k in ["kim", *variants]}
    lambdas = []
    sq = {k: [] for k in preds}
    for tr, te in _splits(y, cfg, stratified=False):
        xk = _design(kim, list(kim.columns), levels, log=False)
        lr = LinearRegression().fit(xk.iloc[tr], y[tr])
        preds["kim"][te] = lr.predict(xk.iloc[te])
        for name, cols in variants.items():
            m = fit_duration_model(frame.iloc[tr], y[tr], cols, levels, cfg, on_time[tr])
            preds[name][te] = m.predict(frame.iloc[te])
            if name == "all":
                lambdas.append(m.lam)
        for k in preds:
            sq[k].append(float(np.mean((preds[k][te] - y[te]) ** 2)))
    rmse = {k: float(np.sqrt(np.mean((p - y) ** 2))) for k, p in preds.items()}
    na = {k: nrmse(v, y)[0] for k, v in rmse.items()}
    nb = {k: nrmse(v, y)[1] for k, v in rmse.items()}
    p = None
    if "all" in sq and np.any(np.array(sq["kim"]) != np.array(sq["all"])):
        p = float(stats.wilcoxon(sq["kim"], sq["all"], alternative="greater").pvalue)
    return RegressionResult(ft.time_point.value, len(y), rmse, na, nb, lambdas, p)


# ---------------------------------------------------------------- train / save / load / predict


@dataclass
class DeliveryModel:
    """A trained model for one time point: LightGBM classifier + elastic-net duration regressor."""

    time_point: TimePoint
    columns: list[str]
    levels: list[str]
    booster: object  # lightgbm.Booster
    regressor: ElasticNetModel | None
    clusters: SemanticRewardClusters | None
    lexicon: str
    synthetic: bool

    def features(self, data: DeliveryData) -> pd.DataFrame:
        ft = build_features(data, self.time_point, self.clusters, get_lexicon(self.lexicon))
        return ft.frame

    def predict(self, data: DeliveryData) -> pd.DataFrame:
        """Per project: probability of on-time delivery, the predicted class and the predicted delivery days."""
        f = self.features(data)
        missing = [c for c in self.columns if c not in f.columns]
        if missing:
            raise DataError(f"The project data lacks feature {missing[0]!r} that the model was trained on.")
        p = self.booster.predict(_cls_matrix(f, self.columns, self.levels))
        out = pd.DataFrame({"p_on_time": p, "on_time": p >= 0.5}, index=f.index)
        if self.regressor is not None:
            out["delivery_days"] = self.regressor.predict(f)
        return out

    def save(self, directory: str | Path) -> Path:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        self.booster.save_model(str(d / "classifier.txt"))
        meta = {
            "format": "segue.delivery.model",
            "version": FORMAT_VERSION,
            "time_point": self.time_point.value,
            "columns": self.columns,
            "levels": self.levels,
            "regressor": asdict(self.regressor) if self.regressor else None,
            "clusters": self.clusters.to_json() if self.clusters else None,
            "lexicon": self.lexicon,
            "synthetic": self.synthetic,
            "note": "SYNTHETIC: trained on synthetic data, not Kickstarter" if self.synthetic else "",
        }
        (d / "model.json").write_text(json.dumps(meta, indent=1))
        return d

    @classmethod
    def load(cls, directory: str | Path) -> DeliveryModel:
        import lightgbm as lgb

        d = Path(directory)
        mj, ct = d / "model.json", d / "classifier.txt"
        if not mj.is_file() or not ct.is_file():
            raise RunDirError(f"{d} is not a saved delivery model (it needs model.json and classifier.txt).")
        try:
            meta = json.loads(mj.read_text())
            if meta.get("format") != "segue.delivery.model":
                raise ValueError("not a segue.delivery.model")
            booster = lgb.Booster(model_file=str(ct))
            reg = ElasticNetModel(**meta["regressor"]) if meta["regressor"] else None
            clusters = SemanticRewardClusters.from_json(meta["clusters"]) if meta["clusters"] else None
            return cls(
                TimePoint.parse(meta["time_point"]),
                list(meta["columns"]),
                list(meta["levels"]),
                booster,
                reg,
                clusters,
                meta["lexicon"],
                bool(meta["synthetic"]),
            )
        except (ValueError, KeyError, TypeError, lgb.basic.LightGBMError) as e:
            raise RunDirError(f"{d} holds a damaged delivery model ({e}).") from e


def train(
    data: DeliveryData,
    tp: TimePoint | str,
    clusters: SemanticRewardClusters | None,
    lexicon: str = "empath",
    cfg: EvalConfig | None = None,
) -> DeliveryModel:
    """Fit selection, classifier and (if >= 10 durations) the duration regressor on all labelled projects."""
    cfg = cfg or EvalConfig()
    tp = TimePoint.parse(tp)
    ft = build_features(data, tp, clusters, get_lexicon(lexicon))
    lab = labels(data).reindex(ft.frame.index)
    keep = lab["on_time"].notna().to_numpy()
    y = lab["on_time"][keep].to_numpy().astype(int)
    if len(np.unique(y)) < 2:
        raise DataError(f"{data.source}: training needs both on-time and late projects with labels.")
    levels = sorted(ft.frame["category"].unique())
    sub = FeatureTable(ft.frame[keep], ft.groups, tp)
    sel = select_classification(sub, np.arange(len(y)), y, _our_columns(sub), cfg, levels)
    m, _ = _fit_lgbm(_cls_matrix(sub.frame, sel.columns, levels), y, cfg.seed, cfg.tune)
    dur = lab["delivery_days"].notna().to_numpy()
    reg = None
    if dur.sum() >= 10:
        reg = fit_duration_model(
            ft.frame[dur],
            lab["delivery_days"][dur].to_numpy(float),
            regression_variants(ft)["all"],
            levels,
            cfg,
            lab["on_time"][dur].to_numpy(float),
        )
    return DeliveryModel(tp, sel.columns, levels, m.booster_, reg, clusters, lexicon, data.synthetic)
