"""Item2Vec (Barkan & Koenigstein, 2016): SGNS item embeddings from users' item sets, via gensim.

Each user's training items form one "sentence"; every ordered pair of distinct items of a
user is a (word, context) pair (``window`` = the longest list and ``shrink_windows=False``,
so the context is the whole set, as in the Item2Vec paper and RME's greedy context).
Embeddings are learnt by skip-gram with negative sampling (gensim's ``Word2Vec``, one worker,
seeded).

Scoring follows the RME spec's [AMBIG] R.9 default: ``score(u, i) = sum_{j in I_u} cos(e_i, e_j)``,
which is a dot product of the normalised item vector with the sum of the user's normalised
training item vectors, so the model is a dot model (``item_vectors`` / ``query_vectors`` serve
it through an ANN index). Items never seen in training get a zero vector.

Training runs one epoch at a time with the learning rate decayed linearly over ``epochs``;
after each epoch validation NDCG@``monitor_k`` is computed and the best embeddings are kept.
Deviation from the RME protocol's rule (stop at the first non-improvement, R.8): SGNS is
stochastic, and its validation curve dips by noise while it is still rising (on ml-100k the
first dip came at epoch 8 of a curve that peaks much later), so training stops only after
``patience`` epochs without improvement (``patience=1`` is the spec's rule). Item2Vec has no
regulariser (R.9).

Needs the optional ``gensim`` package (``pip install 'segue[w2v]'``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from torch import nn

from segue.errors import ConfigError
from segue.models.base import register
from segue.models.mf import _DotModel

if TYPE_CHECKING:
    from segue.data.interactions import Interactions
    from segue.models.base import Monitor


@register
class Item2Vec(_DotModel):
    """SGNS item embeddings; a user scores an item by the summed cosine to their training items."""

    name: ClassVar[str] = "item2vec"
    trainable: ClassVar[bool] = False

    @dataclass
    class Config:
        dim: int = 40
        negative: int = 5  # negative samples per positive pair
        ns_exponent: float = 0.75  # unigram^0.75 noise distribution
        window: int | None = None  # None: the whole list (longest training list)
        epochs: int = 50  # at most; early stopping on validation
        lr: float = 0.025
        min_lr: float = 0.0001
        sample: float = 0.0  # frequent-item down-sampling threshold (0 = off)
        seed: int = 98765
        monitor_k: int = 100
        patience: int = 3  # epochs without a validation improvement before stopping (1 = spec rule)
        shuffle: bool = True  # reshuffle each user's list before every epoch

    def __init__(self, n_users: int, n_items: int, config: Any = None) -> None:
        super().__init__(n_users, n_items, config)
        c = self.config
        ok = c.dim >= 1 and c.negative >= 1 and c.epochs >= 1 and c.lr > 0 and c.min_lr >= 0 and c.sample >= 0
        if not ok or (c.window is not None and c.window < 1) or c.monitor_k < 1 or c.patience < 1:
            raise ConfigError(
                f"item2vec needs dim, negative, epochs, window and monitor_k >= 1, lr > 0 and sample >= 0, got {c}."
            )
        self.user_emb = nn.Embedding(n_users + 1, c.dim)
        self.item_emb = nn.Embedding(n_items + 1, c.dim)
        for emb in (self.user_emb, self.item_emb):
            emb.weight.requires_grad_(False)
            nn.init.zeros_(emb.weight)

    def _set_vectors(self, w2v: Any, train_csr: Any) -> None:
        vecs = np.zeros((self.n_items + 1, self.config.dim), dtype=np.float32)
        keys = np.asarray([int(k) for k in w2v.wv.index_to_key], dtype=np.int64)
        v = np.asarray(w2v.wv.vectors, dtype=np.float32)
        norms = np.linalg.norm(v, axis=1, keepdims=True)
        vecs[keys] = v / np.maximum(norms, 1e-12)
        users = train_csr @ vecs  # sum of the normalised vectors of each user's training items
        with torch.no_grad():
            self.item_emb.weight.copy_(torch.from_numpy(vecs))
            self.user_emb.weight.copy_(torch.from_numpy(np.asarray(users, dtype=np.float32)))
        self.fitted = True

    def fit(self, train: Interactions, monitor: Monitor | None = None, **extras: Any) -> dict[str, Any]:
        try:
            from gensim.models import Word2Vec
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ConfigError("item2vec needs the 'gensim' package: pip install 'segue[w2v]'.") from e
        from segue.models.baselines import _check_train

        _check_train(self, train)
        c = self.config
        t0 = time.perf_counter()
        x = train.to_csr()
        x.data[:] = 1.0
        lists = [x.indices[x.indptr[u] : x.indptr[u + 1]] for u in range(x.shape[0])]
        lists = [lst for lst in lists if len(lst) >= 2]
        if not lists:
            raise ConfigError("item2vec needs at least one user with two or more training items.")
        rng = np.random.default_rng(c.seed)
        window = c.window or max(len(lst) for lst in lists)
        sentences = [[str(i) for i in lst] for lst in lists]
        model = Word2Vec(
            vector_size=c.dim,
            window=window,
            min_count=1,
            sg=1,
            hs=0,
            negative=c.negative,
            ns_exponent=c.ns_exponent,
            sample=c.sample,
            alpha=c.lr,
            min_alpha=c.min_lr,
            workers=1,
            seed=c.seed,
            shrink_windows=False,
        )
        model.build_vocab(sentences)
        log: list[dict[str, Any]] = []
        best_val, best_epoch, best_state, misses = -np.inf, 0, None, 0
        key = f"NDCG@{c.monitor_k}"
        for epoch in range(1, c.epochs + 1):
            e0 = time.perf_counter()
            if c.shuffle:
                sentences = [[s[j] for j in rng.permutation(len(s))] for s in sentences]
            a0 = c.lr - (c.lr - c.min_lr) * (epoch - 1) / c.epochs
            a1 = c.lr - (c.lr - c.min_lr) * epoch / c.epochs
            model.train(sentences, total_examples=len(sentences), epochs=1, start_alpha=a0, end_alpha=a1)
            self._set_vectors(model, x)
            val = None
            if monitor is not None:
                val = monitor(self, key)
            log.append({"epoch": epoch, "loss": None, key: val, "seconds": time.perf_counter() - e0})
            if val is None:
                best_epoch = epoch
                continue
            if val > best_val:
                best_val, best_epoch, misses = val, epoch, 0
                best_state = {k: v.clone() for k, v in self.state_dict().items()}
            else:
                misses += 1
                if misses >= c.patience:
                    break
        if best_state is not None:
            self.load_state_dict(best_state)
        self.fit_seconds_ = time.perf_counter() - t0
        return {
            "epochs": log,
            "best_epoch": best_epoch,
            "best_value": None if monitor is None else float(best_val),
            "monitor": key if monitor is not None else None,
            "stopped_early": monitor is not None and best_epoch < c.epochs,
        }
