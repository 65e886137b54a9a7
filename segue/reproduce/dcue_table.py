"""DCUE (Lee et al., DLRS 2018, Tables 1-2) and TripletRec (Liang et al., Tables I and III) on DSC-7.

``python -m segue.reproduce.dcue_table [--clips-per-track 8] [--users 500] [--quick]`` writes
``docs/results/dcue-tables.md`` and ``.json``. Needs the corpus: ``segue audio fetch`` (or
:func:`segue.audio.corpus.fetch`) first; the clip cache is built on the first run.

Data (content spec C.5) -- none of it is the papers' data:

* Audio: DSC-7, 7 Debian game-soundtrack packages (real music, GPL / CC-BY-SA), 30-s clips,
  at most ``--clips-per-track`` clips per track spread over the track (compute cap); every split
  is by track (clips of one track never straddle parts).
* Recommendation (Table 1): **semi-synthetic**. Listeners are simulated (:mod:`segue.audio.simulate`:
  source taste, audio-trait taste, popularity); the numbers are not comparable to the paper's
  Echo Nest Taste Profile results and are printed beside them only for orientation.
  70/10/20 track split; protocol W (rows = training clips, truth = their training interactions,
  the paper's released evaluation) and protocol C (rows = test clips, truth = their held-out
  interactions: cold start). Per-user ROC-AUC, single-class users skipped. Popularity under C
  is an *oracle* (counts of the test clips' own interactions).
* Auto-tagging (Table 2): real labels from the corpus (source, album, composer, mood words in
  titles; tags with >= 10 clips, duplicate columns dropped), the A.6 MLP on frozen song
  features, mean per-tag AUC on the test clips of the same track split.
* TripletRec (Tables I, III): real labels, the 7 sources as the 7 topics, MFCC inputs, an
  80/10/10 track split; Exp. 1 (user group -> nearest test song, hit iff its source is in the
  group) and Exp. 3 (test song -> nearest other test song, hit iff same source), with chance.

Compute caps (2 shared cores): DCUE and WMF + regression run ``--dcue-steps`` /
``--reg-steps`` steps (model selection on validation cold-start AUC every ``--eval-every``
steps, ``--max-seconds`` per model), TripletRec / Twonet ``--triplet-steps`` steps of 256
triples. Deviations, all for the compute cap: DCUE uses the spec's [OURS] in-batch shared
negatives (20 negatives shared by a batch of users instead of 20 per user); and by default
DCUE, its id ablation and the regression baseline train with Adam (lr ``--lr``, batch
``--batch`` users, mean reduction) and BatchNorm after each convolution, because with the
paper's SGD (lr 0.2, Nesterov, batch 10, sum; ``--paper-optimizer``) the item embeddings
collapsed to one direction (loss stuck at margin x negatives, validation AUC ~0.52) within the
few thousand steps we can afford; the paper trained for ~10^5 steps.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
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
from segue.evaluation.report import write_results
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

TABLE = "dcue-tables"
PAPER_T1 = {"pop": 0.7059, "wmf": 0.9302, "wmf-regression": 0.6967, "dcue": 0.7914, "dcue-id": 0.7832}
PAPER_T2 = {"wmf": 0.8683, "wmf-regression": 0.7876, "dcue": 0.8450}
PAPER_EXP1 = {"tripletrec": 0.5753, "twonet": 0.4824}
PAPER_EXP3 = {"tripletrec": 0.8742, "twonet": 0.7189}
LABELS = {
    "pop": "Popularity",
    "pop-oracle": "Popularity (oracle: test clips' own counts)",
    "wmf": "WMF",
    "wmf-regression": "WMF + Regression",
    "dcue": "DCUE",
    "dcue-id": "DCUE, item-id only (ablation)",
    "tripletrec": "Triplet",
    "twonet": "Twonet",
}


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def prepare(root: Path, clips_per_track: int | None) -> tuple[pd.DataFrame, ClipCache, dict[str, Any]]:
    """The clip table (cache order) and its cache; builds the cache on the first call."""
    manifest = load_manifest(root)
    tracks = index_folder(root)
    items = clips_table(tracks, clips_per_track=clips_per_track)
    name = f"cache-cap{clips_per_track}" if clips_per_track else "cache-all"
    t0 = time.perf_counter()
    cache = ClipCache.build(root / name, [ClipSpec(r.item, r.path, r.start) for r in items.itertuples()], root=root)
    info = {
        "tracks": len(tracks),
        "clips": len(items),
        "corpus_hours": round(float(tracks.seconds.sum()) / 3600, 2),
        "cached_audio_hours": round(cache.meta["audio_seconds"] / 3600, 2),
        "cache_seconds_when_built": cache.meta["cache_seconds"],
        "cache_x_real_time": cache.meta["x_real_time"],
        "fetch_seconds": manifest.get("fetch_seconds"),
        "open_seconds": round(time.perf_counter() - t0, 2),
    }
    return items, cache, info


def _auc_rows(scores: np.ndarray, truth: np.ndarray, rows: np.ndarray) -> tuple[float, int]:
    """Per-user AUC of (items, users) scores restricted to ``rows`` (0-based item rows)."""
    mean, skipped, _ = per_user_auc(scores[rows], truth[rows])
    return mean, skipped


def _scores(model: Any, n_users: int) -> np.ndarray:
    """(n_items, n_users) score matrix (item rows in cache order)."""
    with torch.no_grad():
        s = model.score_all(torch.arange(1, n_users + 1)).float().numpy()
    return s[:, 1:].T


def simulated_data(items: pd.DataFrame, cache: ClipCache, args: argparse.Namespace, part: np.ndarray) -> dict[str, Any]:
    """The simulated listeners on the clips: full and training interactions, truth matrices, part rows."""
    rows_of = {p: np.flatnonzero(part == p) for p in range(3)}
    traits = audio_traits(cache.mels, rows_of[0], k=16)
    sim_cfg = SimulatorConfig(n_users=args.users, beta=args.beta, gamma=args.gamma, seed=args.seed)
    plays = simulate(items, traits, sim_cfg)
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
        "simulator": {**sim_cfg.__dict__},
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


def recommendation(
    items: pd.DataFrame, cache: ClipCache, args: argparse.Namespace, part: np.ndarray
) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, np.ndarray]]:
    d = simulated_data(items, cache, args, part)
    full, train, truth, truth_train, rows_of, info = (
        d[k] for k in ("full", "train", "truth", "truth_train", "rows_of", "info")
    )
    n_users, n_items = full.n_users, full.n_items
    _log(f"simulated {len(full)} plays of {n_users} users on {n_items} clips ({info['clips_per_part']})")
    out: list[dict[str, Any]] = []
    feats: dict[str, np.ndarray] = {}

    def add(
        model: str, proto: str, auc: float, skipped: int, seconds: float, extra: dict[str, Any] | None = None
    ) -> None:
        paper = {"AUC": PAPER_T1.get(model)} if proto == "W" and model in PAPER_T1 else None
        out.append(
            {
                "model": LABELS.get(model, model),
                "dataset": f"DSC-7 + simulated listeners, protocol {proto} ({'warm: training clips' if proto == 'W' else 'cold start: test clips'})",
                "metrics": {"AUC": auc},
                "paper": paper,
                "same_data_as_paper": False,
                "seconds": round(seconds, 1),
                "users_skipped": skipped,
                **(extra or {}),
            }
        )
        _log(f"{model} protocol {proto}: AUC {auc:.4f} (skipped {skipped} users, {seconds:.0f} s)")

    valid_rows = rows_of[1]

    def cold_valid(score_fn: Any) -> Any:
        def fn(model: Any) -> float:
            s = score_fn(model, valid_rows)  # (valid rows, users)
            return per_user_auc(s, truth[valid_rows])[0]

        return fn

    # Popularity (distinct listeners): training counts under W, oracle counts under C
    t0 = time.perf_counter()
    pop = build_model("pop", n_users, n_items)
    pop.fit(train)
    add("pop", "W", *_auc_rows(_scores(pop, n_users), truth_train, rows_of[0]), time.perf_counter() - t0)
    pop_c = build_model("pop", n_users, n_items)
    pop_c.fit(d["test"])
    add("pop-oracle", "C", *_auc_rows(_scores(pop_c, n_users), truth, rows_of[2]), time.perf_counter() - t0)

    # WMF (A.7.2 defaults) on raw play counts: warm only
    t0 = time.perf_counter()
    wmf_opts = {
        "factors": 50,
        "regularization": 0.01,
        "alpha": 40.0,
        "iterations": 15,
        "use_weights": True,
        "seed": args.seed,
    }
    wmf = build_model("wmf", n_users, n_items, wmf_opts)
    wmf.fit(train)
    add("wmf", "W", *_auc_rows(_scores(wmf, n_users), truth_train, rows_of[0]), time.perf_counter() - t0)

    skip = set(args.skip.split(","))
    # optimiser: the paper's SGD (lr 0.2, Nesterov, batch 10, sum) with --paper-optimizer; by default
    # Adam (lr --lr, batch --batch, mean) with BatchNorm, which learns within this compute cap
    opt_name = "sgd" if args.paper_optimizer else "adam"
    lr = 0.2 if args.paper_optimizer else args.lr
    batch = 10 if args.paper_optimizer else args.batch
    # WMF + regression from audio (cold-start baseline)
    t0 = time.perf_counter()
    if "reg" in skip:
        return out, info, feats
    reg = build_model("wmf-regression", n_users, n_items, {**wmf_opts, "batchnorm": not args.paper_optimizer})

    def reg_scores(model: Any, rows: np.ndarray) -> np.ndarray:
        pred = model.encode_items(cache.mels[np.sort(rows)])
        return (pred @ model.user_factors[1:].T).numpy()

    reg_cfg = AudioTrainConfig(
        steps=args.reg_steps,
        batch_size=30,
        optimizer=opt_name,
        lr=args.reg_lr if args.paper_optimizer else args.lr,
        eval_every=args.eval_every,
        seed=args.seed,
        max_seconds=args.max_seconds,
    )
    hist = fit(reg, train, mels=cache.mels, config=reg_cfg, valid_fn=cold_valid(reg_scores), log=_log)
    s = _scores(reg, n_users)
    sec = time.perf_counter() - t0
    extra = {"steps": hist.epochs[-1]["epoch"], "best_step": hist.best_epoch}
    add("wmf-regression", "W", *_auc_rows(s, truth_train, rows_of[0]), sec, extra)
    add("wmf-regression", "C", *_auc_rows(s, truth, rows_of[2]), sec, extra)
    feats["wmf-regression"] = reg.item_vecs[1:].numpy()

    # DCUE
    t0 = time.perf_counter()
    dcue_opts = {"shared_negatives": True, **({} if args.paper_optimizer else {"batchnorm": True, "reduction": "mean"})}
    dcue = build_model("dcue", n_users, n_items, dcue_opts)

    def dcue_scores(model: Any, rows: np.ndarray) -> np.ndarray:
        y = torch.nn.functional.normalize(model.encode_items(cache.mels[np.sort(rows)]), dim=-1)
        with torch.no_grad():
            u = torch.nn.functional.normalize(model.user_vectors(torch.arange(1, n_users + 1)), dim=-1)
        return (y @ u.T).numpy()

    dcfg = AudioTrainConfig(
        steps=args.dcue_steps,
        batch_size=batch,
        optimizer=opt_name,
        lr=lr,
        eval_every=args.eval_every,
        seed=args.seed,
        max_seconds=args.max_seconds,
    )
    hist = fit(dcue, train, mels=cache.mels, config=dcfg, valid_fn=cold_valid(dcue_scores), log=_log)
    s = _scores(dcue, n_users)
    sec = time.perf_counter() - t0
    extra = {"steps": hist.epochs[-1]["epoch"], "best_step": hist.best_epoch, "negatives": "20 shared per batch of 10"}
    add("dcue", "W", *_auc_rows(s, truth_train, rows_of[0]), sec, extra)
    add("dcue", "C", *_auc_rows(s, truth, rows_of[2]), sec, extra)
    feats["dcue"] = dcue.item_vecs[1:].numpy()

    # item-id-only ablation (warm only: an unseen clip has no trained id embedding)
    t0 = time.perf_counter()
    dcue_id = build_model("dcue-id", n_users, n_items, {k: v for k, v in dcue_opts.items() if k != "batchnorm"})
    hist = fit(
        dcue_id,
        train,
        config=AudioTrainConfig(
            steps=args.dcue_steps,
            batch_size=batch,
            lr=lr,
            optimizer=opt_name,
            seed=args.seed,
            max_seconds=args.max_seconds,
        ),
    )
    add("dcue-id", "W", *_auc_rows(_scores(dcue_id, n_users), truth_train, rows_of[0]), time.perf_counter() - t0)

    # WMF on the training and validation clips' interactions: the tagging features of the WMF row (A.6 [AMBIG])
    feats["wmf"] = wmf_tagging_features(full, part, wmf_opts)
    return out, info, feats


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


def tagging(
    items: pd.DataFrame, feats: dict[str, np.ndarray], part: np.ndarray, seed: int
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    y, names = tag_matrix(items, min_count=10)
    _, first = np.unique(y, axis=1, return_index=True)  # drop duplicate tag columns (e.g. album == source)
    keep = np.sort(first)
    y, names = y[:, keep], [names[k] for k in keep]
    tr, va, te = (np.flatnonzero(part == p) for p in range(3))
    out = []
    for model in ("wmf", "wmf-regression", "dcue"):
        t0 = time.perf_counter()
        x = feats[model]
        net = fit_tagger(x[tr], y[tr], x[va], y[va], seed=seed)
        with torch.no_grad():
            p = torch.sigmoid(net(torch.as_tensor(x[te], dtype=torch.float32))).numpy()
        auc = mean_tag_auc(y[te], p)
        out.append(
            {
                "model": LABELS[model],
                "dataset": "DSC-7 auto-tagging (real corpus labels), mean per-tag AUC on test clips",
                "metrics": {"AUC": auc},
                "paper": {"AUC": PAPER_T2[model]},
                "same_data_as_paper": False,
                "seconds": round(time.perf_counter() - t0, 1),
            }
        )
        _log(f"tagging {model}: mean per-tag AUC {auc:.4f}")
    return out, {"tags": names, "n_tags": len(names)}


def triplet(
    items: pd.DataFrame, cache: ClipCache, args: argparse.Namespace
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    if cache.mfcc is None:
        raise SystemExit("The clip cache has no MFCCs; rebuild it.")
    topics, sources = pd.factorize(items["source"])
    part = split_by_track(items["track"].to_numpy(), (0.8, 0.1, 0.1), seed=args.seed)
    ids = {p: np.flatnonzero(part == p) + 1 for p in range(3)}
    n_items = len(items)
    # only the item set of ``data`` is used: the training clips
    data = Interactions(
        pd.DataFrame({"user": np.ones(len(ids[0]), dtype=np.int64), "item": ids[0]}),
        IdMap(["all"], "user"),
        IdMap(np.arange(1, n_items + 1), "item"),
    )
    rows1, rows3 = [], []
    for model in ("tripletrec", "twonet"):
        t0 = time.perf_counter()
        torch.manual_seed(args.seed)
        m = build_model(model, 127, n_items)
        cfg = triplet_config(
            steps=args.triplet_steps, eval_every=args.eval_every, seed=args.seed, max_seconds=args.max_seconds
        )
        import warnings

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Group .* has no negative")
            hist = fit(
                m,
                data,
                features=cache.mfcc,
                topics=topics,
                config=cfg,
                valid_fn=lambda mod: retrieval_accuracy(mod, cache.mfcc, topics, ids[1])["song_song_accuracy"],
                log=_log,
            )
        r = retrieval_accuracy(m, cache.mfcc, topics, ids[2])
        sec = round(time.perf_counter() - t0, 1)
        extra = {
            "steps": hist.epochs[-1]["epoch"],
            "best_step": hist.best_epoch,
            "group_mean_exp1": r["user_song_group_mean"],
        }
        rows1.append(
            {
                "model": LABELS[model],
                "dataset": "DSC-7 TripletRec Exp. 1: user group -> nearest test clip (real labels: source = topic)",
                "metrics": {"Accuracy": r["user_song_accuracy"], "Chance": r["user_song_chance"]},
                "paper": {"Accuracy": PAPER_EXP1[model]},
                "same_data_as_paper": False,
                "seconds": sec,
                **extra,
            }
        )
        rows3.append(
            {
                "model": LABELS[model],
                "dataset": "DSC-7 TripletRec Exp. 3: test clip -> nearest other test clip, same soundtrack (real labels)",
                "metrics": {"Accuracy": r["song_song_accuracy"], "Chance": r["song_song_chance"]},
                "paper": {"Accuracy": PAPER_EXP3[model]},
                "same_data_as_paper": False,
                "seconds": sec,
                **extra,
            }
        )
        _log(f"{model}: {r} ({sec} s)")
    return rows1 + rows3, {"topics": list(map(str, sources)), "clips_per_part": {k: len(v) for k, v in ids.items()}}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(prog="python -m segue.reproduce.dcue_table", description=__doc__.split("\n")[0])
    ap.add_argument(
        "--audio-dir", default=None, help="DSC-7 directory (default $SEGUE_AUDIO_DIR, else ~/.cache/segue/audio)"
    )
    ap.add_argument("--clips-per-track", type=int, default=8, help="cap on 30-s clips per track (0 = all)")
    ap.add_argument("--users", type=int, default=200)
    ap.add_argument("--beta", type=float, default=1.0, help="simulator: audio-taste weight")
    ap.add_argument("--gamma", type=float, default=0.5, help="simulator: popularity weight")
    ap.add_argument("--dcue-steps", type=int, default=2400)
    ap.add_argument("--reg-steps", type=int, default=2400)
    ap.add_argument(
        "--lr", type=float, default=1e-3, help="Adam learning rate of DCUE, its ablation and the regression"
    )
    ap.add_argument("--batch", type=int, default=32, help="(user, positive) pairs per DCUE step")
    ap.add_argument(
        "--paper-optimizer",
        action="store_true",
        help="the paper's SGD lr 0.2 / batch 10 / sum reduction, no BatchNorm (collapsed within our step cap)",
    )
    ap.add_argument("--reg-lr", type=float, default=0.01)
    ap.add_argument("--triplet-steps", type=int, default=300)
    ap.add_argument("--eval-every", type=int, default=200)
    ap.add_argument("--max-seconds", type=float, default=None, help="wall-clock cap per trained model")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip", default="", help="comma list of parts to skip: rec, tag, triplet (reg: stop after WMF)")
    ap.add_argument("--out", default="docs/results")
    ap.add_argument("--quick", action="store_true", help="smoke test: 100 users, 40 steps per model")
    args = ap.parse_args(argv)
    if args.quick:
        args.users = 100
        args.dcue_steps = args.reg_steps = args.triplet_steps = 40
        args.eval_every = 20
    torch.set_num_threads(1)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    root = audio_dir(args.audio_dir)
    t_all = time.perf_counter()
    items, cache, corpus = prepare(root, args.clips_per_track or None)
    _log(f"corpus: {corpus}")
    part = split_by_track(items["track"].to_numpy(), (0.7, 0.1, 0.2), seed=args.seed)
    rows: list[dict[str, Any]] = []
    extra: dict[str, Any] = {"corpus": corpus}
    if "rec" not in skip:
        rec_rows, rec_info, feats = recommendation(items, cache, args, part)
        rows += rec_rows
        extra["recommendation"] = rec_info
        if "tag" not in skip and "reg" not in skip:
            tag_rows, tag_info = tagging(items, feats, part, args.seed)
            rows += tag_rows
            extra["tagging"] = tag_info
    if "triplet" not in skip:
        tri_rows, tri_info = triplet(items, cache, args)
        rows += tri_rows
        extra["triplet"] = tri_info
    given = sys.argv[1:] if argv is None else argv
    cmd = "python -m segue.reproduce.dcue_table" + (" " + " ".join(given) if given else "")
    result = {
        "table": TABLE,
        "paper": "DCUE: Tables 1-2 of 002_*.txt; TripletRec: Tables I and III of 004_*.txt",
        "command": cmd,
        "protocol": {
            "split": "by track, 70/10/20 (DCUE) and 80/10/10 (TripletRec)",
            "seed": args.seed,
            "clips_per_track": args.clips_per_track or "all",
            "dcue_steps": args.dcue_steps,
            "reg_steps": args.reg_steps,
            "triplet_steps": args.triplet_steps,
        },
        "rows": rows,
        "notes": NOTES.format(
            label=SEMI_SYNTHETIC, **{k: corpus[k] for k in ("tracks", "clips", "corpus_hours", "cached_audio_hours")}
        ),
        "details": extra,
        "seconds": round(time.perf_counter() - t_all, 1),
    }
    path = write_results(result, args.out, TABLE, metrics=["AUC", "Accuracy", "Chance"])
    _log(f"wrote {path}")
    return json.loads(path.read_text())


NOTES = """\
None of these numbers is on the papers' data. DCUE's paper used the Echo Nest Taste Profile
(20,000 users x 10,000 songs, real play counts) with 7digital previews and Last.fm tags;
TripletRec's used 26,000 Last.fm-tagged songs. Neither is obtainable offline (content spec C.4).

* Audio: DSC-7 (Debian Soundtrack Corpus), {tracks} tracks, {corpus_hours} h of real game
  soundtrack music from 7 Debian packages; {clips} 30-s clips were used ({cached_audio_hours} h
  decoded and cached), a capped number per track spread over the track.
* Recommendation rows are {label}. The paper's Table 1 is printed beside protocol W (its
  released evaluation scores the training songs) for orientation only; the diff column is not a
  reproduction gap. Protocol C is the cold-start test the paper motivates; WMF and the id
  ablation cannot score unseen clips and are n/a there. Popularity under C is an oracle (it
  counts the test clips' own held-out interactions); a real cold-start popularity is constant
  (AUC 0.5).
* The WMF tagging row's features come from a WMF fitted without the test clips' interactions
  (they are simulated from the clips' audio and source, so they would leak the tags): a test clip
  has no WMF vector, and that row is chance by construction. WMF + Regression regresses onto a WMF
  of the training clips only.
* Tagging and TripletRec rows use real labels of the corpus (source / album / composer / title
  mood words; source = topic), a far smaller and easier label set than Last.fm's top-50 tags or
  the paper's 7 LDA topics. Duplicate tag columns are dropped, keeping the first name in sorted
  order (so ``album:drascula/drascula`` stands for ``source:drascula``).
* Deviations for the compute cap (2 shared cores, about 25 CPU-minutes for this whole table):
  one seed; DCUE with in-batch shared negatives (spec A.11 [OURS]); DCUE, its id ablation and
  the regression baseline trained with Adam (lr 1e-3, batch 32 users / 30 clips, mean reduction)
  and BatchNorm after each convolution, because the paper's SGD (lr 0.2, batch 10, sum, no BN)
  collapsed all item embeddings to one direction within a few hundred steps here; model
  selection on validation cold-start AUC (DCUE, regression) or validation song-to-song accuracy
  (Triplet, Twonet); TripletRec and Twonet ran 300 steps of 256 triples (paper: 200 epochs).
"""


if __name__ == "__main__":
    main()
