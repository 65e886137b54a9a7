"""The model catalogue: for every registered model, its paper, task, inputs, default protocol and serving.

``segue models`` prints this table (``--json`` for all fields). ``seed`` names the paper text in
``shared/seeds/`` and the section that specifies the model or uses it as a baseline; ``spec`` the
implementation spec in ``shared/specs/``. A baseline's ``paper`` is its original publication.

Tasks: ``top-n`` (user -> items), ``next-item`` (a user's history -> the next item), ``basket``
(the rest of a basket -> a held-out item), ``playlist`` (playlist continuation), ``cold-start``
(audio -> users). Inputs: ``interactions`` (user, item rows), ``time order`` (timestamps or
sequence positions), ``playlists`` (a playlist column), ``audio`` (clips of every track).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

SEEDS = {
    "000": "000_22b8116826f78323.txt (Tran et al., SIGIR'19: MDR / MASS / MASR with APR)",
    "001": "001_7fc5b1a5a1380685.txt (Tran, PhD dissertation, WPI 2020)",
    "002": "002_339843579b132253.txt (Lee et al., DCUE)",
    "003": "003_ea5348cfeca534a7.txt (Hansen et al., RecSys'20: CoSeRNN)",
    "004": "004_eef439b523f2c670.txt (Liang et al., TripletRec)",
}
SPECS = {
    "ch4": "seed-000-001-ch4-spec.md",
    "sdmr": "seed-001-sdmr-quaternion.md",
    "content": "seed-002-004-content-spec.md",
    "coserrn": "seed-003-coserrn-and-ch3-spec.md",
}


@dataclass(frozen=True)
class Entry:
    """One model's catalogue row."""

    paper: str
    seed: str  # seed file and section
    spec: str  # spec file and part
    task: str
    inputs: tuple[str, ...]
    protocol: str  # the protocol `segue train` uses, or how the model is trained when not by `segue train`

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["inputs"] = list(self.inputs)
        return d


_I = ("interactions",)
_T = ("interactions", "time order")
_P = ("interactions", "playlists")
_A = ("interactions", "audio")
_S01 = SEEDS["001"]
_SDMR_BASE = f"{_S01}, section 5.2 (baseline of Table 5.3)"
_QUAT_BASE = f"{_S01}, section 5.3 (baseline of Table 5.6)"
_MASR_BASE = f"{SEEDS['000']}, section 4 (baseline of Table 2); {_S01}, section 4.3"
_RME = f"{_S01}, section 4.2"
_DCUE = f"{SEEDS['002']}, sections 3-4"
_SP_SDMR = f"{SPECS['sdmr']}, part A"
_SP_QUAT = f"{SPECS['sdmr']}, part B"
_SP_M = f"{SPECS['ch4']}, part M"
_SP_R = f"{SPECS['ch4']}, part R"
_SP_DCUE = f"{SPECS['content']}, part A"
_SP_TRIP = f"{SPECS['content']}, part B"
_AUDIO = "audio clips: segue reproduce dcue-tables (not segue train)"

CATALOGUE: dict[str, Entry] = {
    # foundation baselines
    "pop": Entry("most popular items", f"{_DCUE} (popularity baseline)", _SP_DCUE, "top-n", _I, "loo-sampled"),
    "random": Entry(
        "uniformly random ranking (reference: evaluated as the expected metrics of chance)",
        f"{_S01}, section 5.2 (not a model of the papers: the chance level of their sampled protocols)", _SP_SDMR,
        "top-n", _I, "loo-sampled",
    ),
    "itemknn": Entry(
        "item-based kNN, cosine (Sarwar et al., WWW'01)", f"{_S01}, section 5.2 (ItemKNN baseline)", _SP_SDMR,
        "top-n", _I, "loo-sampled",
    ),
    "mf-bpr": Entry("BPR matrix factorisation (Rendle et al., UAI'09)", _SDMR_BASE, _SP_SDMR, "top-n", _I, "loo-sampled"),
    "wmf": Entry(
        "weighted MF by ALS (Hu, Koren, Volinsky, ICDM'08), via implicit", _RME, _SP_R, "top-n", _I, "random-full"
    ),
    "item2vec": Entry(
        "item2vec, SGNS item embeddings (Barkan & Koenigstein, 2016)", f"{_RME} (baseline of Table 4.2)", _SP_R,
        "top-n", _I, "random-full",
    ),
    # NCF / metric / memory baselines
    "cml": Entry("collaborative metric learning (Hsieh et al., WWW'17)", _SDMR_BASE, _SP_SDMR, "top-n", _I, "loo-sampled"),
    "gmf": Entry("generalized MF (He et al., WWW'17, NCF)", _SDMR_BASE, _SP_SDMR, "top-n", _I, "loo-sampled"),
    "mlp": Entry("NCF multi-layer perceptron (He et al., WWW'17)", _SDMR_BASE, _SP_SDMR, "top-n", _I, "loo-sampled"),
    "neumf": Entry("NeuMF / NeuMF++ (He et al., WWW'17)", _SDMR_BASE, _SP_SDMR, "top-n", _I, "loo-sampled"),
    "cmn": Entry("collaborative memory network (Ebesu et al., SIGIR'18)", _SDMR_BASE, _SP_SDMR, "top-n", _I, "loo-sampled"),
    # SDMR (dissertation section 5.2)
    "sdp": Entry("SDP, signed distance-based perceptron", f"{_S01}, section 5.2", _SP_SDMR, "top-n", _I, "loo-sampled"),
    "sdm": Entry(
        "SDM, signed distance-based memory network", f"{_S01}, section 5.2", _SP_SDMR, "next-item", _T, "loo-sampled"
    ),
    "sdmr": Entry("SDMR = SDP + SDM fusion", f"{_S01}, section 5.2", _SP_SDMR, "next-item", _T, "loo-sampled"),
    "prme": Entry("PRME (Feng et al., IJCAI'15)", _SDMR_BASE, _SP_SDMR, "next-item", _T, "loo-sampled"),
    "prme-s": Entry("PRME_s, the dissertation's PRME over s items", _SDMR_BASE, _SP_SDMR, "next-item", _T, "loo-sampled"),
    "transrec": Entry("TransRec (He et al., RecSys'17)", _SDMR_BASE, _SP_SDMR, "next-item", _T, "loo-sampled"),
    "caser": Entry("Caser (Tang & Wang, WSDM'18)", _SDMR_BASE, _SP_SDMR, "next-item", _T, "loo-sampled"),
    # quaternion models (dissertation section 5.3) and their baselines
    "quale": Entry("QUALE, quaternion long-term encoder", f"{_S01}, section 5.3", _SP_QUAT, "next-item", _T,
                   "temporal-sampled"),
    "quase": Entry("QUASE, quaternion short-term encoder", f"{_S01}, section 5.3", _SP_QUAT, "next-item", _T,
                   "temporal-sampled"),
    "qualse": Entry("QUALSE, gated fusion of QUALE and QUASE", f"{_S01}, section 5.3", _SP_QUAT, "next-item", _T,
                    "temporal-sampled"),
    "aquale": Entry("QUALE trained with QABPR", f"{_S01}, section 5.3", _SP_QUAT, "next-item", _T, "temporal-sampled"),
    "aquase": Entry("QUASE trained with QABPR", f"{_S01}, section 5.3", _SP_QUAT, "next-item", _T, "temporal-sampled"),
    "aqualse": Entry("QUALSE trained with QABPR", f"{_S01}, section 5.3", _SP_QUAT, "next-item", _T,
                     "temporal-sampled"),
    "aasvd": Entry("attentive asymmetric SVD (ASVD, Koren KDD'08, with attention)", _QUAT_BASE, _SP_QUAT, "next-item",
                   _T, "temporal-sampled"),
    "agru": Entry("GRU4Rec with attention (Hidasi et al., ICLR'16)", _QUAT_BASE, _SP_QUAT, "next-item", _T,
                  "temporal-sampled"),
    "alstm": Entry("LSTM with attention", _QUAT_BASE, _SP_QUAT, "next-item", _T, "temporal-sampled"),
    "fpmc": Entry("FPMC (Rendle et al., WWW'10)", _QUAT_BASE, _SP_QUAT, "next-item", _T, "temporal-sampled"),
    "sasrec": Entry("SASRec (Kang & McAuley, ICDM'18)", _QUAT_BASE, _SP_QUAT, "next-item", _T, "temporal-sampled"),
    # RME (dissertation section 4.2)
    "rme": Entry("RME, regularized multi-embedding", _RME, _SP_R, "top-n", _I, "random-full"),
    "u-rme": Entry("U_RME ablation of RME", _RME, _SP_R, "top-n", _I, "random-full"),
    "i-rme": Entry("I_RME ablation of RME", _RME, _SP_R, "top-n", _I, "random-full"),
    "cofactor": Entry("Cofactor (Liang et al., RecSys'16)", f"{_RME} (baseline of Table 4.2)", _SP_R, "top-n", _I,
                      "random-full"),
    "wmf-als": Entry("WMF (Hu, Koren, Volinsky, ICDM'08), segue's ALS", f"{_RME} (baseline of Table 4.2)", _SP_R,
                     "top-n", _I, "random-full"),
    # playlist continuation (paper 000, dissertation section 4.3)
    "mdr": Entry("MDR, Mahalanobis distance recommender", f"{SEEDS['000']}, section 3; {_S01}, section 4.3", _SP_M,
                 "playlist", _P, "playlist-holdout"),
    "mass": Entry("MASS, attentive song similarity", f"{SEEDS['000']}, section 3; {_S01}, section 4.3", _SP_M,
                  "playlist", _P, "playlist-holdout"),
    "masr": Entry("MASR = MDR + MASS", f"{SEEDS['000']}, section 3; {_S01}, section 4.3", _SP_M, "playlist", _P,
                  "playlist-holdout"),
    "amdr": Entry("AMDR, MDR with APR", f"{SEEDS['000']}, section 3.4; {_S01}, section 4.3", _SP_M, "playlist", _P,
                  "playlist-holdout"),
    "amass": Entry("AMASS, MASS with APR", f"{SEEDS['000']}, section 3.4; {_S01}, section 4.3", _SP_M, "playlist", _P,
                   "playlist-holdout"),
    "amasr": Entry("AMASR, MASR over AMDR and AMASS", f"{SEEDS['000']}, section 3.4; {_S01}, section 4.3", _SP_M,
                   "playlist", _P, "playlist-holdout"),
    "fism": Entry("FISM (Kabbur et al., KDD'13)", _MASR_BASE, _SP_M, "playlist", _P, "playlist-holdout"),
    # content models (papers 002 and 004)
    "dcue": Entry("DCUE, deep content-user embedding", _DCUE, _SP_DCUE, "cold-start", _A, _AUDIO),
    "dcue-id": Entry("DCUE with an item-id tower (ablation)", _DCUE, _SP_DCUE, "top-n", _A, _AUDIO),
    "wmf-regression": Entry("WMF + audio regression (van den Oord et al., NIPS'13)", f"{_DCUE} (baseline)", _SP_DCUE,
                            "cold-start", _A, _AUDIO),
    "tripletrec": Entry("triplet network recommender", f"{SEEDS['004']}, sections 3-4", _SP_TRIP, "cold-start", _A,
                        _AUDIO),
    "twonet": Entry("two-branch baseline of TripletRec", f"{SEEDS['004']}, section 4 (baseline)", _SP_TRIP,
                    "cold-start", _A, _AUDIO),
}  # fmt: skip


def catalogue_entry(name: str) -> Entry | None:
    """The catalogue row of model ``name`` (None for a model registered outside segue)."""
    return CATALOGUE.get(name)


__all__ = ["CATALOGUE", "SEEDS", "SPECS", "Entry", "catalogue_entry"]
