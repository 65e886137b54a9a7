"""RME Table 4.2 (Section 4.2; Tran et al., CIKM'18) on ml-100k and Last.fm-2K: the hooks of
``specs/rme-table-4.2.toml`` (and of ``specs/rme-table-4.2-per-user.toml``, its sensitivity check).

Run with ``segue reproduce rme-table-4.2 [--quick]`` (the shared runner, :mod:`segue.reproduce.runner`).
Prose (data, the [CODE-HINT] choices, the lambda scan, caps, the investigation) lives in
``docs/results/rme-table-4.2.notes.md``.

Data and protocol (spec R.7/R.8; :mod:`segue.data.splits_rme`), chosen per dataset by ``protocol.split``:

* ``movielens`` (``ml-100k``, explicit, in place of ML-10M / ML-20M): liked >= 4, disliked <= 2 stars;
  temporal 80/20 with a random 12.5% of the 80% as validation, redrawn per repeat
  (``movielens-per-user``: each user's own latest 20% as test, a sensitivity check, not the paper's);
* ``playcount`` (``lastfm-2k``, HetRec Last.fm-2K play counts, implicit, in place of TasteProfile):
  random 70/10/20 per repeat; RME and I_RME infer the dislikes by Algorithm 2.

Full ranking over all items with the user's training (and, for test, validation) items excluded;
Recall@5, NDCG@20 and MAP@10 with the Cofactor definitions (R.8). The spec's **seeds are the repeats**:
seed ``r`` is split ``r`` (the authors' fold seeds) and model seed ``protocol.model_seed + r``.

Rows (:func:`fit_row`): the random ranking's expected metrics (a reference row), Item-KNN (full neighbourhood, cosine on binary M), Item2vec (gensim SGNS), and
WMF / Cofactor / U_RME / I_RME / RME by segue's closed-form ALS, each stopped on validation NDCG@100
(caps ``max_iter`` sweeps, ``item2vec_epochs``). Hyper-parameters come from the spec's ``scan``
(lambda, then k, then tau; validation NDCG@100 of repeat 0 only, see the runner). The extra rows take
their hyper-parameters from a table row (``options_from``): ``wmf`` (the ``implicit`` package's ALS with
the same objective, hyper-parameters and number of sweeps as WMF), RME with separate learning and, on
explicit data, RME with Algorithm 2 dislikes.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch

from segue.data.datasets import load_dataset
from segue.data.splits_rme import movielens_split, playcount_split
from segue.errors import ConfigError
from segue.evaluation.protocols import evaluate, full_evalset
from segue.models.base import build_model
from segue.training import fit

METRICS = ("Recall@5", "NDCG@20", "MAP@10")
MONITOR = "NDCG@100"
#: display names of the rows
LABELS = {
    "itemknn": "Item-KNN",
    "item2vec": "Item2vec",
    "wmf-als": "WMF",
    "cofactor": "Cofactor",
    "u-rme": "U_RME",
    "i-rme": "I_RME",
    "rme": "RME",
    "wmf": "WMF (implicit package)",
    "rme-separate": "RME, separate learning",
    "rme-inferred": "RME, Algorithm 2 dislikes",
    "random": "Random ranking (expected)",
}
ALS_MODELS = ("wmf-als", "cofactor", "u-rme", "i-rme", "rme")
#: the models that read explicit dislikes when the data has them (else Algorithm 2 infers them)
USES_DISLIKES = ("i-rme", "rme")
#: protocol.split recipes: the splitter, its options and whether the data are implicit
SPLITS: dict[str, tuple[Any, dict[str, Any], bool]] = {
    "movielens": (movielens_split, {}, False),
    "movielens-per-user": (movielens_split, {"per_user": True}, False),
    "playcount": (playcount_split, {}, True),
}
#: the paper's column beside each of our datasets ("paper" in the spec) and the other ones ("paper_other")
PAPER_COLUMN = {"ml-100k": "ML-10M", "lastfm-2k": "TasteProfile"}
PAPER_OTHER = {"ml-100k": ("ML-20M",)}
#: the paper's dataset statistics (spec R.7), for the statistics table
PAPER_DATA = {
    "MovieLens-10M (explicit)": ("69,878 users, 10,677 movies, 10M ratings", "58,057 users, 7,223 items", "0.978%"),
    "MovieLens-20M (explicit)": ("138,000 users, 27,000 movies, 20M ratings", "111,146 users, 9,888 items", "0.745%"),
    "TasteProfile (implicit)": ("subsampled to 250k users, 25k items", "221,011 users, 22,713 songs", "0.291%"),
}


# -- prepare: the data, and the split of each repeat (lazily) -----------------------------------


def prepare(dataset: str, spec: Any, caps: dict[str, Any]) -> dict[str, Any]:
    """Load ``dataset`` and pick its split recipe (``protocol.split``); the splits are drawn per repeat."""
    recipe = (spec.protocol.get("split") or {}).get(dataset)
    if recipe not in SPLITS:
        raise ConfigError(f"{spec.name}: protocol.split names no known recipe for {dataset} ({', '.join(SPLITS)}).")
    splitter, options, implicit = SPLITS[recipe]
    data = load_dataset(dataset, download=False, progress=False)
    raw = data.describe()
    return {
        "dataset": dataset,
        "data": data,
        "splitter": splitter,
        "split_options": options,
        "implicit": implicit,
        "model_seed": int(spec.protocol.get("model_seed", 98765)),
        "raw": {"users": raw["users"], "items": raw["items"], "rows": raw["interactions"]},
        "splits": {},  # repeat -> (RMESplit, valid EvalSet, test EvalSet)
        "sweeps": {},  # (repeat, factors, reg, max_iter) -> WMF's kept sweep (for the implicit-package row)
    }


def split_for(prepared: dict[str, Any], repeat: int) -> tuple[Any, Any, Any]:
    """The RMESplit of ``repeat`` with its full-ranking validation and test sets (drawn once per run)."""
    if repeat not in prepared["splits"]:
        rs = prepared["splitter"](prepared["data"], repeat=repeat, **prepared["split_options"])
        prepared["splits"][repeat] = (rs, full_evalset(rs.split, "valid"), full_evalset(rs.split, "test"))
    return prepared["splits"][repeat]


# -- one row ------------------------------------------------------------------------------------


def model_options(name: str, options: dict[str, Any], caps: dict[str, Any], n_items: int, seed: int) -> dict[str, Any]:
    """The registry options of a row: the spec's (and the scanned) options, the seed and the caps."""
    if name == "itemknn":  # full neighbourhood (R.9)
        return {"k": n_items}
    if name == "random":  # the expected metrics of a uniformly random ranking (a reference row)
        return {"seed": seed}
    if name == "item2vec":
        return {
            **options,
            "seed": seed,
            **({"epochs": int(caps["item2vec_epochs"])} if "item2vec_epochs" in caps else {}),
        }
    return {**options, "seed": seed, **({"max_iter": int(caps["max_iter"])} if "max_iter" in caps else {})}


def _wmf_sweeps(prepared: dict[str, Any], repeat: int, options: dict[str, Any], caps: dict[str, Any]) -> int:
    """The sweep segue's WMF (wmf-als) keeps with ``options`` on this repeat (fitted here unless memoised)."""
    rs, valid, _ = split_for(prepared, repeat)
    seed = prepared["model_seed"] + repeat
    opts = model_options("wmf-als", {"factors": options["factors"], "reg": options["reg"]}, caps, 0, seed)
    key = (repeat, opts["factors"], opts["reg"], opts.get("max_iter"))
    if key not in prepared["sweeps"]:
        train = rs.split.train
        m = build_model("wmf-als", train.n_users, train.n_items, opts)
        prepared["sweeps"][key] = int(fit(m, train, valid).best_epoch or 1)
    return prepared["sweeps"][key]


def _history(h: Any, name: str, model: Any, cap: int | None) -> dict[str, Any]:
    """The dev curve (validation NDCG@100 per sweep or epoch) of the kept stage, and how it stopped."""
    stage = None
    if name != "item2vec":
        kept = getattr(model, "em_kept_", None)
        stage = f"em{kept}" if kept else "als"
    vals = [r[MONITOR] for r in h.epochs if r.get(MONITOR) is not None and (stage is None or r.get("stage") == stage)]
    return {
        "epochs": [{"epoch": i, "valid": {MONITOR: float(v)}} for i, v in enumerate(vals, 1)],
        "best_epoch": h.best_epoch,
        "monitor": MONITOR,
        "stopped_by": "epochs" if cap is not None and len(vals) >= cap else "patience",
    }


def fit_row(prepared: dict[str, Any], row: Any) -> dict[str, Any]:
    """Fit one row on the split of repeat ``row.seed``; its validation NDCG@100 and test metrics."""
    import threadpoolctl

    repeat = row.seed
    rs, valid, test = split_for(prepared, repeat)
    train = rs.split.train
    seed = prepared["model_seed"] + repeat
    name = row.model.model or row.model.label
    caps = row.caps
    kwargs: dict[str, Any] = {}
    if name == "wmf":  # implicit's ALS, same objective: alpha = c1 / c0, regularization = reg / c0 (c0 = 1)
        opts: dict[str, Any] = {
            "factors": row.options["factors"],
            "regularization": row.options["reg"],
            "alpha": 10.0,
            "iterations": _wmf_sweeps(prepared, repeat, row.options, caps),
            "seed": seed,
        }
    else:
        opts = model_options(name, row.options, caps, train.n_items, seed)
        if name in USES_DISLIKES and opts.get("dislikes") != "infer" and rs.dislikes is not None:
            kwargs["dislikes"] = rs.dislikes
    torch.manual_seed(seed)
    model = build_model(name, train.n_users, train.n_items, opts)
    t0 = time.perf_counter()
    with threadpoolctl.threadpool_limits(int(caps.get("threads", 1))):
        h = fit(model, train, valid, **kwargs)
        seconds = time.perf_counter() - t0
        dev = evaluate(model, valid, ks=(100,), metrics=("NDCG",), recall_denominator="min_k")[MONITOR]
        out = evaluate(model, test, ks=(5, 10, 20), metrics=METRICS, recall_denominator="min_k", per_case=True)
    per_user = {k: np.asarray(out["per_case"][k], dtype=np.float64) for k in METRICS}
    res: dict[str, Any] = {
        "dev": {MONITOR: float(dev)},  # unrounded: the scans compare it
        "test": {k: round(float(out[k]), 5) for k in METRICS},
        "seconds": round(seconds, 2),
        # the noise of the test set itself: standard error of the mean over the test users
        "se_over_test_users": {k: round(float(np.std(v, ddof=1) / math.sqrt(len(v))), 5) for k, v in per_user.items()},
        "dataset_stats": {
            "raw": prepared["raw"],
            "filtered": rs.stats,
            "test_users": len(test),
            "valid_users": len(valid),
            "implicit": prepared["implicit"],
        },
        "model": model,
    }
    if name in ("item2vec", *ALS_MODELS):
        cap = opts.get("epochs") if name == "item2vec" else opts.get("max_iter", model.config.max_iter)
        res["history"] = _history(h, name, model, cap)
    if getattr(model, "em_kept_", None) is not None:
        res["em_iterations_kept"] = model.em_kept_
    if name == "wmf":
        res["iterations"] = opts["iterations"]
    if name == "wmf-als":
        prepared["sweeps"][(repeat, opts["factors"], opts["reg"], opts.get("max_iter"))] = int(h.best_epoch or 1)
    return res


# -- the Markdown beside the runner's table -----------------------------------------------------


def _fmt(mean: float, std: float | None) -> str:
    return f"{mean:.4f}" if std is None else f"{mean:.4f} ± {std:.4f}"


def _t_test(a: list[float], b: list[float]) -> float | None:
    """Two-sided two-sample t-test p-value over the repeats (R.7); None when it is undefined."""
    if len(a) < 2 or len(b) < 2:
        return None
    from scipy.stats import ttest_ind

    p = float(ttest_ind(a, b).pvalue)
    return None if math.isnan(p) else p


def _hyper(row: dict[str, Any]) -> str:
    """The chosen hyper-parameters of a row, with what each scan covered."""
    scans = {s["key"].split(".", 1)[1]: s for s in row.get("scan") or []}
    parts = []
    for k, v in row["options"].items():
        s = scans.get(k)
        where = ""
        if s:
            edge = "interior" if s["interior"] else "EDGE of the scan"
            where = f" (scanned {min(s['scanned'])}..{max(s['scanned'])}, {len(s['scanned'])} values; {edge})"
        parts.append(f"{k}={v}{where}")
    return ", ".join(parts) or "none"


def _triple(values: dict[str, Any]) -> str:
    """R@5/N@20/MAP@10 of a metric dict, as ``a/b/c``."""
    return "/".join(f"{values[k]:.4f}" for k in METRICS)


def _dataset_lines(ds: str, rows: list[dict[str, Any]]) -> list[str]:
    """One dataset's part of :func:`markdown`."""
    table = [r for r in rows if not r.get("reference")]
    extra = [r for r in rows if r.get("reference")]
    label = {r["model"]: LABELS.get(r["model"], r["model"]) for r in rows}
    repeats = {r["model"]: len(r.get("seeds") or [r.get("seed")]) for r in rows}
    n = max(repeats.values())
    stats = next((r["dataset_stats"] for r in rows if r.get("dataset_stats")), None)
    cols = [PAPER_COLUMN.get(ds, "paper"), *PAPER_OTHER.get(ds, ())]
    head = f"| Method | {ds} R@5 | N@20 | MAP@10 |" + "".join(f" {c} (paper) R@5 | N@20 | MAP@10 |" for c in cols)
    lines = [f"## {ds} (ours) beside {', '.join(cols)} (paper, different data)", "", head]
    lines.append("|---|---|---|---|" + "---|---|---|" * len(cols))
    for r in table:
        std = r.get("std") or {}
        cells = [_fmt(r["metrics"][k], std.get(k)) for k in METRICS]
        if r["model"] == "rme":
            cells = [f"**{c}**" for c in cells]
        for i, c in enumerate(cols):
            p = r.get("paper") if i == 0 else (r.get("paper_other") or {}).get(c)
            cells += [f"{p[k]:.4f}" if p else "–" for k in METRICS]
        lines.append(f"| {label[r['model']]} | " + " | ".join(cells) + " |")
    lines += ["", f"Mean ± sample standard deviation over {n} repeats." if n > 1 else "One repeat (no deviation)."]
    if extra:
        lines += ["", "Reference and extra rows (not in Table 4.2): the expected metrics of a random ranking; the "
                  "others on the same splits with the dev-chosen hyper-parameters of WMF / RME.", ""]  # fmt: skip
        lines += ["| Method | R@5 | N@20 | MAP@10 |", "|---|---|---|---|"]
        for r in extra:
            cells = [_fmt(r["metrics"][k], (r.get("std") or {}).get(k)) for k in METRICS]
            lines.append(f"| {label[r['model']]} | " + " | ".join(cells) + " |")
    users = f"; {stats['valid_users']:,} validation users" if stats else ""
    devs = ", ".join(f"{label[r['model']]} {r['dev'].get(MONITOR, float('nan')):.4f}" for r in rows)
    lines += ["", f"Validation {MONITOR} (mean over repeats{users}): {devs}."]
    rme = next((r for r in table if r["model"] == "rme"), None)
    if rme is not None and rme.get("per_seed"):
        ps = []
        for r in table:
            if r is not rme and r.get("per_seed"):
                p = [_t_test([x[k] for x in rme["per_seed"]], [x[k] for x in r["per_seed"]]) for k in METRICS]
                ps.append(f"{label[r['model']]} " + "/".join("n/a" if v is None else f"{v:.3f}" for v in p))
        lines += ["", f"Two-sided two-sample t-test p-values of RME against each model over the repeats: "
                  f"{'; '.join(ps)} (R@5/N@20/MAP@10)."]  # fmt: skip
    se = [r for r in rows if r["model"] in ("wmf-als", "cofactor", "rme") and r.get("se_over_test_users")]
    if se:
        users = f"{stats['test_users']:,} " if stats else ""
        noise = ", ".join(f"{label[r['model']]} {_triple(r['se_over_test_users'])}" for r in se)
        lines += ["", f"Standard error of the mean over the {users}test users of the first repeat (the noise of the "
                  f"test set itself): {noise} (R@5/N@20/MAP@10)."]  # fmt: skip
    lines += ["", "Chosen hyper-parameters (validation NDCG@100 of the first repeat; the scans are in the dev grid):"]
    lines += [""] + [f"- {label[r['model']]}: {_hyper(r)}" for r in table if r["model"] != "itemknn"]
    if any(r["model"] == "itemknn" for r in table):
        lines.append("- Item-KNN: full neighbourhood, no hyper-parameter")
    secs = ", ".join(f"{label[r['model']]} {r['seconds'] / repeats[r['model']]:.1f}" for r in rows)
    lines += ["", f"Mean fit seconds per repeat: {secs}."]
    return lines


def markdown(result: dict[str, Any]) -> str:
    """The old Table 4.2 layout: ours (mean ± std) beside every paper column, the extra rows, validation
    NDCG@100, t-tests against RME over the repeats, the test-set noise, the chosen hyper-parameters, seconds
    and the dataset statistics beside the paper's."""
    rows = result["rows"]
    lines = [
        "## Table 4.2 side by side (different data)",
        "",
        "**Different data.** The paper's ML-10M, ML-20M and TasteProfile are not available here. Our numbers are "
        "on ml-100k (explicit, in place of MovieLens) and the HetRec Last.fm-2K play counts (implicit, in place of "
        "TasteProfile). The paper's columns are copied from its Table 4.2 for reference only: the two sides are "
        "not comparable number for number. Metrics: Recall@5, NDCG@20, MAP@10 with the Cofactor definitions "
        "(spec R.8), full ranking.",
        "",
    ]
    if any(str(v).endswith("per-user") for v in (result.get("protocol", {}).get("split") or {}).values()):
        lines += [
            "**Sensitivity check, not the paper's protocol.** Each user's own latest 20% of liked ratings is the "
            "test part (the paper's global temporal cut leaves 87 test users on ml-100k); the hyper-parameters "
            "are scanned on this split's own validation part, never on test.",
            "",
        ]
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    for ds in datasets:
        lines += [*_dataset_lines(ds, [r for r in rows if r["dataset"] == ds]), ""]
    lines += ["## Dataset statistics (layout of the spec's table, R.7)", ""]
    lines += ["| Dataset | Raw | After filtering | Density |", "|---|---|---|---|"]
    for ds in datasets:
        s = next((r["dataset_stats"] for r in rows if r["dataset"] == ds and r.get("dataset_stats")), None)
        if s is None:
            continue
        raw, f = s["raw"], s["filtered"]
        kind = "implicit, play counts" if s["implicit"] else "explicit, liked >= 4"
        lines.append(
            f"| {ds} ({kind}; ours) | {raw['users']:,} users, {raw['items']:,} items, {raw['rows']:,} rows "
            f"| {f['users']:,} users, {f['items']:,} items, {f['liked']:,} liked "
            f"(train {f['train']:,} / valid {f['valid']:,} / test {f['test']:,}; {f['dislikes']:,} explicit dislikes; "
            f"{s['test_users']:,} test users) | {100 * f['density']:.3f}% |"
        )
    for name, (raw, after, dens) in PAPER_DATA.items():
        lines.append(f"| {name} (paper) | {raw} | {after} | {dens} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> Any:
    """``segue reproduce rme-table-4.2 [--quick] ...`` (the runner's command line)."""
    from segue.reproduce.runner import main as run_main

    return run_main("rme-table-4.2", argv)


__all__ = ["fit_row", "main", "markdown", "model_options", "prepare", "split_for"]
