"""Audio front end, clip cache, catalogue, corpus split, simulator and the ``audio`` CLI (issue 8).

Everything runs on synthetic tones written to temporary files; the real corpus is never touched.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

from segue.audio.catalogue import clips_table, index_folder, tag_matrix
from segue.audio.cli import audio_app
from segue.audio.corpus import split_by_track
from segue.audio.frontend import (
    SR,
    ClipCache,
    ClipSpec,
    load_audio,
    log_mel,
    mel_filterbank,
    mfcc_features,
    random_crops,
    segments,
)
from segue.audio.simulate import SimulatorConfig, audio_traits, simulate
from segue.errors import ConfigError, DataError

torch.set_num_threads(1)


def _tone(path: Path, seconds: float, freq: float = 440.0, sr: int = 44100, channels: int = 2) -> Path:
    t = np.arange(int(seconds * sr)) / sr
    x = 0.3 * np.sin(2 * np.pi * freq * t) + 0.05 * np.sin(2 * np.pi * 3 * freq * t)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.stack([x] * channels, 1).astype(np.float32), sr)
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("music")
    _tone(root / "gameA" / "ost" / "battle_theme.wav", 65, 440)
    _tone(root / "gameA" / "ost" / "sad_song.flac", 31, 330)
    _tone(root / "gameB" / "album1" / "track1.ogg", 40, 550, sr=48000)
    (root / "gameB" / "album1" / "album.json").write_text(
        json.dumps(
            {"title": "B", "tracks": [{"filename": "track1.ogg", "title": "Track One", "author": "Ann", "bpm": 90}]}
        )
    )
    _tone(root / "gameB" / "short.wav", 2, 660)
    (root / "gameB" / "broken.ogg").write_bytes(b"this is not audio")
    return root


def test_load_audio_resamples_to_mono_22050(tmp_path: Path) -> None:
    p = _tone(tmp_path / "a.wav", 2.0, sr=44100)
    x = load_audio(p)
    assert x.dtype == np.float32 and x.ndim == 1 and abs(len(x) - 2 * SR) <= 1
    part = load_audio(p, offset=0.5, duration=1.0)
    assert abs(len(part) - SR) <= 1
    np.testing.assert_allclose(part[1000:2000], x[SR // 2 + 1000 : SR // 2 + 2000], atol=2e-3)


def test_malformed_and_missing_files_give_a_one_line_data_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.ogg"
    bad.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(DataError) as e:
        load_audio(bad)
    assert "bad.ogg" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(DataError, match="does not exist"):
        load_audio(tmp_path / "nope.wav")
    with pytest.raises(DataError, match="too short"):
        log_mel(np.zeros(100, dtype=np.float32))


def test_log_mel_shape_range_and_silence() -> None:
    n = 3 * SR
    m = log_mel(np.random.default_rng(0).standard_normal(n).astype(np.float32))
    assert m.shape == (128, 1 + n // 512) == (128, 130)  # a 3-s crop is 130 frames
    assert (m >= 0).all()
    assert log_mel(np.zeros(n, dtype=np.float32)).abs().max() == 0
    assert log_mel(np.zeros((2, n), dtype=np.float32)).shape == (2, 128, 130)
    assert mfcc_features(np.random.default_rng(0).standard_normal(30 * SR).astype(np.float32)).shape == (7560,)


def test_front_end_matches_numpy_reference_and_librosa_filterbank() -> None:
    """STFT against numpy's rfft with reflect padding; the filterbank against librosa's (< 1e-6)."""
    librosa = pytest.importorskip("librosa")
    fb = mel_filterbank()
    np.testing.assert_allclose(fb, librosa.filters.mel(sr=SR, n_fft=1024, n_mels=128), atol=1e-6)
    x = np.random.default_rng(1).standard_normal(SR).astype(np.float64)
    padded = np.pad(x, 512, mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, 1024)[::512]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(1024) / 1024)  # periodic Hann
    mag = np.abs(np.fft.rfft(frames * window, axis=1)).T
    ref = np.log10(1 + 10 * (fb.astype(np.float64) @ mag))
    np.testing.assert_allclose(log_mel(x.astype(np.float32)).numpy(), ref, atol=1e-5)


@pytest.mark.slow
def test_front_end_parity_with_librosa(tmp_path: Path) -> None:
    """The spec's parity check: within 1e-5 of librosa on a synthetic tone read from a wav (slow: numba JIT)."""
    librosa = pytest.importorskip("librosa")
    x = load_audio(_tone(tmp_path / "t.wav", 5.0, 440, sr=SR, channels=1))
    ref = np.log10(
        1
        + 10
        * librosa.feature.melspectrogram(
            y=x, sr=SR, n_fft=1024, hop_length=512, n_mels=128, power=1.0, pad_mode="reflect"
        )
    )
    np.testing.assert_allclose(log_mel(x).numpy(), ref, atol=1e-5)
    mf = librosa.feature.mfcc(
        y=np.tile(x, 6), sr=SR, n_mfcc=20, n_fft=2048, hop_length=1750, n_mels=128, pad_mode="reflect"
    )
    np.testing.assert_allclose(mfcc_features(np.tile(x, 6)).numpy().reshape(20, 378), mf[:, :378], atol=1e-2)


def test_segments_and_random_crops_tile_short_clips() -> None:
    mel = torch.arange(128 * 300, dtype=torch.float32).view(128, 300)
    s = segments(mel)
    assert s.shape == (2, 128, 130)
    torch.testing.assert_close(s[1], mel[:, 130:260])
    assert segments(mel[:, :50]).shape == (1, 128, 130)
    c = random_crops(mel[None].repeat(3, 1, 1), generator=torch.Generator().manual_seed(0))
    assert c.shape == (3, 128, 130)


def test_catalogue_reads_metadata_and_skips_broken_files(folder: Path) -> None:
    tracks = index_folder(folder)
    assert tracks.attrs["skipped"] == 1
    assert set(tracks["source"]) == {"gameA", "gameB"}
    row = tracks.set_index("path").loc["gameB/album1/track1.ogg"]
    assert row["title"] == "Track One" and row["composer"] == "Ann" and row["bpm"] == 90
    battle = tracks.set_index("path").loc["gameA/ost/battle_theme.wav"]
    assert "mood:battle" in battle["tags"] and "mood:theme" in battle["tags"] and battle["album"] == "ost"
    clips = clips_table(tracks)
    assert len(clips) == 2 + 1 + 1  # 65 s -> 2 clips, 31 s -> 1, 40 s -> 1, 2 s -> none
    assert clips_table(tracks, clips_per_track=1)["track"].value_counts().max() == 1
    y, names = tag_matrix(clips, min_count=2)
    assert y.shape == (len(clips), len(names)) and "source:gameA" in names
    with pytest.raises(DataError):
        index_folder(folder / "missing")
    with pytest.raises(DataError, match="No readable audio"):
        index_folder(_empty(folder))


def _empty(folder: Path) -> Path:
    p = folder.parent / "empty-dir"
    p.mkdir(exist_ok=True)
    (p / "x.wav").write_bytes(b"nope")
    return p


def test_clip_cache_is_built_once_and_memory_mapped(folder: Path, tmp_path: Path) -> None:
    clips = clips_table(index_folder(folder))
    specs = [ClipSpec(r.item, r.path, r.start) for r in clips.itertuples()]
    cache = ClipCache.build(tmp_path / "c", specs, root=folder, progress=False)
    assert cache.mels.shape == (4, 128, 1291) and cache.mels.dtype == np.float16
    assert isinstance(cache.mels, np.memmap) and cache.mfcc is not None and cache.mfcc.shape == (4, 7560)
    wave = load_audio(folder / specs[1].path, offset=specs[1].start, duration=30)
    np.testing.assert_allclose(cache.mels[1].astype(np.float32), log_mel(wave).numpy()[:, :1291], atol=2e-3)
    stamp = (tmp_path / "c" / "mels.f16").stat().st_mtime_ns
    again = ClipCache.build(tmp_path / "c", specs, root=folder, progress=False)
    assert (tmp_path / "c" / "mels.f16").stat().st_mtime_ns == stamp and len(again) == 4
    assert again.rows([specs[2].key]).tolist() == [2]
    with pytest.raises(DataError):
        again.rows(["nope"])
    with pytest.raises(DataError, match="No clip cache"):
        ClipCache(tmp_path / "none")


def test_split_by_track_keeps_tracks_whole_and_parts_disjoint() -> None:
    tracks = np.repeat(np.arange(50), np.random.default_rng(0).integers(1, 6, 50))
    part = split_by_track(tracks, (0.7, 0.1, 0.2), seed=3)
    for t in np.unique(tracks):
        assert len(set(part[tracks == t])) == 1
    frac = np.bincount(part, minlength=3) / len(part)
    np.testing.assert_allclose(frac, [0.7, 0.1, 0.2], atol=0.06)
    with pytest.raises(ConfigError):
        split_by_track(tracks, (0.5, 0.6))
    with pytest.raises(DataError):
        split_by_track(np.array([1, 1]), (0.7, 0.1, 0.2))


def test_simulator_is_seeded_and_its_audio_knob_matters() -> None:
    import pandas as pd

    rng = np.random.default_rng(0)
    items = pd.DataFrame({"item": [f"c{i}" for i in range(60)], "source": np.repeat(list("abc"), 20)})
    mels = rng.random((60, 8, 40)).astype(np.float16)
    traits = audio_traits(mels, np.arange(40), k=4)
    assert traits.shape == (60, 4)
    cfg = SimulatorConfig(n_users=30, n_mean=10, beta=0.0, seed=1)
    a, b = simulate(items, traits, cfg), simulate(items, traits, cfg)
    assert a.equals(b) and (a["plays"] >= 1).all()
    assert a.groupby("user")["item"].nunique().min() >= cfg.min_items
    c = simulate(items, traits, SimulatorConfig(n_users=30, n_mean=10, beta=5.0, seed=1))
    assert not a.equals(c)
    with pytest.raises(ConfigError):
        SimulatorConfig(tau=0)
    with pytest.raises(DataError):
        simulate(items.drop(columns="source"), traits)


def test_cli_index_writes_a_catalogue(folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "cat.csv"
    r = CliRunner().invoke(audio_app, ["index", str(folder), "--out", str(out), "--json"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.output)
    assert summary["rows"] == 4 and summary["skipped_files"] == 1 and out.is_file()
    r = CliRunner().invoke(audio_app, ["index", str(tmp_path / "missing")])
    assert r.exit_code == 2 and "error:" in r.output
