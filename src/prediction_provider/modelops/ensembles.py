"""Ensembles (design §3.8): a named combination of registered model versions, served by name like
a model on every protocol and usable as an experiment target (``ensemble:<name>``).

``Ensembles`` is the store (table ``ensembles``; the config is the validated body) and this
process's copy of it, reloaded through the ops stamp. ``cached(name)`` answers with a
``CachedModel`` wrapping an ``EnsembleModel`` whose members come from the model cache; it is
rebuilt when the config changes. An ``EnsembleModel`` calls its members concurrently on their own
columns, each behind its own circuit breaker and ``member_timeout_ms``; an optional member that
fails is dropped and the weights renormalized over the survivors, while a required failure or
fewer than ``min_members`` survivors raises ``PredictionFailed`` (the ensemble's own resilience
and fallback chain take it from there).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
import numpy.typing as npt
from mlflow.exceptions import MlflowException
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from prediction_provider.db.base import utcnow
from prediction_provider.db.modelops_models import Ensemble
from prediction_provider.db.session import Database
from prediction_provider.errors import (
    EnsembleConflict,
    EnsembleNotFound,
    InvalidEnsemble,
    ModelLoadFailed,
    ModelNotFound,
    PredictionFailed,
    PredictionProviderError,
    RegistryUnavailable,
)
from prediction_provider.modelops import combine, stamp
from prediction_provider.modelops.breaker import BreakerConfig, CircuitBreaker
from prediction_provider.modelops.metrics import OpsMetrics
from prediction_provider.serving.cache import CachedModel, ModelCache
from prediction_provider.serving.loaders.base import FloatMatrix, LoadedModel, ModelOutput
from prediction_provider.serving.references import ALIAS_PATTERN, NAME_PATTERN
from prediction_provider.serving.registry import ModelRegistry, ResolvedModel
from prediction_provider.serving.signature import FeatureSpec, ModelSignature

if TYPE_CHECKING:
    from prediction_provider.modelops.chaos import Chaos
    from prediction_provider.modelops.resilience import Resilience
    from prediction_provider.modelops.stamp import StampFollower

log = logging.getLogger(__name__)

PREFIX = "ensemble:"
LOADER = "ensemble"
MAX_MEMBERS = 16
_NAME, _ALIAS = NAME_PATTERN.pattern.strip("^$"), ALIAS_PATTERN.pattern.strip("^$")
TARGET = rf"^models:/{_NAME}(/[0-9]{{1,9}}|@{_ALIAS})$"
MEMBER_NAME = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
Method = Literal[
    "mean_proba", "weighted_mean_proba", "geometric_mean", "majority_vote", "stacking",
    "mean", "weighted_mean", "median",
]  # fmt: skip


# --- the config ---------------------------------------------------------------------------------


class MemberSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(pattern=MEMBER_NAME, description="The member's name in answers and stacking.")]
    target: Annotated[
        str, Field(pattern=TARGET, max_length=300, description="models:/name/3 or models:/name@alias")
    ]
    weight: Annotated[float, Field(gt=0, le=1e6, description="Need not sum to 1 over members.")] = 1.0
    required: bool = Field(default=False, description="A failure of this member fails the whole answer.")


class EnsembleCreate(BaseModel):
    """The body of ``POST /api/v1/ensembles``; stored as it validates."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(pattern=NAME_PATTERN.pattern, max_length=128)]
    method: Method
    members: Annotated[list[MemberSpec], Field(min_length=1, max_length=MAX_MEMBERS)]
    min_members: Annotated[int, Field(ge=1, le=MAX_MEMBERS)] = 1
    member_timeout_ms: Annotated[int, Field(ge=0, le=600_000, description="0: no deadline")] = 1000
    meta_model: Annotated[str | None, Field(pattern=TARGET, max_length=300)] = None
    passthrough: bool = Field(default=False, description="Stacking: the meta model also reads the features.")
    description: Annotated[str | None, Field(max_length=1000)] = None

    @model_validator(mode="after")
    def _consistent(self) -> EnsembleCreate:
        names = [member.name for member in self.members]
        if len(set(names)) != len(names):
            raise ValueError("member names must be unique")
        if self.min_members > len(self.members):
            raise ValueError(f"min_members ({self.min_members}) exceeds the {len(self.members)} members")
        if self.method == "stacking" and self.meta_model is None:
            raise ValueError("stacking needs a meta_model")
        if self.method != "stacking" and (self.meta_model is not None or self.passthrough):
            raise ValueError("meta_model and passthrough belong to stacking only")
        return self


def config_version(config: dict[str, Any]) -> str:
    """A short hash of the stored config: the ensemble's "version" in answers and caches."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def target_model(target: str) -> str:
    """``models:/name/3`` or ``models:/name@alias`` → ``name``."""
    rest = target.removeprefix("models:/")
    return rest.split("@", 1)[0].split("/", 1)[0]


# --- the layout: validation at creation and at every rebuild --------------------------------------


@dataclass(frozen=True, slots=True)
class MemberPlan:
    spec: MemberSpec
    feature_names: tuple[str, ...]  # the member's own signature order
    classes: tuple[str, ...] | None
    columns: npt.NDArray[np.intp]  # its features' positions in the ensemble's matrix
    class_order: npt.NDArray[np.intp] | None  # its probability columns in the ensemble's class order


@dataclass(frozen=True, slots=True)
class Layout:
    signature: ModelSignature
    members: tuple[MemberPlan, ...]
    meta_classes: tuple[str, ...] | None = None
    meta_features: tuple[str, ...] | None = None
    meta_class_order: npt.NDArray[np.intp] | None = None


def plan_layout(config: EnsembleCreate, members: Sequence[LoadedModel], meta: LoadedModel | None) -> Layout:
    """Check the members agree and work out who reads which columns; ``InvalidEnsemble`` if not."""
    problems: list[dict[str, str]] = []
    first = members[0].signature
    classes = first.classes
    union: list[FeatureSpec] = []
    seen: set[str] = set()
    for model in members:
        for feature in model.signature.features:
            if feature.name not in seen:
                seen.add(feature.name)
                union.append(feature)
    index = {spec.name: i for i, spec in enumerate(union)}
    plans: list[MemberPlan] = []
    for position, (spec, model) in enumerate(zip(config.members, members, strict=True)):
        own = model.signature
        field = f"members.{position}.target"
        order = None
        if (own.classes is None) != (classes is None):
            problems.append({"field": field, "error": "members mix classifiers and regressors"})
        elif own.classes is not None and classes is not None:
            try:
                order = combine.class_order(own.classes, classes)
            except ValueError:
                first_name = config.members[0].name
                error = f"classes {list(own.classes)} differ from {first_name}'s {list(classes)}"
                problems.append({"field": field, "error": error})
        columns = np.array([index[name] for name in own.feature_names], dtype=np.intp)
        plans.append(MemberPlan(spec, own.feature_names, own.classes, columns, order))
    if classes is None and config.method not in combine.VALUE_METHODS:
        problems.append(
            {"field": "method", "error": f"regressors combine by {', '.join(combine.VALUE_METHODS)}"}
        )
    if classes is not None and config.method not in combine.PROBA_METHODS:
        problems.append(
            {"field": "method", "error": f"classifiers combine by {', '.join(combine.PROBA_METHODS)}"}
        )
    layout = Layout(ModelSignature(features=tuple(union), classes=classes), tuple(plans))
    if config.method == "stacking" and classes is not None and meta is not None and not problems:
        layout = _with_meta(config, layout, meta, problems)
    if problems:
        raise InvalidEnsemble(f"ensemble {config.name!r} is not valid", problems)
    return layout


def _with_meta(
    config: EnsembleCreate, layout: Layout, meta: LoadedModel, problems: list[dict[str, str]]
) -> Layout:
    classes = layout.signature.classes or ()
    expected = combine.stacking_columns([member.name for member in config.members], classes)
    if config.passthrough:
        expected += list(layout.signature.feature_names)
    if list(meta.signature.feature_names) != expected:
        has = list(meta.signature.feature_names)
        error = f"its features must be exactly {expected}, in order; it has {has}"
        problems.append({"field": "meta_model", "error": error})
    order = None
    if meta.signature.classes is None:
        problems.append({"field": "meta_model", "error": "the meta model must be a classifier"})
    else:
        try:
            order = combine.class_order(meta.signature.classes, classes)
        except ValueError:
            problems.append({"field": "meta_model", "error": f"its classes must be {list(classes)}"})
    return Layout(
        layout.signature, layout.members, meta.signature.classes, meta.signature.feature_names, order
    )


# --- the model ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MemberAnswer:
    name: str
    target: str
    version: str | None
    status: str  # ok | error | timeout | circuit_open
    latency_ms: float
    labels: list[Any] | None = None
    probabilities: FloatMatrix | None = None  # in the ensemble's class order
    error: str | None = None


@dataclass(frozen=True, slots=True)
class EnsembleDetail:
    """Who took part in one answer."""

    members_used: int
    members: tuple[MemberAnswer, ...]
    classes: tuple[str, ...] | None

    def as_list(self) -> list[dict[str, Any]]:
        """Per member: name, version, status, latency_ms, and its answer: ``label`` and
        ``probabilities`` (a class → probability map) for a one-row request, ``labels`` and a list
        of maps for several rows; a regressor's label is its value."""
        out: list[dict[str, Any]] = []
        for answer in self.members:
            item: dict[str, Any] = {
                "name": answer.name,
                "target": answer.target,
                "version": answer.version,
                "status": answer.status,
                "latency_ms": round(answer.latency_ms, 3),
            }
            rows = None
            if answer.probabilities is not None and self.classes is not None:
                rows = [dict(zip(self.classes, map(float, row), strict=True)) for row in answer.probabilities]
            if answer.labels is not None and len(answer.labels) == 1:
                item["label"], item["probabilities"] = answer.labels[0], rows[0] if rows else None
            elif answer.labels is not None:
                item["labels"], item["probabilities"] = answer.labels, rows
            else:
                item["label"], item["probabilities"] = None, None
            if answer.error is not None:
                item["error"] = answer.error
            out.append(item)
        return out


@dataclass(slots=True)
class MemberRuntime:
    """What an ``EnsembleModel`` calls its members with (shared by every ensemble of a process)."""

    source: Callable[[str], CachedModel]  # target → the member's cached model (blocking)
    executor: ThreadPoolExecutor
    metrics: OpsMetrics
    chaos: Chaos | None = None


class EnsembleModel(LoadedModel):
    """Answers on the union of the members' features; thread-safe."""

    framework = "ensemble"

    def __init__(
        self,
        name: str,
        config: EnsembleCreate,
        layout: Layout,
        runtime: MemberRuntime,
        breakers: dict[str, CircuitBreaker],
    ) -> None:
        super().__init__(layout.signature)
        self.name = name
        self.config = config
        self.layout = layout
        self.runtime = runtime
        self.breakers = breakers
        self.metadata = {"ensemble": name, "method": config.method}

    def predict_scores(self, matrix: FloatMatrix) -> npt.NDArray[Any]:
        output, _ = self.predict_detailed(matrix)
        if output.probabilities is not None:
            return output.probabilities
        return np.asarray(output.predictions, dtype=np.float64)

    def predict(self, matrix: FloatMatrix) -> ModelOutput:
        return self.predict_detailed(matrix)[0]

    def predict_detailed(self, matrix: FloatMatrix) -> tuple[ModelOutput, EnsembleDetail]:
        """Call every member (concurrently, each on its own columns) and combine the survivors."""
        answers = self._call_members(np.asarray(matrix, dtype=np.float64))
        for answer in answers:
            if answer.status != "ok":
                self.runtime.metrics.inc("ensemble_member_failures", (self.name, answer.name, answer.status))
        survivors = [a for a in answers if a.status == "ok"]
        self._check_survivors(answers, survivors)
        detail = EnsembleDetail(len(survivors), tuple(answers), self.signature.classes)
        return self._combine(matrix, survivors), detail

    def _check_survivors(self, answers: Sequence[MemberAnswer], survivors: Sequence[MemberAnswer]) -> None:
        failed = [a for a in answers if a.status != "ok"]
        if not failed:
            return
        details = {"ensemble": self.name, "failed": {a.name: a.status for a in failed}}
        required = [
            a.name
            for a, spec in zip(answers, self.config.members, strict=True)
            if spec.required and a.status != "ok"
        ]
        if required:
            raise PredictionFailed(f"ensemble {self.name}: required member {required[0]} failed", details)
        if self.config.method == "stacking":
            raise PredictionFailed(f"ensemble {self.name}: stacking needs every member", details)
        if len(survivors) < self.config.min_members:
            raise PredictionFailed(
                f"ensemble {self.name}: {len(survivors)} members answered, {self.config.min_members} needed",
                details,
            )

    def _call_members(self, matrix: FloatMatrix) -> list[MemberAnswer]:
        started = time.perf_counter()
        pending: dict[int, Future[tuple[CachedModel, ModelOutput, float]]] = {}
        answers: dict[int, MemberAnswer] = {}
        for position, plan in enumerate(self.layout.members):
            if not self.breakers[plan.spec.name].acquire():
                answers[position] = MemberAnswer(plan.spec.name, plan.spec.target, None, "circuit_open", 0.0)
                continue
            pending[position] = self.runtime.executor.submit(self._call_member, plan, matrix[:, plan.columns])
        timeout_s = self.config.member_timeout_ms / 1000.0 if self.config.member_timeout_ms else None
        wait(pending.values(), timeout=timeout_s)
        for position, future in pending.items():
            plan = self.layout.members[position]
            answers[position] = self._answer(plan, future, started)
        return [answers[position] for position in range(len(self.layout.members))]

    def _call_member(self, plan: MemberPlan, columns: FloatMatrix) -> tuple[CachedModel, ModelOutput, float]:
        cached = self.runtime.source(plan.spec.target)
        own = cached.model.signature
        if own.feature_names != plan.feature_names or own.classes != plan.classes:
            raise PredictionFailed(f"member {plan.spec.name}: {plan.spec.target} changed its signature")
        began = time.perf_counter()
        if self.runtime.chaos is not None:
            self.runtime.chaos.before_call(cached.resolved.name, cached.resolved.version)
        output = cached.model.predict(np.ascontiguousarray(columns))
        return cached, output, time.perf_counter() - began

    def _answer(
        self, plan: MemberPlan, future: Future[tuple[CachedModel, ModelOutput, float]], started: float
    ) -> MemberAnswer:
        breaker = self.breakers[plan.spec.name]
        name, target = plan.spec.name, plan.spec.target
        if not future.done():
            elapsed = time.perf_counter() - started
            breaker.record(False, elapsed)
            future.add_done_callback(lambda done: done.exception())  # a late result is dropped
            return MemberAnswer(
                name, target, None, "timeout", elapsed * 1000.0, error="missed member_timeout_ms"
            )
        exc = future.exception()
        if exc is not None:
            elapsed = time.perf_counter() - started
            breaker.record(False, elapsed)
            message = (
                exc.message if isinstance(exc, PredictionProviderError) else f"{type(exc).__name__}: {exc}"
            )
            return MemberAnswer(name, target, None, "error", elapsed * 1000.0, error=message)
        cached, output, duration = future.result()
        breaker.record(True, duration)
        probabilities = None
        if output.probabilities is not None and plan.class_order is not None:
            probabilities = np.asarray(output.probabilities, dtype=np.float64)[:, plan.class_order]
        return MemberAnswer(
            name,
            target,
            cached.resolved.version,
            "ok",
            duration * 1000.0,
            list(output.predictions),
            probabilities,
        )

    def _combine(self, matrix: FloatMatrix, survivors: Sequence[MemberAnswer]) -> ModelOutput:
        weights = [self._weight(answer.name) for answer in survivors]
        classes = self.signature.classes
        if classes is None:
            values = [np.asarray(answer.labels, dtype=np.float64) for answer in survivors]
            return ModelOutput(combine.combine_values(self.config.method, values, weights).tolist())
        probabilities = [answer.probabilities for answer in survivors if answer.probabilities is not None]
        if len(probabilities) != len(survivors):
            raise PredictionFailed(f"ensemble {self.name}: a member answered without probabilities")
        if self.config.method == "stacking":
            return self._stack(matrix, probabilities)
        combined = combine.combine_probabilities(self.config.method, probabilities, weights)
        labels = np.array(classes, dtype=object)[combined.label_index]
        return ModelOutput(labels.tolist(), combined.probabilities)

    def _stack(self, matrix: FloatMatrix, probabilities: Sequence[FloatMatrix]) -> ModelOutput:
        assert self.config.meta_model is not None
        assert self.layout.meta_class_order is not None
        meta = self.runtime.source(self.config.meta_model)
        if meta.model.signature.feature_names != self.layout.meta_features:
            raise PredictionFailed(f"ensemble {self.name}: the meta model changed its signature")
        inputs = combine.stacking_matrix(probabilities, matrix if self.config.passthrough else None)
        output = meta.model.predict(inputs)
        if output.probabilities is None:
            raise PredictionFailed(f"ensemble {self.name}: the meta model answered without probabilities")
        aligned = np.asarray(output.probabilities, dtype=np.float64)[:, self.layout.meta_class_order]
        labels = np.array(self.signature.classes, dtype=object)[np.argmax(aligned, axis=1)]
        return ModelOutput(labels.tolist(), aligned)

    def _weight(self, member: str) -> float:
        return next(spec.weight for spec in self.config.members if spec.name == member)


# --- the store and this process's copy ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoredEnsemble:
    config: EnsembleCreate
    version: str
    created_by: str | None
    created_at: datetime
    updated_at: datetime


class Ensembles:
    """Create, list, read and delete ensembles, and serve them by name."""

    def __init__(
        self,
        db: Database,
        cache: ModelCache,
        metrics: OpsMetrics,
        registry: ModelRegistry | None = None,
        resilience: Resilience | None = None,
        chaos: Chaos | None = None,
        max_workers: int = 32,
    ) -> None:
        self.db = db
        self.cache = cache
        self.registry = registry
        self.resilience = resilience
        self.runtime = MemberRuntime(
            cache.get, ThreadPoolExecutor(max_workers, thread_name_prefix="ensemble-member"), metrics, chaos
        )
        self._stored: dict[str, StoredEnsemble] = {}  # replaced whole: read without a lock
        self._built: dict[str, tuple[str, CachedModel]] = {}  # name → (config version, model)
        self._breakers: dict[tuple[str, str, str], CircuitBreaker] = {}
        self._lock = threading.Lock()
        self._build_locks: dict[str, threading.Lock] = {}

    # --- serving -------------------------------------------------------------------------------

    def cached(self, name: str) -> CachedModel | None:
        """The ensemble ``name`` ready to answer, or None if there is no such ensemble (a dict
        lookup: every request of every protocol asks). Building one loads its members through
        the model cache (blocking); ``ModelLoadFailed`` if a member cannot load or no longer agrees."""
        stored = self._stored.get(name)
        if stored is None:
            return None
        built = self._built.get(name)
        if built is not None and built[0] == stored.version:
            return built[1]
        return self._build(name, stored)

    def resolve_target(self, target: str) -> CachedModel:
        """An experiment target ``ensemble:<name>``; ``EnsembleNotFound`` if there is none."""
        name = target.removeprefix(PREFIX)
        cached = self.cached(name) if target.startswith(PREFIX) else None
        if cached is None:
            raise EnsembleNotFound(f"no ensemble {name!r}", {"ensemble": name})
        return cached

    def names(self) -> list[str]:
        return sorted(self._stored)

    def catalogue(self) -> list[dict[str, Any]]:
        """What ``GET /models`` lists of each ensemble, by name."""
        return [self._entry(name, stored) for name, stored in sorted(self._stored.items())]

    def _build(self, name: str, stored: StoredEnsemble) -> CachedModel:
        with self._lock:
            lock = self._build_locks.setdefault(name, threading.Lock())
        with lock:
            built = self._built.get(name)
            if built is not None and built[0] == stored.version:
                return built[1]
            began = time.perf_counter()
            config = stored.config
            try:
                members = [self.cache.get(member.target) for member in config.members]
                meta = self.cache.get(config.meta_model) if config.meta_model else None
                layout = plan_layout(config, [m.model for m in members], meta.model if meta else None)
            except (ModelNotFound, ModelLoadFailed, InvalidEnsemble) as exc:
                raise ModelLoadFailed(
                    f"ensemble {name} cannot be built: {exc.message}", {"ensemble": name}
                ) from exc
            breakers = {member.name: self._breaker(name, member) for member in config.members}
            model = EnsembleModel(name, config, layout, self.runtime, breakers)
            cached = CachedModel(
                resolved=ResolvedModel(
                    name=name, version=stored.version, uri=f"{PREFIX}{name}", location=Path(".")
                ),
                model=model,
                loader=LOADER,
                loaded_at=datetime.now(UTC),
                load_seconds=time.perf_counter() - began,
            )
            with self._lock:
                current = self._stored.get(name)
                if current is not None and current.version == stored.version:
                    self._built[name] = (stored.version, cached)
            return cached

    def _breaker(self, ensemble: str, member: MemberSpec) -> CircuitBreaker:
        key = (ensemble, member.name, member.target)
        with self._lock:
            breaker = self._breakers.get(key)
            if breaker is None:
                config = BreakerConfig()
                if self.resilience is not None:
                    config = self.resilience.config(target_model(member.target)).breaker.to_config()
                breaker = self._breakers[key] = CircuitBreaker(config)
            return breaker

    # --- following the database ----------------------------------------------------------------

    def reload(self, session: Session) -> None:
        """Take the stored ensembles. One this process has served and whose config changed is
        rebuilt here, off the request path (a failure is logged and retried by the next request);
        others are built by their first request, so a new worker loads no member it never serves."""
        stored: dict[str, StoredEnsemble] = {}
        for row in session.scalars(select(Ensemble)):
            try:
                config = EnsembleCreate.model_validate(row.config)
            except ValidationError as exc:
                log.warning("ensemble %s: stored config is not valid, skipped: %s", row.name, exc)
                continue
            stored[row.name] = StoredEnsemble(
                config, config_version(row.config), row.created_by, row.created_at, row.updated_at
            )
        with self._lock:
            in_use = set(self._built)
            self._stored = stored
            self._built = {n: b for n, b in self._built.items() if n in stored and stored[n].version == b[0]}
            self._breakers = {k: b for k, b in self._breakers.items() if k[0] in stored}
        for name in sorted(in_use & set(stored) - set(self._built)):
            try:
                self._build(name, stored[name])
            except PredictionProviderError as exc:
                log.warning("ensemble %s: %s", name, exc.message)

    def is_ensemble(self, name: str) -> bool:
        """Whether ``name`` (or ``ensemble:name``) names a stored ensemble: a dict lookup."""
        return name.removeprefix(PREFIX) in self._stored

    def peek(self, name: str) -> CachedModel | None:
        """The built ensemble, never building it (for the event loop: if ``is_ensemble`` but this
        is None, call ``cached`` in a worker thread)."""
        stored = self._stored.get(name.removeprefix(PREFIX))
        built = self._built.get(name.removeprefix(PREFIX))
        return built[1] if stored is not None and built is not None and built[0] == stored.version else None

    def refresh(self, follower: StampFollower | None) -> None:
        """After a write: apply it in this process before answering."""
        if follower is not None:
            follower.refresh(force=True)
            return
        with self.db.session() as session:
            self.reload(session)

    def close(self) -> None:
        self.runtime.executor.shutdown(wait=False, cancel_futures=True)

    # --- the store (routes) --------------------------------------------------------------------

    def create(self, body: EnsembleCreate, actor: str | None) -> dict[str, Any]:
        """Validate against the members' loaded models, store, and bump the stamp."""
        with self.db.session() as session:
            taken = session.get(Ensemble, body.name) is not None
        if taken or self._is_registered_model(body.name):
            raise EnsembleConflict(f"the name {body.name!r} is taken", {"name": body.name})
        self._validate(body)
        config = body.model_dump(mode="json")
        now = utcnow()
        try:
            with self.db.session() as session:
                if session.get(Ensemble, body.name) is not None:
                    raise EnsembleConflict(f"the name {body.name!r} is taken", {"name": body.name})
                session.add(
                    Ensemble(name=body.name, config=config, created_by=actor, created_at=now, updated_at=now)
                )
                stamp.bump(session)
                session.flush()
        except IntegrityError as exc:
            raise EnsembleConflict(f"the name {body.name!r} is taken", {"name": body.name}) from exc
        stored = StoredEnsemble(body, config_version(config), actor, now, now)
        return self._view(body.name, stored)

    def delete(self, name: str) -> None:
        with self.db.session() as session:
            row = session.get(Ensemble, name)
            if row is None:
                raise EnsembleNotFound(f"no ensemble {name!r}", {"ensemble": name})
            session.delete(row)
            stamp.bump(session)

    def get(self, name: str) -> dict[str, Any]:
        with self.db.session() as session:
            row = session.get(Ensemble, name)
            if row is None:
                raise EnsembleNotFound(f"no ensemble {name!r}", {"ensemble": name})
            stored = self._row(row)
        return self._view(name, stored, build=True)

    def page(self, limit: int, offset: int) -> dict[str, Any]:
        with self.db.session() as session:
            total = int(session.scalar(select(func.count()).select_from(Ensemble)) or 0)
            rows = session.scalars(select(Ensemble).order_by(Ensemble.name).limit(limit).offset(offset)).all()
            items = [self._view(row.name, self._row(row)) for row in rows]
        return {"items": items, "count": len(items), "total": total, "limit": limit, "offset": offset}

    def _row(self, row: Ensemble) -> StoredEnsemble:
        config = EnsembleCreate.model_validate(row.config)
        return StoredEnsemble(
            config, config_version(row.config), row.created_by, row.created_at, row.updated_at
        )

    def _validate(self, body: EnsembleCreate) -> Layout:
        problems: list[dict[str, str]] = []
        members: list[LoadedModel] = []
        for position, member in enumerate(body.members):
            loaded = self._load_for_validation(member.target, f"members.{position}.target", problems)
            if loaded is not None:
                members.append(loaded)
        meta = self._load_for_validation(body.meta_model, "meta_model", problems) if body.meta_model else None
        if problems:
            raise InvalidEnsemble(f"ensemble {body.name!r} is not valid", problems)
        return plan_layout(body, members, meta)

    def _load_for_validation(
        self, target: str, field: str, problems: list[dict[str, str]]
    ) -> LoadedModel | None:
        try:
            return self.cache.get(target).model
        except RegistryUnavailable:
            raise
        except (ModelNotFound, ModelLoadFailed) as exc:
            problems.append({"field": field, "error": f"{target}: {exc.message}"})
        except PredictionProviderError as exc:
            problems.append({"field": field, "error": f"{target}: {exc.message}"})
        return None

    def _is_registered_model(self, name: str) -> bool:
        if self.registry is None:
            return False
        try:
            self.registry.client.get_registered_model(name)
        except MlflowException as exc:
            if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND", "INVALID_PARAMETER_VALUE"):
                return False
            raise RegistryUnavailable(f"model registry error: {exc.message}") from exc
        except (OSError, ConnectionError) as exc:
            raise RegistryUnavailable(f"model registry unreachable: {exc}") from exc
        return True

    # --- views ---------------------------------------------------------------------------------

    def _view(self, name: str, stored: StoredEnsemble, build: bool = False) -> dict[str, Any]:
        view: dict[str, Any] = {
            "name": name,
            "type": "ensemble",
            "version": stored.version,
            "uri": f"{PREFIX}{name}",
            **stored.config.model_dump(mode="json", exclude={"name"}),
            "created_by": stored.created_by,
            "created_at": stored.created_at,
            "updated_at": stored.updated_at,
        }
        built = self._built.get(name)
        cached = built[1] if built is not None and built[0] == stored.version else None
        if cached is None and build and name in self._stored:
            try:
                cached = self.cached(name)
            except PredictionProviderError as exc:
                view["error"] = exc.message
        view["signature"] = cached.model.signature.as_dict() if cached is not None else None
        if cached is not None:
            breakers = self._breakers
            for member in view["members"]:
                breaker = breakers.get((name, member["name"], member["target"]))
                member["breaker"] = breaker.state if breaker is not None else "closed"
        return view

    def _entry(self, name: str, stored: StoredEnsemble) -> dict[str, Any]:
        """A ``GET /models`` entry: the registered-model shape, plus ``type`` and the members."""
        return {
            "name": name,
            "type": "ensemble",
            "description": stored.config.description,
            "aliases": {},
            "tags": {},
            "latest_version": stored.version,
            "versions": [],
            "method": stored.config.method,
            "members": [member.target for member in stored.config.members],
        }
