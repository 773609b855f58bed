"""Experiment traffic records: one ``prediction_records`` row per answered row (role ``primary``) and
one ``shadow_records`` row per row a shadow answered (or failed, timed out, was dropped on).

Recording costs the request path a deque append per request (``ExperimentRecorder.record``): the
rows (labels, probabilities by class, the feature hash, features when the experiment records them)
are built by the writers' threads, flushed every ``PP_RECORD_FLUSH_MS``. A crash loses at most one
flush interval. A shadow row has the same ``(request_id, row)`` as the primary row it pairs with.

Which requests are recorded (``record.sample`` of experiment traffic, everything under
``PP_RECORD_ALL``) is the request path's choice: whatever is handed to ``record`` is written.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import orjson
from sqlalchemy import and_, delete, or_, select

from prediction_provider.db.batch_writer import BatchWriter
from prediction_provider.db.modelops_models import Experiment, ShadowRecord
from prediction_provider.db.models import PredictionRecord
from prediction_provider.db.session import Database
from prediction_provider.errors import ExperimentNotFound, InvalidInput

MODELS_PREFIX = "models:/"


@dataclass(frozen=True, slots=True)
class ServedRows:
    """What the request path hands over once per answered request (1..n rows).

    ``status`` is the primary call's own fate: an answer a fallback rescued keeps the primary's
    failure here (and says who served it in ``served_by``), so error rates count it. ``matrix`` is
    the validated float64 rows the model saw: when given, each row's ``feature_hash`` is the
    SHA-256 of its bytes (else the hash is empty); ``feature_names`` too, and the row's features are
    stored (experiments with ``record.features``)."""

    request_id: str
    channel: str  # predict | batch | v2 | grpc | invocations | job
    user_id: int | None
    username: str | None
    experiment: str | None
    variant: str | None
    target: str | None
    forced: bool
    unit_hash: str | None
    outcome_key: str | None
    model_name: str
    model_version: str | None
    served_by: str  # primary | fallback:<target> | prior
    fallback_reason: str | None  # error | timeout | rejected | circuit_open | not_loaded
    status: str  # ok | error | timeout | rejected
    latency_ms: float
    classes: tuple[str, ...] | None
    predictions: Sequence[Any]
    probabilities: npt.NDArray[np.float64] | None
    created_at: datetime
    feature_names: tuple[str, ...] | None = None
    matrix: npt.NDArray[np.float64] | None = None
    job_id: str | None = None


@dataclass(frozen=True, slots=True)
class ShadowRows:
    """A shadow's answer (or its failure) for all ``rows`` rows of one primary request.

    ``predictions``/``probabilities`` are empty/None unless ``status`` is ``ok``; ``classes`` is the
    order of the probability columns."""

    experiment: str
    variant: str | None  # the primary's variant
    shadow_of: str  # shadow | control
    target: str
    request_id: str
    rows: int
    unit_hash: str | None
    created_at: datetime  # the primary's, so a pair sorts together
    status: str  # ok | error | timeout | dropped
    latency_ms: float | None
    classes: tuple[str, ...] | None = None
    predictions: Sequence[Any] = ()
    probabilities: npt.NDArray[np.float64] | None = None


def target_model(target: str) -> tuple[str, str | None]:
    """The model name and version a target text names: ``models:/m/3`` → (m, 3); ``models:/m@a``
    → (m, None); anything else (``ensemble:x``, a bare name) is its own name."""
    if target.startswith(MODELS_PREFIX):
        rest = target[len(MODELS_PREFIX) :]
        if "@" in rest:
            return rest.split("@", 1)[0], None
        name, _, version = rest.rpartition("/")
        if name and version:
            return name, version
        return rest, None
    return target, None


def feature_hash(row: npt.NDArray[np.float64]) -> str:
    """SHA-256 of one row as the model saw it: float64, little-endian, in the model's feature order."""
    return hashlib.sha256(np.ascontiguousarray(row, dtype="<f8").tobytes()).hexdigest()


def _plain(value: Any) -> Any:
    item = getattr(value, "item", None)
    return item() if callable(item) else value


def answer_of(prediction: Any, is_classifier: bool) -> tuple[str | None, float | None]:
    """(label, value): a classifier's (or any non-numeric) answer is a label, a number a value."""
    prediction = _plain(prediction)
    if is_classifier or isinstance(prediction, str | bool) or prediction is None:
        return (None if prediction is None else str(prediction)), None
    try:
        value = float(prediction)
    except (TypeError, ValueError):
        return str(prediction), None
    return None, (value if math.isfinite(value) else None)


def probabilities_by_class(
    classes: tuple[str, ...] | None, probabilities: npt.NDArray[np.float64] | None, index: int
) -> dict[str, float | None] | None:
    if classes is None or probabilities is None or index >= len(probabilities):
        return None
    # A non-finite probability is stored as null: PostgreSQL's JSON has no NaN, and one would
    # cost the whole row.
    return {
        str(name): _finite_or_none(float(p)) for name, p in zip(classes, probabilities[index], strict=False)
    }


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def served_row_dicts(served: ServedRows) -> Iterator[dict[str, Any]]:
    """``prediction_records`` rows of one answered request; every row has the same keys. A request
    answered with no rows at all (its failure is the record) still gets one row per input row."""
    is_classifier = served.classes is not None
    count = len(served.predictions)
    if count == 0 and served.matrix is not None:
        count = len(served.matrix)
    for row in range(max(count, 1)):
        label: str | None = None
        value: float | None = None
        if row < len(served.predictions):
            label, value = answer_of(served.predictions[row], is_classifier)
            answer: dict[str, Any] = {"label": label} if label is not None else {"value": value}
        else:
            answer = {"error": served.status}
        matrix_row = served.matrix[row] if served.matrix is not None and row < len(served.matrix) else None
        features = None
        if served.feature_names is not None and matrix_row is not None:
            features = {
                name: _finite_or_none(float(x))
                for name, x in zip(served.feature_names, matrix_row, strict=False)
            }
        yield {
            "request_id": served.request_id,
            "row": row,
            "created_at": served.created_at,
            "channel": served.channel,
            "job_id": served.job_id,
            "user_id": served.user_id,
            "username": served.username,
            "model_name": served.model_name,
            "model_version": served.model_version,
            "role": "primary",
            "served_by": served.served_by,
            "feature_hash": feature_hash(matrix_row) if matrix_row is not None else "",
            "label": label,
            "probabilities": probabilities_by_class(served.classes, served.probabilities, row),
            "value": value,
            "answer": answer,
            "latency_ms": served.latency_ms,
            "status": served.status,
            "experiment": served.experiment,
            "variant": served.variant,
            "target": served.target,
            "forced": served.forced,
            "unit_hash": served.unit_hash,
            "outcome_key": served.outcome_key,
            "fallback_reason": served.fallback_reason,
            "features": features,
        }


def shadow_row_dicts(shadow: ShadowRows) -> Iterator[dict[str, Any]]:
    """``shadow_records`` rows: one per primary row, whatever the shadow's fate."""
    model_name, model_version = target_model(shadow.target)
    answered = shadow.status == "ok"
    is_classifier = shadow.classes is not None
    for row in range(shadow.rows):
        label: str | None = None
        value: float | None = None
        probabilities = None
        if answered and row < len(shadow.predictions):
            label, value = answer_of(shadow.predictions[row], is_classifier)
            probabilities = probabilities_by_class(shadow.classes, shadow.probabilities, row)
        yield {
            "request_id": shadow.request_id,
            "row": row,
            "created_at": shadow.created_at,
            "experiment": shadow.experiment,
            "variant": shadow.variant,
            "shadow_of": shadow.shadow_of,
            "target": shadow.target,
            "model_name": model_name,
            "model_version": model_version,
            "label": label,
            "probabilities": probabilities,
            "value": value,
            "status": shadow.status,
            "latency_ms": shadow.latency_ms,
            "unit_hash": shadow.unit_hash,
        }


class ExperimentRecorder:
    """Writes experiment traffic (``prediction_records``) and shadow answers (``shadow_records``)
    from two batch writers' threads; callers only append to a deque."""

    def __init__(self, db: Database, flush_interval_s: float = 0.5) -> None:
        self.db = db
        self._served: BatchWriter[ServedRows] = BatchWriter(
            db, PredictionRecord, None, to_rows=served_row_dicts, name="experiment-recorder",
            flush_interval_s=flush_interval_s,
        )  # fmt: skip
        self._shadows: BatchWriter[ShadowRows] = BatchWriter(
            db, ShadowRecord, None, to_rows=shadow_row_dicts, name="shadow-recorder",
            flush_interval_s=flush_interval_s,
        )  # fmt: skip

    def record(self, rows: ServedRows) -> None:
        """Queue one answered request; its rows are built and written off the request path."""
        self._served.record(rows)

    def record_shadow(self, rows: ShadowRows) -> None:
        self._shadows.record(rows)

    @property
    def lost(self) -> int:
        """Requests or rows given up on (the database refused them or stayed unreachable)."""
        return self._served.lost + self._shadows.lost

    def flush(self) -> None:
        """Return once everything recorded so far is stored (or given up and logged)."""
        self._served.flush()
        self._shadows.flush()

    def close(self) -> None:
        """Write what is queued and stop the writers (before the database is disposed of)."""
        self._served.close()
        self._shadows.close()

    def enforce_retention(self, now: datetime, days_by_experiment: Mapping[str, int]) -> int:
        """Delete each named experiment's primary and shadow records older than its retention
        days; returns how many rows went. Records of other traffic are never touched here."""
        deleted = 0
        with self.db.session() as session:
            for experiment, days in days_by_experiment.items():
                cutoff = now - timedelta(days=days)
                for table in (PredictionRecord, ShadowRecord):
                    result = session.execute(
                        delete(table).where(table.experiment == experiment, table.created_at < cutoff)
                    )
                    deleted += int(getattr(result, "rowcount", 0) or 0)
        return deleted

    def enforce_configured_retention(self, now: datetime) -> int:
        """``enforce_retention`` with every stored experiment's ``record.retention_days`` (30 when
        its config names none): what the daily retention pass runs."""
        return self.enforce_retention(now, retention_days(self.db))


def retention_days(db: Database, default_days: int = 30) -> dict[str, int]:
    """Each stored experiment's record retention in days."""
    with db.session() as session:
        configs = session.execute(select(Experiment.name, Experiment.config)).all()
    days: dict[str, int] = {}
    for name, config in configs:
        record = (config or {}).get("record") or {}
        days[name] = int(record.get("retention_days") or default_days)
    return days


# -- reading: GET /api/v1/experiments/{name}/records ---------------------------------------------


@dataclass(frozen=True, slots=True)
class RecordQuery:
    experiment: str
    role: str = "primary"  # primary | shadow
    variant: str | None = None
    request_id: str | None = None
    status: str | None = None
    limit: int = 50
    cursor: str | None = None


@dataclass(frozen=True, slots=True)
class RecordPage:
    items: list[dict[str, Any]]
    next_cursor: str | None


def encode_cursor(created_at: datetime, request_id: str, row: int, shadow_of: str = "") -> str:
    raw = orjson.dumps([created_at.isoformat(), request_id, row, shadow_of])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str, int, str]:
    """The position a page ended at; ``InvalidInput`` for anything this module did not write."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, request_id, row, shadow_of = orjson.loads(raw)
        at = datetime.fromisoformat(created_at)
        if at.tzinfo is None or not isinstance(request_id, str) or not isinstance(shadow_of, str):
            raise ValueError("bad cursor")
        return at, request_id, int(row), shadow_of
    except (ValueError, TypeError, binascii.Error, orjson.JSONDecodeError) as exc:
        raise InvalidInput(
            "cursor is not one this route returned", [{"field": "cursor", "error": "invalid cursor"}]
        ) from exc


def read_records(db: Database, query: RecordQuery) -> RecordPage:
    """One page of an experiment's primary or shadow records, newest first, keyset-paged by
    ``(created_at, request_id, row)`` (and ``shadow_of`` for shadows): a page never repeats or skips
    a row however many are written meanwhile. ``ExperimentNotFound`` for an unknown name."""
    table: type[PredictionRecord] | type[ShadowRecord] = (
        ShadowRecord if query.role == "shadow" else PredictionRecord
    )
    keys: list[Any] = [table.created_at, table.request_id, table.row]
    if table is ShadowRecord:
        keys.append(ShadowRecord.shadow_of)
    statement = select(table).where(table.experiment == query.experiment)
    if query.variant is not None:
        statement = statement.where(table.variant == query.variant)
    if query.request_id is not None:
        statement = statement.where(table.request_id == query.request_id)
    if query.status is not None:
        statement = statement.where(table.status == query.status)
    if query.cursor is not None:
        position = decode_cursor(query.cursor)
        statement = statement.where(_before(keys, position[: len(keys)]))
    statement = statement.order_by(*(key.desc() for key in keys)).limit(query.limit + 1)
    with db.session() as session:
        known = session.scalar(select(Experiment.id).where(Experiment.name == query.experiment))
        if known is None:
            raise ExperimentNotFound(
                f"no experiment named {query.experiment!r}", {"experiment": query.experiment}
            )
        rows = cast(list[PredictionRecord | ShadowRecord], list(session.scalars(statement)))
    more = len(rows) > query.limit
    rows = rows[: query.limit]
    next_cursor = None
    if more and rows:
        last = rows[-1]
        next_cursor = encode_cursor(
            last.created_at, last.request_id, last.row, getattr(last, "shadow_of", "")
        )
    return RecordPage([record_view(row) for row in rows], next_cursor)


def _before(keys: Sequence[Any], position: Sequence[Any]) -> Any:
    """``keys < position`` as a row comparison, spelt out (portable, and each term can use an index)."""
    terms = []
    for index, key in enumerate(keys):
        equal = [keys[i] == position[i] for i in range(index)]
        terms.append(and_(*equal, key < position[index]))
    return or_(*terms)


def record_view(record: PredictionRecord | ShadowRecord) -> dict[str, Any]:
    """What the records route shows of a row (never the requester's account, only the unit's HMAC)."""
    common = {
        "request_id": record.request_id,
        "row": record.row,
        "created_at": record.created_at,
        "experiment": record.experiment,
        "variant": record.variant,
        "model_name": record.model_name,
        "model_version": record.model_version,
        "label": record.label,
        "probabilities": record.probabilities,
        "value": record.value,
        "status": record.status,
        "latency_ms": record.latency_ms,
        "unit_hash": record.unit_hash,
    }
    if isinstance(record, ShadowRecord):
        return {**common, "role": "shadow", "shadow_of": record.shadow_of, "target": record.target}
    return {
        **common,
        "role": record.role,
        "target": record.target,
        "channel": record.channel,
        "served_by": record.served_by,
        "fallback_reason": record.fallback_reason,
        "forced": record.forced,
        "outcome_key": record.outcome_key,
        "feature_hash": record.feature_hash or None,
        "features": record.features,
    }
