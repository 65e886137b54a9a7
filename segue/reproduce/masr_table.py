"""Reproduce Table 4.4 (paper 000 Table 2) on the stand-in playlist datasets: ``python -m segue.reproduce.masr_table``.

Datasets (different data from the paper: 30Music playlists and AOTM are not available):

* ``30music``: 30Music listening sessions of the 30music-200ks test slices, each session one playlist
  of its user (owner-ful, the main stand-in): every model of Table 4.4 that segue has.
* ``yes-big`` and ``polimi-2018``: playlists without owners: the playlist-only variants MDR_ps,
  MASS_ps (and their MASR / APR versions) and the playlist->song baselines.

Protocol M.10: preprocessing M.9 (dedupe, playlists of 5..65 songs), 2 random songs per playlist
held out (test, dev; split seed 0), 100 fixed sampled negatives from the training vocabulary (dev
seed 1, test seed 2), HR@10 / NDCG@10. Checkpoints and the user/playlist choice of the baselines
are selected on dev; the test numbers are reported. Compute caps (one CPU core, about 40 minutes in
all) are in ``CAPS`` and written into the results notes.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

from segue.data.datasets import load_dataset
from segue.data.playlists import PAPER_TABLE_4_3, playlist_stats, preprocess_playlists, stats_markdown
from segue.data.splits import group_holdout
from segue.evaluation.playlist import owner_evalset, playlist_evalset, playlist_owners
from segue.evaluation.protocols import evaluate
from segue.evaluation.report import write_results
from segue.models.playlist import MASR, MASS, MDR
from segue.models.playlist_baselines import FISM
from segue.training.playlist import fit_keyed, fit_playlist, playlist_config
from segue.training.trainer import TrainConfig

TABLE = "masr-table-4.4"
COMMAND = "SEGUE_DATA_DIR=/work/shared/data OPENBLAS_NUM_THREADS=1 python -m segue.reproduce.masr_table"
M = ("HR@10", "NDCG@10")

# Table 4.4 (30Music, AOTM) and Table 4.5 (ps ablations)
PAPER_30M: dict[str, tuple[float, float]] = {
    "mf-bpr": (0.450, 0.315), "cml": (0.600, 0.452), "neumf++": (0.623, 0.461), "fism": (0.544, 0.346),
    "cmn++": (0.536, 0.397), "mdr": (0.705, 0.524), "mass": (0.670, 0.500), "masr": (0.731, 0.564),
    "amdr": (0.764, 0.581), "amass": (0.753, 0.581), "amasr": (0.785, 0.604),
    "mdr_ps": (0.654, 0.476), "mass_ps": (0.621, 0.450),
}  # fmt: skip
PAPER_AOTM: dict[str, tuple[float, float]] = {
    "mf-bpr": (0.699, 0.473), "cml": (0.735, 0.481), "neumf++": (0.741, 0.498), "fism": (0.686, 0.446),
    "cmn++": (0.722, 0.505), "mdr": (0.820, 0.631), "mass": (0.834, 0.639), "masr": (0.854, 0.654),
    "amdr": (0.850, 0.658), "amass": (0.856, 0.659), "amasr": (0.874, 0.677),
    "mdr_ps": (0.746, 0.547), "mass_ps": (0.764, 0.523),
}  # fmt: skip

CAPS: dict[str, Any] = {
    "dim": 32,
    "lr": 1e-3,
    "weight_decay": 0.0,
    "mdr_epochs": 10,
    "mass_epochs": 5,
    "apr_epochs_mdr": 4,
    "apr_epochs_mass": 2,
    "baseline_epochs": 10,
    "neumf_epochs": 4,
    "fism_epochs": 6,
    "patience": 2,
    "max_seconds_per_phase": 150,
    "eps": 1.0,
    "reg_adv": 1.0,
}
# smaller caps on the playlist-only datasets (yes-big, polimi-2018)
SECONDARY_CAPS: dict[str, Any] = {
    "mdr_epochs": 6,
    "mass_epochs": 2,
    "apr_epochs_mdr": 2,
    "apr_epochs_mass": 1,
    "baseline_epochs": 6,
    "fism_epochs": 3,
}


def _metrics(model: Any, evalset: Any) -> dict[str, float]:
    out = evaluate(model, evalset, ks=(10,), batch_size=128)
    return {k: round(out[k], 4) for k in M}


class Runner:
    def __init__(self, out_dir: Path, quick: bool) -> None:
        self.out_dir = out_dir
        self.rows: list[dict[str, Any]] = []
        self.stats: dict[str, dict[str, Any]] = {}
        self.quick = quick
        self.command = COMMAND
        self.caps = dict(CAPS)
        if quick:
            self.caps.update(mdr_epochs=1, mass_epochs=1, apr_epochs_mdr=1, apr_epochs_mass=1, baseline_epochs=1,
                             neumf_epochs=1, fism_epochs=1, max_seconds_per_phase=30)  # fmt: skip

    def pcfg(self, epochs: int, apr_epochs: int = 0) -> TrainConfig:
        """The playlist config of a phase; ``epochs=0`` marks an APR-only run (its BPR stage is skipped)."""
        c = self.caps
        return playlist_config(
            epochs=max(epochs, 1), lr=c["lr"], weight_decay=c["weight_decay"], patience=c["patience"],
            max_seconds=c["max_seconds_per_phase"], apr_epochs=apr_epochs, eps=c["eps"], reg_adv=c["reg_adv"],
            device="auto",
        )  # fmt: skip

    def add(self, dataset: str, model: str, metrics: dict[str, float], dev: dict[str, float], seconds: float,
            extra: dict[str, Any] | None = None) -> None:  # fmt: skip
        paper = PAPER_30M.get(model)
        aotm = PAPER_AOTM.get(model)
        self.rows = [r for r in self.rows if not (r["dataset"] == dataset and r["model"] == model)]
        row = {
            "model": model,
            "dataset": dataset,
            "metrics": metrics,
            "dev": dev,
            "paper": None if paper is None else dict(zip(M, paper, strict=True)),
            "paper_dataset": "30Music (Table 4.4 / 4.5)",
            "paper_aotm": None if aotm is None else dict(zip(M, aotm, strict=True)),
            "same_data_as_paper": False,
            "seconds": round(seconds, 1),
            **(extra or {}),
        }
        self.rows.append(row)
        print(f"[{dataset}] {model}: test {metrics} dev {dev} ({seconds:.0f}s)", flush=True)
        self.write()

    def write(self) -> None:
        result = {
            "table": TABLE,
            "paper": "Section 4.3, Table 4.4 of 001_*.txt (= paper 000 Table 2); ps rows: Table 4.5",
            "command": self.command,
            "protocol": {
                "name": "playlist-holdout-sampled (M.10)",
                "negatives": 100,
                "split_seed": 0,
                "dev_seed": 1,
                "test_seed": 2,
            },
            "rows": self.rows,
            "dataset_stats": self.stats,
            "caps": self.caps,
            "notes": notes(self.caps, self.stats, self.rows),
        }
        path = write_results(result, self.out_dir, TABLE, list(M))
        md = path.with_suffix(".md")
        md.write_text(md.read_text() + "\n" + extra_markdown(self.rows, self.stats))

    def playlist_model(self, name: str, cls: type, options: dict[str, Any], data: Any, split: Any,
                       dev: Any, test: Any, cfg: TrainConfig, apr: bool = False, start: Any = None
                       ) -> Any:  # fmt: skip
        t0 = time.perf_counter()
        if start is not None:  # APR from the best BPR checkpoint (M.7)
            model = copy.deepcopy(start)
            hist = fit_playlist(model, split.train, dev, cfg, apr=True, skip_bpr=True)
        else:
            n_p = len(data.group_maps["playlist"])
            model = cls(data.n_users, data.n_items, cls.Config(dim=self.caps["dim"], n_playlists=n_p, **options))
            hist = fit_playlist(model, split.train, dev, cfg, apr=apr)
        secs = time.perf_counter() - t0
        epochs = [e["epoch"] for e in hist.epochs]
        self.add(data.name, name, _metrics(model, test), _metrics(model, dev), secs,
                 {"epochs_run": len(epochs), "best_epoch": hist.best_epoch})  # fmt: skip
        return model

    def masr(self, name: str, data: Any, mdr: Any, mass: Any, dev: Any, test: Any) -> None:
        m = MASR.from_parts(mdr, mass, 0.5)
        n_train = sum(p.numel() for p in m.parameters() if p.requires_grad)
        self.add(data.name, name, _metrics(m, test), _metrics(m, dev), 0.0, {"trainable_parameters": n_train})

    def keyed(self, data: Any, split: Any, dev: Any, test: Any, model: str, label: str, keys: tuple[str, ...],
              options: dict[str, Any], epochs: int) -> None:  # fmt: skip
        owners = playlist_owners(split.train)
        best: tuple[tuple[float, float], Any, str, float] | None = None
        for key in keys:
            t0 = time.perf_counter()
            cfg = TrainConfig(epochs=epochs, batch_size=256, lr=self.caps["lr"], n_negatives=4, monitor="HR@10",
                              patience=self.caps["patience"], seed=98765, progress=False,
                              max_seconds=self.caps["max_seconds_per_phase"])  # fmt: skip
            if model == "neumf":
                cfg.loss = "bce"
            m = fit_keyed(model, split, key, dev, owners, options, cfg)
            d = _metrics(m, owner_evalset(dev, owners) if key == "user" else dev)
            secs = time.perf_counter() - t0
            print(f"  {label} {key}->song dev {d} ({secs:.0f}s)", flush=True)
            if best is None or (d["HR@10"], d["NDCG@10"]) > best[0]:
                best = ((d["HR@10"], d["NDCG@10"]), m, key, secs)
        assert best is not None
        _, m, key, secs = best
        t = _metrics(m, owner_evalset(test, owners) if key == "user" else test)
        self.add(data.name, label, t, dict(zip(M, best[0], strict=True)), secs, {"query": f"{key}->song"})


def prepare(name: str) -> tuple[Any, Any, Any, Any]:
    data = preprocess_playlists(load_dataset(name, download=False, progress=False))
    split = group_holdout(data, seed=0)
    dev = playlist_evalset(split, "valid", n_negatives=100, seed=1)
    test = playlist_evalset(split, "test", n_negatives=100, seed=2)
    return data, split, dev, test


def notes(caps: dict[str, Any], stats: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    return (
        "Different data from the paper: the paper's 30Music playlists and AOTM are not available. "
        "'paper' = the paper's 30Music number (Table 4.4; MDR_ps / MASS_ps from Table 4.5); the AOTM number is in "
        "'paper_aotm'. 30music = 30Music listening sessions as playlists of their users (about 1.9 playlists per "
        "user, 51k songs, 10.5 training songs per playlist); yes-big and polimi-2018 have no owners, so only the "
        "playlist-only variants run there. Test cases whose held-out song never occurs in training are dropped "
        "[CODE-HINT M.10]. Compute caps (1 CPU core): "
        + ", ".join(f"{k}={v}" for k, v in caps.items())
        + "; on yes-big / polimi-2018: "
        + ", ".join(f"{k}={v}" for k, v in SECONDARY_CAPS.items())
        + ". No hyper-parameter grid beyond the epoch choice on dev (d, lr and lambda fixed at the stated values; "
        "the spec's grid M.8 was not affordable). All models are far from converged at these caps."
    )


#: Findings of control runs made by hand after the table (same data, split and seeds); kept here so a
#: rerun of the command does not drop them. Their numbers are not recomputed by the command.
INVESTIGATION = """\
- **APR gain vs extra epochs (30music, MDR).** MDR and MASS were stopped by the 150 s phase cap while dev still
  improved, so AMDR's gain could be just more training. Control: MDR trained 8 BPR epochs (dev 0.526 / test 0.537 HR@10),
  then 4 more *plain BPR* epochs (fresh Adam, as APR gets): dev 0.540 / test 0.552 HR@10, NDCG@10 0.413. AMDR (4 APR
  epochs from the same checkpoint): dev 0.589 / test 0.592, NDCG@10 0.457. So about 0.04 HR@10 of AMDR's gain is APR,
  not extra epochs. The same control was not run for MASS (cost).
- **FISM beats every proposed model on all three stand-ins** (30music 0.633 vs AMASR 0.616 HR@10; yes-big 0.859 vs
  0.729; polimi 0.763 vs 0.663), unlike the paper (FISM 0.544 < MDR 0.705). Reasons we can point to: (1) the stand-ins
  are item-item data: a 30Music listening session is mostly one album/artist, Yes.com playlists are radio rotations; a
  member-similarity model wins there and owners add little (1.9 playlists per user on 30music, none on the others);
  (2) MASS, the proposed member-similarity model, is the most under-trained model of the table: 3 BPR epochs on
  30music (training loss 0.69 vs 0.03 for MDR) and 2 on the others, cut by the compute cap, while FISM ran 6 (3)
  cheaper epochs; (3) no hyper-parameter search (d = 32, lr 1e-3, lambda 0 for all).
- **MASS NDCG@10 below CML on 30music** (0.323 vs 0.354; HR@10 0.496 vs 0.495): same under-training cause; MASR and AMASR
  are above every MF-BPR / CML / NeuMF++ number.
"""

#: benchmarks/bench_masr.py output (its own command), kept beside the table.
THROUGHPUT = """\
| model | samples/s | s per epoch |
|---|---|---|
| MDR | 2,236 | 34.7 |
| MASS | 1,816 | 42.7 |
| AMDR (APR step) | 2,206 | 35.1 |
| AMASS (APR step) | 809 | 95.8 |
| FISM | 4,075 | 19.0 |
| MF-BPR (playlist->song) | 7,096 | 10.9 |
| CML (playlist->song) | 5,994 | 12.9 |

Paper (M.13, GTX 1080 Ti, d = 64, 666,788 triples): MDR 39 s, MASS 88 s per epoch (about 17,100 and 7,600 samples/s).
On CPU MDR's step is dominated by Adam's dense update of the 51k-song table, which is why the APR step costs about the
same as a BPR step for MDR.
"""


def extra_markdown(rows: list[dict[str, Any]], stats: dict[str, Any]) -> str:
    lines = ["## Side by side with the paper (30Music and AOTM columns are the paper's, different data)", ""]
    lines.append(
        "| dataset | model | HR@10 | NDCG@10 | paper 30Music HR / NDCG | paper AOTM HR / NDCG | query / notes |"
    )
    lines.append("|---|---|---|---|---|---|---|")
    for r in rows:
        p = r.get("paper") or {}
        a = r.get("paper_aotm") or {}
        pp = f"{p['HR@10']:.3f} / {p['NDCG@10']:.3f}" if p else "-"
        aa = f"{a['HR@10']:.3f} / {a['NDCG@10']:.3f}" if a else "-"
        extra = r.get("query") or (f"best epoch {r['best_epoch']}" if r.get("best_epoch") else "")
        lines.append(f"| {r['dataset']} | {r['model']} | {r['metrics']['HR@10']:.4f} | {r['metrics']['NDCG@10']:.4f} "
                     f"| {pp} | {aa} | {extra} |")  # fmt: skip
    lines += ["", "## Dataset statistics (Table 4.3 layout; songs per playlist over training songs)", ""]
    lines.append(stats_markdown({**stats, **PAPER_TABLE_4_3}) if stats else "(none yet)")
    lines += ["", "## What must hold (on our test numbers)", ""]
    lines += checks(rows)
    lines += ["", "## Neighbourhood baselines vs the proposed models (on our test numbers)", ""]
    lines += neighbourhood_lines(rows)
    lines += [
        "",
        "## Investigation (control runs made by hand after the table, same data and seeds)",
        "",
        INVESTIGATION,
    ]
    lines += ["## Throughput (benchmarks/bench_masr.py, CPU, 1 thread, d = 64, batch 256, 30music train part, "
              "77,491 triples)", "", THROUGHPUT]  # fmt: skip
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


def checks(rows: list[dict[str, Any]]) -> list[str]:
    out = []
    for ds in dict.fromkeys(r["dataset"] for r in rows):
        got = {r["model"]: r["metrics"] for r in rows if r["dataset"] == ds}
        sfx = "_ps" if "mdr_ps" in got else ""

        def cmp(a: str, bs: list[str], got: dict[str, Any] = got, ds: str = ds) -> None:
            bs = [b for b in bs if b in got]
            if a not in got or not bs:
                return
            for m in M:
                best = max(got[b][m] for b in bs)
                ok = got[a][m] >= best
                out.append(f"- {ds}: {a} {m} {got[a][m]:.4f} >= max({', '.join(bs)}) {best:.4f}: "
                           f"{'holds' if ok else 'DOES NOT HOLD'}")  # fmt: skip

        cmp(f"masr{sfx}", [f"mdr{sfx}", f"mass{sfx}"])
        cmp(f"amdr{sfx}", [f"mdr{sfx}"])
        cmp(f"amass{sfx}", [f"mass{sfx}"])
        cmp(f"amasr{sfx}", [f"masr{sfx}"])
        for ours in (f"mdr{sfx}", f"mass{sfx}", f"masr{sfx}"):
            cmp(ours, ["mf-bpr", "cml", "neumf++"])
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/results")
    ap.add_argument("--datasets", default="30music,yes-big,polimi-2018")
    ap.add_argument("--quick", action="store_true", help="1 epoch per model (smoke test)")
    ap.add_argument("--skip-baselines", action="store_true")
    ap.add_argument("--only", default="", help="comma list of rows to (re)run: proposed, mf-bpr, cml, fism, "
                    "neumf++, cmn++ (default: all)")  # fmt: skip
    ap.add_argument("--merge", action="store_true", help="keep the rows of the existing table that are not rerun")
    ap.add_argument("--rewrite", action="store_true", help="only rewrite the Markdown/JSON from the existing JSON")
    args = ap.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("SEGUE_THREADS", "1")))
    only = {x.strip() for x in args.only.split(",") if x.strip()}

    def want(label: str) -> bool:
        return not only or label in only

    r = Runner(Path(args.out), args.quick)
    old = Path(args.out) / f"{TABLE}.json"
    if args.merge and old.exists():
        prev = json.loads(old.read_text())
        r.rows, r.stats = prev.get("rows", []), prev.get("dataset_stats", {})
        r.command = (
            f"{prev.get('command', COMMAND)} && {COMMAND} {' '.join(argv if argv is not None else sys.argv[1:])}"
        )
    if args.rewrite:
        prev = json.loads(old.read_text())
        r.rows, r.stats, r.command, r.caps = prev["rows"], prev["dataset_stats"], prev["command"], prev["caps"]
        r.write()
        return
    for name in args.datasets.split(","):
        t0 = time.perf_counter()
        data, split, dev, test = prepare(name)
        r.stats[name] = {**playlist_stats(data, split.train), "dev_cases": len(dev), "test_cases": len(test),
                         "dropped_unseen_test": test.meta["dropped_unseen_targets"]}  # fmt: skip
        print(name, json.dumps(r.stats[name]), f"({time.perf_counter() - t0:.0f}s)", flush=True)
        owners = name == "30music"
        c = r.caps if owners or args.quick else {**r.caps, **SECONDARY_CAPS}
        sfx = "" if owners else "_ps"
        mdr_opts = {} if owners else {"mode": "ps"}
        mass_opts = {} if owners else {"mode": "ps"}
        if want("proposed"):
            mdr = r.playlist_model("mdr" + sfx, MDR, mdr_opts, data, split, dev, test, r.pcfg(c["mdr_epochs"]))
            mass = r.playlist_model("mass" + sfx, MASS, mass_opts, data, split, dev, test, r.pcfg(c["mass_epochs"]))
            r.masr("masr" + sfx, data, mdr, mass, dev, test)
            amdr = r.playlist_model("amdr" + sfx, MDR, {}, data, split, dev, test,
                                    r.pcfg(0, c["apr_epochs_mdr"]), start=mdr)  # fmt: skip
        keys = ("user", "playlist") if owners else ("playlist",)
        if not args.skip_baselines:
            if want("mf-bpr"):
                r.keyed(data, split, dev, test, "mf-bpr", "mf-bpr", keys, {"dim": c["dim"]}, c["baseline_epochs"])
            if want("cml"):
                r.keyed(data, split, dev, test, "cml", "cml", keys, {"dim": c["dim"]}, c["baseline_epochs"])
            if want("fism"):
                r.playlist_model("fism", FISM, {}, data, split, dev, test, r.pcfg(c["fism_epochs"]))
        if want("proposed"):
            amass = r.playlist_model("amass" + sfx, MASS, {}, data, split, dev, test,
                                     r.pcfg(0, c["apr_epochs_mass"]), start=mass)  # fmt: skip
            r.masr("amasr" + sfx, data, amdr, amass, dev, test)
        if not args.skip_baselines and owners and want("neumf++"):
            r.keyed(data, split, dev, test, "neumf", "neumf++", ("playlist", "user"),
                    {"factors": c["dim"] // 2, "layers": 2}, c["neumf_epochs"])  # fmt: skip
        if not args.skip_baselines and want("cmn++"):  # user- and playlist-based neighbourhoods, the better on dev
            r.keyed(data, split, dev, test, "cmn", "cmn++", keys, {"dim": c["dim"], "hops": 2},
                    c["baseline_epochs"])  # fmt: skip
    r.write()


if __name__ == "__main__":
    main()
