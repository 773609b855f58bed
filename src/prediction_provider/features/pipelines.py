"""Feature pipeline plugins: the ``prediction_provider.pipelines`` entry points.

A pipeline turns a feeder's normalised OHLCV bars into the feature rows a model
is trained on and served from. The built-in ``point_in_time`` is the pipeline
of ``features.pipeline`` (every feature at bar ``t`` reads only bars at or before
``t``); it registers under the entry point group as a plugin would::

    [project.entry-points."prediction_provider.pipelines"]
    point_in_time = "prediction_provider.features.pipelines:POINT_IN_TIME"

An entry point names a ``FeaturePipeline`` object, not a class: a pipeline holds
no state, so there is nothing to build per server.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points

import pandas as pd

from prediction_provider.errors import PipelineUnavailable
from prediction_provider.features.pipeline import FEATURE_NAMES, WARMUP_BARS, compute_features

PIPELINE_GROUP = "prediction_provider.pipelines"
DEFAULT_PIPELINE = "point_in_time"


@dataclass(frozen=True, slots=True)
class FeaturePipeline:
    """What a caller may rely on: ``compute(bars)`` answers one row per bar from the
    ``warmup_bars``-th on, with the columns ``feature_names`` in that order."""

    name: str
    feature_names: tuple[str, ...]
    warmup_bars: int
    compute: Callable[[pd.DataFrame], pd.DataFrame]
    description: str


POINT_IN_TIME = FeaturePipeline(
    name=DEFAULT_PIPELINE,
    feature_names=FEATURE_NAMES,
    warmup_bars=WARMUP_BARS,
    compute=compute_features,
    description="Trailing returns, volatility, moving averages, RSI, MACD, ATR, Bollinger %b and volume "
    "z-score; each reads only bars at or before its own (no look-ahead).",
)


def pipeline_plugins() -> dict[str, EntryPoint]:
    """Every registered pipeline by name; loading one is left to ``load_pipeline``."""
    return {entry_point.name: entry_point for entry_point in entry_points(group=PIPELINE_GROUP)}


def load_pipeline(name: str) -> FeaturePipeline:
    """The pipeline plugin ``name``; ``PipelineUnavailable`` names the installed ones otherwise."""
    plugins = pipeline_plugins()
    entry_point = plugins.get(name)
    if entry_point is None:
        raise PipelineUnavailable(
            f"no feature pipeline plugin named {name!r}", {"available": sorted(plugins)}
        )
    try:
        pipeline = entry_point.load()
    except Exception as exc:  # a broken plugin is reported, not fatal to the server
        raise PipelineUnavailable(f"the {name} pipeline plugin cannot be imported: {exc}") from exc
    if not isinstance(pipeline, FeaturePipeline):
        raise PipelineUnavailable(f"the {name} pipeline plugin {entry_point.value} is not a FeaturePipeline")
    return pipeline
