"""DCUE (Lee et al., DLRS 2018), its item-id-only ablation and the WMF + regression baseline.

Content spec Part A. ``dcue``: a user tower (Embedding(U, 300) -> ReLU -> Linear(300, 300) ->
ReLU -> Linear(300, d)) and a 1-D convolutional audio tower over log-mel segments (128 mel bins
as channels, 130 frames = 3 s):

    Conv1d(128->128, k4) ReLU MaxPool4 -> Conv1d(128->d, k4) ReLU MaxPool4 ->
    Conv1d(d->d, k4) ReLU MaxPool4 -> Conv1d(d->d, k2) ReLU MaxPool2 -> Conv1d(d->d, k1) ReLU ->
    global average over time -> Linear(d, d)

(time lengths 130 -> 32 -> 8 -> 2 -> 1 -> 1; ``padding="same"``, He-uniform convolutions,
Glorot-uniform dense layers with zero bias, embedding U(-0.05, 0.05)); d = 256. The score is
the cosine of the two feature vectors (Eq. 1). Training (:mod:`segue.training.audio`) minimises
the max-margin hinge loss (Eq. 2) with margin 0.2 and 20 negatives, with the audio tower
shared by the positive and every negative (one module, one batch).

A model never reads files: :meth:`DCUE.fit` takes the clips' log-mels as a tensor or array
(``mels``: (n_items, 128, T), row i - 1 = item i, e.g. the clip cache's memory map), and after fitting the item embedding of a clip
is the mean of the audio tower over its floor(T / 130) non-overlapping segments (spec A.3,
"inference"), computed by :meth:`DCUE.encode_items`; a new (cold-start) clip only needs its mel.

Options beyond the paper (off by default): ``shared_negatives`` (spec A.11 [OURS]: one set of
N negatives per batch) and ``batchnorm`` (BatchNorm after each convolution, as in the Park et
al. base model); the DSC-7 reproduction uses both, see :mod:`segue.reproduce.dcue_table`.

``dcue-id``: the ablation of A.7.4, whose item side is the user tower's architecture on item ids.
``wmf-regression``: van den Oord et al.'s cold-start baseline (A.7.3): the same audio tower with
a final Linear to the WMF factor dimension, regressed (MSE) onto the item factors of a WMF fitted
on the training clips; users keep their WMF factors and the score is the dot product.
Deviation: the regression is trained on random 3-s crops of each training clip (each crop
regressed onto the clip's factor) and predicts with the segment average, instead of averaging
9 segments inside every training step; this is 9x cheaper and the same objective in expectation
of the crop.

:class:`TagMLP` is the auto-tagging head of A.6 (Linear(d, 2d) BN ReLU Linear(2d, 2d) BN ReLU
Linear(2d, n_tags)), trained on frozen song embeddings by :func:`segue.training.audio.fit_tagger`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segue.errors import ConfigError, DataError, NotFittedError
from segue.models.base import Context, Measure, Recommender, register

if TYPE_CHECKING:
    pass

SEGMENT = 130


def _glorot(linear: nn.Linear) -> nn.Linear:
    nn.init.xavier_uniform_(linear.weight)
    nn.init.zeros_(linear.bias)
    return linear


class UserTower(nn.Module):
    """Embedding(n, 300) -> ReLU -> Linear(300, 300) -> ReLU -> Linear(300, d) (A.3 user model)."""

    def __init__(self, n: int, dim: int = 256, hidden: int = 300) -> None:
        super().__init__()
        self.emb = nn.Embedding(n, hidden)
        nn.init.uniform_(self.emb.weight, -0.05, 0.05)
        self.fc1 = _glorot(nn.Linear(hidden, hidden))
        self.fc2 = _glorot(nn.Linear(hidden, dim))

    def forward(self, ids: Tensor) -> Tensor:
        return self.fc2(F.relu(self.fc1(F.relu(self.emb(ids)))))


class AudioTower(nn.Module):
    """The 1-D conv audio model of A.3: (B, n_mels, T) -> (B, out_dim)."""

    KERNELS = (4, 4, 4, 2, 1)
    POOLS = (4, 4, 4, 2, None)

    def __init__(self, n_mels: int = 128, dim: int = 256, out_dim: int | None = None, batchnorm: bool = False) -> None:
        super().__init__()
        chans = (n_mels, 128, dim, dim, dim, dim)
        self.convs = nn.ModuleList(
            nn.Conv1d(chans[i], chans[i + 1], k, padding="same") for i, k in enumerate(self.KERNELS)
        )
        # [deviation, off by default] BatchNorm after each convolution, as in the Park et al. base model
        self.bns = nn.ModuleList(nn.BatchNorm1d(chans[i + 1]) for i in range(len(self.KERNELS))) if batchnorm else None
        for c in self.convs:
            nn.init.kaiming_uniform_(c.weight, nonlinearity="relu")
            nn.init.zeros_(c.bias)
        self.fc = _glorot(nn.Linear(dim, out_dim or dim))
        #: global input normalisation (mean, std) over the training clips (A.2), set by training
        self.register_buffer("norm", torch.tensor([0.0, 1.0]))

    def forward(self, x: Tensor, lengths: list[int] | None = None) -> Tensor:
        x = (x - self.norm[0]) / self.norm[1]
        for k, (conv, pool) in enumerate(zip(self.convs, self.POOLS, strict=True)):
            x = conv(x)
            if self.bns is not None:
                x = self.bns[k](x)
            x = F.relu(x)
            if pool:
                x = F.max_pool1d(x, pool)
            if lengths is not None:
                lengths.append(x.shape[-1])
        return self.fc(x.mean(-1))


def hinge_loss(
    pos: Tensor, neg: Tensor, margin: float = 0.2, reduction: str = "sum", mask: Tensor | None = None
) -> Tensor:
    """Eq. 2: sum over negatives of max(0, margin - R+ + R-); ``pos`` (B,), ``neg`` (B, N).

    ``mask`` (B, N) drops pairs (e.g. a shared negative that is one of the user's positives).
    ``reduction`` ``"sum"`` (the authors' code) or ``"mean"`` over the batch.
    """
    loss = F.relu(margin - pos[:, None] + neg)
    if mask is not None:
        loss = loss * mask
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        return loss.sum() / max(pos.shape[0], 1)
    raise ConfigError(f"reduction must be 'sum' or 'mean', got {reduction!r}.")


def mel_rows(mels: Any, rows: np.ndarray | slice) -> Tensor:
    """Float32 tensor of ``mels[rows]`` for a tensor or a (memory-mapped) NumPy array of clips."""
    if isinstance(mels, Tensor):
        return mels[rows].float()
    return torch.from_numpy(np.asarray(mels[rows], dtype=np.float32))


def segment_average(tower: nn.Module, mels: Any, batch: int = 256, frames: int = SEGMENT) -> Tensor:
    """Mean tower output over each clip's floor(T / frames) segments, (B, out) for (B, F, T) mels (tiled if short)."""
    if len(getattr(mels, "shape", ())) != 3:
        raise DataError(f"mels must be (clips, mel bins, frames), got shape {tuple(getattr(mels, 'shape', ()))}.")
    t = mels.shape[-1]
    reps = -(-frames // t) if t < frames else 1
    n = (t * reps) // frames
    out = []
    step = max(1, batch // n)
    with torch.no_grad():
        for s in range(0, mels.shape[0], step):
            chunk = mel_rows(mels, slice(s, s + step))
            if reps > 1:
                chunk = chunk.repeat(1, 1, reps)
            chunk = chunk[:, :, : n * frames]
            b, f = chunk.shape[0], chunk.shape[1]
            segs = chunk.reshape(b, f, n, frames).permute(0, 2, 1, 3).reshape(-1, f, frames)
            out.append(tower(segs).reshape(b, n, -1).mean(1))
    return torch.cat(out)


class _AudioRecommender(Recommender):
    """Shared plumbing: clip-trained models whose item vectors are held as a buffer after fitting."""

    #: trained on random crops of each clip's log-mel by segue/training/audio.py (``mels=`` to fit)
    batch_kind: ClassVar[str] = "clips"
    measure: ClassVar[Measure | None] = "cosine"

    def _init_item_buffer(self, dim: int) -> None:
        self.register_buffer("item_vecs", torch.zeros(self.n_items + 1, dim))

    def _check_mels(self, mels: Any) -> Any:
        """``mels``: a tensor or (memory-mapped) array (n_items, n_mels, T); row i - 1 is item i."""
        if mels is None:
            raise DataError(
                f"{self.name} needs the clips' log-mels: fit(train, mels=...) with shape (n_items, n_mels, T)."
            )
        shape = tuple(getattr(mels, "shape", ()))
        if len(shape) != 3 or shape[0] != self.n_items or shape[1] != self.config.n_mels:
            raise DataError(
                f"mels must have shape ({self.n_items}, {self.config.n_mels}, T) (row i - 1 = item i), got {shape}."
            )
        return mels

    def _require_fitted(self) -> None:
        if not self.fitted:
            raise NotFittedError(f"{self.name} is not fitted; call fit(train, mels=...) first.")


@register
class DCUE(_AudioRecommender):
    """Deep content-user embedding: user tower x audio tower, cosine score (content spec A.3)."""

    name: ClassVar[str] = "dcue"

    @dataclass
    class Config:
        dim: int = 256
        n_mels: int = 128
        margin: float = 0.2
        n_negatives: int = 20
        reduction: str = "sum"
        #: [OURS, spec A.11] one set of N negatives per batch instead of per example (off = paper)
        shared_negatives: bool = False
        #: [deviation, off = paper] BatchNorm after each convolution (the Park et al. 2018 base model's)
        batchnorm: bool = False

    def __init__(self, n_users: int, n_items: int, config: Any = None) -> None:
        super().__init__(n_users, n_items, config)
        c = self.config
        if c.dim < 1 or c.n_negatives < 1 or c.margin < 0 or c.reduction not in ("sum", "mean"):
            raise ConfigError(f"dcue needs dim >= 1, n_negatives >= 1, margin >= 0 and reduction sum|mean, got {c}.")
        self.user_tower = UserTower(n_users + 1, c.dim)
        self.audio_tower = AudioTower(c.n_mels, c.dim, batchnorm=c.batchnorm)
        self._init_item_buffer(c.dim)

    def user_vectors(self, users: Tensor) -> Tensor:
        return self.user_tower(users)

    def item_forward(self, segments: Tensor) -> Tensor:
        """Audio tower on (B, n_mels, 130) segments: the differentiable item side used in training."""
        return self.audio_tower(segments)

    def loss(self, batch: Any, spec: Any = None) -> Tensor:
        """A.4 on a ``clips`` batch (segue.training.audio builds it): ``users``, ``pos``, ``neg``, optional ``mask``."""
        return self.batch_loss(batch["users"], batch["pos"], batch["neg"], batch.get("mask"))

    def batch_loss(self, users: Tensor, pos: Tensor, neg: Tensor, mask: Tensor | None = None) -> Tensor:
        """Hinge loss of (B,) users, (B, F, T) positive segments and (B, N, F, T) or (N, F, T) negatives.

        Positives and negatives go through the audio tower as *one* batch (shared weights).
        Negatives with as many dimensions as ``pos`` ((N, F, T)) are shared by the whole batch
        (``mask`` (B, N) drops pairs). The id ablation passes ids instead: (B,) and (B, N) or (N,).
        """
        b = users.shape[0]
        shared = neg.ndim == pos.ndim
        flat = torch.cat([pos, neg if shared else neg.flatten(0, 1)])
        y = self.item_forward(flat)
        u = self.user_vectors(users)
        r_pos = F.cosine_similarity(u, y[:b], dim=-1, eps=1e-8)
        if shared:
            r_neg = F.cosine_similarity(u[:, None, :], y[None, b:, :], dim=-1, eps=1e-8)
        else:
            r_neg = F.cosine_similarity(u[:, None, :], y[b:].view(b, -1, y.shape[-1]), dim=-1, eps=1e-8)
        return hinge_loss(r_pos, r_neg, self.config.margin, self.config.reduction, mask)

    def encode_items(self, mels: Any, batch: int = 256) -> Tensor:
        """Segment-averaged item embeddings (B, d) of (B, n_mels, T) clips (works for unseen clips)."""
        was = self.training
        self.eval()
        try:
            return segment_average(self.audio_tower, mels, batch)
        finally:
            self.train(was)

    def set_item_audio(self, mels: Tensor | np.ndarray) -> None:
        """Recompute the item vectors of all n_items clips from their mels ((n_items, F, T), row i - 1 = item i)."""
        x = self._check_mels(mels)
        with torch.no_grad():
            self.item_vecs[1:] = self.encode_items(x)
            self.item_vecs[0] = 0

    def score(self, users: Tensor, items: Tensor, context: Context | None = None) -> Tensor:
        u = F.normalize(self.user_vectors(users), dim=-1, eps=1e-8)
        v = F.normalize(self.item_vecs[items], dim=-1, eps=1e-8)
        return torch.einsum("bd,bcd->bc", u, v)

    def score_all(self, users: Tensor, context: Context | None = None, chunk: int = 4096) -> Tensor:
        s = self.query_vectors(users) @ self.item_vectors().T
        s[:, 0] = float("-inf")
        return s

    def item_vectors(self) -> Tensor:
        return F.normalize(self.item_vecs, dim=-1, eps=1e-8).detach()

    def query_vectors(self, users: Tensor, context: Context | None = None) -> Tensor:
        return F.normalize(self.user_vectors(users), dim=-1, eps=1e-8).detach()


@register
class DCUEItemID(DCUE):
    """DCUE ablation with an item-id tower (the user tower's architecture) instead of audio (A.7.4)."""

    name: ClassVar[str] = "dcue-id"

    def __init__(self, n_users: int, n_items: int, config: Any = None) -> None:
        super().__init__(n_users, n_items, config)
        del self.audio_tower
        self.item_tower = UserTower(n_items + 1, self.config.dim)

    def item_forward(self, items: Tensor) -> Tensor:  # type: ignore[override]
        return self.item_tower(items)

    def set_item_audio(self, mels: Tensor | np.ndarray | None = None) -> None:
        with torch.no_grad():
            self.item_vecs.copy_(self.item_tower(torch.arange(self.n_items + 1)))
            self.item_vecs[0] = 0


@register
class WMFRegression(_AudioRecommender):
    """WMF with item factors regressed from audio (van den Oord et al. 2013; content spec A.7.3)."""

    name: ClassVar[str] = "wmf-regression"
    measure: ClassVar[Measure | None] = "dot"

    @dataclass
    class Config:
        factors: int = 50
        regularization: float = 0.01
        alpha: float = 40.0
        iterations: int = 15
        use_weights: bool = True
        dim: int = 256
        n_mels: int = 128
        seed: int = 0
        batchnorm: bool = False

    def __init__(self, n_users: int, n_items: int, config: Any = None) -> None:
        super().__init__(n_users, n_items, config)
        c = self.config
        if c.factors < 1 or c.dim < 1:
            raise ConfigError(f"wmf-regression needs factors >= 1 and dim >= 1, got {c}.")
        self.audio_tower = AudioTower(c.n_mels, c.dim, out_dim=c.factors, batchnorm=c.batchnorm)
        self.register_buffer("user_factors", torch.zeros(n_users + 1, c.factors))
        self.register_buffer("target_factors", torch.zeros(n_items + 1, c.factors))
        #: the audio tower regresses factors / target_scale (unit-variance targets); predictions are scaled back
        self.register_buffer("target_scale", torch.ones(()))
        self._init_item_buffer(c.factors)

    def loss(self, batch: Any, spec: Any = None) -> Tensor:
        """MSE of the audio tower on ``crops`` against the (scaled) WMF factors of ``items``."""
        pred = self.audio_tower(batch["crops"])
        return F.mse_loss(pred, self.target_factors[batch["items"]] / self.target_scale)

    def encode_items(self, mels: Any, batch: int = 256) -> Tensor:
        """Predicted WMF item factors (B, factors) of (B, n_mels, T) clips (segment average)."""
        was = self.training
        self.eval()
        try:
            return segment_average(self.audio_tower, mels, batch) * self.target_scale
        finally:
            self.train(was)

    def set_item_audio(self, mels: Tensor | np.ndarray) -> None:
        x = self._check_mels(mels)
        with torch.no_grad():
            self.item_vecs[1:] = self.encode_items(x)
            self.item_vecs[0] = 0

    def score(self, users: Tensor, items: Tensor, context: Context | None = None) -> Tensor:
        return torch.einsum("bd,bcd->bc", self.user_factors[users], self.item_vecs[items])

    def score_all(self, users: Tensor, context: Context | None = None, chunk: int = 4096) -> Tensor:
        s = self.user_factors[users] @ self.item_vecs.T
        s[:, 0] = float("-inf")
        return s

    def item_vectors(self) -> Tensor:
        return self.item_vecs.detach()

    def query_vectors(self, users: Tensor, context: Context | None = None) -> Tensor:
        return self.user_factors[users].detach()


class TagMLP(nn.Module):
    """A.6 auto-tagging head: Linear(d, 2d) BN ReLU Linear(2d, 2d) BN ReLU Linear(2d, n_tags) (logits)."""

    def __init__(self, dim: int, n_tags: int) -> None:
        super().__init__()
        if dim < 1 or n_tags < 1:
            raise ConfigError(f"TagMLP needs dim >= 1 and n_tags >= 1, got {dim} and {n_tags}.")
        h = 2 * dim
        self.net = nn.Sequential(
            nn.Linear(dim, h),
            nn.BatchNorm1d(h),
            nn.ReLU(),
            nn.Linear(h, h),
            nn.BatchNorm1d(h),
            nn.ReLU(),
            nn.Linear(h, n_tags),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)
