"""Table 3.1 features at the four time points TP1-TP4 (spec B.1, B.3.2, B.3.3).

Time points (spec B.1): TP1 = launch, TP2 = launch + (deadline - launch)/2, TP3 = deadline (end of
fundraising), TP4 = deadline + 0.05 * (LEDD - deadline) ([AMBIG] spec choice; LEDD = the longest
estimated reward delivery date). Only comments and updates posted at or before the cut-off count.
Features of earlier points are carried forward; counts recomputed at a later point are separate
columns suffixed ``_tp2``/``_tp3``/``_tp4`` (spec B.3.3).

Column groups (``FeatureTable.groups``): ``project``, ``semantic``, ``creator``, ``backer``,
``temporal``, ``linguistic`` (the Table 3.4 ablation groups), and ``kim`` for the baseline's 8.

Decisions where the text is silent (each an [AMBIG] of segue's own, stated here):
- ``longest_delivery_days`` = LEDD - deadline in days (the duration TP4 and the target are measured from).
- ``backers_tp3``: |backers| is a final count, observable at the end of fundraising, so it enters at TP3
  (the text lists it "during fundraising"; it also says Kim's # of backers exists only from TP3).
- ``avg_update_interval_days_tp4``: mean gap between consecutive events of [launch, update_1, ...,
  update_k] up to the cut-off; with no update, the time from launch to the cut-off.
- ``avg_response_days_tp4``: for each backer question (a backer comment with "?"), the time to the next
  creator comment; unanswered by the cut-off: the time to the cut-off; 0 when there is no question.
- Temporal slots (spec B.3.2 [AMBIG] choice): 20 equal slots of the fundraising period; slots 1-10 at TP2,
  1-20 from TP3 on. A comment at the deadline falls in slot 20.
- Linguistic (TP4): the lexicon's category scores of the creator's updates (``liwc_updates_*``) and of
  the backers' comments (``liwc_comments_*``) up to the cut-off; the t-test selection of the text happens
  in :mod:`segue.delivery.selection`, inside each training fold.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import pandas as pd

from segue.delivery.clusters import SemanticRewardClusters
from segue.delivery.lexicon import Lexicon
from segue.delivery.schema import DeliveryData
from segue.delivery.text import count_sentences, smog
from segue.errors import ConfigError

N_SLOTS = 20
DAY = pd.Timedelta(days=1)


class TimePoint(StrEnum):
    TP1 = "TP1"
    TP2 = "TP2"
    TP3 = "TP3"
    TP4 = "TP4"

    @property
    def rank(self) -> int:
        return int(self.value[-1])

    @classmethod
    def parse(cls, s: str | TimePoint) -> TimePoint:
        try:
            return cls(str(s.value if isinstance(s, TimePoint) else s).upper())
        except ValueError as e:
            raise ConfigError(f"Unknown time point {s!r}; use TP1, TP2, TP3 or TP4.") from e


def ledd(data: DeliveryData) -> pd.Series:
    """The longest estimated delivery date of each project (index: project_id)."""
    return data.rewards.groupby("project_id")["estimated_delivery"].max().reindex(data.ids)


def cutoffs(data: DeliveryData, tp: TimePoint | str) -> pd.Series:
    """The cut-off timestamp of each project at ``tp`` (spec B.1)."""
    tp = TimePoint.parse(tp)
    p = data.projects.set_index("project_id")
    if tp is TimePoint.TP1:
        return p["launched_at"]
    if tp is TimePoint.TP2:
        return p["launched_at"] + (p["deadline"] - p["launched_at"]) / 2
    if tp is TimePoint.TP3:
        return p["deadline"]
    span = (ledd(data) - p["deadline"]).clip(lower=pd.Timedelta(0))
    return p["deadline"] + 0.05 * span


@dataclass
class FeatureTable:
    """Features of every project at one time point; ``groups`` maps each column to its group."""

    frame: pd.DataFrame  # index: project_id
    groups: dict[str, str]
    time_point: TimePoint

    def columns(self, *groups: str) -> list[str]:
        return [c for c in self.frame.columns if self.groups[c] in groups]


def _count_upto(events: pd.DataFrame, cut: pd.Series, ids: list[str], mask: pd.Series | None = None) -> pd.Series:
    e = events if mask is None else events[mask]
    ok = e["posted_at"] <= e["project_id"].map(cut)
    return e[ok].groupby("project_id").size().reindex(ids, fill_value=0).astype(float)


def _project_block(data: DeliveryData, clusters: SemanticRewardClusters | None) -> tuple[pd.DataFrame, dict[str, str]]:
    p = data.projects.set_index("project_id")
    ids = data.ids
    r = data.rewards
    rtext = r.groupby("project_id")["description"].agg(lambda s: "\n".join(s)).reindex(ids, fill_value="")
    f = pd.DataFrame(index=pd.Index(ids, name="project_id"))
    f["n_images"] = p["n_images"].astype(float)
    f["n_faqs"] = p["n_faqs"].astype(float)
    f["goal"] = p["goal"].astype(float)
    f["category"] = p["category"].astype(str)
    f["n_rewards"] = r.groupby("project_id").size().reindex(ids, fill_value=0).astype(float)
    f["n_reward_sentences"] = [float(count_sentences(t)) for t in rtext]
    f["n_bio_sentences"] = [float(count_sentences(t)) for t in p["creator_bio"]]
    f["fundraising_days"] = (p["deadline"] - p["launched_at"]) / DAY
    f["longest_delivery_days"] = ((ledd(data) - p["deadline"]) / DAY).clip(lower=0)
    f["smog_description"] = [smog(t) for t in p["description"]]
    f["smog_rewards"] = [smog(t) for t in rtext]
    f["smog_bio"] = [smog(t) for t in p["creator_bio"]]
    groups = dict.fromkeys(f.columns, "project")
    if clusters is not None:
        sem = clusters.project_features(r, ids)
        f = f.join(sem)
        groups.update(dict.fromkeys(sem.columns, "semantic"))
    return f, groups


def _fundraising_block(data: DeliveryData, tp: TimePoint) -> tuple[pd.DataFrame, dict[str, str]]:
    ids = data.ids
    cut = cutoffs(data, tp)
    c, u = data.comments, data.updates
    s = tp.value.lower()
    f = pd.DataFrame(index=pd.Index(ids, name="project_id"))
    groups: dict[str, str] = {}
    if tp is TimePoint.TP3:
        f["backers_tp3"] = data.projects.set_index("project_id")["backers"].astype(float)
        groups["backers_tp3"] = "project"
    f[f"project_comments_{s}"] = _count_upto(c, cut, ids)
    f[f"project_updates_{s}"] = _count_upto(u, cut, ids)
    f[f"creator_comments_{s}"] = _count_upto(c, cut, ids, c["is_creator"].astype(bool))
    f[f"creator_updates_{s}"] = _count_upto(u, cut, ids)
    groups.update({f"project_comments_{s}": "project", f"project_updates_{s}": "project"})
    groups.update({f"creator_comments_{s}": "creator", f"creator_updates_{s}": "creator"})
    return f, groups


def _slots(data: DeliveryData, upto: int) -> tuple[pd.DataFrame, dict[str, str]]:
    p = data.projects.set_index("project_id")
    c = data.comments
    launch = c["project_id"].map(p["launched_at"])
    dur = c["project_id"].map(p["deadline"] - p["launched_at"])
    frac = ((c["posted_at"] - launch) / dur).to_numpy(float) if len(c) else np.zeros(0)
    inside = (frac >= 0) & (frac <= 1)
    slot = np.minimum(np.floor(frac * N_SLOTS).astype(int) + 1, N_SLOTS) if len(c) else np.zeros(0, int)
    df = pd.DataFrame({"project_id": c["project_id"].to_numpy()[inside], "slot": slot[inside]})
    tab = df.groupby(["project_id", "slot"]).size().unstack(fill_value=0)
    tab = tab.reindex(index=data.ids, columns=range(1, upto + 1), fill_value=0).fillna(0).astype(float)
    tab.columns = [f"comment_slot_{k:02d}" for k in range(1, upto + 1)]
    tab.index.name = "project_id"
    return tab, dict.fromkeys(tab.columns, "temporal")


def _activity_tp4(data: DeliveryData, lexicon: Lexicon | None) -> tuple[pd.DataFrame, dict[str, str]]:
    ids = data.ids
    cut = cutoffs(data, TimePoint.TP4)
    p = data.projects.set_index("project_id")
    c = data.comments[data.comments["posted_at"] <= data.comments["project_id"].map(cut)]
    u = data.updates[data.updates["posted_at"] <= data.updates["project_id"].map(cut)]
    f = pd.DataFrame(index=pd.Index(ids, name="project_id"))
    creator = c["is_creator"].astype(bool)
    f["creator_comments_tp4"] = c[creator].groupby("project_id").size().reindex(ids, fill_value=0).astype(float)
    f["creator_updates_tp4"] = u.groupby("project_id").size().reindex(ids, fill_value=0).astype(float)
    intervals, responses = [], []
    ub = {k: g.sort_values() for k, g in u.groupby("project_id")["posted_at"]}
    cb = {k: g.sort_values("posted_at") for k, g in c.groupby("project_id")}
    for pid in ids:
        events = [p.at[pid, "launched_at"], *list(ub.get(pid, []))]
        if len(events) > 1:
            intervals.append(float(np.mean(np.diff(np.array(events, dtype="datetime64[ns]"))) / np.timedelta64(1, "D")))
        else:
            intervals.append((cut[pid] - p.at[pid, "launched_at"]) / DAY)
        g = cb.get(pid)
        resp = []
        if g is not None:
            cre = g.loc[g["is_creator"].astype(bool), "posted_at"].to_numpy(dtype="datetime64[ns]")
            q = g[(~g["is_creator"].astype(bool)) & g["text"].str.contains("?", regex=False)]
            for t in q["posted_at"].to_numpy(dtype="datetime64[ns]"):
                later = cre[cre > t]
                end = later.min() if len(later) else np.datetime64(cut[pid], "ns")
                resp.append((end - t) / np.timedelta64(1, "D"))
        responses.append(float(np.mean(resp)) if resp else 0.0)
    f["avg_update_interval_days_tp4"] = intervals
    f["avg_response_days_tp4"] = responses
    groups = dict.fromkeys(f.columns, "creator")
    backer = c[~creator]
    f["backer_comments_tp4"] = backer.groupby("project_id").size().reindex(ids, fill_value=0).astype(float)
    f["commenting_backers_tp4"] = (
        backer.groupby("project_id")["author"].nunique().reindex(ids, fill_value=0).astype(float)
    )
    f["backer_questions_tp4"] = (
        backer[backer["text"].str.contains("?", regex=False)].groupby("project_id").size().reindex(ids, fill_value=0)
    ).astype(float)
    groups.update(dict.fromkeys(["backer_comments_tp4", "commenting_backers_tp4", "backer_questions_tp4"], "backer"))
    if lexicon is not None:
        utext = u.groupby("project_id")["text"].agg(" ".join).reindex(ids, fill_value="")
        btext = backer.groupby("project_id")["text"].agg(" ".join).reindex(ids, fill_value="")
        for prefix, texts in (("liwc_updates_", utext), ("liwc_comments_", btext)):
            scores = pd.DataFrame([lexicon.score(t) for t in texts], index=f.index, columns=list(lexicon.categories))
            scores.columns = [prefix + _safe(cat) for cat in lexicon.categories]
            f = f.join(scores.astype(float))
            groups.update(dict.fromkeys(scores.columns, "linguistic"))
    return f, groups


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in name)


def kim_features(data: DeliveryData, tp: TimePoint | str) -> pd.DataFrame:
    """Kim et al.'s 8 baseline features (spec B.5); # of backers and percent raised only from TP3 on."""
    tp = TimePoint.parse(tp)
    p = data.projects.set_index("project_id")
    f = pd.DataFrame(index=pd.Index(data.ids, name="project_id"))
    f["kim_rewards"] = data.rewards.groupby("project_id").size().reindex(data.ids, fill_value=0).astype(float)
    f["kim_goal"] = p["goal"].astype(float)
    f["kim_duration_days"] = (p["deadline"] - p["launched_at"]) / DAY
    if tp.rank >= 3:
        f["kim_backers"] = p["backers"].astype(float)
        f["kim_percent_raised"] = 100.0 * p["pledged"] / p["goal"].where(p["goal"] > 0, np.nan)
        f["kim_percent_raised"] = f["kim_percent_raised"].fillna(0.0)
    f["kim_backed_projects"] = p["creator_backed_projects"].astype(float)
    f["kim_created_projects"] = p["creator_created_projects"].astype(float)
    f["category"] = p["category"].astype(str)
    return f


def build_features(
    data: DeliveryData,
    tp: TimePoint | str,
    clusters: SemanticRewardClusters | None = None,
    lexicon: Lexicon | None = None,
) -> FeatureTable:
    """All Table 3.1 features available at ``tp`` (carried forward), plus the Kim baseline's 8 (group ``kim``)."""
    tp = TimePoint.parse(tp)
    f, groups = _project_block(data, clusters)
    blocks = []
    if tp.rank >= 2:
        blocks += [_fundraising_block(data, TimePoint.TP2), _slots(data, N_SLOTS // 2 if tp.rank == 2 else N_SLOTS)]
    if tp.rank >= 3:
        blocks.append(_fundraising_block(data, TimePoint.TP3))
    if tp.rank >= 4:
        blocks.append(_activity_tp4(data, lexicon))
    for b, g in blocks:
        f = f.join(b)
        groups.update(g)
    kim = kim_features(data, tp).drop(columns="category")
    f = f.join(kim)
    groups.update(dict.fromkeys(kim.columns, "kim"))
    return FeatureTable(f, groups, tp)


def labels(data: DeliveryData) -> pd.DataFrame:
    """``on_time`` (1.0/0.0/NaN) and ``delivery_days`` indexed by project_id."""
    p = data.projects.set_index("project_id")
    return pd.DataFrame({"on_time": p["on_time"].astype("Float64").astype(float), "delivery_days": p["delivery_days"]})
