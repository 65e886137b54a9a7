"""Latent reward-difficulty features: the six-step "semantic reward cluster" pipeline (spec B.3.1).

1. Reward descriptions -> tokens (:func:`segue.delivery.text.reward_tokens`).
2. Word vectors: vector size 50, window 15, min count 5, 20 iterations. The text trains GloVe; segue
   trains gensim word2vec (skip-gram) with those settings, the fallback the spec names (B.7 item 3).
3. k-means over the word vectors, K1 in ``word_k`` chosen by minimising Eq. 3.1,
   ``BIC = sum_k sum_{i in k} ||v_i - c_k|| + log(n) * m * K1`` (Euclidean, not squared distance;
   m = vector size). [AMBIG] n is "the number of rewards" although words are clustered; spec choice:
   as written (``bic_n="rewards"``), with ``bic_n="points"`` to use the number of clustered points.
4. The rewards of the projects to featurise.
5. Each reward -> a K1-d count vector (how many of its tokens fall in each word cluster).
6. k-means over the reward vectors, K chosen the same way (m = K1): the semantic reward clusters.

Project feature i = the sum of backers of the project's rewards in semantic cluster i (``weight="backers"``,
as the text does; ``weight="count"`` counts rewards, which is observable at launch, where final backers are not).

[AMBIG] cluster indices depend on the k-means initialisation; spec choice: k-means++ with n_init=10
and a fixed seed. segue numbers the semantic clusters by decreasing size, and
:func:`cluster_quality` reports them sorted by on-time probability (Figure 3.4).
The cluster model is plain JSON (word -> cluster, centroids), never a pickle.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np
import pandas as pd

from segue.delivery.text import reward_tokens
from segue.errors import ConfigError, DataError


@dataclass
class ClusterConfig:
    """Settings of the six steps (defaults = the text's: 50-d, window 15, min count 5, 20 iterations, K in 1..100)."""

    vector_size: int = 50
    window: int = 15
    min_count: int = 5
    epochs: int = 20
    word_k: tuple[int, int] = (1, 100)
    reward_k: tuple[int, int] = (1, 100)
    bic_n: Literal["rewards", "points"] = "rewards"
    n_init: int = 10
    seed: int = 0
    weight: Literal["backers", "count"] = "backers"
    patience: int | None = None  # stop the K scan after this many K without a new minimum (None: scan all, as the text)

    def __post_init__(self) -> None:
        for name in ("word_k", "reward_k"):
            lo, hi = getattr(self, name)
            if not 1 <= lo <= hi:
                raise ConfigError(f"ClusterConfig.{name} must be (low, high) with 1 <= low <= high, not {(lo, hi)}.")
        if self.bic_n not in ("rewards", "points"):
            raise ConfigError(f"ClusterConfig.bic_n must be 'rewards' or 'points', not {self.bic_n!r}.")
        if self.weight not in ("backers", "count"):
            raise ConfigError(f"ClusterConfig.weight must be 'backers' or 'count', not {self.weight!r}.")


def bic(points: np.ndarray, labels: np.ndarray, centers: np.ndarray, n: int) -> float:
    """Eq. 3.1: sum of Euclidean distances to the assigned centre + log(n) * m * K."""
    d = np.linalg.norm(points - centers[labels], axis=1).sum()
    return float(d + np.log(n) * points.shape[1] * len(centers))


def choose_k(
    points: np.ndarray, ks: tuple[int, int], n: int, n_init: int, seed: int, patience: int | None = None
) -> tuple[int, np.ndarray, np.ndarray, dict[int, float]]:
    """k-means (k-means++, ``n_init`` restarts) for each K in ``ks`` (inclusive); the K minimising Eq. 3.1."""
    from sklearn.cluster import KMeans

    distinct = len(np.unique(points, axis=0))
    best: tuple[float, int, np.ndarray, np.ndarray] | None = None
    curve: dict[int, float] = {}
    since = 0
    for k in range(ks[0], min(ks[1], distinct) + 1):
        km = KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit(points)
        b = bic(points, km.labels_, km.cluster_centers_, n)
        curve[k] = b
        if best is None or b < best[0]:
            best, since = (b, k, km.labels_, km.cluster_centers_), 0
        else:
            since += 1
            if patience is not None and since >= patience:
                break
    assert best is not None
    return best[1], best[2], best[3], curve


@dataclass
class SemanticRewardClusters:
    """A fitted cluster model: word -> word cluster (step 3), semantic-cluster centroids (step 6)."""

    config: ClusterConfig
    word_cluster: dict[str, int]
    centroids: np.ndarray  # (K, K1)
    word_bic: dict[int, float] = field(default_factory=dict)
    reward_bic: dict[int, float] = field(default_factory=dict)

    @property
    def k1(self) -> int:
        return self.centroids.shape[1]

    @property
    def k(self) -> int:
        return self.centroids.shape[0]

    @property
    def columns(self) -> list[str]:
        return [f"semantic_cluster_{i + 1:02d}" for i in range(self.k)]

    @classmethod
    def fit(
        cls, corpus: Sequence[str], rewards: Sequence[str] | None = None, config: ClusterConfig | None = None
    ) -> SemanticRewardClusters:
        """Steps 1-6: word vectors and word clusters from ``corpus``; semantic clusters over ``rewards`` (default: corpus)."""
        from gensim.models import Word2Vec

        cfg = config or ClusterConfig()
        docs = [reward_tokens(t) for t in corpus]
        docs = [d for d in docs if d]
        if not docs:
            raise DataError("The reward corpus has no words left after stop-word removal; cannot train word vectors.")
        from collections import Counter

        counts = Counter(t for d in docs for t in d)
        if max(counts.values()) < cfg.min_count:
            raise DataError(
                f"No word occurs at least min_count={cfg.min_count} times in the reward corpus; lower ClusterConfig.min_count."
            )
        w2v = Word2Vec(
            docs,
            vector_size=cfg.vector_size,
            window=cfg.window,
            min_count=cfg.min_count,
            epochs=cfg.epochs,
            sg=1,
            seed=cfg.seed,
            workers=1,
        )
        vocab = list(w2v.wv.index_to_key)
        if not vocab:
            raise DataError(
                f"No word occurs at least min_count={cfg.min_count} times in the reward corpus; lower ClusterConfig.min_count."
            )
        vecs = np.asarray(w2v.wv[vocab], dtype=np.float64)
        n_words = len(corpus) if cfg.bic_n == "rewards" else len(vocab)
        k1, wl, _, wcurve = choose_k(vecs, cfg.word_k, n_words, cfg.n_init, cfg.seed, cfg.patience)
        word_cluster = {w: int(c) for w, c in zip(vocab, wl, strict=True)}
        partial = cls(cfg, word_cluster, np.zeros((1, k1)), wcurve)
        rv = partial.reward_vectors(list(rewards) if rewards is not None else list(corpus))
        n_rew = len(rv)
        k, rl, centers, rcurve = choose_k(rv, cfg.reward_k, n_rew, cfg.n_init, cfg.seed, cfg.patience)
        order = np.argsort(-np.bincount(rl, minlength=k), kind="stable")  # number clusters by decreasing size
        return cls(cfg, word_cluster, centers[order], wcurve, rcurve)

    def reward_vectors(self, texts: Sequence[str]) -> np.ndarray:
        """Step 5: (rewards, K1) counts of each reward's tokens per word cluster (unknown words ignored)."""
        out = np.zeros((len(texts), self.k1))
        for i, t in enumerate(texts):
            for tok in reward_tokens(t):
                c = self.word_cluster.get(tok)
                if c is not None:
                    out[i, c] += 1
        return out

    def assign(self, texts: Sequence[str]) -> np.ndarray:
        """Each reward's semantic cluster (nearest centroid, Euclidean), 0-based."""
        rv = self.reward_vectors(texts)
        d = ((rv[:, None, :] - self.centroids[None, :, :]) ** 2).sum(-1)
        return d.argmin(1) if len(rv) else np.zeros(0, dtype=int)

    def project_features(self, rewards: pd.DataFrame, project_ids: Sequence[str]) -> pd.DataFrame:
        """The K project columns: sum of backers (or count) of the project's rewards in each semantic cluster."""
        lab = self.assign(list(rewards["description"]))
        w = rewards["backers"].to_numpy(float) if self.config.weight == "backers" else np.ones(len(rewards))
        df = pd.DataFrame({"project_id": rewards["project_id"].to_numpy(), "c": lab, "w": w})
        tab = df.pivot_table(index="project_id", columns="c", values="w", aggfunc="sum", fill_value=0.0)
        tab = tab.reindex(index=list(project_ids), columns=range(self.k), fill_value=0.0).fillna(0.0)
        tab.columns = self.columns
        return tab.astype(float)

    def major_cluster(self, rewards: pd.DataFrame, project_ids: Sequence[str]) -> pd.Series:
        """M(p): the semantic cluster holding most of the project's rewards (ties: the lower index), 1-based."""
        lab = self.assign(list(rewards["description"]))
        df = pd.DataFrame({"project_id": rewards["project_id"].to_numpy(), "c": lab})
        counts = df.groupby(["project_id", "c"]).size().unstack(fill_value=0).reindex(list(project_ids), fill_value=0)
        return counts.idxmax(axis=1).astype(int) + 1

    def to_json(self) -> dict:
        return {
            "config": {
                **asdict(self.config),
                "word_k": list(self.config.word_k),
                "reward_k": list(self.config.reward_k),
            },
            "word_cluster": self.word_cluster,
            "centroids": self.centroids.tolist(),
            "word_bic": {str(k): v for k, v in self.word_bic.items()},
            "reward_bic": {str(k): v for k, v in self.reward_bic.items()},
        }

    @classmethod
    def from_json(cls, obj: dict) -> SemanticRewardClusters:
        try:
            c = dict(obj["config"])
            c["word_k"], c["reward_k"] = tuple(c["word_k"]), tuple(c["reward_k"])
            return cls(
                ClusterConfig(**c),
                {str(k): int(v) for k, v in obj["word_cluster"].items()},
                np.asarray(obj["centroids"], dtype=np.float64),
                {int(k): float(v) for k, v in obj.get("word_bic", {}).items()},
                {int(k): float(v) for k, v in obj.get("reward_bic", {}).items()},
            )
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"The saved semantic-cluster model is malformed ({e}).") from e


def cluster_quality(major: pd.Series, on_time: pd.Series) -> pd.DataFrame:
    """Figure 3.4: P(on-time | c_i = M(p)) per semantic cluster (Bayes' rule = the empirical on-time rate), sorted."""
    df = pd.DataFrame({"cluster": major, "on_time": on_time.astype(float)}).dropna()
    g = df.groupby("cluster")["on_time"].agg(["mean", "size"]).rename(columns={"mean": "p_on_time", "size": "projects"})
    return g.sort_values("p_on_time", ascending=False).reset_index()
