"""Data layer: interaction tables, datasets, data files, preprocessing, splits, sampling, sequences."""

from segue.data.files import FORMATS, detect_format, load_file, load_frame
from segue.data.interactions import IdMap, Interactions
from segue.data.preprocess import binarize, dedup, kcore
from segue.data.sampling import NegativeSampler, sample_candidates
from segue.data.splits import Split, group_holdout, leave_one_out, random_split, temporal_split

__all__ = [
    "FORMATS",
    "IdMap",
    "Interactions",
    "NegativeSampler",
    "Split",
    "binarize",
    "dedup",
    "detect_format",
    "group_holdout",
    "kcore",
    "leave_one_out",
    "load_file",
    "load_frame",
    "random_split",
    "sample_candidates",
    "temporal_split",
]
