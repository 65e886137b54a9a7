"""Table 4.4 (paper 000 Table 2) on the stand-in playlist datasets: the hooks of ``specs/masr-table-4.4.toml``.

Run with ``segue reproduce masr-table-4.4 [--quick]`` (the shared runner, :mod:`segue.reproduce.runner`).

Datasets (different data from the paper: 30Music playlists and AOTM are not available):

* ``30music``: 30Music listening sessions of the 30music-200ks test slices, each session one playlist
  of its user (owner-ful, the main stand-in): every model of Table 4.4 that segue has.
* ``yes-big`` and ``polimi-2018``: playlists without owners: the playlist-only variants MDR_ps,
  MASS_ps (and their MASR / APR versions) and the playlist->song baselines.

Protocol M.10: preprocessing M.9 (dedupe, playlists of 5..65 songs), 2 random songs per playlist
held out (test, dev; split seed 0), 100 fixed sampled negatives from the training vocabulary (dev
seed 1, test seed 2), HR@10 / NDCG@10. Checkpoints and the user/playlist choice of the baselines
are selected on dev (the runner's grid); the test numbers are reported. The caps are in the spec.

Loss: MDR / MASS (and APR) train against the hardest of their 4 negatives by default ([CODE-HINT]
thanhdtran/MASR ``_get_neg_pred``); a row's ``train.neg_reduce = "each"`` gives the text's reading.
"""

from __future__ import annotations

import copy
from typing import Any

from segue.data.datasets import load_dataset
from segue.data.playlists import PAPER_TABLE_4_3, playlist_stats, preprocess_playlists, stats_markdown
from segue.data.splits import group_holdout
from segue.evaluation.playlist import owner_evalset, playlist_evalset, playlist_owners
from segue.evaluation.protocols import evaluate
from segue.models.playlist import MASR, MASS, MDR
from segue.models.playlist_baselines import FISM
from segue.training.playlist import fit_keyed, fit_playlist, playlist_config
from segue.training.trainer import TrainConfig

M = ("HR@10", "NDCG@10")
KINDS = {"mdr": MDR, "mass": MASS, "fism": FISM}


def _metrics(model: Any, evalset: Any) -> dict[str, float]:
    out = evaluate(model, evalset, ks=(10,), batch_size=128)
    return {k: round(out[k], 4) for k in (*M, "tie_rate")}  # tie_rate: cases whose positive ties a negative


def prepare(dataset: str, spec: Any, caps: dict[str, Any]) -> dict[str, Any]:
    """Preprocess (M.9), split (2 held-out songs per playlist) and build the fixed dev / test sets (M.10)."""
    p = spec.protocol
    data = preprocess_playlists(load_dataset(dataset, download=False, progress=False))
    split = group_holdout(data, seed=int(p.get("split_seed", 0)))
    n_neg = int(p.get("negatives", 100))
    dev = playlist_evalset(split, "valid", n_negatives=n_neg, seed=int(p.get("dev_seed", 1)))
    test = playlist_evalset(split, "test", n_negatives=n_neg, seed=int(p.get("test_seed", 2)))
    stats = {**playlist_stats(data, split.train), "dev_cases": len(dev), "test_cases": len(test),
             "dropped_unseen_test": test.meta["dropped_unseen_targets"]}  # fmt: skip
    return {"data": data, "split": split, "dev": dev, "test": test, "stats": stats}


def playlist_row(prepared: dict[str, Any], row: Any) -> dict[str, Any]:
    """MDR / MASS / FISM (``options.kind``) with BPR, or APR from the best checkpoint of ``train.start`` (M.7).

    ``train.epochs_cap`` / ``train.apr_cap`` name the caps giving the BPR / APR epochs; ``train.weight_decay``
    (lambda, a dev-grid value) overrides the cap of that name; any other ``train`` key is a TrainConfig option
    (e.g. ``neg_reduce``). An APR row keeps the lambda its start row was trained (and chosen on dev) with.
    """
    data, split, dev, test = (prepared[k] for k in ("data", "split", "dev", "test"))
    c = row.caps
    train = dict(row.train)
    start = train.pop("start", None)
    epochs = int(c[train.pop("epochs_cap")]) if "epochs_cap" in train else 1
    apr_epochs = int(c[train.pop("apr_cap")]) if "apr_cap" in train else 0
    opts = {k: v for k, v in row.options.items() if k != "kind"}
    cls = KINDS[row.options["kind"]]
    lam = float(train.pop("weight_decay", c["weight_decay"]))
    if start is not None:
        lam = float(getattr(row.trained[start], "grid_weight_decay", lam))
    cfg = playlist_config(
        cls, epochs=max(epochs, 1), lr=c["lr"], weight_decay=lam, patience=c["patience"],
        max_seconds=c["max_seconds_per_phase"], apr_epochs=apr_epochs, eps=c["eps"], reg_adv=c["reg_adv"],
        device="auto", seed=row.seed, progress=False, **train,
    )  # fmt: skip
    if start is not None:  # APR from the best BPR checkpoint (M.7)
        model = copy.deepcopy(row.trained[start])
        hist = fit_playlist(model, split.train, dev, cfg, apr=True, skip_bpr=True, log=None)
    else:
        n_p = len(data.group_maps["playlist"])
        model = cls(data.n_users, data.n_items, cls.Config(dim=int(c["dim"]), n_playlists=n_p, **opts))
        hist = fit_playlist(model, split.train, dev, cfg, log=None)
    model.grid_weight_decay = lam  # type: ignore[attr-defined]  # for the APR row that starts from this one
    out = {
        "dev": _metrics(model, dev),
        "test": _metrics(model, test),
        "history": hist,  # the runner records stopped_by, epochs run, best epoch and the dev curve
        "neg_reduce": cfg.neg_reduce,
        "weight_decay": lam,
        "model": model,
    }
    if row.options["kind"] == "mdr" and start is None:
        out["dataset_stats"] = prepared["stats"]
    return out


def masr_row(prepared: dict[str, Any], row: Any) -> dict[str, Any]:
    """MASR = a y_MDR + (1 - a) y_MASS over the frozen, trained rows named in ``depends`` (Eq. 4.29)."""
    mdr, mass = (row.trained[d] for d in row.model.depends)
    m = MASR.from_parts(mdr, mass, float(row.options.get("alpha", 0.5)))
    n_train = sum(p.numel() for p in m.parameters() if p.requires_grad)
    return {"dev": _metrics(m, prepared["dev"]), "test": _metrics(m, prepared["test"]),
            "trainable_parameters": n_train, "seconds": 0.0}  # fmt: skip


def keyed_row(prepared: dict[str, Any], row: Any) -> dict[str, Any]:
    """A foundation model (``options.model``) as a ``options.key``->song model (key = user or playlist)."""
    split, dev, test = prepared["split"], prepared["dev"], prepared["test"]
    c = row.caps
    opts = {k: v for k, v in row.options.items() if k not in ("model", "key")}
    key, name = row.options["key"], row.options["model"]
    train = dict(row.train)
    epochs = int(c[train.pop("epochs_cap")]) if "epochs_cap" in train else 1
    cfg = TrainConfig(epochs=epochs, batch_size=256, lr=c["lr"], n_negatives=4, monitor="HR@10",
                      patience=c["patience"], seed=row.seed, progress=False,
                      max_seconds=c["max_seconds_per_phase"], **train)  # fmt: skip
    owners = playlist_owners(split.train)
    m = fit_keyed(name, split, key, dev, owners, opts, cfg)
    on = (lambda e: owner_evalset(e, owners)) if key == "user" else (lambda e: e)
    return {"dev": _metrics(m, on(dev)), "test": _metrics(m, on(test)), "query": f"{key}->song",
            "history": getattr(m, "train_history", None)}  # fmt: skip


def markdown(result: dict[str, Any]) -> str:
    """The side-by-side with both paper columns (and the test tie rate: the share of test cases whose held-out
    song ties a sampled negative, ranked pessimistically), the dataset statistics and the neighbourhood comparison."""
    rows = result["rows"]
    stats = {r["dataset"]: r["dataset_stats"] for r in rows if r.get("dataset_stats")}
    lines = ["## Side by side with the paper (30Music and AOTM columns are the paper's, different data)", ""]
    lines.append(
        "| dataset | model | HR@10 | NDCG@10 | test tie rate | paper 30Music HR / NDCG | paper AOTM HR / NDCG "
        "| query / notes |"
    )
    lines.append("|---|---|---|---|---|---|---|---|")
    for r in rows:
        p = r.get("paper") or {}
        a = (r.get("paper_other") or {}).get("AOTM") or {}
        pp = f"{p['HR@10']:.3f} / {p['NDCG@10']:.3f}" if p else "-"
        aa = f"{a['HR@10']:.3f} / {a['NDCG@10']:.3f}" if a else "-"
        extra = r.get("query") or (f"best epoch {r['best_epoch']}" if r.get("best_epoch") else "")
        tie = r["metrics"].get("tie_rate")
        ties = "-" if tie is None else f"{tie:.4f}"
        lines.append(f"| {r['dataset']} | {r['model']} | {r['metrics']['HR@10']:.4f} | {r['metrics']['NDCG@10']:.4f} "
                     f"| {ties} | {pp} | {aa} | {extra} |")  # fmt: skip
    lines += ["", "## Dataset statistics (Table 4.3 layout; songs per playlist over training songs)", ""]
    lines.append(stats_markdown({**stats, **PAPER_TABLE_4_3}) if stats else "(none yet)")
    lines += ["", "## Neighbourhood baselines vs the proposed models (on our test numbers)", ""]
    lines += neighbourhood_lines(rows)
    return "\n".join(lines) + "\n"


def neighbourhood_lines(rows: list[dict[str, Any]]) -> list[str]:
    """FISM and CMN++ (member / neighbourhood similarity) against the best proposed model of each dataset."""
    out = []
    for ds in dict.fromkeys(r["dataset"] for r in rows):
        got = {r["model"]: r["metrics"]["HR@10"] for r in rows if r["dataset"] == ds}
        ours = {
            m: v for m, v in got.items() if m.removesuffix("_ps") in ("mdr", "mass", "masr", "amdr", "amass", "amasr")
        }
        if not ours:
            continue
        best = max(ours, key=ours.__getitem__)
        for base in ("fism", "cmn++"):
            if base in got:
                verdict = "above" if got[base] > ours[best] else "below"
                out.append(f"- {ds}: {base} HR@10 {got[base]:.4f} is {verdict} the best proposed model "
                           f"({best}, {ours[best]:.4f})")  # fmt: skip
    return out
