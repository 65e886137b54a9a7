"""Audio front end: decode, resample, log-mel (DCUE spec A.2 / C.2), MFCC (TripletRec B.2), clip cache.

Pipeline for one clip:

1. **Decode** with ``soundfile`` (ogg/vorbis, opus, flac, wav, mp3), only the frames of the clip.
2. **Mono** by averaging the channels, **resample** to 22,050 Hz with ``soxr`` (high quality).
3. **Log-mel** (:func:`log_mel`): ``torch.stft`` with n_fft = win = 1024, periodic Hann window,
   hop 512, ``center=True, pad_mode="reflect"`` (the spec's [AMBIG] default); magnitude
   (power 1); a Slaney-scale, area-normalised mel filterbank of 128 bands from 0 to 11,025 Hz
   (:func:`mel_filterbank`, the same matrix as ``librosa.filters.mel``); then
   ``L = log10(1 + 10 M)``. Shape (128, 1 + n // 512) for n samples; silence maps to 0.
4. **MFCC** for TripletRec (:func:`mfcc_features`): 20 coefficients of the dB power mel
   spectrogram (n_fft 2048, hop 1750, 128 mels, ``top_db`` 80, DCT-II orthonormal, as
   ``librosa.feature.mfcc``), first 378 frames, flattened coefficient-major to 7560 values.

:class:`ClipCache` decodes every clip of a catalogue once and stores its first 1291 log-mel
frames (29.98 s, the 7digital preview length of A.2) as float16 in one memory-mapped array
``mels.f16`` (n_clips, 128, 1291), the MFCCs in ``mfcc.f16`` (n_clips, 7560) and the clip keys
in ``index.json``; training then reads slices of the memory map and never decodes audio again.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from segue.errors import DataError

SR = 22050
N_FFT = 1024
HOP = 512
N_MELS = 128
CLIP_SECONDS = 30.0
CLIP_FRAMES = 1291
SEGMENT_FRAMES = 130
MFCC_COEFFS = 20
MFCC_FRAMES = 378
MFCC_N_FFT = 2048
MFCC_HOP = 1750


# -- decoding ---------------------------------------------------------------------------------
def load_audio(path: str | Path, sr: int = SR, offset: float = 0.0, duration: float | None = None) -> np.ndarray:
    """Mono float32 samples of ``path`` at ``sr`` Hz, from ``offset`` seconds for ``duration`` seconds.

    Raises :class:`DataError` (one line) for a missing, unreadable or empty file.
    """
    import soundfile as sf
    import soxr

    p = Path(path)
    if not p.is_file():
        raise DataError(f"Audio file {p} does not exist.")
    try:
        with sf.SoundFile(str(p)) as f:
            native = f.samplerate
            start = round(offset * native)
            if start:
                f.seek(min(start, f.frames))
            frames = -1 if duration is None else round(duration * native)
            x = f.read(frames, dtype="float32", always_2d=True)
    except (RuntimeError, sf.LibsndfileError, TypeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"Cannot decode audio file {p.name}: {first}.") from None
    if x.shape[0] == 0:
        raise DataError(f"Audio file {p.name} holds no samples at offset {offset:.1f} s.")
    mono = x.mean(axis=1)
    if native != sr:
        mono = soxr.resample(mono, native, sr, quality="HQ").astype(np.float32)
    return np.ascontiguousarray(mono, dtype=np.float32)


# -- mel filterbank and log-mel ---------------------------------------------------------------
def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney mel scale: linear below 1 kHz, logarithmic above (librosa ``htk=False``)."""
    f = np.asarray(f, dtype=np.float64)
    f_sp = 200.0 / 3
    mels = f / f_sp
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    return np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, 1e-10) / min_log_hz) / logstep, mels)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)


def mel_filterbank(
    sr: int = SR, n_fft: int = N_FFT, n_mels: int = N_MELS, fmin: float = 0.0, fmax: float | None = None
) -> np.ndarray:
    """Slaney mel filterbank with area ("slaney") normalisation, (n_mels, 1 + n_fft // 2) float32.

    The same construction as ``librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels)``.
    """
    fmax = sr / 2 if fmax is None else fmax
    fft_freqs = np.linspace(0, sr / 2, 1 + n_fft // 2)
    mel_f = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels]))[:, None]
    return weights.astype(np.float32)


_FB: dict[tuple[int, int, int], Tensor] = {}


def _fb(sr: int, n_fft: int, n_mels: int) -> Tensor:
    key = (sr, n_fft, n_mels)
    if key not in _FB:
        _FB[key] = torch.from_numpy(mel_filterbank(sr, n_fft, n_mels))
    return _FB[key]


def _stft_mag(wave: Tensor, n_fft: int, hop: int) -> Tensor:
    if wave.shape[-1] <= n_fft // 2:
        raise DataError(f"A clip of {wave.shape[-1]} samples is too short for an STFT of {n_fft} points.")
    window = torch.hann_window(n_fft, periodic=True, dtype=wave.dtype, device=wave.device)
    spec = torch.stft(
        wave,
        n_fft,
        hop_length=hop,
        win_length=n_fft,
        window=window,
        center=True,
        pad_mode="reflect",
        return_complex=True,
    )
    return spec.abs()


def log_mel(wave: np.ndarray | Tensor, sr: int = SR) -> Tensor:
    """``log10(1 + 10 * mel(|STFT|))`` of (n,) or (B, n) samples: (128, T) or (B, 128, T), T = 1 + n // 512."""
    x = torch.as_tensor(np.asarray(wave) if not isinstance(wave, Tensor) else wave, dtype=torch.float32)
    if x.ndim not in (1, 2):
        raise DataError(f"log_mel expects (n,) or (B, n) samples, got shape {tuple(x.shape)}.")
    mag = _stft_mag(x, N_FFT, HOP)  # (..., 513, T)
    mel = torch.matmul(_fb(sr, N_FFT, N_MELS).to(x.device), mag)
    return torch.log10(1 + 10 * mel)


def mfcc_features(wave: np.ndarray | Tensor, sr: int = SR) -> Tensor:
    """TripletRec's MFCC input (spec B.2): (7560,) = 20 coefficients x 378 frames, coefficient-major.

    Power mel spectrogram (n_fft 2048, hop 1750, 128 Slaney mels), ``10 log10(max(S, 1e-10))``
    clipped at 80 dB below its maximum, orthonormal DCT-II over the mel axis, first 20
    coefficients (``librosa.feature.mfcc``); frames beyond 378 are dropped, missing ones padded
    with the edge frame.
    """
    from scipy.fft import dct

    x = torch.as_tensor(np.asarray(wave) if not isinstance(wave, Tensor) else wave, dtype=torch.float32)
    power = _stft_mag(x, MFCC_N_FFT, MFCC_HOP) ** 2
    mel = torch.matmul(_fb(sr, MFCC_N_FFT, N_MELS), power).double().numpy()
    db = 10 * np.log10(np.maximum(mel, 1e-10))
    db = np.maximum(db, db.max() - 80.0)
    m = dct(db, type=2, axis=0, norm="ortho")[:MFCC_COEFFS]
    if m.shape[1] < MFCC_FRAMES:
        m = np.pad(m, ((0, 0), (0, MFCC_FRAMES - m.shape[1])), mode="edge")
    return torch.from_numpy(m[:, :MFCC_FRAMES].reshape(-1).astype(np.float32))


# -- segments ---------------------------------------------------------------------------------
def tile_to(mel: Tensor, frames: int) -> Tensor:
    """Repeat a (..., F, T) spectrogram along time until it has at least ``frames`` frames."""
    t = mel.shape[-1]
    if t >= frames:
        return mel
    reps = -(-frames // t)
    return mel.repeat(*([1] * (mel.ndim - 1)), reps)


def random_crops(
    mels: Tensor | np.ndarray, frames: int = SEGMENT_FRAMES, generator: torch.Generator | None = None
) -> Tensor:
    """A random ``frames``-long window of each clip of (B, F, T) (tiled first if T < frames), float32."""
    x = torch.as_tensor(np.asarray(mels) if not isinstance(mels, Tensor) else mels)
    x = tile_to(x, frames)
    b, t = x.shape[0], x.shape[-1]
    starts = torch.randint(0, t - frames + 1, (b,), generator=generator)
    idx = starts[:, None] + torch.arange(frames)[None, :]
    return torch.gather(x, 2, idx[:, None, :].expand(-1, x.shape[1], -1)).float()


def segments(mel: Tensor, frames: int = SEGMENT_FRAMES) -> Tensor:
    """Non-overlapping ``frames``-long segments of one (F, T) clip: (floor(T / frames), F, frames), tiled if short."""
    x = tile_to(mel, frames)
    n = x.shape[-1] // frames
    return x[..., : n * frames].reshape(x.shape[0], n, frames).permute(1, 0, 2).contiguous()


# -- clip cache --------------------------------------------------------------------------------
@dataclass
class ClipSpec:
    """One clip: an audio file and the window [start, start + duration) seconds."""

    key: str
    path: str
    start: float
    duration: float = CLIP_SECONDS


class ClipCache:
    """Log-mels (n, 128, 1291) and MFCCs (n, 7560) of a catalogue's clips, float16, memory-mapped.

    ``ClipCache.build(folder, clips)`` decodes each clip once (a tqdm progress bar over the
    corpus) and is a no-op when ``folder`` already holds the same clip keys;
    ``ClipCache(folder)`` opens a finished cache read-only.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        index = self.folder / "index.json"
        if not index.is_file():
            raise DataError(f"No clip cache in {self.folder} (index.json is missing); build it first.")
        meta = json.loads(index.read_text())
        self.keys: list[str] = meta["keys"]
        self.meta = meta
        n = len(self.keys)
        self.mels = np.memmap(self.folder / "mels.f16", dtype=np.float16, mode="r", shape=(n, N_MELS, CLIP_FRAMES))
        mf = self.folder / "mfcc.f16"
        self.mfcc = (
            np.memmap(mf, dtype=np.float16, mode="r", shape=(n, MFCC_COEFFS * MFCC_FRAMES)) if mf.is_file() else None
        )
        self._pos = {k: i for i, k in enumerate(self.keys)}

    def __len__(self) -> int:
        return len(self.keys)

    def rows(self, keys: Sequence[str]) -> np.ndarray:
        missing = [k for k in keys if k not in self._pos]
        if missing:
            raise DataError(f"{len(missing)} clip(s) are not in the cache {self.folder}, e.g. {missing[0]!r}.")
        return np.array([self._pos[k] for k in keys], dtype=np.int64)

    @classmethod
    def build(
        cls,
        folder: str | Path,
        clips: Sequence[ClipSpec],
        root: str | Path | None = None,
        mfcc: bool = True,
        progress: bool = True,
    ) -> ClipCache:
        """Decode ``clips`` (paths relative to ``root``) into ``folder``; reuse a matching cache."""
        folder = Path(folder)
        keys = [c.key for c in clips]
        if len(set(keys)) != len(keys):
            raise DataError("Clip keys must be unique.")
        if not keys:
            raise DataError("No clips to cache.")
        index = folder / "index.json"
        if index.is_file():
            meta = json.loads(index.read_text())
            if meta.get("keys") == keys and (not mfcc or meta.get("mfcc")):
                return cls(folder)
        folder.mkdir(parents=True, exist_ok=True)
        n = len(clips)
        tmp_mel = folder / "mels.f16.tmp"
        mels = np.memmap(tmp_mel, dtype=np.float16, mode="w+", shape=(n, N_MELS, CLIP_FRAMES))
        mf = (
            np.memmap(folder / "mfcc.f16.tmp", dtype=np.float16, mode="w+", shape=(n, MFCC_COEFFS * MFCC_FRAMES))
            if mfcc
            else None
        )
        base = Path(root) if root is not None else Path()
        t0 = time.perf_counter()
        audio_seconds = 0.0
        it: Any = range(n)
        if progress:
            from tqdm import tqdm

            it = tqdm(it, desc="caching clips", unit="clip")
        for i in it:
            c = clips[i]
            wave = load_audio(base / c.path, offset=c.start, duration=c.duration)
            audio_seconds += len(wave) / SR
            m = tile_to(log_mel(wave), CLIP_FRAMES)[:, :CLIP_FRAMES]
            mels[i] = m.numpy().astype(np.float16)
            if mf is not None:
                mf[i] = mfcc_features(wave).numpy().astype(np.float16)
        mels.flush()
        del mels
        tmp_mel.replace(folder / "mels.f16")
        if mf is not None:
            mf.flush()
            del mf
            (folder / "mfcc.f16.tmp").replace(folder / "mfcc.f16")
        seconds = time.perf_counter() - t0
        meta = {
            "keys": keys,
            "mfcc": mfcc,
            "n_mels": N_MELS,
            "frames": CLIP_FRAMES,
            "sr": SR,
            "audio_seconds": round(audio_seconds, 2),
            "cache_seconds": round(seconds, 2),
            "x_real_time": round(audio_seconds / max(seconds, 1e-9), 1),
        }
        index.write_text(json.dumps(meta) + "\n")
        return cls(folder)
