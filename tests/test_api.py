"""segue.api.Fitted: every music use case by raw ids over a trained run, with the same fallbacks as the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from segue.api import Fitted
from segue.data import Interactions
from segue.errors import ConfigError, DataError, SegueError, UnknownIdError
from segue.evaluation.protocols import get_protocol
from segue.pipeline import run
from segue.training.trainer import TrainConfig

from .conftest import make_frame

QUICK = {"epochs": 1, "progress": False, "patience": None}


@pytest.fixture(scope="module")
def toy() -> Interactions:
    return Interactions.from_frame(make_frame(n_users=24, n_items=30, per_user=8), timestamp="ts", name="toy")


def _fit(tmp: Path, model: str, data: Interactions, options: dict | None = None) -> Fitted:
    out = tmp / model
    proto = get_protocol("loo-sampled", n_negatives=10)
    run(model, data, protocol=proto, model_options=options, train_config=TrainConfig(**QUICK), out=out, log=None)
    return Fitted.load(out)


def test_vector_model_answers_users_lists_similar_and_unknown_users(tmp_path: Path, toy: Interactions) -> None:
    m = _fit(tmp_path, "mf-bpr", toy)
    seen_m = m.run.seen
    u3 = int(m.run.user_map.to_internal(["u3"])[0])
    seen = set(map(str, m.run.item_map.to_raw(seen_m.indices[seen_m.indptr[u3] : seen_m.indptr[u3 + 1]])))
    rec = m.recommend("u3", k=5)
    assert (
        len(rec.items) == 5 and not seen & set(map(str, rec.items)) and rec.scores == sorted(rec.scores, reverse=True)
    )
    with_seen = m.recommend("u3", k=30, exclude_seen=False)
    assert seen <= set(map(str, with_seen.items))
    # an unknown user gets the popular items, flagged; or a one-sentence error when asked
    pop = m.recommend("nobody", k=3)
    counts = np.asarray(seen_m.sum(axis=0)).ravel()  # training interactions per item
    top = m.run.item_map.to_internal(list(map(str, pop.items)))
    assert pop.query == "popular-fallback" and list(counts[top]) == sorted(counts[1:], reverse=True)[:3]
    with pytest.raises(UnknownIdError, match="Unknown user id 'nobody'"):
        m.recommend("nobody", unknown="error")
    # a list of items (a session, a new playlist): the mean of their vectors, the items excluded
    seeds = ["101", "102"]
    cont = m.continue_playlist(seeds, k=4)
    assert cont.query == "mean-of-items" and len(cont.items) == 4 and not set(seeds) & set(map(str, cont.items))
    vecs = m.model.item_vectors().detach().numpy()
    ids = m.run.item_map.to_internal(seeds)
    expect = np.argsort(-(vecs[1:] @ vecs[ids].mean(0)), kind="stable") + 1
    expect = [i for i in expect if i not in ids][:4]
    assert list(m.run.item_map.to_internal(list(map(str, cont.items)))) == expect
    near = m.similar("101", k=3)
    assert "101" not in map(str, near.items) and len(near.items) == 3
    for bad in (0, 31, True, 2.0):
        with pytest.raises(ConfigError, match="k must be an integer between 1 and the catalogue size 30"):
            m.recommend("u3", k=bad)
    with pytest.raises(UnknownIdError, match="Unknown item id 'zzz'"):
        m.similar("zzz")
    with pytest.raises(ConfigError, match="no audio tower"):
        m.from_audio(["x.ogg"])


def test_sequential_model_reads_recent_items_or_a_given_history(tmp_path: Path, toy: Interactions) -> None:
    m = _fit(tmp_path, "caser", toy, {"s": 3})
    uid = m.run.user_map.to_internal(["u5"])
    latest = m.run.item_map.to_raw(m.run.recent[uid][0][m.run.recent[uid][0] > 0]).tolist()
    default = m.recommend("u5", k=4)
    assert default.query == "user-history"
    assert m.recommend("u5", k=4, history=latest).items == default.items
    # a session in progress: the same history, the session's own items excluded
    nxt = m.next_track(latest, k=4)
    assert nxt.query == "model-context" and not set(map(str, latest)) & set(map(str, nxt.items))
    # an unknown listener with a history is a session in progress
    assert m.recommend("new-listener", k=4, history=latest).items == nxt.items
    with pytest.raises(UnknownIdError, match="Unknown item id '999'"):
        m.next_track(["999"])
    with pytest.raises(DataError, match="no items"):
        m.next_track([])


def test_history_and_lists_are_refused_with_one_sentence(tmp_path: Path, toy: Interactions) -> None:
    m = _fit(tmp_path, "pop", toy)
    with pytest.raises(ConfigError, match="history is for sequential models; pop does not read one"):
        m.recommend("u1", history=["101"])
    with pytest.raises(ConfigError, match="cannot recommend for a list of items"):
        m.continue_playlist(["101"])
    with pytest.raises(ConfigError, match="no item vectors"):
        m.similar("101")


# -- every registered model answers through Fitted (and so through `segue recommend`) -------------------
from .test_contract import NAMES, RECIPES, _case  # noqa: E402


@pytest.mark.parametrize("name", NAMES)
def test_every_registered_model_recommends_by_raw_ids(name: str, tmp_path: Path) -> None:
    from segue.training.checkpoint import save_run

    case = _case(name)
    save_run(tmp_path / "run", case.model, user_map=case.train.user_map, item_map=case.train.item_map,
             seen=case.exclude, config={"dataset": case.train.name}, group_maps=case.group_maps)  # fmt: skip
    m = Fitted.load(tmp_path / "run")
    raw_items = case.train.item_map.to_raw(np.arange(1, 4)).tolist()
    family = RECIPES[name].family
    if family.startswith("playlist"):  # a new playlist from its seed tracks
        rec = m.continue_playlist(raw_items, k=5)
        assert not set(map(str, raw_items)) & set(map(str, rec.items))
    else:
        user = case.train.user_map.to_raw([1])[0]
        history = raw_items if family == "history" else None
        rec = m.recommend(user, k=5, history=history)
        seen = case.exclude
        assert not set(case.train.item_map.to_internal(list(map(str, rec.items)))) & set(
            seen.indices[seen.indptr[1] : seen.indptr[2]]
        )
    assert 1 <= len(rec.items) <= 5 and all(np.isfinite(rec.scores))
    assert rec.scores == sorted(rec.scores, reverse=True)


# -- the same use cases from the command line -----------------------------------------------------------
def _cli(*args: str) -> dict:
    from typer.testing import CliRunner

    from segue.cli import app

    r = CliRunner().invoke(app, [*args, "--json"])
    assert r.exit_code == 0, r.output
    return __import__("json").loads(r.stdout)


def test_cli_playlist_continuation_session_and_similar(tmp_path: Path) -> None:
    import subprocess
    import sys

    import pandas as pd

    rng = np.random.default_rng(0)
    rows = [(f"p{u}-{k}", f"s{s}", f"u{u}") for u in range(12) for k in range(2)
            for s in rng.choice(np.arange(20) + (u % 3) * 20, 8, replace=False)]  # fmt: skip
    pd.DataFrame(rows, columns=["playlist", "track", "user"]).to_csv(tmp_path / "pl.csv", index=False)
    _cli(
        "train", "mass", str(tmp_path / "pl.csv"), "--out", str(tmp_path / "mass"), "--epochs", "1", "--negatives", "20"
    )
    got = _cli("recommend", str(tmp_path / "mass"), "--seed-tracks", "s1,s2,s3", "-k", "5")
    assert got["query"] == "model-context" and len(got["items"]) == 5
    assert not {"s1", "s2", "s3"} & {r["item"] for r in got["items"]}

    frame = make_frame(n_users=20, n_items=30, per_user=8)
    frame[["user", "item", "ts"]].to_csv(tmp_path / "plays.csv", index=False, header=["user", "item", "timestamp"])
    _cli("train", "caser", str(tmp_path / "plays.csv"), "--out", str(tmp_path / "caser"), "--epochs", "1",
         "--negatives", "10", "--set", "s=3")  # fmt: skip
    items = [str(i) for i in frame["item"].iloc[:3]]
    got = _cli("recommend", str(tmp_path / "caser"), "--session", ",".join(items), "-k", "4")
    assert got["query"] == "model-context" and not set(items) & {str(r["item"]) for r in got["items"]}

    _cli("train", "mf-bpr", str(tmp_path / "plays.csv"), "--out", str(tmp_path / "mf"), "--epochs", "1",
         "--negatives", "10")  # fmt: skip
    got = _cli("similar", str(tmp_path / "mf"), items[0], "-k", "3")
    assert (
        got["query"] == "item-vector"
        and len(got["items"]) == 3
        and items[0] not in {str(r["item"]) for r in got["items"]}
    )
    bad = subprocess.run(
        [sys.executable, "-c", "from segue.cli import main; main()", "recommend", str(tmp_path / "mf"),
         "--user", "u1", "--session", "1"], capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert bad.returncode == 2 and "Give exactly one of --user, --seed-tracks, --session or --audio" in bad.stderr


# -- segue.fit on DataFrames of the four shapes; save / load ----------------------------------------------
def _shapes() -> dict[str, tuple[str, object, dict]]:
    import pandas as pd

    plays = make_frame(n_users=20, n_items=30, per_user=8).rename(columns={"ts": "timestamp"})
    seqs = plays.sort_values("timestamp").groupby("user")["item"].agg(list).reset_index(name="items")
    rng = np.random.default_rng(0)
    lists = pd.DataFrame(
        [(f"p{u}-{k}", f"s{s}", f"u{u}") for u in range(12) for k in range(2)
         for s in rng.choice(np.arange(20) + (u % 3) * 20, 8, replace=False)],
        columns=["playlist", "track", "user"],
    )  # fmt: skip
    log = plays.rename(columns={"item": "track"})[["user", "track", "timestamp"]]
    return {
        "interactions": ("mf-bpr", plays[["user", "item", "timestamp"]], {}),
        "sequences": ("sasrec", seqs, {"options": {"max_len": 8}}),
        "playlists": ("mass", lists, {}),
        "sessions": ("caser", log, {"format": "sessions", "options": {"s": 3}}),
    }


@pytest.mark.parametrize("shape", ["interactions", "sequences", "playlists", "sessions"])
def test_fit_on_a_dataframe_of_each_shape(shape: str, tmp_path: Path) -> None:
    import segue

    model, frame, kw = _shapes()[shape]
    m = segue.fit(model, frame, negatives=10, epochs=1, out=tmp_path / "run", **kw)
    assert m.model.name == model and 0 <= m.metrics["test"]["HR@10"] <= 1 and "tie_rate" in m.metrics["test"]
    if shape == "playlists":
        rec = m.continue_playlist(["s1", "s2"], k=3)
    else:
        rec = m.recommend(str(frame["user"].iloc[0]), k=3)
    assert len(rec.items) == 3
    kept = m.save(tmp_path / "kept")
    again = segue.load(kept)
    assert again.recommend("nobody", k=2).query == "popular-fallback"
    if shape != "playlists":
        assert again.recommend(str(frame["user"].iloc[0]), k=3).items == rec.items


def test_fit_errors_are_one_sentence(tmp_path: Path) -> None:
    import pandas as pd

    import segue

    with pytest.raises(ConfigError, match="Unknown model 'nope'"):
        segue.fit("nope", pd.DataFrame({"user": ["a"], "item": ["b"]}))
    with pytest.raises(DataError, match="no 'item' column for the interactions format"):
        segue.fit("pop", pd.DataFrame({"user": ["a"], "thing": ["b"]}))
    with pytest.raises(DataError, match="DataFrame, row 2, column 'user': the value is empty"):
        segue.fit("pop", pd.DataFrame({"user": ["a", None], "item": ["b", "c"]}))
    with pytest.raises(DataError, match="must be a DataFrame, a file path"):
        segue.fit("pop", [("a", "b")])
    m = segue.fit("pop", make_frame(n_users=20, n_items=30)[["user", "item"]], negatives=5, out=tmp_path / "r")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(SegueError, match="mine"):
        m.save(mine, overwrite=True)  # a directory segue did not write is never replaced
    assert (mine / "notes.txt").read_text() == "keep me"
    with pytest.raises(SegueError, match="source of this command"):
        m.save(tmp_path, overwrite=True)


# -- the same use cases over HTTP (segue serve): the answers equal the library's --------------------------
def _http(run_dir: Path, tmp: Path):
    from fastapi.testclient import TestClient

    from segue.serving.app import create_app
    from segue.serving.export import ServingModel, export_run

    export = export_run(run_dir, tmp / f"{run_dir.name}-export", index="exact")
    return TestClient(create_app(ServingModel.load(export)), base_url="http://localhost")


@pytest.mark.parametrize("shape", ["playlists", "sessions"])
def test_http_playlist_continuation_next_track_and_user_history(shape: str, tmp_path: Path) -> None:
    import segue

    model, frame, kw = _shapes()[shape]
    m = segue.fit(model, frame, negatives=10, epochs=1, out=tmp_path / "run", **kw)
    client = _http(tmp_path / "run", tmp_path)
    if shape == "playlists":  # a new playlist from its seed tracks
        seeds = ["s1", "s2", "s3"]
        got = client.post("/recommend", json={"items": seeds, "k": 5})
        want = m.continue_playlist(seeds, k=5)
    else:  # the next tracks of a session in progress, and a known user's own latest plays (time order)
        session = [str(i) for i in frame["track"].iloc[:3]]
        got = client.post("/recommend", json={"items": session, "k": 4})
        want = m.next_track(session, k=4)
        user = str(frame["user"].iloc[0])
        by_user = client.get(f"/recommend?user={user}&k=4")
        assert by_user.status_code == 200 and by_user.json()["query"] == "user-history"
        assert [r["item"] for r in by_user.json()["items"]] == [str(i) for i in m.recommend(user, k=4).items]
    assert got.status_code == 200, got.text
    body = got.json()
    assert body["query"] == "model-context" and [r["item"] for r in body["items"]] == [str(i) for i in want.items]
    assert client.get("/recommend?user=nobody&k=2").json()["query"] == "popular-fallback"


def test_http_similar_tracks(tmp_path: Path) -> None:
    import segue

    model, frame, kw = _shapes()["interactions"]
    m = segue.fit(model, frame, negatives=10, epochs=1, out=tmp_path / "run", **kw)
    item = str(frame["item"].iloc[0])
    got = _http(tmp_path / "run", tmp_path).get(f"/similar?item={item}&k=3")
    assert got.status_code == 200 and [r["item"] for r in got.json()["items"]] == [
        str(i) for i in m.similar(item, 3).items
    ]
