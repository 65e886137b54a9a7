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
``playlist-holdout`` MASR playlist continuation (M.9, M.10): playlists of 5..65 songs, one
                    random song of each playlist for test and one for dev, one case per
                    playlist (``users`` = playlist ids, ``context.group`` = its training
                    songs), 100 negatives from the training songs outside the playlist
==================  ======================================================================

Each protocol states its dev-item rule in ``Protocol.dev_rule`` (``segue train`` prints it).
``get_protocol(..., dev="last")`` makes the leave-last-out protocols hold out each user's
second-to-last item for dev instead of a random earlier one.

Every :func:`evaluate` also returns ``tie_rate``: the share of cases in which some positive ties
with a candidate negative. Such ties are broken against the model (pessimistic ranks, see
:mod:`segue.evaluation.metrics`), so a high tie rate means the metrics understate a model that
scores many items alike (item-kNN on sparse data); :func:`tie_diagnostic` gives the optimistic
bound.
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

from segue.data.groups import member_matrix, playlist_matrix
from segue.data.interactions import Interactions
from segue.data.playlists import preprocess_playlists
from segue.data.preprocess import filter_groups
from segue.data.sampling import NegativeSampler
from segue.data.sequences import group_members, last_items
from segue.data.splits import Split, group_holdout, leave_one_out, random_split, temporal_split
from segue.errors import ConfigError, DataError
from segue.evaluation.metrics import compute_metrics, rank_positives, tied_rows
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
        except Exception as e:  # zip, zlib, JSON, shape or key errors: the file is damaged, whatever the kind
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise DataError(f"Evaluation set {path} is unreadable or incomplete ({first}).") from e


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


def playlist_evalset(split: Split, part: str = "test", *, n_negatives: int = 100, seed: int = 0) -> EvalSet:
    """One case per playlist of ``part`` (spec M.10): held-out song + ``n_negatives`` fixed negatives; members in context.

    ``EvalSet.users`` holds **playlist ids**; the negatives are distinct songs of the training vocabulary
    outside the playlist (train, dev and test); cases whose song never occurs in training are dropped.
    """
    data: Interactions | None = getattr(split, part)
    if data is None or len(data) == 0:
        raise DataError(f"The split has no {part} part.")
    if "playlist" not in data.group_maps:
        raise DataError(f"{data.name} has no playlist grouping.")
    n_p = len(data.group_maps["playlist"])
    train = split.train
    vocab = np.flatnonzero(train.item_counts() > 0)
    known = playlist_matrix(train, n_p)
    for other in (split.valid, split.test):
        if other is not None:
            known = known + playlist_matrix(other, n_p)
    known = known.tocsr()
    pl = data.df["playlist"].to_numpy()
    tg = data.df["item"].to_numpy()
    seen_in_train = np.isin(tg, vocab)
    rows = first_per_group(pl, seen_in_train)  # one held-out song per playlist (M.10)
    pl, tg = pl[rows], tg[rows]
    if len(pl) == 0:
        raise DataError(f"No {part} song of any playlist occurs in training.")
    rng = np.random.default_rng(seed)
    negs = np.zeros((len(pl), n_negatives), dtype=np.int64)
    for r, p in enumerate(pl):
        avoid = known.indices[known.indptr[p] : known.indptr[p + 1]]
        pool_size = len(vocab) - np.isin(vocab, avoid, assume_unique=False).sum()
        if pool_size < n_negatives:
            raise DataError(f"Playlist {p} has only {pool_size} candidate negatives, fewer than {n_negatives}.")
        got: list[int] = []
        avoid_set = set(avoid.tolist())
        while len(got) < n_negatives:
            for c in rng.choice(vocab, size=2 * n_negatives, replace=False).tolist():
                if c not in avoid_set:
                    avoid_set.add(c)
                    got.append(c)
                    if len(got) == n_negatives:
                        break
        negs[r] = got
    members = member_matrix(train, n_p)
    targets = sp.csr_matrix((np.ones(len(pl), np.float32), (np.arange(len(pl)), tg)), shape=(len(pl), data.n_items + 1))
    meta: dict[str, Any] = {
        "kind": "sampled",
        "part": part,
        "n_negatives": n_negatives,
        "seed": seed,
        "split": split.name,
        "split_params": split.params,
        "query": "playlist",
        "dropped_unseen_targets": int((~seen_in_train).sum()),
    }
    return EvalSet(
        users=pl.astype(np.int64),
        targets=targets,
        candidates=np.concatenate([tg[:, None], negs], axis=1),
        n_pos=np.ones(len(pl), dtype=np.int64),
        exclude=None,
        context=Context(group=torch.as_tensor(members[pl])),
        meta=meta,
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

    ``tie_rate`` is always added: the share of cases in which a positive ties with a candidate
    negative (ties count against the model; see :func:`segue.evaluation.metrics.tied_rows`).

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
    # a model that declares ``draws`` (the random ranking) is ranked that many times, the metrics averaged per case
    draws = int(getattr(model, "draws", 1))
    try:
        for start, draw in ((s, d) for s in range(0, len(evalset), batch_size) for d in range(draws)):
            sl = slice(start, start + batch_size)
            if draws > 1:
                model.draw = draw
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
            got = compute_metrics(ranks, n_pos, n_neg, ks=ks, metrics=metrics, recall_denominator=recall_denominator)
            got["tie_rate"] = tied_rows(scores.cpu(), positive.cpu(), valid.cpu())
            for key, val in got.items():
                if draw == 0:
                    rows.setdefault(key, []).append(val.double() / draws)
                else:
                    rows[key][-1] += val.double() / draws
    finally:
        model.train(was_training)
        if draws > 1:
            model.draw = 0
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
def authors_tie_ranks(pos: np.ndarray, neg: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """1-based ranks of the positives under the SDMR / NeuMF authors' evaluator (an explanation, never our result).

    thanhdtran/SDMR evaluator.py ``eval_one_rating`` appends the test item **after** the sampled
    negatives and ranks with ``np.argsort(-predictions)``, numpy's default unstable sort: how a tied
    positive lands among its ties depends on numpy's sort (insertion sort below 17 candidates keeps
    it last, i.e. pessimistic; the larger introsort / SIMD sorts may move it up, i.e. optimistic).
    ``pos`` (n,), ``neg`` (n, C) scores; ``valid`` (n, C) False for padding negatives (dropped, as the
    authors drop negatives unseen in training). Ours is always pessimistic (see :func:`evaluate`).
    """
    pos = np.asarray(pos, dtype=np.float64)
    neg = np.asarray(neg, dtype=np.float64)
    if neg.ndim != 2 or pos.shape != (neg.shape[0],):
        raise DataError(f"authors_tie_ranks needs pos (n,) and neg (n, C), got {pos.shape} and {neg.shape}.")
    ranks = np.empty(len(pos), dtype=np.int64)
    for i in range(len(pos)):
        kept = neg[i] if valid is None else neg[i][np.asarray(valid[i], dtype=bool)]
        predictions = np.concatenate([kept, pos[i : i + 1]])
        order = np.argsort(-predictions)  # numpy's default kind, as the authors' evaluator
        ranks[i] = int(np.flatnonzero(order == len(kept))[0]) + 1
    return ranks


def tie_diagnostic(model: Recommender, evalset: EvalSet, *, k: int = 10, batch_size: int = 1024) -> dict[str, float]:
    """What pessimistic tie-breaking costs ``model`` on a sampled set with one positive per case.

    Returns the share of cases whose positive ties with at least one negative, the mean number
    of tied negatives, HR@k / NDCG@k had every tie been broken in the positive's favour
    (optimistic ranks; :func:`evaluate` always uses pessimistic ones), and HR@k / NDCG@k under the
    authors' evaluator's tie rule (``_authors``, :func:`authors_tie_ranks`), an explanation column.
    """
    if evalset.candidates is None or evalset.n_pos is None or int(evalset.n_pos.max()) != 1:
        raise DataError("tie_diagnostic needs a sampled evaluation set with one positive per case.")
    was_training = model.training
    model.eval()
    tied, n_tied, hr, ndcg, a_rank = [], [], [], [], []
    try:
        for start in range(0, len(evalset), batch_size):
            sl = slice(start, start + batch_size)
            cand, scores = _score_candidates(model, evalset, sl)
            scores, valid = scores.detach().cpu(), (cand != 0).cpu()
            pos, neg = scores[:, :1], scores[:, 1:]
            ties = ((neg == pos) & valid[:, 1:]).sum(1)
            rank = 1 + ((neg > pos) & valid[:, 1:]).sum(1)
            tied.append(ties > 0)
            n_tied.append(ties.double())
            hr.append((rank <= k).double())
            ndcg.append(torch.where(rank <= k, 1 / torch.log2(rank.double() + 1), 0.0))
            a_rank.append(authors_tie_ranks(pos[:, 0].numpy(), neg.numpy(), valid[:, 1:].numpy()))
    finally:
        model.train(was_training)
    ar = np.concatenate(a_rank)
    return {
        "tied_share": float(torch.cat(tied).double().mean()),
        "mean_tied_negatives": float(torch.cat(n_tied).mean()),
        f"HR@{k}_optimistic": float(torch.cat(hr).mean()),
        f"NDCG@{k}_optimistic": float(torch.cat(ndcg).mean()),
        f"HR@{k}_authors": float(np.mean(ar <= k)),
        f"NDCG@{k}_authors": float(np.mean(np.where(ar <= k, 1 / np.log2(ar + 1.0), 0.0))),
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
    dev_rule: str = ""  # which item(s) the dev set holds, in words (printed by ``segue train``)

    def split(self, data: Interactions) -> Split:
        return self.split_fn(data)

    def evalsets(self, split: Split) -> tuple[EvalSet | None, EvalSet]:
        if self.context == "playlist":
            n = self.n_negatives
            valid = None if split.valid is None else playlist_evalset(split, "valid", n_negatives=n, seed=self.seed + 1)
            test = playlist_evalset(split, "test", n_negatives=n, seed=self.seed + 2)
        elif self.context != "history":
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
            "dev_rule": self.dev_rule,
        }


_LOO_DEV = {
    "random": "one random earlier item per user (not the second-to-last; --dev last for that)",
    "last": "each user's second-to-last item (--dev last)",
}


def get_protocol(
    name: str, *, seed: int = 0, n_negatives: int | None = None, short: str = "error", dev: str = "random"
) -> Protocol:
    """Build a named protocol (see the module docstring).

    ``dev="last"`` holds out each user's second-to-last item as the dev item under the
    leave-last-out protocols (default ``"random"``: a random earlier item, the SDMR/NCF rule).
    """
    if dev not in ("random", "last"):
        raise ConfigError(f"The dev rule must be random or last, got {dev!r}.")
    if dev == "last" and name not in ("loo-sampled", "loo-full") and name in PROTOCOLS:
        raise ConfigError(f"--dev last applies to the leave-last-out protocols (loo-sampled, loo-full), not to {name}.")
    if name == "loo-sampled":
        return Protocol(
            name,
            lambda d: leave_one_out(d, seed=seed, short=short, dev_rule=dev),
            "sampled",
            n_negatives or 100,
            seed,
            description=f"leave-last-out, 1 {'second-to-last' if dev == 'last' else 'random'} dev item, 100 negatives",
            dev_rule=_LOO_DEV[dev],
        )
    if name == "loo-full":
        return Protocol(
            name,
            lambda d: leave_one_out(d, seed=seed, short=short, dev_rule=dev),
            "full",
            0,
            seed,
            description=f"leave-last-out, 1 {'second-to-last' if dev == 'last' else 'random'} dev item, all items ranked",
            dev_rule=_LOO_DEV[dev],
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
            dev_rule="the 10% of interactions just before the test period (global time cut)",
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
            dev_rule="the 10% of each user's sequence just before their test items",
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
            dev_rule="the 10% of interactions just before the test period (global time cut)",
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
            dev_rule="a random 10% of the rows",
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
            dev_rule="one random item of each basket (another than the test item)",
        )
    if name == "playlist-holdout":
        return Protocol(
            name,
            lambda d: group_holdout(preprocess_playlists(d, seed=seed), group="playlist", seed=seed),
            "sampled",
            n_negatives or 100,
            seed,
            description="playlists of 5..65 songs (M.9), 1 test + 1 dev song per playlist, 100 negatives (M.10)",
            context="playlist",
            dedup_on=("playlist", "item"),
            dev_rule="one random song of each playlist (another than the test song)",
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
    "playlist-holdout",
)
