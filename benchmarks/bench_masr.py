"""Training throughput of the playlist models (spec M.13): samples/s per model, BPR and APR steps.

A "sample" is one training triple (owner, playlist, song+) with its 4 negatives, so samples/s is
comparable with the paper's seconds per epoch (30Music: MDR 39 s, MASS 88 s per epoch of 666,788
triples on a GTX 1080 Ti at d = 64, i.e. about 17,100 and 7,600 samples/s). Data: the 30music
stand-in after M.9 preprocessing (falls back to a synthetic table of the same shape when the data
directory is missing). Runs on CUDA when present, else on one CPU thread.

Usage::

    SEGUE_DATA_DIR=/work/shared/data python benchmarks/bench_masr.py [--dim 64] [--batches 30] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
import pandas as pd
import torch

from segue.data.interactions import Interactions
from segue.data.sampling import NegativeSampler
from segue.errors import DatasetNotFoundError
from segue.evaluation.playlist import member_matrix, playlist_matrix, playlist_owners
from segue.models.base import Context
from segue.models.metric_baselines import CML
from segue.models.mf import MFBPR
from segue.models.playlist import MASS, MDR, perturbable
from segue.models.playlist_baselines import FISM
from segue.training.playlist import PlaylistTrainConfig, _perturbed_scores, apr_noise, pairwise_bpr


def load_data() -> tuple[Interactions, str]:
    try:
        from segue.data.datasets import load_dataset
        from segue.data.playlists import preprocess_playlists
        from segue.data.splits import group_holdout

        data = preprocess_playlists(load_dataset("30music", download=False, progress=False))
        return group_holdout(data, seed=0).train, "30music (train part)"
    except DatasetNotFoundError:
        rng = np.random.default_rng(0)
        rows = [(u // 2, u, int(s)) for u in range(7400) for s in rng.choice(51000, size=10, replace=False)]
        df = pd.DataFrame(rows, columns=["user", "playlist", "item"])
        return Interactions.from_frame(df, groups={"playlist": "playlist"}, name="synthetic"), "synthetic"


def bench(model: torch.nn.Module, train: Interactions, batches: int, bs: int, apr: bool, device: torch.device,
          keyed: str = "playlist") -> float:  # fmt: skip
    n_p = len(train.group_maps["playlist"])
    pl = train.df["playlist"].to_numpy().copy()
    it = train.df["item"].to_numpy().copy()
    members = torch.as_tensor(member_matrix(train, n_p))
    sampler = NegativeSampler(playlist_matrix(train, n_p), seed=0)
    owners = torch.as_tensor(playlist_owners(train))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    cfg = PlaylistTrainConfig()
    names = perturbable(model) if apr else []
    noise: dict[str, torch.Tensor] = {}
    rng = np.random.default_rng(0)
    model.train()
    done = 0
    t0 = 0.0
    for b in range(batches + 2):
        if b == 2:  # two warm-up batches
            t0 = time.perf_counter()
            done = 0
        idx = rng.integers(0, len(pl), bs)
        p = torch.as_tensor(pl[idx])
        pos = torch.as_tensor(it[idx])
        negs = torch.as_tensor(sampler.sample(pl[idx], 4))
        mem = members[p].masked_fill(members[p] == pos[:, None], 0)
        cand = torch.cat([pos[:, None], negs], 1).to(device)
        ctx = Context(group=mem.to(device))
        q = (owners[p] if keyed == "user" else p).to(device)
        loss = pairwise_bpr(model.score(q, cand, ctx), "each", "sum")
        if apr:
            noise = apr_noise(model, names, noise, q, cand, ctx, cfg)
            loss = loss + pairwise_bpr(_perturbed_scores(model, noise, q, cand, ctx))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        done += bs
    if device.type == "cuda":
        torch.cuda.synchronize()
    return done / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--batches", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu":
        torch.set_num_threads(1)
    train, label = load_data()
    n_p = len(train.group_maps["playlist"])
    d = args.dim
    models: list[tuple[str, Any, bool, Any]] = [
        ("MDR", lambda: MDR(train.n_users, train.n_items, MDR.Config(dim=d, n_playlists=n_p)), False, "playlist"),
        ("MASS", lambda: MASS(train.n_users, train.n_items, MASS.Config(dim=d, n_playlists=n_p)), False, "playlist"),
        ("AMDR (APR step)", lambda: MDR(train.n_users, train.n_items, MDR.Config(dim=d, n_playlists=n_p)), True,
         "playlist"),
        ("AMASS (APR step)", lambda: MASS(train.n_users, train.n_items, MASS.Config(dim=d, n_playlists=n_p)), True,
         "playlist"),
        ("FISM", lambda: FISM(train.n_users, train.n_items, FISM.Config(dim=d, n_playlists=n_p)), False, "playlist"),
        ("MF-BPR (playlist->song)", lambda: MFBPR(n_p, train.n_items, MFBPR.Config(dim=d)), False, "playlist"),
        ("CML (playlist->song)", lambda: CML(n_p, train.n_items, CML.Config(dim=d)), False, "playlist"),
    ]  # fmt: skip
    out: dict[str, Any] = {"data": label, "rows": len(train), "dim": d, "batch_size": args.batch_size,
                           "device": str(device), "threads": torch.get_num_threads(), "samples_per_s": {}}  # fmt: skip
    print(f"data {label}: {len(train):,} training triples, {train.n_items:,} songs, d={d}, device {device}")
    for name, make, apr, key in models:
        torch.manual_seed(0)
        m = make().to(device)
        if hasattr(m, "set_owners") and m.n_users == train.n_users:
            m.set_owners(playlist_owners(train))
        sps = bench(m, train, args.batches, args.batch_size, apr, device, key)
        out["samples_per_s"][name] = round(sps, 1)
        print(f"{name:26s} {sps:10,.0f} samples/s   ({len(train) / sps:7.1f} s per epoch)", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
