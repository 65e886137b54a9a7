"""CoSeRNN Table 2 (Hansen et al., RecSys'20) on listening sessions: the hooks of ``specs/cosernn-table-2.toml``.

Run with ``segue reproduce cosernn-table-2 [--quick]`` (the shared runner, :mod:`segue.reproduce.runner`).
Prose (data, splits, the extra rows, what each dataset shows) lives in ``docs/results/cosernn-table-2.notes.md``.

Datasets (sessionised at a 20-minute gap, first 10 tracks kept): ``30music`` (the five
``30music-200ks-test`` slices), ``ml-100k`` (rating sessions) and ``synthetic``
(:func:`segue.data.sessions.synthetic_log`, labelled synthetic). The synthetic log uses the paper's global
windows (test = last 14 days, validation = the 5 days before); the real logs split per user (last 20% of
sessions test, the 10% before validation). Track embeddings: gensim CBOW, 40-d, on the sessions a model may
learn from; ``min_count`` per dataset in the spec's caps.

Issue 16 fixes kept here: tracks without a vector are not ranked (the share excluded is reported), and
session ranking is also reported on the users whose candidate window is full (``full_window``).
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch

from segue.data.datasets import load_dataset, resolve_data_dir
from segue.data.sessions import (
    TEST,
    TRAIN,
    SessionData,
    build_sessions,
    last_sessions_split,
    load_session_rec,
    log_from_interactions,
    synthetic_log,
    temporal_split,
)
from segue.evaluation.report import fmt_number
from segue.evaluation.sessions import METRIC_KEYS, build_session_eval, evaluate_sessions, random_reference
from segue.models.cosernn import (
    BASELINES,
    CoSeRNNConfig,
    Word2VecConfig,
    baseline_predictions,
    build_cosernn,
    context_groups,
    session_inputs,
    track_popularity,
    train_track_embeddings,
)
from segue.training.cosernn import fit_cosernn

LOWER_IS_BETTER = ("Sess Rank K=20", "Sess Rank K=50")


# -- data -------------------------------------------------------------------------------------


def load_sessions(
    name: str, caps: dict[str, Any], seed: int
) -> tuple[SessionData, np.ndarray, np.ndarray, dict[str, Any]]:
    """(sessions of the evaluated users, split labels, word2vec corpus rows' tracks, data facts)."""
    info: dict[str, Any] = {}
    if name == "synthetic":
        log = synthetic_log(n_users=int(caps["synthetic_users"]), seed=seed)
        data = build_sessions(log, name="synthetic")
        labels = temporal_split(data, test_days=14, valid_days=5, anchor="global")
        corpus = data.tracks[labels == TRAIN]
        info["split"] = "global temporal: test = last 14 days, validation = the 5 days before (the paper's)"
        info["word2vec_min_count"] = int(caps.get("min_count", 5))
    else:
        if name == "30music":
            d = resolve_data_dir(None)
            files = [d / f"30music-200ks-test/30music-200ks_test.{i}.txt.gz" for i in range(5)]
            files = [f if f.exists() else f.with_suffix("") for f in files]
            log = load_session_rec(files)
        elif name == "ml-100k":
            log = log_from_interactions(load_dataset("ml-100k", download=False, progress=False))
        else:
            raise ValueError(name)
        full = build_sessions(log, name=name)
        per_user = full.sessions_per_user
        keep = per_user >= int(caps["min_sessions"])
        info["all_users"], info["all_sessions"] = int(full.n_users), len(full)
        info["users_with_10_sessions"] = int((per_user >= 10).sum())
        data = full.subset_users(keep)
        labels = last_sessions_split(data, test_frac=0.2, valid_frac=0.1)
        others = full.subset_users(~keep) if (~keep).any() else None
        corpus = data.tracks[labels == TRAIN]
        if others is not None:
            # the track maps agree (subset_users keeps them), so the other users' sessions join the corpus
            corpus = np.concatenate([corpus, others.tracks])
        info["split"] = "per user: last 20% of sessions (>= 1) test, the 10% before validation"
        info["word2vec_min_count"] = int(caps.get("min_count", 5))
        info["min_sessions"] = int(caps["min_sessions"])
    info.update(data.describe())
    info["train_sessions"] = int((labels == TRAIN).sum())
    info["valid_sessions"] = int((labels == 1).sum())
    info["test_sessions"] = int((labels == TEST).sum())
    return data, labels, corpus, info


def prepare(dataset: str, spec: Any, caps: dict[str, Any]) -> dict[str, Any]:
    """Sessions, split, track vectors, the session inputs and the test evaluation shared by every row."""
    seed = int(spec.protocol.get("seed", 0))
    t0 = time.perf_counter()
    data, labels, corpus, info = load_sessions(dataset, caps, seed)
    vectors = train_track_embeddings(
        list(corpus), data.n_tracks_vocab, Word2VecConfig(min_count=info["word2vec_min_count"], seed=seed)
    )
    info["tracks_with_vector"] = int((np.abs(vectors).sum(1) > 0).sum())
    inputs = session_inputs(data, vectors)
    present = data.tracks > 0
    info["kept_plays_with_vector"] = float((np.abs(vectors[data.tracks]).sum(-1) > 0)[present].mean())
    ev = build_session_eval(inputs, np.flatnonzero(labels == TEST))
    groups = context_groups(data)
    if len(data.device_vocab) == 1:
        groups.pop("device")
    info["counts"] = evaluate_sessions(inputs.emb["played"], ev)["counts"]
    info["prep_seconds"] = round(time.perf_counter() - t0, 1)
    train_rows = np.flatnonzero((labels == TRAIN) & inputs.has_target)
    popularity = track_popularity(data, np.flatnonzero(labels == TRAIN))
    return {"data": data, "labels": labels, "inputs": inputs, "ev": ev, "groups": groups, "info": info,
            "train_rows": train_rows, "popularity": popularity, "seed": seed}  # fmt: skip


# -- rows -------------------------------------------------------------------------------------


def _clean(x: Any) -> Any:
    return None if isinstance(x, float) and math.isnan(x) else x


def _result(res: dict[str, Any]) -> dict[str, Any]:
    m = res["metrics"]
    return {
        "dev": {},
        "test": {k: float(m[k]) for k in METRIC_KEYS},
        "full_window": {k: _clean(v) for k, v in m.items() if "full window" in k},
        "by_context": res.get("by_context", {}),
    }


def reference_row(prepared: dict[str, Any], row: Any) -> dict[str, Any]:
    """The expected metrics of a uniformly random ranking of the same candidate sets; carries the data facts."""
    ref = random_reference(prepared["ev"])
    return {"dev": {}, "test": {k: float(ref[k]) for k in METRIC_KEYS}, "dataset_info": prepared["info"],
            "seconds": 0.0}  # fmt: skip


def baseline_row(prepared: dict[str, Any], row: Any) -> dict[str, Any]:
    """An A.8 heuristic (or an oracle, or the global mean vector): ``model`` is its name in segue.models.cosernn."""
    p = prepared
    u = baseline_predictions(
        p["inputs"], row.model.model or row.model.label, p["popularity"], seed=p["seed"], train_rows=p["train_rows"]
    )
    return _result(evaluate_sessions(u, p["ev"], p["groups"]))


def cosernn_row(prepared: dict[str, Any], row: Any) -> dict[str, Any]:
    """CoSeRNN averaged over ``options.n_seeds`` fits (seed, seed + 1, ...); ``options`` are CoSeRNNConfig fields.

    Caps ``epochs`` (large: patience decides), ``patience`` (unless the row sets its own) and ``max_seconds`` (a
    per-fit safety net). Also the paired t-test of Sess MRR K=20 against every non-oracle baseline.
    """
    p = prepared
    opts = dict(row.options)
    c = row.caps
    n_seeds = min(int(opts.pop("n_seeds", 1)), int(c.get("max_fit_seeds", 99)))
    patience = int(opts.pop("patience", c["patience"]))
    results, fits, hists = [], [], []
    cfg = None
    for seed in range(row.seed, row.seed + n_seeds):
        cfg = CoSeRNNConfig(epochs=int(c["epochs"]), patience=patience, max_seconds=c.get("max_seconds"),
                            seed=seed, **opts)  # fmt: skip
        torch.manual_seed(seed)
        net = build_cosernn(p["inputs"], cfg)
        hist = fit_cosernn(net, p["inputs"], p["labels"], progress=False)
        results.append(evaluate_sessions(net.predict(p["inputs"]), p["ev"], p["groups"]))
        hists.append(hist)
        fits.append({
            "seed": seed,
            "best_epoch": hist.best_epoch,
            "epochs_run": len(hist.epochs),
            "stopped": hist.stopped,
            "valid_cosine": hist.best_valid_cosine,
            "train_sessions_per_second": round(hist.train_sessions_per_second, 1),
            "Sess MRR K=20": results[-1]["metrics"]["Sess MRR K=20"],
        })  # fmt: skip
    res = _average(results)
    out = _result(res)
    valid = [f["valid_cosine"] for f in fits if f["valid_cosine"] is not None]
    out["dev"] = {"cosine": float(np.mean(valid))} if valid else {}
    out["seeds"] = fits
    out["valid_cosine"] = fits[0]["valid_cosine"]
    out["stopped"] = fits[0]["stopped"]
    out["train_sessions_per_second"] = fits[0]["train_sessions_per_second"]
    assert cfg is not None
    out["config"] = {k: getattr(cfg, k) for k in ("hidden", "width", "batch_size", "lr", "epochs", "patience")}
    out["history"] = hists[0].history  # the runner records stopped_by, epochs run, best epoch, dev curve (seed 0)
    if n_seeds > 1:
        out["stopped_by_seed"] = [h.history.stopped_by for h in hists]
    out["paired_t_p_Sess_MRR_K20"] = _paired_tests(p, res)
    return out


def _paired_tests(p: dict[str, Any], res: dict[str, Any]) -> dict[str, float | None]:
    from scipy import stats

    a = res["per_session"]["Sess MRR K=20"][1]
    out: dict[str, float | None] = {}
    for model in BASELINES:
        u = baseline_predictions(p["inputs"], model, p["popularity"], seed=p["seed"], train_rows=p["train_rows"])
        b = evaluate_sessions(u, p["ev"], p["groups"])["per_session"]["Sess MRR K=20"][1]
        out[model] = None if np.allclose(a - b, 0) else float(stats.ttest_rel(a, b).pvalue)
    return out


def _average(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Metrics, per-session values and per-context cells averaged over seeds (one result: itself)."""
    if len(results) == 1:
        return results[0]
    out = {"metrics": {k: float(np.mean([r["metrics"][k] for r in results])) for k in results[0]["metrics"]}}
    out["per_session"] = {
        k: (idx, np.mean([r["per_session"][k][1] for r in results], axis=0))
        for k, (idx, _) in results[0]["per_session"].items()
    }
    out["by_context"] = {
        g: {
            v: {m: float(np.mean([r["by_context"][g][v][m] for r in results])) for m in cell}
            for v, cell in cells.items()
        }
        for g, cells in results[0].get("by_context", {}).items()
    }
    return out


# -- the Markdown beside the table ------------------------------------------------------------


def markdown(result: dict[str, Any]) -> str:
    """Full-window session ranking, and per dataset: the data facts, CoSeRNN's fits, the checks against random."""
    rows = result["rows"]
    lines = ["## Session ranking on full windows only (users with at least K candidate sessions)", ""]
    keys = [k for r in rows for k in r.get("full_window", {})]
    keys = list(dict.fromkeys(keys))
    if keys:
        lines += ["| dataset | model | " + " | ".join(keys) + " |", "|---|---|" + "---|" * len(keys)]
        for r in rows:
            fw = r.get("full_window") or {}
            lines.append(f"| {r['dataset']} | {r['model']} | " + " | ".join(fmt_number(fw.get(k)) for k in keys) + " |")
    for ds in dict.fromkeys(r["dataset"] for r in rows):
        part = {r["model"]: r for r in rows if r["dataset"] == ds}
        info = next((r["dataset_info"] for r in part.values() if r.get("dataset_info")), None)
        lines += ["", f"## {ds}", ""]
        if info:
            lines += [f"- {f}" for f in _facts(info)]
        co = part.get("cosernn")
        if co:
            per_seed = co.get("seeds", [])
            mrr = [f["Sess MRR K=20"] for f in per_seed]
            lines.append(
                f"- CoSeRNN ({len(per_seed)} seeds, the table shows their mean): best epochs "
                f"{', '.join(str(f['best_epoch']) for f in per_seed)} of "
                f"{', '.join(str(f['epochs_run']) for f in per_seed)} ({'; '.join(f['stopped'] for f in per_seed)}); "
                f"validation cosine {', '.join(fmt_number(f['valid_cosine']) for f in per_seed)}; Sess MRR K=20 "
                f"{np.mean(mrr):.4f} ± {np.std(mrr, ddof=1) if len(mrr) > 1 else 0.0:.4f} (sd over seeds); "
                f"{co.get('train_sessions_per_second')} training sessions/s; {co.get('seconds')} s for all seeds"
            )
            pv = co.get("paired_t_p_Sess_MRR_K20") or {}
            lines.append("- paired t-test p (CoSeRNN vs baseline, Sess MRR K=20): "
                         + ", ".join(f"{m} {fmt_number(v)}" for m, v in pv.items()))  # fmt: skip
        rnd = part.get("random-expected")
        if rnd:
            for key in ("Sess MRR K=20", "Sess MRR K=50"):
                below = [m for m, r in part.items() if not (r.get("oracle") or r.get("reference"))
                         and not (r["metrics"].get(key, 0) > rnd["metrics"][key])]  # fmt: skip
                lines.append(f"- expected {key} of a random ranking of the same candidates: "
                             f"{fmt_number(rnd['metrics'][key])}; at or below it: {', '.join(below) or 'none'}")  # fmt: skip
        if co and co.get("by_context", {}).get("time of day"):
            comp = [r for m, r in part.items() if m in BASELINES]
            if comp:
                best = max(comp, key=lambda r: r["metrics"]["Sess MRR K=50"])
                theirs = best.get("by_context", {}).get("time of day", {})
                cells = [f"{ctx} (n={v['n']}) {fmt_number(v['Sess MRR K=50'])} vs "
                         f"{fmt_number(theirs.get(ctx, {}).get('Sess MRR K=50'))}"
                         for ctx, v in co["by_context"]["time of day"].items()]  # fmt: skip
                lines.append(f"- per time of day, Sess MRR K=50, CoSeRNN vs the best baseline on it ({best['model']}): "
                             + "; ".join(cells))  # fmt: skip
    return "\n".join(lines) + "\n"


def _facts(info: dict[str, Any]) -> list[str]:
    facts = [
        f"{info['users']} users, {info['sessions']} sessions ({info['train_sessions']} train, "
        f"{info['valid_sessions']} validation, {info['test_sessions']} test), {info['tracks']} tracks, "
        f"{info['time_min'][:10]}..{info['time_max'][:10]}",
        f"split: {info['split']}",
        f"skip signal: {'yes' if info['skip_signal'] else 'no (every track counts as played; s- = 0)'}",
        f"word2vec min_count {info['word2vec_min_count']}: {info['tracks_with_vector']} tracks have a vector, "
        f"covering {info['kept_plays_with_vector']:.1%} of the kept plays",
    ]
    if "min_sessions" in info:
        facts.insert(0, f"users with >= {info['min_sessions']} sessions (20-minute gap) kept: {info['users']} of "
                        f"{info['all_users']} ({info['users_with_10_sessions']} have >= 10)")  # fmt: skip
    c = info["counts"]
    facts.append(
        f"evaluated test sessions: {c['sessions']}; full session windows: {c['full windows K=20']} at K=20, "
        f"{c['full windows K=50']} at K=50; track-ranked sessions: {c['track-ranked K=25']} at K=25, "
        f"{c['track-ranked K=100']} at K=100 (without a relevant candidate, excluded: "
        f"{c['no relevant candidate K=25']} / {c['no relevant candidate K=100']})"
    )
    if "vectorless share of candidates K=100" in c:
        facts.append(
            "tracks without a vector are not ranked (they would all score 0 and, with pessimistic ties, push "
            f"relevant tracks down): {100 * c['vectorless share of candidates K=100']:.1f}% of the K=100 "
            f"candidates and {100 * c['vectorless share of relevant K=100']:.1f}% of the relevant ones dropped "
            f"(K=25: {100 * c['vectorless share of candidates K=25']:.1f}% / "
            f"{100 * c['vectorless share of relevant K=25']:.1f}%)"
        )
    if c["track-ranked K=100"] == 0:
        facts.append("no test session re-consumes one of its candidate tracks (a movie is rated once), so track "
                     "ranking is undefined here (–)")  # fmt: skip
    return facts


def main(argv: list[str] | None = None) -> Any:
    """``segue reproduce cosernn-table-2 [--quick] ...`` (the runner's command line)."""
    from segue.reproduce.runner import main as run_main

    return run_main("cosernn-table-2", argv)


__all__ = ["baseline_row", "cosernn_row", "load_sessions", "main", "markdown", "prepare", "reference_row"]

#: rows of the spec that are not registry models: the A.8 heuristics, the oracles and references, CoSeRNN (built here)
UNREGISTERED_ROWS = (*BASELINES, "oracle-half", "oracle-full", "global-mean", "random-expected", "cosernn",
                     "cosernn-paper-sizes", "cosernn-no-longterm")  # fmt: skip
