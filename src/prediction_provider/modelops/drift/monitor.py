"""``DriftMonitor``: the one object the request path, the routes and the gauges talk to.

Hot path (``observe``): one dictionary lookup for the version, then a vectorized binning of the
batch into int64 counters under a lock; nothing else. It never raises. A version seen for the
first time is queued for a reference lookup (an uploaded profile, else the MLflow artifact of its
run) done by the flush thread, never in the caller's thread; its rows wait in a bounded buffer and
are counted once the reference is known (none: they are dropped, and so is every later row).

Flush (``start``: every ``PP_DRIFT_FLUSH_S``; ``flush``: now): lookups first, then every slot's
deltas added to ``drift_counts``. A failed write keeps the deltas for the next flush.

Uploads and resets are written with the ops stamp bumped; every process's ``reload`` (registered
on the stamp follower) then applies the new reset time and re-reads the uploaded reference. After a
reset a process counts into a slot that starts at the reset time, and readers ignore older slots,
so counts binned on an old reference never mix with new ones.
"""

from __future__ import annotations

import json
import logging
import random
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from mlflow.exceptions import MlflowException
from sqlalchemy.orm import Session

from prediction_provider.clock import Clock
from prediction_provider.config import Settings
from prediction_provider.db.session import Database
from prediction_provider.errors import ModelNotFound, RegistryUnavailable
from prediction_provider.modelops.drift.counters import VersionCounters, series_rows
from prediction_provider.modelops.drift.reference import ARTIFACT, Reference
from prediction_provider.modelops.drift.report import (
    KEPT_WINDOWS,
    Window,
    drift_report,
    select_windows,
    slot_floor,
)
from prediction_provider.modelops.drift.store import DriftStore
from prediction_provider.serving.registry import CHAMPION_ALIAS, ModelRegistry

log = logging.getLogger(__name__)

PENDING_ROWS = 10_000  # rows kept per version while its reference is looked up
PRUNE_EVERY = 300  # flushes between deletions of slots older than the kept windows


@dataclass(slots=True)
class _Pending:
    batches: list[tuple[datetime, tuple[Any, ...]]] = field(default_factory=list)
    rows: int = 0


@dataclass(frozen=True, slots=True)
class LoadedReference:
    reference: Reference
    source: str  # upload | training
    uploaded_at: datetime | None


class DriftMonitor:
    def __init__(self, db: Database, settings: Settings, registry: ModelRegistry, clock: Clock) -> None:
        self.db = db
        self.settings = settings
        self.registry = registry
        self.clock = clock
        self.store = DriftStore(db)
        self.slot_s = int(settings.drift_slot_s)
        self.sample_rate = float(settings.drift_sample_rate)
        self.errors = 0  # observe/flush failures (logged), for tests and debugging
        self.dropped = 0  # rows not counted: buffer full while a reference was looked up
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._counters: dict[tuple[str, str], VersionCounters | None] = {}  # None: no reference
        self._loaded: dict[tuple[str, str], LoadedReference | None] = {}
        self._pending: dict[tuple[str, str], _Pending] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._flushes = 0
        self._random = random.Random()  # noqa: S311 - sampling rows, not secrets
        epoch = datetime.fromtimestamp(0, tz=UTC)
        self._slot_span = (epoch, epoch)  # the last slot computed: most rows fall in it

    # -- hot path -----------------------------------------------------------------------------

    def observe(
        self,
        model: str,
        version: str | None,
        feature_names: Sequence[str],
        matrix: np.ndarray[Any, Any],
        classes: Sequence[str] | None,
        predictions: Sequence[Any],
        probabilities: np.ndarray[Any, Any] | None,
    ) -> None:
        """Count one answered batch; never raises."""
        try:
            if self.sample_rate < 1.0:
                keep = [i for i in range(len(matrix)) if self._random.random() < self.sample_rate]
                if not keep:
                    return
                matrix = matrix[keep]
                predictions = [predictions[i] for i in keep] if len(predictions) else predictions
                probabilities = probabilities[keep] if probabilities is not None else None
            key = (model, version or "")
            now = self.clock.now()
            with self._lock:
                counters = self._counters.get(key, _UNKNOWN)
                if counters is None:
                    return
                if counters is _UNKNOWN:
                    self._hold(key, now, (feature_names, matrix, classes, predictions, probabilities))
                    return
                assert isinstance(counters, VersionCounters)
                counters.count(
                    self._slot(now, counters.reset_at),
                    feature_names,
                    matrix,
                    classes,
                    predictions,
                    probabilities,
                )
        except Exception:
            self.errors += 1
            log.exception("drift: could not count a batch of %s/%s", model, version)

    def _hold(self, key: tuple[str, str], now: datetime, batch: tuple[Any, ...]) -> None:
        pending = self._pending.setdefault(key, _Pending())
        rows = len(batch[1])
        if pending.rows + rows > PENDING_ROWS:
            self.dropped += rows
            return
        pending.batches.append((now, batch))
        pending.rows += rows
        self._wake.set()

    def _slot(self, now: datetime, reset_at: datetime | None) -> datetime:
        span = self._slot_span
        if span[0] <= now < span[1]:
            slot = span[0]
        else:
            slot = slot_floor(now, self.slot_s)
            self._slot_span = (slot, slot + timedelta(seconds=self.slot_s))
        if reset_at is not None and slot < reset_at <= now:
            return reset_at  # the first slot after a reset starts at it (readers skip older ones)
        return slot

    # -- references ---------------------------------------------------------------------------

    def reference(self, model: str, version: str) -> LoadedReference | None:
        """The version's reference (cached, and so is its absence); blocking."""
        key = (model, version)
        with self._lock:
            if key in self._loaded:
                return self._loaded[key]
        loaded = self._lookup(model, version)
        with self._lock:
            self._loaded[key] = loaded
        return loaded

    def class_priors(self, model: str, version: str | None) -> dict[str, float] | None:
        """Training label shares of a version whose reference is already known. Never blocks: an
        unknown version's reference is queued for the flush thread, and known a moment later."""
        key = (model, version or "")
        with self._lock:
            if key not in self._loaded:
                if key not in self._counters:
                    self._pending.setdefault(key, _Pending())
                    self._wake.set()
                return None
            loaded = self._loaded[key]
        return loaded.reference.class_priors if loaded is not None else None

    def _lookup(self, model: str, version: str) -> LoadedReference | None:
        uploaded = self.store.uploaded(model, version)
        if uploaded is not None:
            try:
                return LoadedReference(Reference.parse(uploaded.profile), "upload", uploaded.created_at)
            except (KeyError, TypeError, ValueError) as exc:
                log.warning("drift: the uploaded reference of %s/%s is unusable: %s", model, version, exc)
        profile = self._artifact(model, version)
        if profile is None:
            return None
        try:
            return LoadedReference(Reference.parse(profile), str(profile.get("source") or "training"), None)
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("drift: %s of %s/%s is unusable: %s", ARTIFACT, model, version, exc)
            return None

    def _artifact(self, model: str, version: str) -> dict[str, Any] | None:
        """``drift_reference.json`` of the version's run, or None."""
        if not version:
            return None
        client = self.registry.client
        try:
            run_id = client.get_model_version(model, version).run_id
            if not run_id:
                return None
            with tempfile.TemporaryDirectory() as folder:
                path = client.download_artifacts(run_id, ARTIFACT, folder)
                loaded: dict[str, Any] = json.loads(Path(path).read_text())
                return loaded
        except (MlflowException, OSError, ValueError) as exc:
            log.info("drift: no reference for %s/%s (%s)", model, version, exc)
            return None

    def _resolve_pending(self) -> None:
        """Look up the references of versions seen for the first time, and count their held rows."""
        with self._lock:
            keys = list(self._pending)
        for key in keys:
            loaded = self.reference(*key)
            reset_at = self.store.reset_at(*key) if loaded is not None else None
            with self._lock:
                pending = self._pending.pop(key, _Pending())
                if loaded is None:
                    self._counters[key] = None
                    continue
                counters = self._counters.get(key)
                if not isinstance(counters, VersionCounters):
                    counters = self._counters[key] = VersionCounters(loaded.reference, reset_at)
                for when, batch in pending.batches:
                    counters.count(self._slot(when, counters.reset_at), *batch)

    def reload(self, session: Session) -> None:
        """The stamp moved: apply new reset times, and re-read references that were uploaded."""
        resets, uploads = DriftStore.changes(session)
        with self._lock:
            stale = [
                key
                for key, loaded in self._loaded.items()
                if key in uploads and (loaded is None or loaded.uploaded_at != uploads[key])
            ]
            for key in stale:
                self._loaded.pop(key, None)
                self._counters.pop(key, None)  # counted on the old edges: dropped, as readers would
            for key, counters in self._counters.items():
                if isinstance(counters, VersionCounters) and resets.get(key) != counters.reset_at:
                    counters.reset_at = resets.get(key)
                    if counters.reset_at is not None:
                        counters.drop_before(counters.reset_at)

    # -- flush --------------------------------------------------------------------------------

    def flush(self) -> None:
        """Look up new versions' references and write every delta now; blocking."""
        with self._flush_lock:
            try:
                self._resolve_pending()
            except Exception:
                self.errors += 1
                log.exception("drift: reference lookup failed")
            with self._lock:
                taken = {
                    key: (counters, counters.take())
                    for key, counters in self._counters.items()
                    if isinstance(counters, VersionCounters) and counters.slots
                }
            rows = [
                (key[0], key[1], slot, series, bin_, count)
                for key, (counters, slots) in taken.items()
                for slot, counts in slots.items()
                for series, bin_, count in series_rows(counters.reference, slot, counts)
            ]
            try:
                self.store.add_counts(rows)
            except Exception:
                self.errors += 1
                log.exception("drift: could not write %d counters", len(rows))
                with self._lock:
                    for key, (counters, slots) in taken.items():
                        if self._counters.get(key) is counters:
                            counters.put_back(slots)
            self._flushes += 1
            if self._flushes % PRUNE_EVERY == 0:
                self._prune()

    def _prune(self) -> None:
        horizon = timedelta(seconds=KEPT_WINDOWS * self.settings.drift_window_max_s)
        try:
            self.store.prune(self.clock.now() - horizon)
        except Exception:
            log.exception("drift: could not prune old slots")

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="drift-flush", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        interval = float(self.settings.drift_flush_s)
        while not self._stop.is_set():
            self._wake.wait(interval)
            self._wake.clear()
            if self._stop.is_set():
                break
            self.flush()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self.flush()

    # -- reading ------------------------------------------------------------------------------

    def default_version(self, model: str) -> str:
        """The champion alias's version, else the latest; ``ModelNotFound`` for an unknown model."""
        client = self.registry.client
        try:
            registered = client.get_registered_model(model)
            aliases = dict(registered.aliases or {})
            if CHAMPION_ALIAS in aliases:
                return str(aliases[CHAMPION_ALIAS])
            versions = client.search_model_versions(f"name = '{model}'")
        except MlflowException as exc:
            raise _missing(exc, model) from exc
        if not versions:
            raise ModelNotFound(f"model {model!r} has no versions", {"model": model})
        return str(max(int(v.version) for v in versions))

    def check_version(self, model: str, version: str) -> None:
        try:
            self.registry.client.get_model_version(model, version)
        except MlflowException as exc:
            raise _missing(exc, f"{model}/{version}") from exc

    def windows(self, model: str, version: str, reference: Reference) -> list[Window]:
        settings = self.settings
        now = self.clock.now()
        end = slot_floor(now, self.slot_s) + timedelta(seconds=self.slot_s)
        since = now - timedelta(seconds=KEPT_WINDOWS * settings.drift_window_max_s)
        reset_at = self.store.reset_at(model, version)
        if reset_at is not None and reset_at > since:
            since = reset_at
        slots = self.store.slot_rows(model, version, reference.feature_names[0], since, end)
        windows = select_windows(slots, end, settings.drift_window_rows, settings.drift_window_max_s)
        return [w if w.start >= since else Window(w.index, since, w.end, w.rows) for w in windows]

    def report(self, model: str, version: str, window: int = 0) -> dict[str, Any] | None:
        """The drift report of window ``window`` (0: current); None without a reference."""
        loaded = self.reference(model, version)
        if loaded is None:
            return None
        windows = self.windows(model, version, loaded.reference)
        chosen = windows[window] if window < len(windows) else None
        if chosen is None:
            return {"model": model, "version": version, "window": None, "windows": len(windows)}
        return self._window_report(model, version, loaded, chosen)

    def _window_report(
        self, model: str, version: str, loaded: LoadedReference, window: Window
    ) -> dict[str, Any]:
        sums = self.store.sums(model, version, window.start, window.end)
        return drift_report(
            model, version, loaded.reference, loaded.source, window, sums, self.settings.drift_min_rows
        )

    def history(self, model: str, version: str, feature: str | None) -> dict[str, Any] | None:
        """Every kept window's status and score: a feature's, or the model's."""
        loaded = self.reference(model, version)
        if loaded is None:
            return None
        if feature is not None and feature not in loaded.reference.feature_names:
            raise ModelNotFound(f"{model}/{version} monitors no feature {feature!r}", {"feature": feature})
        entries = []
        for window in self.windows(model, version, loaded.reference):
            report = self._window_report(model, version, loaded, window)
            entry: dict[str, Any] = {
                "index": window.index,
                "start": window.start,
                "end": window.end,
                "rows": window.rows,
            }
            if feature is None:
                entry.update(
                    status=report["status"],
                    drift_share=report["drift_share"],
                    drift_score=report["drift_score"],
                    prediction_psi=report["prediction"]["psi"],
                )
            else:
                found = next(f for f in report["features"] if f["name"] == feature)
                entry.update(
                    status=found["status"],
                    score=found["score"],
                    method=found["method"],
                    statistics=found["statistics"],
                )
            entries.append(entry)
        return {"model": model, "version": version, "feature": feature, "windows": entries}

    def reset(self, model: str, versions: Sequence[str]) -> datetime:
        """Forget the counts of ``versions`` in every process; the reset time."""
        self.flush()
        now = self.clock.now()
        self.store.reset(model, versions, now)
        with self.db.session() as session:
            self.reload(session)
        return now

    def save_reference(self, model: str, version: str, profile: dict[str, Any], actor: str | None) -> None:
        Reference.parse(profile)
        self.flush()
        self.store.save_reference(model, version, profile, actor, self.clock.now())
        with self.db.session() as session:
            self.reload(session)

    def overview(self, model: str, version: str) -> dict[str, Any]:
        """One line of ``GET /monitoring/drift``: ``drift_score`` null without a reference."""
        report = self.report(model, version)
        if report is None or report.get("window") is None:
            return {
                "name": model,
                "version": version,
                "status": "no_reference" if report is None else "insufficient_data",
                "drift_score": None,
                "drift_share": None,
                "window_rows": 0,
            }
        return {
            "name": model,
            "version": version,
            "status": report["status"],
            "drift_score": report["drift_score"],
            "drift_share": report["drift_share"],
            "window_rows": report["window"]["rows"],
        }


_UNKNOWN: Any = object()


def _missing(exc: MlflowException, label: str) -> Exception:
    if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND", "INVALID_PARAMETER_VALUE"):
        return ModelNotFound(f"model {label!r} not found", {"model": label})
    return RegistryUnavailable(f"model registry error: {exc.message}")
