"""DCUE (Lee et al., DLRS 2018, Tables 1-2) and TripletRec (Liang et al., Tables I and III) on DSC-7: the hooks of
``specs/dcue-tables.toml``.

Run with ``segue reproduce dcue-tables [--quick]`` (the shared runner, :mod:`segue.reproduce.runner`). Needs the
corpus: ``segue audio fetch`` first (into ``$SEGUE_AUDIO_DIR``, else ``~/.cache/segue/audio``); the clip cache is
built beside it on the first run. Prose (the data, the deviations, the caps) lives in
``docs/results/dcue-tables.notes.md``. None of the data is the papers'.

Two datasets of one corpus (DSC-7: 7 Debian game-soundtrack packages, real music, 30-s clips, at most
``caps.clips_per_track`` per track spread over the track; every split is by track):

* ``dsc7-listeners`` (DCUE Tables 1-2): **semi-synthetic** listeners (:mod:`segue.audio.simulate`) on a 70/10/20
  track split. Each row reports per-user ROC-AUC under protocol W (rows = training clips, truth = their training
  interactions: the paper's released evaluation) and, for the models that can score an unseen clip, protocol C
  (rows = test clips, truth = their held-out interactions: cold start); single-class users are skipped. The
  ``pop-oracle`` row counts the test clips' own interactions (an oracle, not a cold-start model). Each row's
  song features also feed the A.6 tagging MLP: mean per-tag AUC on the test clips, real corpus labels.
* ``dsc7-topics`` (TripletRec Tables I and III): real labels, the 7 sources as the 7 topics, MFCC inputs, an
  80/10/10 track split; Exp. 1 (user group -> nearest test clip) and Exp. 3 (test clip -> nearest other test clip),
  each with its chance level.

Every clip model trains until its validation metric stops improving (``caps.patience`` evaluations, one every
``caps.eval_every`` steps) under a step cap ``caps.steps`` far beyond that and the per-row safety net
``caps.max_seconds``: DCUE and WMF + Regression on validation cold-start AUC, Triplet and Twonet on validation
song-to-song accuracy, the id-only ablation (which cannot score an unseen clip) on held-out training pairs before
a refit on all of them (:func:`id_row`).
"""

from __future__ import annotations

import dataclasses
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from segue.audio.catalogue import clips_table, index_folder, tag_matrix
from segue.audio.corpus import audio_dir, load_manifest, split_by_track
from segue.audio.frontend import ClipCache, ClipSpec
from segue.audio.simulate import SEMI_SYNTHETIC, SimulatorConfig, audio_traits, simulate
from segue.data.interactions import IdMap, Interactions
from segue.errors import ConfigError
from segue.evaluation.report import fmt_number
from segue.models.base import build_model
from segue.training import fit
from segue.training.audio import (
    AudioTrainConfig,
    fit_tagger,
    mean_tag_auc,
    per_user_auc,
    retrieval_accuracy,
    triplet_config,
)

LISTENERS, TOPICS = "dsc7-listeners", "dsc7-topics"
AUC_W, AUC_C, TAG_AUC = "AUC (W)", "AUC (C)", "Tagging AUC"
EXP1, EXP3 = "Exp. 1 accuracy", "Exp. 3 accuracy"
WARM_DEV = "AUC (warm held-out pairs)"
#: caps that become AudioTrainConfig fields of every clip model
TRAIN_CAPS = ("steps", "eval_every", "patience", "max_seconds")
#: the table's names for the rows (the labels of the spec are short identifiers)
DISPLAY = {
    "pop": "Popularity",
    "pop-oracle": "Popularity (oracle: the test clips' own counts)",
    "wmf": "WMF",
    "wmf-regression": "WMF + Regression",
    "dcue": "DCUE",
    "dcue-id": "DCUE, item-id only (ablation)",
    "tripletrec": "Triplet",
    "twonet": "Twonet",
}


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- data -------------------------------------------------------------------------------------


def open_corpus(root: Path, clips_per_track: int | None) -> tuple[pd.DataFrame, ClipCache, dict[str, Any]]:
    """The clip table (cache order), its clip cache (built on the first call) and the corpus facts."""
    manifest = load_manifest(root)
    tracks = index_folder(root)
    items = clips_table(tracks, clips_per_track=clips_per_track)
    name = f"cache-cap{clips_per_track}" if clips_per_track else "cache-all"
    t0 = time.perf_counter()
    cache = ClipCache.build(root / name, [ClipSpec(r.item, r.path, r.start) for r in items.itertuples()], root=root)
    info = {
        "tracks": len(tracks),
        "clips": len(items),
        "clips_per_track": clips_per_track or "all",
        "corpus_hours": round(float(tracks.seconds.sum()) / 3600, 2),
        "cached_audio_hours": round(cache.meta["audio_seconds"] / 3600, 2),
        "cache_seconds_when_built": cache.meta["cache_seconds"],
        "cache_x_real_time": cache.meta["x_real_time"],
        "fetch_seconds": manifest.get("fetch_seconds"),
        "open_seconds": round(time.perf_counter() - t0, 2),
    }
    return items, cache, info


def simulated_data(items: pd.DataFrame, cache: ClipCache, sim: SimulatorConfig, part: np.ndarray) -> dict[str, Any]:
    """The simulated listeners on the clips: full, training and test interactions, truth matrices, part rows."""
    rows_of = {p: np.flatnonzero(part == p) for p in range(3)}
    traits = audio_traits(cache.mels, rows_of[0], k=sim.n_traits)
    plays = simulate(items, traits, sim)
    item_map = IdMap(items["item"].to_numpy(), "item")
    user_map = IdMap(pd.unique(plays["user"]), "user")
    df = pd.DataFrame(
        {
            "user": user_map.to_internal(plays["user"].to_numpy()),
            "item": item_map.to_internal(plays["item"].to_numpy()),
            "weight": plays["plays"].to_numpy(np.float32),
        }
    )
    full = Interactions(df, user_map, item_map, name="dsc7-sim")
    item_part = part[df["item"].to_numpy() - 1]
    train = full.take(item_part == 0, name="train")
    info = {
        "label": SEMI_SYNTHETIC,
        "simulator": dataclasses.asdict(sim),
        "interactions": len(full),
        "train_interactions": len(train),
        "users": full.n_users,
        "clips": full.n_items,
        "clips_per_part": {k: len(v) for k, v in zip(("train", "valid", "test"), rows_of.values(), strict=True)},
    }
    return {
        "full": full,
        "train": train,
        "test": full.take(item_part == 2, name="test"),
        "truth": (full.to_csr().T.toarray()[1:, 1:] > 0).astype(np.float32),  # (items, users), padding dropped
        "truth_train": (train.to_csr().T.toarray()[1:, 1:] > 0).astype(np.float32),
        "rows_of": rows_of,
        "info": info,
    }


def _tags(items: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
    """The tagging labels: tags on >= 10 clips, duplicate columns dropped (the first name in sorted order kept)."""
    y, names = tag_matrix(items, min_count=10)
    _, first = np.unique(y, axis=1, return_index=True)  # e.g. album == source
    keep = np.sort(first)
    return y[:, keep], [names[k] for k in keep]


def prepare(dataset: str, spec: Any, caps: dict[str, Any]) -> dict[str, Any]:
    """The corpus, its clip cache and the dataset's track split; ``dsc7-listeners`` adds the simulated listeners
    (``caps.users``; ``protocol.beta`` / ``gamma``) and the tagging labels, ``dsc7-topics`` the source topics."""
    p = spec.protocol
    seed = int(p.get("seed", 0))
    items, cache, corpus = open_corpus(audio_dir(None), int(caps.get("clips_per_track") or 0) or None)
    _log(f"corpus: {corpus}")
    tracks = items["track"].to_numpy()
    if dataset == LISTENERS:
        part = split_by_track(tracks, tuple(p.get("listeners_split", (0.7, 0.1, 0.2))), seed=seed)
        sim = SimulatorConfig(
            n_users=int(caps["users"]), beta=float(p.get("beta", 1.0)), gamma=float(p.get("gamma", 0.5)), seed=seed
        )
        d = simulated_data(items, cache, sim, part)
        y, tags = _tags(items)
        info = {"corpus": corpus, "recommendation": d["info"], "tagging": {"n_tags": len(tags), "tags": tags}}
        sim_info = d["info"]
        _log(f"simulated {sim_info['interactions']} plays of {sim_info['users']} users ({sim_info['clips_per_part']})")
        return {**d, "items": items, "cache": cache, "part": part, "tags": y, "info": info}
    if dataset == TOPICS:
        topics, sources = pd.factorize(items["source"])
        part = split_by_track(tracks, tuple(p.get("topics_split", (0.8, 0.1, 0.1))), seed=seed)
        ids = {k: np.flatnonzero(part == k) + 1 for k in range(3)}
        info = {"corpus": corpus, "topics": list(map(str, sources)),
                "clips_per_part": dict(zip(("train", "valid", "test"), map(len, ids.values()), strict=True))}  # fmt: skip
        return {"items": items, "cache": cache, "topics": topics, "ids": ids, "info": info}
    raise ConfigError(f"dcue-tables has no dataset {dataset!r}; it has {LISTENERS} and {TOPICS}.")


# -- evaluation helpers -----------------------------------------------------------------------


def _scores(model: Any, n_users: int) -> np.ndarray:
    """(n_items, n_users) score matrix (item rows in cache order)."""
    with torch.no_grad():
        s = model.score_all(torch.arange(1, n_users + 1)).float().numpy()
    return s[:, 1:].T


def _auc(scores: np.ndarray, truth: np.ndarray, rows: np.ndarray) -> tuple[float, int]:
    """Per-user AUC of (items, users) ``scores`` on the clip ``rows`` (0-based) and the users skipped."""
    mean, skipped, _ = per_user_auc(scores[rows], truth[rows])
    return mean, skipped


def _protocols(p: dict[str, Any], scores: np.ndarray, cold: bool) -> tuple[dict[str, float], dict[str, int]]:
    """Protocol W (and C when ``cold``): the metrics and the single-class users each skipped."""
    w, w_skip = _auc(scores, p["truth_train"], p["rows_of"][0])
    test, skipped = {AUC_W: w}, {"W": w_skip}
    if cold:
        test[AUC_C], skipped["C"] = _auc(scores, p["truth"], p["rows_of"][2])
    return test, skipped


def tag_auc(p: dict[str, Any], x: np.ndarray, seed: int) -> float:
    """Table 2: the A.6 tagging MLP on the frozen song features ``x`` (row = clip), mean per-tag AUC on test clips."""
    y, part = p["tags"], p["part"]
    tr, va, te = (np.flatnonzero(part == k) for k in range(3))
    net = fit_tagger(x[tr], y[tr], x[va], y[va], seed=seed)
    with torch.no_grad():
        out = torch.sigmoid(net(torch.as_tensor(x[te], dtype=torch.float32))).numpy()
    return mean_tag_auc(y[te], out)


def wmf_tagging_features(full: Interactions, part: np.ndarray, wmf_opts: dict[str, Any]) -> np.ndarray:
    """The WMF row's tagging features: WMF fitted **without the test clips' interactions**, (n_clips, factors).

    ``part`` gives each clip's part (0 train, 1 valid, 2 test) by internal id - 1. A test clip's
    interactions come from the simulator, which draws them from the clip's audio traits and source,
    so a WMF fitted on them would hand the tagger the test clips' simulated source. A test clip has
    no WMF vector (zero row): WMF cannot tag a cold clip, and its test AUC is chance by construction.
    """
    item_part = np.asarray(part)[full.items - 1]
    seen = full.take(item_part != 2, name="wmf-tagging")
    wmf = build_model("wmf", full.n_users, full.n_items, wmf_opts)
    wmf.fit(seen)
    out = wmf.item_emb.weight[1:].detach().numpy().copy()
    out[np.asarray(part) == 2] = 0.0
    return out


def audio_config(row: Any, base: AudioTrainConfig | None = None) -> AudioTrainConfig:
    """The row's AudioTrainConfig: ``base`` (DCUE's defaults), the row's ``train`` options, the caps
    ``steps``, ``eval_every``, ``patience``, ``max_seconds`` and the row's seed."""
    names = {f.name for f in dataclasses.fields(AudioTrainConfig)}
    unknown = sorted(set(row.train) - names)
    if unknown:
        raise ConfigError(f"{row.model.label}: unknown train option(s) {', '.join(unknown)}; known: {sorted(names)}.")
    capped = {k: row.caps[k] for k in TRAIN_CAPS if row.caps.get(k) is not None}
    return dataclasses.replace(base or AudioTrainConfig(), **{**row.train, **capped, "seed": row.seed})


def _with_seed(row: Any) -> dict[str, Any]:
    return {**row.options, "seed": row.seed}


# -- rows: Tables 1-2 (dsc7-listeners) -----------------------------------------------------------


def popularity_row(p: dict[str, Any], row: Any) -> dict[str, Any]:
    """Distinct listeners per clip: ``options.counts = "train"`` under W; ``"test"`` (the oracle) under C.

    The ``train`` row carries the data facts (corpus, simulator, tags) for the Markdown.
    """
    n = p["full"].n_users
    counts = row.options.get("counts", "train")
    if counts not in ("train", "test"):
        raise ConfigError(f"{row.model.label}: options.counts is train or test, got {counts!r}.")
    pop = build_model("pop", n, p["full"].n_items)
    pop.fit(p[counts])
    if counts == "train":
        test, skipped = _protocols(p, _scores(pop, n), cold=False)
        return {"dev": {}, "test": test, "users_skipped": skipped, "data": p["info"]}
    auc, skip = _auc(_scores(pop, n), p["truth"], p["rows_of"][2])
    return {"dev": {}, "test": {AUC_C: auc}, "users_skipped": {"C": skip}}


def wmf_row(p: dict[str, Any], row: Any) -> dict[str, Any]:
    """WMF (A.7.2, ``options``) on the training clips' play counts: warm only; its tagging features come from a
    WMF fitted without the test clips (:func:`wmf_tagging_features`), so its tagging AUC is chance by construction."""
    n = p["full"].n_users
    wmf = build_model("wmf", n, p["full"].n_items, _with_seed(row))
    wmf.fit(p["train"])
    test, skipped = _protocols(p, _scores(wmf, n), cold=False)
    test[TAG_AUC] = tag_auc(p, wmf_tagging_features(p["full"], p["part"], _with_seed(row)), row.seed)
    return {"dev": {}, "test": test, "users_skipped": skipped}


def _cold_valid(p: dict[str, Any], score: Any) -> Any:
    rows = p["rows_of"][1]

    def fn(model: Any) -> float:
        return per_user_auc(score(model, rows), p["truth"][rows])[0]

    return fn


def _dcue_cold(cache: ClipCache, n_users: int) -> Any:
    def score(model: Any, rows: np.ndarray) -> np.ndarray:
        y = torch.nn.functional.normalize(model.encode_items(cache.mels[np.sort(rows)]), dim=-1)
        with torch.no_grad():
            u = torch.nn.functional.normalize(model.user_vectors(torch.arange(1, n_users + 1)), dim=-1)
        return (y @ u.T).numpy()

    return score


def _regression_cold(cache: ClipCache) -> Any:
    def score(model: Any, rows: np.ndarray) -> np.ndarray:
        pred = model.encode_items(cache.mels[np.sort(rows)])
        return (pred @ model.user_factors[1:].T).numpy()

    return score


def audio_row(p: dict[str, Any], row: Any) -> dict[str, Any]:
    """DCUE or WMF + Regression (the row's registry model): trained until validation cold-start AUC stops
    improving; protocols W and C, and the tagging AUC of its song vectors."""
    name = row.model.model or row.model.label
    n, cache = p["full"].n_users, p["cache"]
    opts = _with_seed(row) if name == "wmf-regression" else dict(row.options)
    model = build_model(name, n, p["full"].n_items, opts)
    score = _regression_cold(cache) if name == "wmf-regression" else _dcue_cold(cache, n)
    valid = _cold_valid(p, score)
    hist = fit(model, p["train"], mels=cache.mels, config=audio_config(row), valid_fn=valid, log=_log)
    test, skipped = _protocols(p, _scores(model, n), cold=True)
    test[TAG_AUC] = tag_auc(p, model.item_vecs[1:].numpy(), row.seed)
    return {"dev": {AUC_C: valid(model)}, "test": test, "users_skipped": skipped, "history": hist}


def _warm_holdout(train: Interactions, seed: int) -> tuple[Interactions, np.ndarray, np.ndarray]:
    """One random training interaction of every user with at least two held out: (the rest, users, items), 1-based."""
    rng = np.random.default_rng(seed)
    users, items = train.users, train.items
    order = rng.permutation(len(users))
    first = order[np.unique(users[order], return_index=True)[1]]  # one random interaction per user
    counts = np.bincount(users, minlength=train.n_users + 1)
    held = first[counts[users[first]] >= 2]
    keep = np.ones(len(users), dtype=bool)
    keep[held] = False
    return train.take(keep, name="train-fit"), users[held], items[held]


def heldout_pair_auc(
    scores: np.ndarray, played: np.ndarray, rows: np.ndarray, users: np.ndarray, items: np.ndarray
) -> float:
    """Mean over held-out (user, clip) pairs (1-based ids) of the share of the clip ``rows`` (0-based) the user never
    played (``played``: (items, users)) that score below the held-out clip, ties one half: a per-pair AUC."""
    out = []
    for u, i in zip(users.tolist(), items.tolist(), strict=True):
        neg = scores[rows[played[rows, u - 1] == 0], u - 1]
        pos = scores[i - 1, u - 1]
        if len(neg):
            out.append(float((neg < pos).mean() + 0.5 * (neg == pos).mean()))
    return float(np.mean(out)) if out else float("nan")


def id_row(p: dict[str, Any], row: Any) -> dict[str, Any]:
    """The item-id-only ablation (warm only: an unseen clip has no trained embedding).

    It cannot score the validation clips, so its step count is chosen on held-out training pairs (one training
    interaction per user, :func:`heldout_pair_auc` against the training clips the user never played) by patience,
    then it is refitted on all training interactions for that many steps (the reported model).
    """
    name = row.model.model or row.model.label
    n, n_items = p["full"].n_users, p["full"].n_items
    fit_set, users, items = _warm_holdout(p["train"], row.seed)
    rows = p["rows_of"][0]

    def valid(model: Any) -> float:
        model.set_item_audio(None)  # the item vectors the scores read are refreshed only at the end of a fit
        return heldout_pair_auc(_scores(model, n), p["truth_train"], rows, users, items)

    cfg = audio_config(row)
    probe = build_model(name, n, n_items, dict(row.options))
    hist = fit(probe, fit_set, config=cfg, valid_fn=valid, log=_log)
    dev = valid(probe)
    steps = int(hist.best_epoch or cfg.steps)
    model = build_model(name, n, n_items, dict(row.options))
    fit(model, p["train"], config=dataclasses.replace(cfg, steps=steps, eval_every=steps, max_seconds=None), log=None)
    test, skipped = _protocols(p, _scores(model, n), cold=False)
    return {"dev": {WARM_DEV: dev}, "test": test, "users_skipped": skipped, "history": hist, "refit_steps": steps,
            "heldout_pairs": len(users)}  # fmt: skip


# -- rows: TripletRec (dsc7-topics) ------------------------------------------------------------


def triplet_row(p: dict[str, Any], row: Any) -> dict[str, Any]:
    """TripletRec or the two-branch Twonet (the row's registry model) on MFCCs, trained until validation
    song-to-song accuracy stops improving; Exp. 1 and Exp. 3 on the test clips with their chance levels."""
    name = row.model.model or row.model.label
    cache, topics, ids = p["cache"], p["topics"], p["ids"]
    if cache.mfcc is None:
        raise ConfigError(f"The clip cache {cache.folder} has no MFCCs; delete it to rebuild it.")
    n_items = len(p["items"])
    data = Interactions(  # only its item set is used: the training clips
        pd.DataFrame({"user": np.ones(len(ids[0]), dtype=np.int64), "item": ids[0]}),
        IdMap(["all"], "user"),
        IdMap(np.arange(1, n_items + 1), "item"),
    )
    torch.manual_seed(row.seed)
    n_groups = 2 ** int(topics.max() + 1) - 1  # every non-empty set of topics is a user group
    model = build_model(name, n_groups, n_items, dict(row.options))

    def valid(m: Any) -> float:
        return retrieval_accuracy(m, cache.mfcc, topics, ids[1])["song_song_accuracy"]

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Group .* has no negative")
        hist = fit(model, data, features=cache.mfcc, topics=topics, config=audio_config(row, triplet_config()),
                   valid_fn=valid, log=_log)  # fmt: skip
    r = retrieval_accuracy(model, cache.mfcc, topics, ids[2])
    out = {
        "dev": {EXP3: valid(model)},
        "test": {EXP1: r["user_song_accuracy"], EXP3: r["song_song_accuracy"]},
        "chance": {EXP1: r["user_song_chance"], EXP3: r["song_song_chance"]},
        "group_mean_exp1": r["user_song_group_mean"],
        "history": hist,
    }
    if row.model.label == "tripletrec":
        out["data"] = p["info"]
    return out


# -- the Markdown beside the table ------------------------------------------------------------


def _training(r: dict[str, Any]) -> str:
    if not r.get("stopped_by"):
        iterations = (r.get("options") or {}).get("iterations")
        return f"ALS, {iterations} iterations (A.7.2)" if iterations else "counts (no training)"
    kept = f"step {r.get('best_epoch')} kept of {r.get('epochs_run')}"
    stopped = "step cap" if r["stopped_by"] == "epoch cap" else r["stopped_by"]  # a clip model's epoch is its steps
    return f"{stopped}, {kept}" + (f", refit {r['refit_steps']} steps" if r.get("refit_steps") else "")


def markdown(result: dict[str, Any]) -> str:
    """The papers' sub-tables (Table 1 W and C, Table 2, TripletRec Tables I and III) and the data facts."""
    rows = result["rows"]
    by = {(r["dataset"], r["model"]): r for r in rows}
    lines: list[str] = []

    def table(title: str, metric: str, dataset: str, labels: list[str], extra: str = "") -> None:
        got = [by[(dataset, m)] for m in labels if (dataset, m) in by and metric in by[(dataset, m)]["metrics"]]
        if not got:
            return
        lines.extend(["", f"## {title}", "", *([extra, ""] if extra else [])])
        lines.append(f"| model | {metric} ours | paper | users skipped | training (how it stopped) |")
        lines.append("|---|---|---|---|---|")
        proto = "C" if metric == AUC_C else "W"
        for r in got:
            label = DISPLAY.get(r["model"], r["model"])
            if metric == TAG_AUC and r["model"] == "wmf":
                label += " (a test clip has no WMF vector: chance by construction)"
            skipped = (r.get("users_skipped") or {}).get(proto, "–") if metric != TAG_AUC else "–"
            lines.append(f"| {label} | {fmt_number(r['metrics'][metric])} | {fmt_number((r.get('paper') or {}).get(metric))} "
                         f"| {skipped} | {_training(r)} |")  # fmt: skip

    rec = ["pop", "pop-oracle", "wmf", "wmf-regression", "dcue", "dcue-id"]
    table("DCUE Table 1, protocol W (warm: training clips, their training interactions)", AUC_W, LISTENERS, rec,
          "Semi-synthetic: real audio, simulated listeners. The paper's column is its Echo Nest Table 1, beside "
          "protocol W (its released evaluation scores the training songs) for orientation only.")  # fmt: skip
    table("DCUE Table 1, protocol C (cold start: test clips, their held-out interactions)", AUC_C, LISTENERS, rec,
          "WMF and the id-only ablation cannot score an unseen clip (n/a). Popularity here is an oracle: it counts "
          "the test clips' own held-out interactions; a real cold-start popularity is constant (AUC 0.5).")  # fmt: skip
    table("DCUE Table 2, auto-tagging (real corpus labels), mean per-tag AUC on the test clips", TAG_AUC, LISTENERS,
          ["wmf", "wmf-regression", "dcue"])  # fmt: skip
    tri = [by[(TOPICS, m)] for m in ("tripletrec", "twonet") if (TOPICS, m) in by]
    if tri:
        lines += ["", "## TripletRec Tables I (Exp. 1) and III (Exp. 3), real labels (source = topic)", "",
                  "Exp. 1: user group -> nearest test clip, hit iff its source is in the group; Exp. 3: test clip -> "
                  "nearest other test clip, hit iff the same source.", "",
                  "| model | Exp. 1 ours | chance | paper | Exp. 3 ours | chance | paper | training (how it stopped) |",
                  "|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for r in tri:
            m, c, pp = r["metrics"], r.get("chance") or {}, r.get("paper") or {}
            lines.append(f"| {DISPLAY.get(r['model'], r['model'])} | {fmt_number(m.get(EXP1))} | {fmt_number(c.get(EXP1))} | "
                         f"{fmt_number(pp.get(EXP1))} | {fmt_number(m.get(EXP3))} | {fmt_number(c.get(EXP3))} | {fmt_number(pp.get(EXP3))} | "
                         f"{_training(r)} |")  # fmt: skip
    lines += ["", "For the clip models an 'epoch' of the convergence table is a step count: one dev evaluation every "
              "`eval_every` steps, patience counted in evaluations."]  # fmt: skip
    facts = _facts([r["data"] for r in rows if r.get("data")])
    if facts:
        lines += ["", "## Data", "", *facts]
    return "\n".join(lines).lstrip("\n") + "\n"


def _facts(infos: list[dict[str, Any]]) -> list[str]:
    out: list[str] = []
    for info in infos:
        c = info.get("corpus") or {}
        if c and not any(line.startswith("- corpus:") for line in out):
            out.append(f"- corpus: DSC-7, {c['tracks']} tracks, {c['corpus_hours']} h; {c['clips']} clips of 30 s "
                       f"(at most {c['clips_per_track']} per track, {c['cached_audio_hours']} h decoded; the clip "
                       f"cache was built in {c['cache_seconds_when_built']} s)")  # fmt: skip
        if "recommendation" in info:
            r = info["recommendation"]
            s = r["simulator"]
            out.append(f"- listeners, {r['label']}: {r['users']} users, {r['interactions']} interactions "
                       f"({r['train_interactions']} on training clips); clips per part {r['clips_per_part']}; "
                       f"simulator beta {s['beta']}, gamma {s['gamma']}, seed {s['seed']}")  # fmt: skip
            t = info["tagging"]
            out.append(
                f"- tagging: {t['n_tags']} tags (>= 10 clips, duplicate columns dropped): {', '.join(t['tags'])}"
            )
        if "topics" in info:
            out.append(f"- TripletRec: topics {', '.join(info['topics'])}; clips per part {info['clips_per_part']}")
    return out


def main(argv: list[str] | None = None) -> Any:
    """``segue reproduce dcue-tables [--quick] ...`` (the runner's command line)."""
    from segue.reproduce.runner import main as run_main

    return run_main("dcue-tables", argv)


__all__ = [
    "audio_config",
    "audio_row",
    "heldout_pair_auc",
    "id_row",
    "main",
    "markdown",
    "open_corpus",
    "popularity_row",
    "prepare",
    "simulated_data",
    "tag_auc",
    "triplet_row",
    "wmf_row",
    "wmf_tagging_features",
]
