"""Where each symbol's bars are read at serving time: one point-in-time feature store per source.

A symbol's models name the feeder spec they were trained from (``csv:/data/acme.csv``,
``yfinance``; see ``features.feeders.spec``); ``None`` means the configured ``PP_FEEDER``.
Decisions and forecasts on that symbol must read the same bars, and every caller
on the same source should share one bar cache, so the stores live here, shared
by the services of one process.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime

from prediction_provider.config import Settings
from prediction_provider.features.feeders.base import BarFeeder, normalise_symbol
from prediction_provider.features.feeders.registry import feeder_from_settings
from prediction_provider.features.feeders.spec import configured_spec, feeder_for_spec, resolve_feeder_spec
from prediction_provider.features.point_in_time import PointInTimeFeatures

log = logging.getLogger(__name__)


class MarketSources:
    """One ``PointInTimeFeatures`` per (feeder spec, interval), built on first use; thread-safe.

    ``for_symbol(symbol, interval, source)`` is the one call: ``source`` is a
    feeder spec (``None`` or the configured spec: ``PP_FEEDER``), ``interval``
    the bars' interval (``None``: the feeder's default for each symbol). A spec
    is confined to the data roots as ``feeder_for_spec`` does, so a spec read
    from a manifest or a request cannot open arbitrary files; a bad spec raises
    ``InvalidInput`` or ``FeederUnavailable`` and builds nothing. Specs that
    resolve to the same file share one store. ``close`` releases the feeders.

    Every store labels bars as ``PP_BAR_LABEL`` says and releases none closing after ``clock``
    (the server's one clock, ``services.clock.now``; the wall clock when none is given).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        cache_size: int = 1024,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.settings = settings
        self.cache_size = cache_size
        self.clock: Callable[[], datetime] = clock or _wall_clock
        self._default = str(configured_spec(settings))
        self._lock = threading.Lock()
        self._feeders: dict[str, BarFeeder] = {}
        self._features: dict[tuple[str, str | None], PointInTimeFeatures] = {}
        # The hot path: a (source as given, interval) seen before costs one dict read, no path resolution.
        self._seen: dict[tuple[str | None, str | None], PointInTimeFeatures] = {}

    def for_symbol(
        self, symbol: str, interval: str | None = None, source: str | None = None
    ) -> PointInTimeFeatures:
        """The store ``symbol`` is read from (``symbol`` is only checked: the stores are per source)."""
        normalise_symbol(symbol)
        features = self._seen.get((source, interval))
        if features is not None:
            return features
        spec = self.canonical(source)
        key = (spec, interval)
        features = self._features.get(key)
        if features is None:
            feeder = self._feeder(spec, interval)
            built = PointInTimeFeatures(
                feeder,
                None if interval is None else _fixed(interval),
                cache_size=self.cache_size,
                clock=self.clock,
                bar_label=self.settings.bar_label,
            )
            with self._lock:
                features = self._features.setdefault(key, built)
        with self._lock:
            self._seen[(source, interval)] = features
        return features

    def loaded(self, symbol: str, interval: str | None = None, source: str | None = None) -> bool:
        """Whether ``for_symbol`` with these arguments was answered before and the symbol's bars are
        loaded: a snapshot then reads no feeder (checked without building anything)."""
        features = self._seen.get((source, interval))
        return features is not None and features.has_bars(symbol)

    def canonical(self, source: str | None) -> str:
        """The spec as stored and shared: a path made absolute and confined; the default for ``None``."""
        if source is None or source == self._default:
            return self._default
        return str(resolve_feeder_spec(source, self.settings))

    def sources(self) -> list[tuple[str, str | None]]:
        """The (spec, interval) pairs built so far."""
        with self._lock:
            return sorted(self._features, key=lambda key: (key[0], key[1] or ""))

    def close(self) -> None:
        """Close every feeder built; the stores are unusable afterwards."""
        with self._lock:
            feeders, self._feeders = list(self._feeders.values()), {}
            self._features, self._seen = {}, {}
        for feeder in feeders:
            with contextlib.suppress(Exception):
                feeder.close()

    def _feeder(self, spec: str, interval: str | None) -> BarFeeder:
        # One feeder per spec (its parsed-file or connection cache is shared by every interval). A file
        # feeder's bar interval may depend on the first interval asked (see feeders.spec), so it is
        # keyed by the interval too when a path is involved.
        key = spec if ":" not in spec or interval is None else f"{spec}@{interval}"
        feeder = self._feeders.get(key)
        if feeder is not None:
            return feeder
        if spec == self._default:
            built = feeder_from_settings(self.settings)
        else:
            built = feeder_for_spec(spec, self.settings, interval=interval)
        with self._lock:
            feeder = self._feeders.setdefault(key, built)
        if feeder is not built:
            built.close()
        log.info("market data for %s%s", spec, "" if interval is None else f" at {interval}")
        return feeder


def _wall_clock() -> datetime:
    return datetime.now(UTC)


def _fixed(interval: str) -> _FixedInterval:
    return _FixedInterval(interval)


class _FixedInterval:
    """``interval_for`` of a store that reads every symbol at one interval."""

    __slots__ = ("interval",)

    def __init__(self, interval: str) -> None:
        self.interval = interval

    def __call__(self, symbol: str) -> str:
        return self.interval
