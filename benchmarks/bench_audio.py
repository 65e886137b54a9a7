"""Audio front end and DCUE speed: mel extraction (x real time per core), training steps/s, embedding throughput.

    OMP_NUM_THREADS=1 python benchmarks/bench_audio.py [--seconds 60] [--steps 20] [--file AUDIO]

Prints, on one CPU thread (and on the GPU when torch sees one):

* decode (soundfile; a synthetic 44.1 kHz stereo FLAC, or ``--file``) + resample (soxr) + log-mel,
  and log-mel alone, as multiples of real time per core;
* DCUE training steps per second: the paper's step (10 users x (1 positive + 20 negatives) =
  210 crops of 128 x 130) and the shared-negatives step (10 positives + 20 shared negatives);
* item-embedding throughput: 30-s clips (1291 frames, 9 segments averaged) per second.

Synthetic audio and random mels only; no corpus needed. The machine is shared, so absolute
figures move with its load; compare within one run.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def _timeit(fn, repeats: int = 3) -> float:  # type: ignore[no-untyped-def]
    fn()  # warm-up
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return float(best)


def bench_frontend(seconds: float, file: str | None) -> None:
    import soundfile as sf

    from segue.audio.frontend import SR, load_audio, log_mel

    with tempfile.TemporaryDirectory() as d:
        if file:
            path, what = Path(file), Path(file).name
        else:
            # FLAC: libsndfile's Vorbis encoder crashed (SIGSEGV) writing long files here
            sr = 44100
            t = np.arange(int(seconds * sr)) / sr
            x = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * np.random.default_rng(0).standard_normal(len(t))
            path, what = Path(d) / "bench.flac", f"{seconds:.0f} s of synthetic 44.1 kHz stereo FLAC"
            sf.write(path, np.stack([x, x], 1).astype(np.float32), sr)
        full = _timeit(lambda: log_mel(load_audio(path)))
        wave = load_audio(path)
    dur = len(wave) / SR
    mel = _timeit(lambda: log_mel(wave))
    print(f"front end ({what}): decode+resample+log-mel {dur / full:.0f}x real time per core;")
    print(f"  log-mel alone {dur / mel:.0f}x real time ({dur:.0f} s at 22,050 Hz)")


def _bench_one(shared: bool, steps: int, device: str) -> None:
    from segue.models.base import build_model

    torch.manual_seed(0)
    m = build_model("dcue", 1000, 1000, {"shared_negatives": shared}).to(device)
    opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    users = torch.randint(1, 1001, (10,), device=device)
    pos = torch.rand(10, 128, 130, device=device)
    neg = torch.rand(20, 128, 130, device=device) if shared else torch.rand(10, 20, 128, 130, device=device)

    def step() -> None:
        loss = m.batch_loss(users, pos, neg)
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / steps
    crops = 10 + 20 if shared else 210
    label = "shared negatives (30 crops)" if shared else "paper step (210 crops)"
    print(f"DCUE training [{device}], {label}: {1 / dt:.2f} steps/s ({crops / dt:.0f} crops/s)")
    if not shared:
        mels = torch.rand(64, 128, 1291, device=device)
        m.eval()
        t = _timeit(lambda: m.encode_items(mels), repeats=2)
        print(f"item embedding [{device}]: {64 / t:.0f} clips/s (30-s clips, 9 segments averaged)")


def bench_dcue(steps: int, device: str) -> None:
    for shared in (False, True):
        _bench_one(shared, steps, device)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="length of the synthetic audio file")
    ap.add_argument("--steps", type=int, default=20, help="timed DCUE training steps")
    ap.add_argument("--file", default=None, help="time the front end on this audio file instead of a synthetic one")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, 1 thread")
    bench_frontend(args.seconds, args.file)
    bench_dcue(args.steps, "cpu")
    if torch.cuda.is_available():
        bench_dcue(args.steps * 5, "cuda")
    else:
        print("no GPU visible: GPU figures skipped")


if __name__ == "__main__":
    main()
