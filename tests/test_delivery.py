"""segue.delivery (dissertation chapter 3): schema errors, hand-computed features, selection, models, CLI."""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from segue.delivery.clusters import ClusterConfig, SemanticRewardClusters, bic, choose_k, cluster_quality
from segue.delivery.features import TimePoint, build_features, cutoffs, kim_features
from segue.delivery.lexicon import DicLexicon, EmpathLexicon, Lexicon
from segue.delivery.models import (
    DeliveryModel,
    EvalConfig,
    boxcox,
    boxcox_lambda,
    evaluate_classification,
    evaluate_regression,
    nrmse,
    train,
)
from segue.delivery.schema import Comment, Project, Reward, Update, from_records, load_data, load_project_json
from segue.delivery.selection import BorutaConfig, boruta, step_aic, ttest_select, vif, vif_filter
from segue.delivery.synthetic import SyntheticConfig, generate
from segue.delivery.text import count_sentences, reward_tokens, smog, syllables
from segue.errors import ConfigError, DataError, RunDirError

D0 = datetime(2013, 1, 1)


def day(n: float) -> datetime:
    return D0 + timedelta(days=n)


def project(pid: str, **kw) -> Project:
    base = dict(
        project_id=pid,
        category="games",
        goal=1000.0,
        pledged=1500.0,
        backers=30,
        launched_at=day(0),
        deadline=day(20),
        n_images=3,
        n_faqs=1,
        description="The cat sat. An elephant ate a beautiful banana.",
        creator_bio="I make games. I live in Ohio.",
        creator_backed_projects=2,
        creator_created_projects=1,
        on_time=True,
        delivery_days=50.0,
    )
    base.update(kw)
    return Project(**base)


@pytest.fixture
def three():
    """Three projects whose every feature is computed by hand in the tests below."""
    projects = [
        project("a"),
        project(
            "b",
            category="dance",
            goal=200.0,
            pledged=400.0,
            backers=10,
            deadline=day(40),
            n_images=0,
            n_faqs=0,
            description="Dance.",
            creator_bio="",
            on_time=False,
            delivery_days=None,
        ),
        project(
            "c",
            category="film",
            goal=5000.0,
            pledged=5000.0,
            backers=100,
            launched_at=day(10),
            deadline=day(30),
            description="",
            creator_bio="Hello!",
            on_time=None,
            delivery_days=90.0,
        ),
    ]
    rewards = [
        Reward("a", "A signed shirt. Thanks!", 20, day(20 + 60)),
        Reward("a", "A game.", 10, day(20 + 100)),
        Reward("b", "A shirt", 10, day(40 + 40)),
        Reward("c", "A film and a game", 100, day(30 + 200)),
    ]
    comments = [
        Comment("a", "u1", False, day(1), "When will it ship?"),  # slot 2 of 20 (1 day of 20), a question
        Comment("a", "creator", True, day(3), "Soon!"),  # creator answers 2 days later; slot 4
        Comment("a", "u2", False, day(15), "Great."),  # slot 16 (after TP2 = day 10)
        Comment("a", "u1", False, day(21), "Any news?"),  # after the deadline, before TP4 = day 20 + 5 = 25
        Comment("a", "u3", False, day(40), "Late?"),  # after TP4: never counted
        Comment("b", "u9", False, day(40), "Bye"),  # exactly at the deadline: slot 20
    ]
    updates = [
        Update("a", day(5), "We are happy and on schedule."),
        Update("a", day(22), "Sorry, a delay."),
        Update("c", day(100), "Shipped."),  # after c's TP4 (30 + 10 = day 40)
    ]
    return from_records(projects, rewards, comments, updates)


# --------------------------------------------------------------------------- text


def test_text_helpers_match_hand_counts():
    assert count_sentences("Hi there. Yes!  Really?\nNew line") == 4
    assert count_sentences("...") == 0
    assert [syllables(w) for w in ("cat", "elephant", "beautiful", "banana", "make", "table")] == [1, 3, 3, 3, 1, 2]
    assert smog("The cat sat. An elephant ate a beautiful banana.") == pytest.approx(
        1.0430 * math.sqrt(3 * 30 / 2) + 3.1291
    )
    assert smog("") == 0.0
    assert reward_tokens("The Signed copies, of 2 books!") == ["sign", "copi", "book"]


# --------------------------------------------------------------------------- schema errors


def _write(tmp_path: Path, data, **override) -> Path:
    d = tmp_path / "data"
    data.save(d, "csv")
    for name, fn in override.items():
        t = pd.read_csv(d / f"{name}.csv", dtype=str, keep_default_na=False)
        fn(t).to_csv(d / f"{name}.csv", index=False)
    return d


def test_csv_round_trip(tmp_path, three):
    back = load_data(_write(tmp_path, three))
    assert back.ids == ["a", "b", "c"] and len(back.rewards) == 4 and len(back.comments) == 6
    assert pd.isna(back.projects["on_time"][2]) and back.projects["on_time"][1] == False  # noqa: E712


def test_missing_column_names_file_and_column(tmp_path, three):
    d = _write(tmp_path, three, projects=lambda t: t.drop(columns="goal"))
    with pytest.raises(DataError, match=r"projects\.csv has no column 'goal'"):
        load_data(d)


def test_non_date_is_named(tmp_path, three):
    d = _write(tmp_path, three, comments=lambda t: t.assign(posted_at=["soon", *t["posted_at"][1:]]))
    with pytest.raises(DataError, match=r"comments\.csv column 'posted_at' row 1 is 'soon', which is not a date"):
        load_data(d)


def test_empty_reward_text_is_named(tmp_path, three):
    d = _write(tmp_path, three, rewards=lambda t: t.assign(description=["A", "  ", "B", "C"]))
    with pytest.raises(DataError, match=r"rewards\.csv row 2 \(project 'a'\) has an empty reward description"):
        load_data(d)


def test_project_without_rewards_is_named(tmp_path, three):
    d = _write(tmp_path, three, rewards=lambda t: t[t["project_id"] != "b"])
    with pytest.raises(DataError, match=r"Project 'b' in .*projects\.csv has no rewards"):
        load_data(d)


def test_other_bad_inputs(tmp_path, three):
    with pytest.raises(DataError, match="not a number"):
        load_data(_write(tmp_path / "1", three, projects=lambda t: t.assign(goal=["x", "1", "2"])))
    with pytest.raises(DataError, match="is not in"):
        load_data(_write(tmp_path / "2", three, updates=lambda t: t.assign(project_id=["zz", "a", "c"])))
    with pytest.raises(DataError, match="repeats project_id"):
        load_data(_write(tmp_path / "3", three, projects=lambda t: t.assign(project_id=["a", "a", "c"])))
    with pytest.raises(DataError, match="does not exist"):
        load_data(tmp_path / "nowhere")
    with pytest.raises(DataError, match=r"no rewards\.parquet or rewards\.csv"):
        d = _write(tmp_path / "4", three)
        (d / "rewards.csv").unlink()
        load_data(d)


# --------------------------------------------------------------------------- features (hand-computed)


def hand_clusters() -> SemanticRewardClusters:
    """Word clusters: {shirt, sign, thank} -> 0, {game, film} -> 1; semantic clusters at (1, 0) "easy" and (0, 1) "hard"."""
    words = {"shirt": 0, "sign": 0, "thank": 0, "game": 1, "film": 1}
    return SemanticRewardClusters(ClusterConfig(), words, np.array([[1.0, 0.0], [0.0, 1.0]]))


def test_time_points(three):
    assert list(cutoffs(three, "TP1")) == [day(0), day(0), day(10)]
    assert list(cutoffs(three, "TP2")) == [day(10), day(20), day(20)]
    assert list(cutoffs(three, "TP3")) == [day(20), day(40), day(30)]
    # TP4 = deadline + 5% of (LEDD - deadline): a: 20 + 0.05*100, b: 40 + 0.05*40, c: 30 + 0.05*200
    assert list(cutoffs(three, "TP4")) == [day(25), day(42), day(40)]
    with pytest.raises(ConfigError, match="Unknown time point"):
        TimePoint.parse("TP5")


def test_tp1_features_by_hand(three):
    f = build_features(three, "TP1", hand_clusters()).frame
    a, b, c = f.loc["a"], f.loc["b"], f.loc["c"]
    assert (a.n_images, a.n_faqs, a.goal, a.category, a.n_rewards) == (3, 1, 1000, "games", 2)
    assert a.n_reward_sentences == 3 and b.n_reward_sentences == 1  # "A signed shirt." "Thanks!" "A game."
    assert (a.n_bio_sentences, b.n_bio_sentences, c.n_bio_sentences) == (2, 0, 1)
    assert (a.fundraising_days, b.fundraising_days, c.fundraising_days) == (20, 40, 20)
    assert (a.longest_delivery_days, b.longest_delivery_days, c.longest_delivery_days) == (100, 40, 200)
    assert a.smog_description == pytest.approx(1.0430 * math.sqrt(45) + 3.1291)
    assert b.smog_description == pytest.approx(3.1291) and c.smog_description == 0.0
    assert a.smog_rewards == pytest.approx(3.1291)  # no word of 3+ syllables
    # rewards: a1 "signed shirt thanks" -> (3, 0) -> easy, 20 backers; a2 "game" -> (0, 1) -> hard, 10; b "shirt" -> easy;
    # c "film game" -> hard, 100 backers
    assert list(f.loc[:, ["semantic_cluster_01", "semantic_cluster_02"]].to_numpy().ravel()) == [20, 10, 10, 0, 0, 100]
    assert not any(col.endswith(("_tp2", "_tp3", "_tp4")) or col.startswith("comment_slot") for col in f.columns)


def test_tp2_tp3_counts_and_slots_by_hand(three):
    f2 = build_features(three, "TP2", hand_clusters()).frame
    assert f2.loc["a", "project_comments_tp2"] == 2 and f2.loc["a", "creator_comments_tp2"] == 1
    assert f2.loc["a", "project_updates_tp2"] == 1 and f2.loc["a", "creator_updates_tp2"] == 1
    assert [c for c in f2.columns if c.startswith("comment_slot")] == [f"comment_slot_{k:02d}" for k in range(1, 11)]
    assert (
        f2.loc["a", "comment_slot_02"] == 1
        and f2.loc["a", "comment_slot_04"] == 1
        and f2.loc["a"].filter(like="slot").sum() == 2
    )
    f3 = build_features(three, "TP3", hand_clusters()).frame
    assert f3.loc["a", "comment_slot_16"] == 1 and f3.loc["b", "comment_slot_20"] == 1
    assert f3.loc["a", "project_comments_tp3"] == 3 and f3.loc["a", "project_comments_tp2"] == 2  # carried forward
    assert f3.loc["b", "project_comments_tp3"] == 1 and f3.loc["b", "project_comments_tp2"] == 0
    assert list(f3["backers_tp3"]) == [30, 10, 100] and "backers_tp3" not in f2.columns


def test_tp4_activity_and_lexicon_by_hand(three, tmp_path):
    dic = tmp_path / "mini.dic"
    dic.write_text("%\n1\tposemo\n2\tnegemo\n%\nhapp*\t1\nsorry\t2\ndelay\t2\n")
    f = build_features(three, "TP4", hand_clusters(), DicLexicon(dic)).frame
    a, b, c = f.loc["a"], f.loc["b"], f.loc["c"]
    assert (a.creator_comments_tp4, a.creator_updates_tp4, a.backer_comments_tp4) == (1, 2, 3)
    assert (a.commenting_backers_tp4, a.backer_questions_tp4) == (2, 2)
    # updates at days 5 and 22 after launch at 0: gaps 5 and 17
    assert a.avg_update_interval_days_tp4 == pytest.approx(11.0)
    # questions at day 1 (answered at day 3: 2 days) and day 21 (unanswered by TP4 = day 25: 4 days)
    assert a.avg_response_days_tp4 == pytest.approx(3.0)
    assert b.avg_update_interval_days_tp4 == pytest.approx(42.0) and b.avg_response_days_tp4 == 0.0
    assert c.creator_updates_tp4 == 0 and c.avg_update_interval_days_tp4 == pytest.approx(30.0)
    # updates of a: "We are happy and on schedule. Sorry, a delay." = 9 words: 1 posemo, 2 negemo
    assert a.liwc_updates_posemo == pytest.approx(100 / 9) and a.liwc_updates_negemo == pytest.approx(200 / 9)
    assert a.liwc_comments_posemo == 0.0 and b.liwc_comments_negemo == 0.0


def test_kim_features_by_hand(three):
    k1, k3 = kim_features(three, "TP1"), kim_features(three, "TP3")
    assert "kim_backers" not in k1.columns and list(k3["kim_backers"]) == [30, 10, 100]
    assert list(k3["kim_percent_raised"]) == [150.0, 200.0, 100.0]
    assert list(k1["kim_rewards"]) == [2, 1, 1] and list(k1["kim_created_projects"]) == [1, 1, 1]


def test_tp1_features_ignore_later_comments(three):
    before = build_features(three, "TP1", hand_clusters()).frame
    more = from_records(
        [project("a"), project("b", deadline=day(40)), project("c", launched_at=day(10), deadline=day(30))],
        [
            Reward("a", "A shirt.", 20, day(80)),
            Reward("b", "A shirt", 10, day(80)),
            Reward("c", "A film", 100, day(230)),
        ],
    )
    assert list(build_features(more, "TP1").frame.columns) == [
        c for c in before.columns if not c.startswith("semantic")
    ]
    extra = from_records(
        [
            Project(
                **{
                    **r,
                    "launched_at": r["launched_at"].to_pydatetime(),
                    "deadline": r["deadline"].to_pydatetime(),
                    "on_time": None if pd.isna(r["on_time"]) else bool(r["on_time"]),
                    "delivery_days": None if pd.isna(r["delivery_days"]) else r["delivery_days"],
                }
            )
            for r in three.projects.to_dict("records")
        ],
        [
            Reward(r["project_id"], r["description"], r["backers"], r["estimated_delivery"].to_pydatetime())
            for r in three.rewards.to_dict("records")
        ],
        [Comment("a", "u7", False, day(2), "So many comments?"), Comment("b", "creator", True, day(1), "Hi")],
        [Update("a", day(1), "Update!")],
    )
    pd.testing.assert_frame_equal(build_features(extra, "TP1", hand_clusters()).frame, before)


# --------------------------------------------------------------------------- clusters, lexicon


def test_bic_picks_planted_k_on_separable_blobs():
    rng = np.random.default_rng(0)
    centers = np.array([[0, 0], [20, 0], [0, 20], [20, 20]], dtype=float)
    pts = np.vstack([c + rng.normal(0, 0.5, (50, 2)) for c in centers])
    k, labels, _, curve = choose_k(pts, (1, 8), n=len(pts), n_init=5, seed=0)
    assert k == 4 and len(set(labels)) == 4 and curve[4] < curve[3] and curve[4] < curve[5]
    lab = np.zeros(4, dtype=int)
    assert bic(np.array([[3.0, 4.0]] * 4), lab, np.zeros((1, 2)), n=math.e) == pytest.approx(20 + 2)


def test_cluster_pipeline_fits_saves_and_reloads():
    texts = ["signed shirt thanks", "thanks shirt sticker", "game video film", "film video vip"] * 10
    cl = SemanticRewardClusters.fit(
        texts, config=ClusterConfig(vector_size=8, min_count=2, word_k=(2, 4), reward_k=(1, 4), n_init=2)
    )
    again = SemanticRewardClusters.from_json(json.loads(json.dumps(cl.to_json())))
    assert 2 <= cl.k1 <= 4 and again.k == cl.k and list(again.assign(texts[:4])) == list(cl.assign(texts[:4]))
    with pytest.raises(DataError, match="min_count"):
        SemanticRewardClusters.fit(["apple banana"], config=ClusterConfig(min_count=5))
    with pytest.raises(ConfigError, match="word_k"):
        ClusterConfig(word_k=(5, 2))
    q = cluster_quality(pd.Series([1, 1, 2, 2]), pd.Series([1.0, 1.0, 0.0, 1.0]))
    assert list(q["cluster"]) == [1, 2] and list(q["p_on_time"]) == [1.0, 0.5]


def test_lexicons(tmp_path):
    e = EmpathLexicon()
    assert isinstance(e, Lexicon) and len(e.categories) == 194
    s = e.score("Sorry for the delay, we are sad.")
    assert s["sadness"] > 0 and sum(e.score("").values()) == 0
    bad = tmp_path / "bad.dic"
    bad.write_text("no header\n")
    with pytest.raises(DataError, match=r"not a LIWC \.dic file"):
        DicLexicon(bad)
    bad.write_text("%\n1\tposemo\n%\nhappy\t7\n")
    with pytest.raises(DataError, match="category id '7'"):
        DicLexicon(bad)


# --------------------------------------------------------------------------- selection


def test_vif_drops_the_collinear_column():
    rng = np.random.default_rng(0)
    x = pd.DataFrame({"a": rng.normal(size=200), "b": rng.normal(size=200), "c": rng.normal(size=200)})
    x["d"] = x["a"] + x["b"] + rng.normal(0, 0.01, 200)
    assert vif(x.to_numpy()).max() > 1000
    assert vif_filter(x) in (["b", "c", "d"], ["a", "c", "d"], ["a", "b", "c"])
    x["const"] = 1.0
    assert "const" not in vif_filter(x)
    assert vif_filter(x[["a", "b", "c"]]) == ["a", "b", "c"]


def test_boruta_ttest_and_step_aic():
    rng = np.random.default_rng(1)
    x = pd.DataFrame(rng.normal(size=(300, 5)), columns=list("abcde"))
    y = (x["a"] + 0.8 * x["b"] + rng.normal(0, 0.3, 300) > 0).astype(int).to_numpy()
    res = boruta(x, y, BorutaConfig(max_iter=15, n_estimators=50))
    assert {"a", "b"} <= set(res.confirmed) and not {"c", "d", "e"} & set(res.confirmed)
    assert res.z["a"] > res.z["e"]
    assert ttest_select(x, y) == ["a", "b"]
    yr = 2 * x["a"].to_numpy() - x["c"].to_numpy() + rng.normal(0, 0.1, 300)
    kept = step_aic(x.to_numpy(), yr, list(x.columns))

    def aic(cols):  # R's extractAIC for lm: n log(RSS/n) + 2 (p + 1)
        d = np.column_stack([np.ones(300), x[list(cols)].to_numpy()])
        res = yr - d @ np.linalg.lstsq(d, yr, rcond=None)[0]
        return 300 * np.log(res @ res / 300) + 2 * (len(cols) + 1)

    subsets = [[c for i, c in enumerate("abcde") if m >> i & 1] for m in range(32)]
    assert {"a", "c"} <= set(kept) and aic(kept) == pytest.approx(min(aic(s) for s in subsets))


def test_boxcox_and_nrmse():
    y = np.array([1.0, 5.0, 20.0, 100.0])
    for lam in (0.0, 0.11, -0.5):
        from scipy.special import inv_boxcox

        assert np.allclose(inv_boxcox(boxcox(y, lam), lam), y)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 2))
    z = 5 + x @ np.array([1.0, -0.5]) + rng.normal(0, 0.2, 500)
    assert boxcox_lambda(x, np.exp(z)) == pytest.approx(0.0, abs=0.05)
    assert nrmse(10.0, np.array([0.0, 20.0, 50.0])) == pytest.approx((10 / 50, 10 / (70 / 3)))


# --------------------------------------------------------------------------- synthetic data, models, CLI


@pytest.fixture(scope="module")
def synth():
    data = generate(SyntheticConfig(n_projects=500, seed=3))
    cl = SemanticRewardClusters.fit(
        list(data.rewards["description"]), config=ClusterConfig(word_k=(3, 10), reward_k=(1, 12), n_init=3, patience=3)
    )
    return data, cl


def test_synthetic_is_labelled_everywhere(synth, tmp_path):
    data, _ = synth
    assert data.synthetic and all(p.startswith("SYN-") for p in data.ids)
    assert data.projects["description"].str.startswith("(SYNTHETIC)").all()
    d = data.save(tmp_path / "s")
    assert "SYNTHETIC" in (d / "SYNTHETIC.txt").read_text() and load_data(d).synthetic
    late = 1 - data.projects["on_time"].astype(float)
    by_cat = late.groupby(data.projects["category"]).mean()
    assert by_cat[["dance", "theater"]].max() < by_cat[["games", "technology", "film"]].min()
    with pytest.raises(ConfigError):
        SyntheticConfig(n_projects=1)


def test_pipeline_recovers_planted_tp1_effects(synth):
    data, cl = synth
    ft = build_features(data, "TP1", cl)
    cfg = EvalConfig(n_folds=3, paper_mode=True, boruta=BorutaConfig(max_iter=12, n_estimators=60))
    r = evaluate_classification(ft, data, cfg)
    top = list(r.importance["feature"][:6])
    assert {"goal", "category", "longest_delivery_days"} <= set(top), top
    assert np.mean(r.ours) > np.mean(r.majority) + 0.05
    reg = evaluate_regression(ft, data, EvalConfig(n_folds=3, paper_mode=True, en_alphas=20))
    assert set(reg.rmse) == {"kim", "semantic", "other", "all"} and all(v > 0 for v in reg.rmse.values())
    assert reg.lambdas == [0.11] * 3


def test_tp4_creator_activity_and_ablation(synth):
    data, cl = synth
    ft = build_features(data, "TP4", cl, None)
    cfg = EvalConfig(n_folds=3, paper_mode=True, boruta=BorutaConfig(max_iter=8, n_estimators=40))
    r = evaluate_classification(ft, data, cfg)
    assert set(r.ablation) == {"linguistic", "semantic", "backer", "creator"}
    top = set(r.importance["feature"][:8])
    assert top & {"creator_updates_tp4", "creator_comments_tp4", "backer_questions_tp4", "avg_response_days_tp4"}, top


def test_cv_needs_enough_labels(three):
    ft = build_features(three, "TP1", hand_clusters())
    with pytest.raises(DataError, match="stratified CV needs at least"):
        evaluate_classification(ft, three, EvalConfig(n_folds=3))
    with pytest.raises(ConfigError):
        EvalConfig(n_folds=1)


def test_train_save_load_predict(synth, tmp_path):
    data, cl = synth
    small = data.subset(data.ids[:200])
    m = train(small, "TP3", cl, "none", EvalConfig(boruta=BorutaConfig(max_iter=8, n_estimators=40)))
    m.save(tmp_path / "m")
    assert (tmp_path / "m" / "classifier.txt").read_text().startswith("tree")
    back = DeliveryModel.load(tmp_path / "m")
    one = small.subset(small.ids[:1])
    a, b = m.predict(one), back.predict(one)
    assert np.allclose(a["p_on_time"], b["p_on_time"]) and np.allclose(a["delivery_days"], b["delivery_days"])
    assert 0 <= float(a["p_on_time"].iloc[0]) <= 1 and back.synthetic
    (tmp_path / "m" / "model.json").write_text("{")
    with pytest.raises(RunDirError, match="damaged"):
        DeliveryModel.load(tmp_path / "m")
    with pytest.raises(RunDirError, match="not a saved delivery model"):
        DeliveryModel.load(tmp_path)


def _project_json(path: Path, **over) -> Path:
    obj = {
        "project": {
            "project_id": "new",
            "category": "games",
            "goal": 5000,
            "pledged": 6000,
            "backers": 80,
            "launched_at": "2014-03-01",
            "deadline": "2014-03-31",
            "n_images": 4,
            "n_faqs": 1,
            "description": "A new board game.",
            "creator_bio": "We make games.",
            "creator_backed_projects": 3,
            "creator_created_projects": 1,
        },
        "rewards": [
            {"description": "A copy of the game.", "backers": 60, "estimated_delivery": "2014-09-01"},
            {"description": "Thanks and a sticker.", "backers": 20, "estimated_delivery": "2014-04-15"},
        ],
    }
    obj.update(over)
    path.write_text(json.dumps(obj))
    return path


def test_cli_generate_train_predict_and_errors(tmp_path):
    from typer.testing import CliRunner

    from segue.cli import app

    run = CliRunner().invoke
    r = run(app, ["delivery", "generate", str(tmp_path / "d"), "--n-projects", "150", "--seed", "1", "--format", "csv"])
    assert r.exit_code == 0 and "SYNTHETIC" in r.output
    opts = ["--word-k", "3:4", "--reward-k", "1:4", "--n-init", "1", "--lexicon", "none"]
    r = run(
        app,
        ["delivery", "features", str(tmp_path / "d"), "-t", "TP2", "--json", "--out", str(tmp_path / "f.csv"), *opts],
    )
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout[r.stdout.index("{") :])
    assert info["projects"] == 150 and info["synthetic"] and pd.read_csv(tmp_path / "f.csv").shape[0] == 150
    r = run(
        app,
        [
            "delivery",
            "train",
            str(tmp_path / "d"),
            "--out",
            str(tmp_path / "m"),
            "-t",
            "TP1",
            "--boruta-iter",
            "5",
            *opts,
        ],
    )
    assert r.exit_code == 0, r.output
    r = run(app, ["delivery", "predict", str(tmp_path / "m"), str(_project_json(tmp_path / "p.json")), "--json"])
    assert r.exit_code == 0, r.output
    pred = json.loads(r.stdout[r.stdout.index("{") :])
    assert 0 <= pred["p_on_time"] <= 1 and pred["delivery_days"] >= 0 and pred["model_trained_on_synthetic_data"]
    r = run(app, ["delivery", "predict", str(tmp_path / "m"), str(_project_json(tmp_path / "q.json", rewards=[]))])
    assert r.exit_code == 2 and "has no rewards" in r.output
    r = run(app, ["delivery", "evaluate", str(tmp_path / "d"), "-t", "TP9"])
    assert r.exit_code == 2 and "error: Unknown time point 'TP9'" in r.output
    r = run(app, ["delivery", "features", str(tmp_path / "nowhere")])
    assert r.exit_code == 2 and r.output.count("\n") == 1


def test_project_json_errors(tmp_path):
    with pytest.raises(DataError, match="not valid JSON"):
        (tmp_path / "x.json").write_text("{")
        load_project_json(tmp_path / "x.json")
    with pytest.raises(DataError, match="'launched_at'"):
        p = _project_json(tmp_path / "y.json")
        obj = json.loads(p.read_text())
        obj["project"]["launched_at"] = "tomorrow"
        p.write_text(json.dumps(obj))
        load_project_json(p)


def test_delivery_imports_no_recommender_code():
    from tests.test_import_graph import import_graph

    graph = import_graph()
    for mod, deps in graph.items():
        if mod.startswith("segue.delivery"):
            assert not [d for d in deps if not d.startswith(("segue.delivery", "segue.errors"))], (mod, deps)
