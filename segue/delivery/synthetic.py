"""A seeded generator of SYNTHETIC crowdfunding projects with planted delivery structure.

SYNTHETIC: nothing here is Kickstarter data. Project ids start with ``SYN-``, every description starts
with "(SYNTHETIC)", :class:`~segue.delivery.schema.DeliveryData` carries ``synthetic=True`` and a saved
directory holds ``SYNTHETIC.txt``.

Planted structure (what chapter 3 reports; spec B.2 "Category effect" and Table 3.2):

- **category**: dance and theater are mostly on time; games, technology and film mostly late
  (``CATEGORY_LATE_LOGIT``);
- **goal**: a larger goal makes lateness likelier (``GOAL_LATE``, per standard deviation of log goal);
- **estimated duration**: a longer longest-estimated delivery duration makes lateness *less* likely
  (``ESTIMATE_LATE``, per s.d. of log duration): creators who budget time deliver on time;
- **reward difficulty**: rewards come from easy (thanks, credits, shirts), medium (prints, books) and
  hard (films, games, VIP) word pools; hard rewards lengthen estimates and real durations;
- **creator activeness** in the first 5% of the delivery period: on-time creators post more updates and
  comments; late projects draw more backer questions; update wording leans to "shipped" vs "delay".

``late ~ Bernoulli(sigmoid(base + category + GOAL_LATE*z(log goal) + ESTIMATE_LATE*z(log estimate) + noise))``.
The delivery duration (days after the deadline) is the estimate times U(0.55, 1.0) when on time and
times 1 + LogNormal(-0.4, 0.5) (+ a goal term) when late; about 73% of projects have it (1,598/2,198).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from segue.delivery.schema import DeliveryData, validate
from segue.errors import ConfigError

CATEGORY_LATE_LOGIT = {
    "dance": -1.8,
    "theater": -1.5,
    "music": -0.3,
    "art": -0.4,
    "publishing": -0.2,
    "design": 0.5,
    "film": 0.9,
    "games": 1.3,
    "technology": 1.4,
}
CATEGORY_SHARE = [0.06, 0.07, 0.17, 0.09, 0.14, 0.10, 0.16, 0.11, 0.10]
# category -> probabilities of (easy, medium, hard) rewards
CATEGORY_TIERS = {
    "dance": (0.75, 0.2, 0.05),
    "theater": (0.75, 0.2, 0.05),
    "music": (0.45, 0.4, 0.15),
    "art": (0.45, 0.45, 0.1),
    "publishing": (0.35, 0.55, 0.1),
    "design": (0.3, 0.4, 0.3),
    "film": (0.25, 0.25, 0.5),
    "games": (0.2, 0.25, 0.55),
    "technology": (0.2, 0.3, 0.5),
}
CATEGORY_LOG10_GOAL = {"dance": 3.4, "theater": 3.5, "music": 3.6, "art": 3.4, "publishing": 3.6}
GOAL_LATE = 1.1
ESTIMATE_LATE = -1.0
BASE_LATE = 0.25
TIER_WORDS = {
    "easy": ["thank", "credit", "shirt", "sticker", "website", "shout", "postcard", "name", "ticket", "show"],
    "medium": ["print", "book", "copy", "poster", "album", "signed", "edition", "hardcover", "vinyl", "zine"],
    "hard": ["film", "vip", "video", "game", "dvd", "figure", "prototype", "device", "premiere", "collector"],
}
TIER_TEMPLATES = {
    "easy": [
        "A heartfelt {0} and your {1} on our {2}.",
        "Get a {0} {1} plus a {2}.",
        "Our {0} {1} with a {2} for you.",
    ],
    "medium": [
        "A {0} {1} of the {2}.",
        "Receive one {0} {1} and a {2}.",
        "Limited {0} {1} with {2}.",
    ],
    "hard": [
        "An exclusive {0} {1} and {2} access.",
        "Your own {0} {1} with the {2}.",
        "Early {0} {1} plus {2} pack.",
    ],
}
TIER_DAYS = {"easy": (20, 60), "medium": (50, 130), "hard": (100, 330)}
DESCRIPTION_WORDS = [
    ["we", "make", "a", "new", "thing", "for", "you", "and", "our", "friends"],
    ["community", "production", "independent", "creative", "original", "beautiful", "international", "collaboration"],
]
ON_TIME_UPDATE = [
    "We shipped the first batch today.",
    "Production is on schedule and packages are going out.",
    "Thank you all, rewards are delivered and everyone is happy.",
    "Great news: printing finished early.",
]
LATE_UPDATE = [
    "Sorry for the delay, the factory had problems.",
    "Unfortunately shipping is postponed again.",
    "We are worried about the missing parts and apologize.",
    "Bad news: the supplier failed and we must wait.",
]
NEUTRAL_UPDATE = ["Here is a quick update on the project.", "We met with the team this week."]
BACKER_COMMENTS = ["Looks great!", "Good luck with the campaign.", "Love this idea.", "Backed, cannot wait."]
BACKER_QUESTIONS = ["When will the rewards ship?", "Any news on delivery?", "Where is my reward?", "Is there a delay?"]
CREATOR_COMMENTS = ["Thanks for the support!", "We will post an update soon.", "Good question, we are on it."]


@dataclass
class SyntheticConfig:
    """How many SYNTHETIC projects, and the seed."""

    n_projects: int = 2198
    seed: int = 0
    labelled_duration_share: float = 1598 / 2198

    def __post_init__(self) -> None:
        if self.n_projects < 2:
            raise ConfigError(f"SyntheticConfig.n_projects must be at least 2, not {self.n_projects}.")
        if not 0 <= self.labelled_duration_share <= 1:
            raise ConfigError("SyntheticConfig.labelled_duration_share must be in [0, 1].")


def _z(x: np.ndarray) -> np.ndarray:
    return (x - x.mean()) / (x.std() + 1e-12)


def generate(config: SyntheticConfig | None = None) -> DeliveryData:
    """A SYNTHETIC dataset (four tables) with the planted effects of the module docstring."""
    cfg = config or SyntheticConfig()
    rng = np.random.default_rng(cfg.seed)
    n = cfg.n_projects
    cats = list(CATEGORY_LATE_LOGIT)
    cat = rng.choice(cats, size=n, p=np.array(CATEGORY_SHARE) / sum(CATEGORY_SHARE))
    log10_goal = np.array([CATEGORY_LOG10_GOAL.get(c, 3.9) for c in cat]) + rng.normal(0, 0.45, n)
    goal = np.round(10**log10_goal, -1).clip(100)
    launch = pd.Timestamp("2010-01-01") + pd.to_timedelta(rng.integers(0, 4 * 365, n), unit="D")
    launch = launch + pd.to_timedelta(rng.integers(0, 86400, n), unit="s")
    fund_days = rng.choice([15, 21, 30, 30, 30, 35, 45, 60], size=n)
    deadline = launch + pd.to_timedelta(fund_days, unit="D")
    n_rewards = 1 + rng.poisson(5, n).clip(0, 14)
    tiers = ["easy", "medium", "hard"]

    rewards = []
    est_longest = np.zeros(n)
    reward_tiers: list[list[str]] = []
    for i in range(n):
        ts = list(rng.choice(tiers, size=n_rewards[i], p=CATEGORY_TIERS[cat[i]]))
        reward_tiers.append(ts)
        days = [rng.integers(*TIER_DAYS[t]) for t in ts]
        est_longest[i] = max(days)
        for t, d in zip(ts, days, strict=True):
            w = rng.choice(TIER_WORDS[t], size=3, replace=False)
            text = rng.choice(TIER_TEMPLATES[t]).format(*w)
            if rng.random() < 0.3:  # a second sentence, from an easy pool (every reward comes with thanks)
                text += " " + rng.choice(TIER_TEMPLATES["easy"]).format(
                    *rng.choice(TIER_WORDS["easy"], 3, replace=False)
                )
            rewards.append((i, text, t, pd.Timestamp(deadline[i]) + pd.Timedelta(days=int(d))))

    logit = (
        BASE_LATE
        + np.array([CATEGORY_LATE_LOGIT[c] for c in cat])
        + GOAL_LATE * _z(np.log(goal))
        + ESTIMATE_LATE * _z(np.log(est_longest))
        + rng.normal(0, 0.5, n)
    )
    late = rng.random(n) < 1 / (1 + np.exp(-logit))
    factor = np.where(
        late, 1 + rng.lognormal(-0.4, 0.5, n) + 0.15 * _z(np.log(goal)).clip(-1, 3), rng.uniform(0.55, 1.0, n)
    )
    pledged = np.round(goal * rng.uniform(1.0, 2.5, n), 2)
    # backers grow with the square root of the goal (not in proportion), so goal stays its own signal
    backers = np.maximum(np.exp(0.5 * np.log(goal) + rng.normal(0.8, 0.7, n)).astype(int), n_rewards)

    delivery = np.zeros(n)
    projects, reward_rows, comments, updates = [], [], [], []
    by_project: dict[int, list[tuple]] = {}
    for r in rewards:
        by_project.setdefault(r[0], []).append(r)
    for i in range(n):
        pid = f"SYN-{i + 1:05d}"
        desc_words = [rng.choice(DESCRIPTION_WORDS[int(rng.random() < 0.25)]) for _ in range(rng.integers(20, 60))]
        desc = "(SYNTHETIC) " + ". ".join(
            " ".join(desc_words[j : j + 8]).capitalize() for j in range(0, len(desc_words), 8)
        )
        bio = " ".join(["I make things."] * int(rng.integers(0, 4)))
        projects.append(
            {
                "project_id": pid,
                "category": cat[i],
                "goal": float(goal[i]),
                "pledged": float(pledged[i]),
                "backers": int(backers[i]),
                "launched_at": launch[i],
                "deadline": deadline[i],
                "n_images": int(rng.poisson(4 + 2 * (cat[i] in ("design", "technology", "games")))),
                "n_faqs": int(rng.poisson(1.5)),
                "description": desc,
                "creator_bio": bio,
                "creator_backed_projects": int(rng.poisson(3)),
                "creator_created_projects": int(1 + rng.poisson(0.3)),
                "on_time": bool(not late[i]),
                "delivery_days": None,
            }
        )
        share = rng.dirichlet(np.ones(len(by_project[i])))
        split = rng.multinomial(backers[i], share)
        # reward difficulty: the more backers chose hard rewards, the longer the real delivery
        hard = sum(b for (_, _, t, _), b in zip(by_project[i], split, strict=True) if t == "hard") / max(split.sum(), 1)
        delivery[i] = max(round(est_longest[i] * factor[i] * (0.75 + 0.7 * hard)), 1.0)
        if rng.random() < cfg.labelled_duration_share:
            projects[-1]["delivery_days"] = float(delivery[i])
        for (_, text, _, ed), b in zip(by_project[i], split, strict=True):
            reward_rows.append({"project_id": pid, "description": text, "backers": int(b), "estimated_delivery": ed})
        # fundraising comments, spread over the period; the creator answers some questions
        dl, lau = pd.Timestamp(deadline[i]), pd.Timestamp(launch[i])
        span = (dl - lau).total_seconds()
        n_c = rng.poisson(2 + np.sqrt(backers[i]) / 3)
        for _ in range(n_c):
            t = lau + pd.Timedelta(seconds=float(rng.uniform(0, span)))
            q = rng.random() < 0.2
            author = f"backer{rng.integers(0, max(backers[i], 1))}"
            comments.append((pid, author, False, t, rng.choice(BACKER_QUESTIONS if q else BACKER_COMMENTS)))
            if q and rng.random() < 0.6:
                comments.append(
                    (
                        pid,
                        "creator",
                        True,
                        t + pd.Timedelta(hours=float(rng.uniform(1, 48))),
                        rng.choice(CREATOR_COMMENTS),
                    )
                )
        for _ in range(rng.poisson(2)):
            updates.append((pid, lau + pd.Timedelta(seconds=float(rng.uniform(0, span))), rng.choice(NEUTRAL_UPDATE)))
        # the first 5% of the delivery period (TP4's window) and after
        window = 0.05 * est_longest[i] * 86400
        good = not late[i]
        for _ in range(rng.poisson(1.6 if good else 0.5)):
            t = dl + pd.Timedelta(seconds=float(rng.uniform(0, window)))
            pool = ON_TIME_UPDATE if rng.random() < (0.75 if good else 0.25) else LATE_UPDATE
            updates.append((pid, t, rng.choice(pool)))
        for _ in range(rng.poisson(1.2 if good else 0.4)):
            comments.append(
                (
                    pid,
                    "creator",
                    True,
                    dl + pd.Timedelta(seconds=float(rng.uniform(0, window))),
                    rng.choice(CREATOR_COMMENTS),
                )
            )
        for _ in range(rng.poisson(0.8 if good else 2.0)):
            q = rng.random() < (0.3 if good else 0.6)
            t = dl + pd.Timedelta(seconds=float(rng.uniform(0, window)))
            author = f"backer{rng.integers(0, max(backers[i], 1))}"
            comments.append((pid, author, False, t, rng.choice(BACKER_QUESTIONS if q else BACKER_COMMENTS)))
        for _ in range(rng.poisson(2)):  # later updates, up to delivery (after TP4)
            t = dl + pd.Timedelta(days=float(rng.uniform(0.06 * est_longest[i], delivery[i])))
            updates.append((pid, t, rng.choice(LATE_UPDATE if late[i] else ON_TIME_UPDATE)))

    frames = {
        "projects": pd.DataFrame(projects),
        "rewards": pd.DataFrame(reward_rows),
        "comments": pd.DataFrame(comments, columns=["project_id", "author", "is_creator", "posted_at", "text"]),
        "updates": pd.DataFrame(updates, columns=["project_id", "posted_at", "text"]),
    }
    data = validate(frames, {k: f"SYNTHETIC {k}" for k in frames})
    data.synthetic = True
    data.source = f"SYNTHETIC (segue.delivery.synthetic, n={n}, seed={cfg.seed})"
    return data
