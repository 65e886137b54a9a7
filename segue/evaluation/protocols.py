"""Evaluation protocols: a split plus fixed evaluation cases, and the evaluator.

An :class:`EvalSet` holds the cases of one part (dev or test) of a split: for each case a
user, its positive items and either

* ``candidates`` (sampled protocol): the positives first, then ``N`` fixed negatives
  drawn once with a seed, so every model of a table is ranked against the same items; or
* ``exclude`` (full ranking): the items to mask out (the user's training items, and the
  dev items when evaluating test), every other item being a candidate.

:func:`evaluate` scores an EvalSet through the model interface only
(:meth:`~segue.models.base.Recommender.score` for candidates,
:meth:`~segue.models.base.Recommender.score_all` for full ranking) and reduces the
pessimistic ranks of the positives to metrics (see :mod:`segue.evaluation.metrics`).

Named protocols (``PROTOCOLS``):

==================  ======================================================================
``loo-sampled``     SDMR/NCF: leave-last-out test, one random dev item per user,
                    100 sampled unobserved negatives per case, HR@10 / NDCG@10
``loo-full``        the same split, ranked against all items with train items masked
``temporal-sampled`` QUALSE (B.8): global chronological 70/10/20, all of a user's test
                    items ranked with 1,000 sampled negatives, users with a train history
``temporal-sampled-per-user`` the same within each user's sequence (Toys / Yelp: no timestamps)
``temporal-full``   the same split with full ranking (RME R.8 on timestamped data)
``random-full``     random 70/10/20 rows, full ranking (RME R.8 on play counts)
``basket-holdout``  SDMR basket task (A.1.2, A.6): baskets of 5..20 items, one random item of
                    each basket for test and one for dev, the rest of the basket (its
                    training items) as the context, 100 sampled negatives per case
==================  ======================================================================
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from segue.data.interactions import Interactions
from segue.data.preprocess import filter_groups
from segue.data.sampling import NegativeSampler
from segue.data.sequences import group_members, last_items
from segue.data.splits import Split, group_holdout, leave_one_out, random_split, temporal_split
from segue.errors import ConfigError, DataError
from segue.evaluation.metrics import compute_metrics, rank_positives
from segue.models.base import Context, Recommender, check_scores
from segue.training.distributed import eval_shard, gather_cases, reduce_means


@dataclass
class EvalSet:
    """Fixed evaluation cases of one split part (see module docstring)."""

    users: np.ndarray
    targets: sp.csr_matrix  # (n_cases, n_items + 1): the positives of each case
    candidates: np.ndarray | None = None  # (n_cases, C): positives first, 0 = padding, then negatives
    n_pos: np.ndarray | None = None  # (n_cases,) number of leading positive columns in candidates
    exclude: sp.csr_matrix | None = None  # (n_cases, n_items + 1): masked items for full ranking
    context: Context | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.users)

    @property
    def kind(self) -> str:
        return "sampled" if self.candidates is not None else "full"

    @property
    def n_items(self) -> int:
        return self.targets.shape[1] - 1

    def subset(self, idx: np.ndarray) -> EvalSet:
        idx = np.asarray(idx)
        return EvalSet(
            users=self.users[idx],
            targets=self.targets[idx],
            candidates=None if self.candidates is None else self.candidates[idx],
            n_pos=None if self.n_pos is None else self.n_pos[idx],
            exclude=None if self.exclude is None else self.exclude[idx],
            context=None if self.context is None else self.context.index(torch.as_tensor(idx)),
            meta=dict(self.meta),
        )

    def with_history(self, train: Interactions, s: int) -> EvalSet:
        """Attach the last ``s`` training items of each case's user as ``context.history``.

        Group cases (``meta["context"]`` = ``"basket"``, ...) already carry the group's training
        items in ``context.group`` (left-padded); their history is the last ``s`` of those.
        """
        ctx = self.context or Context()
        if self.meta.get("context", "history") != "history":
            if ctx.group is None:
                raise DataError("This group evaluation set carries no group members to use as history.")
            g = ctx.group
            hist = g[:, -s:] if g.shape[1] >= s else torch.nn.functional.pad(g, (s - g.shape[1], 0))
        else:
            hist = torch.as_tensor(last_items(train, self.users, s))
        return EvalSet(
            self.users,
            self.targets,
            self.candidates,
            self.n_pos,
            self.exclude,
            Context(history=hist, group=ctx.group, features=ctx.features),
            dict(self.meta),
        )

    # -- persistence (npz + JSON meta, no pickles) -----------------------------------------
    def save(self, path: str | Path) -> None:
        arrays: dict[str, np.ndarray] = {
            "users": self.users,
            "targets_indptr": self.targets.indptr,
            "targets_indices": self.targets.indices,
            "shape": np.asarray(self.targets.shape),
            "meta": np.asarray(json.dumps(self.meta)),
        }
        if self.candidates is not None:
            arrays["candidates"] = self.candidates
            arrays["n_pos"] = self.n_pos
        if self.exclude is not None:
            arrays["exclude_indptr"] = self.exclude.indptr
            arrays["exclude_indices"] = self.exclude.indices
        if self.context is not None:
            for key in self.context.present():
                arrays["ctx_" + key] = getattr(self.context, key).numpy()
        np.savez_compressed(path, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> EvalSet:
        try:
            with np.load(path, allow_pickle=False) as z:
                shape = tuple(int(x) for x in z["shape"])

                def csr(prefix: str) -> sp.csr_matrix:
                    ind = z[prefix + "_indices"]
                    return sp.csr_matrix((np.ones(len(ind), np.float32), ind, z[prefix + "_indptr"]), shape=shape)

                ctx = {k[4:]: torch.as_tensor(z[k]) for k in z.files if k.startswith("ctx_")}
                return cls(
                    users=z["users"],
                    targets=csr("targets"),
                    candidates=z["candidates"] if "candidates" in z.files else None,
                    n_pos=z["n_pos"] if "n_pos" in z.files else None,
                    exclude=csr("exclude") if "exclude_indices" in z.files else None,
                    context=Context(**ctx) if ctx else None,
                    meta=json.loads(str(z["meta"])),
                )
        except (OSError, KeyError, ValueError) as e:
            raise DataError(f"Evaluation set {path} is unreadable or incomplete ({e}).") from e


def _cases(part: Interactions, train: Interactions, require_history: bool) -> tuple[np.ndarray, sp.csr_matrix]:
    """Users of ``part`` (one case each) and their positive items as CSR rows."""
    m = part.to_csr()
    users = np.flatnonzero(np.diff(m.indptr) > 0)
    if require_history:
        has_train = np.diff(train.to_csr().indptr) > 0
        users = users[has_train[users]]
    if len(users) == 0:
        raise DataError(f"The {part.name} part has no user to evaluate.")
    t = m[users]
    t.data[:] = 1
    return users.astype(np.int64), t.tocsr()


def sampled_evalset(
    split: Split,
    part: str = "test",
    *,
    n_negatives: int = 100,
    seed: int = 0,
    require_history: bool = True,
) -> EvalSet:
    """Each user's positives in ``part`` ranked with ``n_negatives`` fixed unobserved items."""
    data = getattr(split, part)
    if data is None:
        raise DataError(f"The split has no {part} part.")
    users, targets = _cases(data, split.train, require_history)
    known = split.train.to_csr() + data.to_csr()
    for other in (split.valid, split.test):
        if other is not None and other is not data:
            known = known + other.to_csr()
    negs = NegativeSampler(known, seed=seed).sample(users, n_negatives, distinct=True)
    n_pos = np.diff(targets.indptr).astype(np.int64)
    width = int(n_pos.max())
    pos = np.zeros((len(users), width), dtype=np.int64)
    col = np.arange(targets.nnz) - np.repeat(targets.indptr[:-1], n_pos)
    pos[np.repeat(np.arange(len(users)), n_pos), col] = targets.indices
    meta = _sampled_meta(split, part, n_negatives, seed)
    return EvalSet(users, targets, np.concatenate([pos, negs], axis=1), n_pos, None, None, meta)


def _sampled_meta(split: Split, part: str, n_negatives: int, seed: int, **extra: Any) -> dict[str, Any]:
    return {
        "kind": "sampled",
        "part": part,
        "n_negatives": n_negatives,
        "seed": seed,
        "split": split.name,
        "split_params": split.params,
        **extra,
    }


def first_per_group(groups: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Row indices of the first kept row (file order) of each group, in group-id order."""
    order = np.flatnonzero(keep)
    order = order[np.argsort(groups[order], kind="stable")]
    _, first = np.unique(groups[order], return_index=True)
    return order[first]


def group_evalset(
    split: Split, part: str = "test", *, group: str = "basket", n_negatives: int = 100, seed: int = 0
) -> EvalSet:
    """One case per group of ``part`` (the basket task, spec A.1.2 / A.6).

    The case's user is the group's owner; candidates are the held-out item first, then
    ``n_negatives`` fixed distinct items the user never interacted with (any part);
    ``context.group`` holds the group's training items (oldest first, left-padded), the
    context of the held-out item. Cases whose item never occurs in training are dropped
    (their embedding would be untrained; the count is in ``meta``).
    """
    data = getattr(split, part)
    if data is None or len(data) == 0:
        raise DataError(f"The split has no {part} part.")
    if group not in data.df.columns:
        raise DataError(f"{data.name} has no {group!r} grouping.")
    train = split.train
    gid = data.df[group].to_numpy().astype(np.int64)
    users, items = data.users, data.items
    rows = first_per_group(gid, (train.item_counts() > 0)[items])  # one held-out item per group
    if len(rows) == 0:
        raise DataError(f"No {part} item of any {group} occurs in training.")
    gid, users, items = gid[rows], users[rows], items[rows]
    known = train.to_csr()
    for other in (split.valid, split.test):
        if other is not None:
            known = known + other.to_csr()
    negs = NegativeSampler(known, seed=seed).sample(users, n_negatives, distinct=True)
    width = int(np.bincount(train.df[group].to_numpy().astype(np.int64)).max())
    members = group_members(train, group, gid, max(width, 1))
    targets = sp.csr_matrix(
        (np.ones(len(rows), np.float32), (np.arange(len(rows)), items)), shape=(len(rows), data.n_items + 1)
    )
    dropped = int(len(np.unique(data.df[group].to_numpy())) - len(rows))
    meta = _sampled_meta(split, part, n_negatives, seed, context=group, dropped_unseen_targets=dropped)
    return EvalSet(
        users.astype(np.int64),
        targets,
        np.concatenate([items[:, None], negs], axis=1),
        np.ones(len(rows), dtype=np.int64),
        None,
        Context(group=torch.as_tensor(members)),
        meta,
    )


def full_evalset(split: Split, part: str = "test", *, require_history: bool = True) -> EvalSet:
    """Each user's positives in ``part`` ranked against every item not in their train (or dev) set."""
    data = getattr(split, part)
    if data is None:
        raise DataError(f"The split has no {part} part.")
    users, targets = _cases(data, split.train, require_history)
    excl = split.train.to_csr()
    if part == "test" and split.valid is not None:
        excl = excl + split.valid.to_csr()
    excl = excl[users]
    excl.data[:] = 1
    # an item both seen and held out stays a positive (never masked away)
    excl = (excl - excl.multiply(targets)).tocsr()
    excl.eliminate_zeros()
    meta = {"kind": "full", "part": part, "split": split.name, "split_params": split.params}
    return EvalSet(users, targets, None, None, excl, None, meta)


@torch.no_grad()
def evaluate(
    model: Recommender,
    evalset: EvalSet,
    *,
    ks: Sequence[int] = (10,),
    metrics: Sequence[str] = ("HR", "NDCG"),
    batch_size: int = 1024,
    recall_denominator: str = "n_pos",
    per_case: bool = False,
) -> dict[str, Any]:
    """Mean metrics of ``model`` on ``evalset`` (and the per-case values when ``per_case``).

    Under torch.distributed (two or more ranks) each rank scores a contiguous block of the cases and the
    means are reduced exactly over all of them (segue/training/distributed.py); every rank gets the result.
    """
    if evalset.n_items != model.n_items:
        raise DataError(f"The evaluation set has {evalset.n_items} items but the model has {model.n_items}.")
    missing = set(model.needs) - (evalset.context.present() if evalset.context else set())
    if missing:
        raise DataError(f"{model.name} needs context {sorted(missing)} that the evaluation set does not carry.")
    n_cases, block = len(evalset), eval_shard(len(evalset))
    if block is not None:
        evalset = evalset.subset(np.arange(*block))
    device = model.device
    was_training = model.training
    model.eval()
    rows: dict[str, list[torch.Tensor]] = {}
    try:
        for start in range(0, len(evalset), batch_size):
            sl = slice(start, start + batch_size)
            if evalset.candidates is not None:
                cand, scores = _score_candidates(model, evalset, sl)
                valid = cand != 0
                positive = (
                    torch.arange(cand.shape[1], device=device)[None, :]
                    < torch.as_tensor(evalset.n_pos[sl], device=device)[:, None]
                )
            else:
                users = torch.as_tensor(evalset.users[sl], device=device)
                ctx = None if evalset.context is None else evalset.context.index(sl).to(device)
                scores = model.score_all(users, ctx).float()
                valid = torch.ones_like(scores, dtype=torch.bool)
                valid[:, 0] = False
                ex = evalset.exclude[sl].tocoo()
                valid[torch.as_tensor(ex.row, dtype=torch.long), torch.as_tensor(ex.col, dtype=torch.long)] = False
                tg = evalset.targets[sl].tocoo()
                positive = torch.zeros_like(valid)
                positive[torch.as_tensor(tg.row, dtype=torch.long), torch.as_tensor(tg.col, dtype=torch.long)] = True
            check_scores(scores, type(model).__name__)
            scores = scores.masked_fill(~valid, float("-inf"))
            ranks, n_pos, n_neg = rank_positives(scores.cpu(), positive.cpu(), valid.cpu())
            for key, val in compute_metrics(
                ranks, n_pos, n_neg, ks=ks, metrics=metrics, recall_denominator=recall_denominator
            ).items():
                rows.setdefault(key, []).append(val.double())
    finally:
        model.train(was_training)
    per = {k: torch.cat(v) for k, v in rows.items()}
    if block is not None:
        means: dict[str, Any] = reduce_means(per)
        if per_case:
            means["per_case"] = {k: gather_cases(v, n_cases).numpy() for k, v in per.items()}
        return means
    out: dict[str, Any] = {k: float(v.mean()) for k, v in per.items()}
    if per_case:
        out["per_case"] = {k: v.numpy() for k, v in per.items()}
    return out


def _score_candidates(model: Recommender, evalset: EvalSet, sl: slice) -> tuple[torch.Tensor, torch.Tensor]:
    """The candidates of cases ``sl`` of a sampled set and the model's float scores for them (on its device)."""
    device = model.device
    assert evalset.candidates is not None
    cand = torch.as_tensor(evalset.candidates[sl], device=device)
    ctx = None if evalset.context is None else evalset.context.index(sl).to(device)
    return cand, model.score(torch.as_tensor(evalset.users[sl], device=device), cand, ctx).float()


@torch.no_grad()
def tie_diagnostic(model: Recommender, evalset: EvalSet, *, k: int = 10, batch_size: int = 1024) -> dict[str, float]:
    """What pessimistic tie-breaking costs ``model`` on a sampled set with one positive per case.

    Returns the share of cases whose positive ties with at least one negative, the mean number
    of tied negatives, and HR@k / NDCG@k had every tie been broken in the positive's favour
    (optimistic ranks; :func:`evaluate` always uses pessimistic ones).
    """
    if evalset.candidates is None or evalset.n_pos is None or int(evalset.n_pos.max()) != 1:
        raise DataError("tie_diagnostic needs a sampled evaluation set with one positive per case.")
    was_training = model.training
    model.eval()
    tied, n_tied, hr, ndcg = [], [], [], []
    try:
        for start in range(0, len(evalset), batch_size):
            sl = slice(start, start + batch_size)
            cand, scores = _score_candidates(model, evalset, sl)
            scores, valid = scores.cpu(), (cand != 0).cpu()
            pos, neg = scores[:, :1], scores[:, 1:]
            ties = ((neg == pos) & valid[:, 1:]).sum(1)
            rank = 1 + ((neg > pos) & valid[:, 1:]).sum(1)
            tied.append(ties > 0)
            n_tied.append(ties.double())
            hr.append((rank <= k).double())
            ndcg.append(torch.where(rank <= k, 1 / torch.log2(rank.double() + 1), 0.0))
    finally:
        model.train(was_training)
    return {
        "tied_share": float(torch.cat(tied).double().mean()),
        "mean_tied_negatives": float(torch.cat(n_tied).mean()),
        f"HR@{k}_optimistic": float(torch.cat(hr).mean()),
        f"NDCG@{k}_optimistic": float(torch.cat(ndcg).mean()),
    }


# -- named protocols ------------------------------------------------------------------------
@dataclass
class Protocol:
    """A named recipe: how to split, and how to build the dev and test evaluation sets."""

    name: str
    split_fn: Callable[[Interactions], Split]
    kind: str  # "sampled" or "full"
    n_negatives: int = 100
    seed: int = 0
    ks: tuple[int, ...] = (10,)
    metrics: tuple[str, ...] = ("HR", "NDCG")
    recall_denominator: str = "n_pos"
    description: str = ""
    context: str = "history"  # "basket" etc.: group cases whose context is the rest of the group
    dedup_on: tuple[str, ...] = ("user", "item")

    def split(self, data: Interactions) -> Split:
        return self.split_fn(data)

    def evalsets(self, split: Split) -> tuple[EvalSet | None, EvalSet]:
        if self.context != "history":
            n, g = self.n_negatives, self.context
            valid = (
                None
                if split.valid is None
                else group_evalset(split, "valid", group=g, n_negatives=n, seed=self.seed + 1)
            )
            test = group_evalset(split, "test", group=g, n_negatives=n, seed=self.seed)
        elif self.kind == "sampled":
            valid = (
                None
                if split.valid is None
                else sampled_evalset(split, "valid", n_negatives=self.n_negatives, seed=self.seed + 1)
            )
            test = sampled_evalset(split, "test", n_negatives=self.n_negatives, seed=self.seed)
        else:
            valid = None if split.valid is None else full_evalset(split, "valid")
            test = full_evalset(split, "test")
        for es in (valid, test):
            if es is not None:
                es.meta["protocol"] = self.name
        return valid, test

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "n_negatives": self.n_negatives,
            "seed": self.seed,
            "ks": list(self.ks),
            "metrics": list(self.metrics),
            "context": self.context,
        }


def get_protocol(name: str, *, seed: int = 0, n_negatives: int | None = None, short: str = "error") -> Protocol:
    """Build a named protocol (see the module docstring)."""
    if name == "loo-sampled":
        return Protocol(
            name,
            lambda d: leave_one_out(d, seed=seed, short=short),
            "sampled",
            n_negatives or 100,
            seed,
            description="leave-last-out, 1 random dev item, 100 negatives",
        )
    if name == "loo-full":
        return Protocol(
            name,
            lambda d: leave_one_out(d, seed=seed, short=short),
            "full",
            0,
            seed,
            description="leave-last-out, 1 random dev item, all items ranked",
        )
    if name == "temporal-sampled":
        return Protocol(
            name,
            lambda d: temporal_split(d, (0.7, 0.1, 0.2)),
            "sampled",
            n_negatives or 1000,
            seed,
            ks=(1, 10, 20, 50, 100),
            metrics=("HIT", "NDCG"),
            description="global temporal 70/10/20, all test items + 1,000 negatives",
        )
    if name == "temporal-sampled-per-user":
        return Protocol(
            name,
            lambda d: temporal_split(d, (0.7, 0.1, 0.2), per_user=True),
            "sampled",
            n_negatives or 1000,
            seed,
            ks=(1, 10, 20, 50, 100),
            metrics=("HIT", "NDCG"),
            description="per-user chronological 70/10/20 (data without timestamps: by position), 1,000 negatives",
        )
    if name == "temporal-full":
        return Protocol(
            name,
            lambda d: temporal_split(d, (0.7, 0.1, 0.2)),
            "full",
            0,
            seed,
            ks=(5, 10, 20, 100),
            metrics=("Recall", "NDCG", "MAP"),
            recall_denominator="min_k",
            description="global temporal 70/10/20, full ranking",
        )
    if name == "random-full":
        return Protocol(
            name,
            lambda d: random_split(d, (0.7, 0.1, 0.2), seed=seed),
            "full",
            0,
            seed,
            ks=(5, 10, 20, 100),
            metrics=("Recall", "NDCG", "MAP"),
            recall_denominator="min_k",
            description="random 70/10/20 rows, full ranking",
        )
    if name == "basket-holdout":
        return Protocol(
            name,
            lambda d: group_holdout(
                filter_groups(d, "basket", 5, 20), group="basket", n_test=1, n_dev=1, min_train=3, seed=seed
            ),
            "sampled",
            n_negatives or 100,
            seed,
            description="baskets of 5..20 items, 1 test + 1 dev item per basket, rest of basket = context",
            context="basket",
            dedup_on=("basket", "item"),
        )
    raise ConfigError(f"Unknown protocol {name!r}; known protocols: {', '.join(PROTOCOLS)}.")


PROTOCOLS = (
    "loo-sampled",
    "loo-full",
    "temporal-sampled",
    "temporal-sampled-per-user",
    "temporal-full",
    "random-full",
    "basket-holdout",
)
