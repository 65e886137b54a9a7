"""Data layer: interaction tables, datasets, preprocessing, splits, sampling, sequences."""

from segue.data.interactions import IdMap, Interactions
from segue.data.preprocess import binarize, dedup, kcore
from segue.data.sampling import NegativeSampler, sample_candidates
from segue.data.splits import Split, group_holdout, leave_one_out, random_split, temporal_split

__all__ = [
    "IdMap",
    "Interactions",
    "NegativeSampler",
    "Split",
    "binarize",
    "dedup",
    "group_holdout",
    "kcore",
    "leave_one_out",
    "random_split",
    "sample_candidates",
    "temporal_split",
]
