"""Users' own data files (issue 17): the four formats through `segue.data.load_file` and the CLI, and bad files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from segue.cli import app
from segue.data import load_file
from segue.data.files import detect_format, open_dataset, parse_columns
from segue.errors import ConfigError, DataError, DatasetNotFoundError

from .conftest import make_frame

runner = CliRunner()


def _train(*args: str) -> dict:
    r = runner.invoke(app, ["train", *args, "--json", "--negatives", "10"])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def _recommend(run_dir: Path, user: str, k: int = 5) -> list[str]:
    r = runner.invoke(app, ["recommend", str(run_dir), "--user", user, "-k", str(k), "--json"])
    assert r.exit_code == 0, r.output
    items = [it["item"] for it in json.loads(r.stdout)["items"]]
    assert len(items) == k
    return items


# -- the four formats, trained and recommended from the CLI ----------------------------------------


def test_interactions_csv_with_renamed_columns_trains_and_recommends(tmp_path: Path) -> None:
    f = make_frame(n_users=25, n_items=30, per_user=8)
    path = tmp_path / "plays.csv"
    f.rename(columns={"user": "uid", "item": "track_id"}).to_csv(path, index=False)
    assert detect_format(path) == "interactions"
    cols = "user=uid,item=track_id,timestamp=ts,rating=rating"
    data = load_file(path, columns=parse_columns(cols))
    assert (data.n_users, data.n_items, len(data)) == (25, f["item"].nunique(), len(f))
    assert data.has_time and data.has_weight and data.name == "plays"
    run = tmp_path / "run"
    res = _train("itemknn", str(path), "--columns", cols, "--out", str(run))
    assert res["protocol"] == "loo-sampled" and 0 <= res["test"]["tie_rate"] <= 1
    assert "random earlier item" in res["dev_rule"]
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["test"]["tie_rate"] == pytest.approx(res["test"]["tie_rate"])
    seen = set(f[f["user"] == "u3"]["item"].astype(str))
    assert len(seen & set(_recommend(run, "u3"))) <= 2  # training items never come back; test and dev items may


def test_tsv_and_parquet_interactions_read_alike(tmp_path: Path) -> None:
    f = make_frame(n_users=6, n_items=10, per_user=4).rename(columns={"ts": "timestamp"})
    f.to_csv(tmp_path / "a.tsv", sep="\t", index=False)
    f.to_parquet(tmp_path / "a.parquet")
    a, b = load_file(tmp_path / "a.tsv"), load_file(tmp_path / "a.parquet")
    assert a.df.equals(b.df) and list(a.user_map.raw) == list(b.user_map.raw)
    assert a.has_weight and np.allclose(a.df["weight"], f["rating"])


def test_sequence_txt_trains_sasrec_and_recommends_from_history(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    lines = []
    for u in range(30):
        start = int(rng.integers(0, 20))
        lines.append(" ".join([f"user{u}"] + [f"i{(start + j) % 40}" for j in range(8)]))
    path = tmp_path / "seqs.txt"
    path.write_text("\n".join(lines) + "\n")
    data = load_file(path)
    assert detect_format(path) == "sequences" and (data.n_users, len(data)) == (30, 240)
    first = data.df[data.df["user"] == 1]
    assert first["timestamp"].tolist() == list(range(8))  # position in the user's sequence
    run = tmp_path / "run"
    res = _train("sasrec", str(path), "--max-seconds", "60", "--epochs", "1", "--set", "dim=8",
                 "--set", "max_len=10", "--out", str(run))  # fmt: skip
    assert res["test"]["HR@10"] >= 0 and res["fit_seconds"] < 60
    _recommend(run, "user3")


def test_playlist_csv_trains_mdr_and_a_playlist_keyed_baseline(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    rows = []
    for p in range(24):
        pool = np.arange(30) + (p % 2) * 30
        for pos, t in enumerate(rng.choice(pool, size=8, replace=False)):
            rows.append((f"pl{p}", f"t{t}", f"owner{p % 6}", pos))
    path = tmp_path / "playlists.csv"
    pd.DataFrame(rows, columns=["playlist", "track", "user", "position"]).to_csv(path, index=False)
    data = load_file(path)
    assert detect_format(path) == "playlists" and len(data.group_maps["playlist"]) == 24 and data.n_users == 6
    res = _train("mdr", str(path), "--epochs", "1", "--set", "dim=8", "--out", str(tmp_path / "mdr"))
    assert res["protocol"] == "playlist-holdout" and "song of each playlist" in res["dev_rule"]
    cfg = json.loads((tmp_path / "mdr" / "config.json").read_text())
    assert cfg["model_options"]["n_playlists"] == 24
    # a user->song model answers per playlist under the playlist protocol (playlist -> song rows)
    res = _train("itemknn", str(path), "--out", str(tmp_path / "knn"))
    assert json.loads((tmp_path / "knn" / "config.json").read_text())["query"] == "playlist"
    recs = _recommend(tmp_path / "knn", "pl4")
    in_playlist = {t for p, t, _, _ in rows if p == "pl4"}
    assert len(set(recs) & in_playlist) <= 2  # its training songs never come back; the held-out test/dev songs may


def test_playlists_without_owner_own_themselves(tmp_path: Path) -> None:
    path = tmp_path / "p.tsv"
    path.write_text("playlist\ttrack\n1\ta\n1\tb\n2\tc\n")
    data = load_file(path)
    assert list(data.user_map.raw) == ["playlist:1", "playlist:2"] and not data.has_time


def test_listening_log_cut_into_sessions_trains_and_recommends(tmp_path: Path) -> None:
    f = make_frame(n_users=25, n_items=30, per_user=8)
    f["ts"] = f.groupby("user").cumcount() * 600 + f.groupby("user").cumcount().ge(4) * 7200  # a 2-hour break
    f["device"] = np.where(f.index % 2 == 0, "phone", "desktop")
    path = tmp_path / "log.csv"
    f.rename(columns={"item": "track", "ts": "timestamp"})[["user", "track", "timestamp", "device"]].to_csv(
        path, index=False
    )
    assert detect_format(path) == "sessions"
    data = load_file(path)
    assert len(data.group_maps["session"]) == 50 and list(data.df["device"][:2]) == ["phone", "desktop"]
    from segue.data.sessions import build_sessions, log_from_interactions

    sessions = build_sessions(log_from_interactions(data, context=["device"]), use_session_ids=True)
    assert len(sessions) == 50  # what CoSeRNN reads: the file's sessions
    run = tmp_path / "run"
    res = _train("mf-bpr", str(path), "--epochs", "1", "--set", "dim=8", "--dev", "last", "--out", str(run))
    assert res["dev_rule"].startswith("each user's second-to-last")
    _recommend(run, "u5")


def test_describe_a_file(tmp_path: Path) -> None:
    path = tmp_path / "seqs.txt"
    path.write_text("a 1 2 3\nb 2 3\n")
    r = runner.invoke(app, ["describe", str(path), "--json"])
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    assert info["format"] == "sequences" and info["interactions"] == 5 and info["time"].startswith("synthetic")


def test_format_flag_overrides_the_guess(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text("user,track,timestamp\nu,a,1\nu,b,2\n")
    assert detect_format(path) == "sessions"
    data = load_file(path, format="interactions")
    assert "session" not in data.df.columns and data.n_items == 2  # track stands in for item


# -- the dev-item rule -------------------------------------------------------------------------------


def test_dev_last_holds_out_the_second_to_last_item(data) -> None:
    from segue.data.splits import leave_one_out

    split = leave_one_out(data, dev_rule="last")
    d = data.sorted().df
    second = d.groupby("user").nth(-2)
    assert set(zip(split.valid.df["user"], split.valid.df["item"], strict=True)) == set(
        zip(second["user"], second["item"], strict=True)
    )
    with pytest.raises(ConfigError, match="leave-last-out"):
        from segue.evaluation.protocols import get_protocol

        get_protocol("random-full", dev="last")


# -- bad files: one sentence naming the file, the line and the column -----------------------------


def _err(path: Path, text: str, **kw) -> str:
    path.write_text(text)
    with pytest.raises(DataError) as e:
        load_file(path, **kw)
    msg = str(e.value)
    assert "\n" not in msg and msg.endswith(".") and str(path) in msg
    return msg


def test_bad_files(tmp_path: Path) -> None:
    assert "no 'item' column" in _err(tmp_path / "a.csv", "user,song\n1,2\n")
    assert "--columns item=COLUMN" in _err(tmp_path / "a.csv", "user,song\n1,2\n")
    assert "no column 'uid'" in _err(tmp_path / "b.csv", "user,item\n1,2\n", columns={"user": "uid"})
    assert "is empty" in _err(tmp_path / "c.csv", "")
    assert "header but no rows" in _err(tmp_path / "d.csv", "user,item\n")
    m = _err(tmp_path / "e.csv", "user,item,timestamp\n1,2,3\n1,3,4,5\n")  # ragged: too many fields
    assert "line 3" in m and "4 fields" in m
    m = _err(tmp_path / "f.csv", "user,item,timestamp\n1,2,3\n\n1,3\n")  # ragged: too few (blank line counted)
    assert "line 4" in m and "2 fields" in m
    m = _err(tmp_path / "g.csv", "user,item,timestamp\n1,2,3\n1,3,yesterday\n")
    assert "line 3, column 'timestamp'" in m and "'yesterday' is not a time" in m
    m = _err(tmp_path / "h.csv", "user,item,rating\n1,2,5\n1,,4\n")
    assert "line 3, column 'item'" in m and "empty" in m
    m = _err(tmp_path / "i.csv", "user,item,rating\n1,2,five\n")
    assert "line 2, column 'rating'" in m and "'five' is not a number" in m
    m = _err(tmp_path / "j.txt", "u1 a b\nu2\n")
    assert "line 2" in m and "has no items" in m
    m = _err(tmp_path / "k.tsv", "playlist\ttrack\tposition\np\ta\tfirst\n", format="playlists")
    assert "line 2, column 'position'" in m
    with pytest.raises(ConfigError, match="Unknown column name"):
        load_file(tmp_path / "a.csv", columns={"song": "x"})
    with pytest.raises(ConfigError, match="Unknown data format"):
        load_file(tmp_path / "a.csv", format="xlsx")
    with pytest.raises(DatasetNotFoundError, match="not found"):
        load_file(tmp_path / "nope.csv")


def test_ids_are_text_whatever_they_look_like(tmp_path: Path) -> None:
    big = "123456789012345678901234567890"  # larger than any integer type: still a fine id
    path = tmp_path / "ids.csv"
    path.write_text(f"user,item\n{big},007\nNaN,7\n{big},1.5\n")
    data = load_file(path)
    assert list(data.user_map.raw) == [big, "NaN"] and list(data.item_map.raw) == ["007", "7", "1.5"]
    pd.DataFrame({"user": [1.0, 2.0], "item": [3.0, np.nan]}).to_parquet(tmp_path / "n.parquet")
    with pytest.raises(DataError, match=r"row 2, column 'item'.*empty"):
        load_file(tmp_path / "n.parquet")
    pd.DataFrame({"user": [1.0, 2.0], "item": [3.0, 4.0]}).to_parquet(tmp_path / "f.parquet")
    assert list(load_file(tmp_path / "f.parquet").user_map.raw) == ["1", "2"]


def test_unknown_dataset_names_the_path_alternative(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"Unknown dataset 'my-data' \(known: ml-100k.*or give a path"):
        open_dataset("my-data")
    with pytest.raises(DatasetNotFoundError, match="not found"):
        open_dataset(str(tmp_path / "missing.csv"))
    r = runner.invoke(app, ["train", "pop", "my.csv"])
    assert r.exit_code != 0 and "my.csv" in str(r.exception)


# -- the model catalogue --------------------------------------------------------------------------


def test_every_registered_model_has_a_catalogue_entry() -> None:
    from segue.evaluation.protocols import PROTOCOLS
    from segue.models.base import list_models
    from segue.models.catalogue import CATALOGUE

    r = runner.invoke(app, ["models", "--json"])
    assert r.exit_code == 0, r.output
    rows = {m["name"]: m for m in json.loads(r.stdout)}
    assert set(rows) == set(list_models()) and set(CATALOGUE) == set(rows)  # no entry missing, none stale
    seeds = {p.name for p in Path("/work/shared/seeds").glob("*.txt")} or None
    for name, m in rows.items():
        assert m["paper"] and m["task"] in ("top-n", "next-item", "basket", "playlist", "cold-start"), name
        assert m["inputs"] and set(m["inputs"]) <= {"interactions", "time order", "playlists", "audio"}, name
        assert m["protocol"] in PROTOCOLS or "segue reproduce" in m["protocol"], name
        assert "section" in m["seed"] and m["ann"] == (m["measure"] is not None), name
        if seeds:  # the named seed files exist where the shared folder is present
            assert any(s in m["seed"] for s in seeds), name
    assert rows["sasrec"]["inputs"] == ["interactions", "time order"] and rows["mdr"]["protocol"] == "playlist-holdout"
