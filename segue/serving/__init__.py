"""Serving: export a trained run to an ANN index and answer recommendations in Python or over HTTP.

::

    from segue.serving import Recommender          # = ServingModel, not segue.models.base.Recommender
    rec = Recommender.load("exports/mf-ml-1m")
    rec.recommend("196", k=10)                     # a known user, consumed items excluded
    rec.recommend_items(["1", "2"], k=10)          # a playlist / session as raw item ids
    rec.similar("1", k=10)                         # nearest items

Modules: :mod:`~segue.serving.export` (the export format, :func:`export_run`,
:class:`ServingModel`), :mod:`~segue.serving.index` (faiss HNSW and exact indexes),
:mod:`~segue.serving.app` (FastAPI), :mod:`~segue.serving.commands` (``segue export`` /
``segue serve``). The names below load lazily, so importing this package stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from segue.serving.export import Recommendations, ServingModel, export_run
    from segue.serving.index import VectorIndex

    Recommender = ServingModel

__all__ = ["Recommendations", "Recommender", "ServingModel", "VectorIndex", "export_run"]


def __getattr__(name: str) -> Any:
    if name in ("Recommender", "ServingModel", "Recommendations", "export_run"):
        from segue.serving import export

        return export.ServingModel if name == "Recommender" else getattr(export, name)
    if name == "VectorIndex":
        from segue.serving.index import VectorIndex

        return VectorIndex
    raise AttributeError(f"module 'segue.serving' has no attribute {name!r}")
