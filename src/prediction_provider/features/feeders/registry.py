"""Feeder plugins: the ``prediction_provider.feeders`` entry points, and the one ``PP_FEEDER`` picks.

A package of your own adds a feeder with, in its ``pyproject.toml``::

    [project.entry-points."prediction_provider.feeders"]
    mybroker = "mypackage.feeder:MyBrokerFeeder"   # a BarFeeder subclass with from_settings

and ``PP_FEEDER=mybroker`` selects it. The built-ins register the same way.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING

from prediction_provider.errors import FeederUnavailable
from prediction_provider.features.feeders.base import BarFeeder

if TYPE_CHECKING:
    from prediction_provider.config import Settings

FEEDER_GROUP = "prediction_provider.feeders"


def feeder_plugins() -> dict[str, EntryPoint]:
    """Every registered feeder by name; loading one is left to ``load_feeder``."""
    return {entry_point.name: entry_point for entry_point in entry_points(group=FEEDER_GROUP)}


def load_feeder(name: str, settings: Settings) -> BarFeeder:
    """The feeder plugin ``name``, configured from ``settings``.

    Fails with ``FeederUnavailable`` naming the installed plugins when there is
    no such plugin, when it cannot be imported, or when its settings are incomplete.
    """
    plugins = feeder_plugins()
    entry_point = plugins.get(name)
    if entry_point is None:
        raise FeederUnavailable(f"no feeder plugin named {name!r}", {"available": sorted(plugins)})
    try:
        feeder_class = entry_point.load()
    except ImportError as exc:
        raise FeederUnavailable(f"the {name} feeder plugin cannot be imported: {exc}") from exc
    if not (isinstance(feeder_class, type) and issubclass(feeder_class, BarFeeder)):
        raise FeederUnavailable(f"the {name} feeder plugin {entry_point.value} is not a BarFeeder")
    feeder: BarFeeder = feeder_class.from_settings(settings)
    return feeder


def feeder_from_settings(settings: Settings) -> BarFeeder:
    """The feeder named by ``PP_FEEDER`` (default ``backtesting``, the embedded sample bars)."""
    return load_feeder(settings.feeder, settings)
