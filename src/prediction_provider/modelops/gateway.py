"""The request path of model operations, shared by every protocol.

    request → route (experiment variant by unit hash, or the reference as asked)
            → load (ensembles by name, else the model cache)
            → the caller builds its matrix from the answering model's signature (4xx stay 4xx)
            → resilience (bulkhead, timeout, breaker) → the model
                 └─ failure → fallback chain (the experiment's control, the model's list, prior)
            → after the answer exists: drift counters, the record, the shadow copy

A request that names no model under experiment costs one dictionary lookup in ``route``. Shadow
work is submitted only once the primary's answer is ready and never changes it. The answer says
who served it (``Served.headers``; each protocol adds its own body fields).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio.to_thread
import numpy as np

from prediction_provider.accounts.principal import Principal
from prediction_provider.accounts.roles import Permission, allows
from prediction_provider.clock import Clock, SystemClock
from prediction_provider.errors import PredictionProviderError
from prediction_provider.modelops.assignment import bucket, shadow_sampled, unit_hash
from prediction_provider.modelops.experiments import ENSEMBLE_PREFIX, Experiments, LiveExperiment
from prediction_provider.modelops.metrics import OpsMetrics
from prediction_provider.serving.cache import CachedModel, ModelCache
from prediction_provider.serving.inference import PredictionService
from prediction_provider.serving.loaders.base import FloatMatrix, ModelOutput

if TYPE_CHECKING:
    from prediction_provider.modelops.drift.monitor import DriftMonitor
    from prediction_provider.modelops.ensembles import Ensembles
    from prediction_provider.modelops.records import ExperimentRecorder
    from prediction_provider.modelops.resilience import Resilience
    from prediction_provider.modelops.shadow import ShadowRunner

log = logging.getLogger(__name__)

PRIOR = "prior"
Runner = Callable[[CachedModel, FloatMatrix], Awaitable[Any]]
ToOutput = Callable[[Any], ModelOutput | None]


@dataclass(slots=True)
class Route:
    """Where one request goes: the reference to load and, under an experiment, the variant."""

    reference: str
    experiment: LiveExperiment | None = None
    variant: str | None = None
    forced: bool = False
    unit: str | None = None
    unit_hash: str | None = None


@dataclass(slots=True)
class Served:
    """One answer and who gave it."""

    cached: CachedModel  # the model that answered (the primary's, for a prior answer)
    output: Any
    route: Route
    served_by: str = "primary"  # primary | fallback
    fallback_target: str | None = None  # models:/name/2, prior
    fallback_reason: str | None = None  # error | timeout | rejected | circuit_open | not_loaded
    status: str = "ok"  # the primary call's own fate
    latency_ms: float = 0.0
    members_used: int | None = None
    members: list[dict[str, Any]] | None = None
    extra_headers: dict[str, str] = field(default_factory=dict)

    @property
    def version(self) -> str | None:
        return self.cached.resolved.version

    def headers(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        route = self.route
        if route.experiment is not None and not route.experiment.pure_shadow:
            headers["X-PP-Experiment"] = route.experiment.name
            headers["X-PP-Variant"] = route.variant or ""
            if self.version:
                headers["X-PP-Model-Version"] = self.version
        if self.served_by != "primary":
            headers["X-PP-Fallback"] = f"{self.fallback_reason}; served_by={self.fallback_target}"
            if self.version and "X-PP-Model-Version" not in headers:
                headers["X-PP-Model-Version"] = self.version
        if self.members_used is not None:
            headers["X-PP-Members-Used"] = str(self.members_used)
        return headers

    def body_fields(self) -> dict[str, Any]:
        """What the native ``/predict*`` body gains."""
        fields: dict[str, Any] = {}
        route = self.route
        if route.experiment is not None and not route.experiment.pure_shadow:
            fields["experiment"] = {"name": route.experiment.name, "variant": route.variant}
        if self.served_by != "primary":
            fields["served_by"] = "fallback"
            fields["fallback_reason"] = self.fallback_reason
            fields["fallback_target"] = self.fallback_target
        if self.members_used is not None:
            ensemble: dict[str, Any] = {"members_used": self.members_used}
            if self.members is not None:
                ensemble["members"] = self.members
            fields["ensemble"] = ensemble
        return fields


def failure_reason(exc: BaseException) -> str:
    code = getattr(exc, "code", "")
    reason = getattr(exc, "reason", None)
    if isinstance(reason, str) and reason:
        return reason
    if code == "model_timeout":
        return "timeout"
    if code in ("model_load_failed", "registry_unavailable", "model_unloaded", "unsupported_model_format"):
        return "not_loaded"
    return "error"


def is_model_failure(exc: BaseException) -> bool:
    """What a fallback may rescue: the model failed, timed out, was refused or did not load; never
    the caller's mistake (4xx: validation, unknown model)."""
    if not isinstance(exc, PredictionProviderError):
        return False
    from prediction_provider.api.errors import status_for  # the one place statuses live

    return status_for(exc) >= 500


class ModelOps:
    """The request path's model operations for one process."""

    def __init__(
        self,
        cache: ModelCache,
        predictions: PredictionService,
        experiments: Experiments,
        metrics: OpsMetrics,
        secret: bytes,
        *,
        record_all: bool = False,
        resilience: Resilience | None = None,
        ensembles: Ensembles | None = None,
        drift: DriftMonitor | None = None,
        recorder: ExperimentRecorder | None = None,
        shadows: ShadowRunner | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.clock: Clock = clock or SystemClock()  # records and shadows carry the server's time
        self.cache = cache
        self.predictions = predictions
        self.experiments = experiments
        self.metrics = metrics
        self.secret = secret
        self.record_all = record_all
        self.resilience = resilience
        self.ensembles = ensembles
        self.drift = drift
        self.recorder = recorder
        self.shadows = shadows

    # -- routing --------------------------------------------------------------------------

    def route(
        self,
        reference: str,
        principal: Principal | None,
        headers: Mapping[str, str] | None,
        request_id: str,
    ) -> Route:
        live = self.experiments.book.get(reference)
        if live is None:
            return Route(reference)
        headers = headers or {}
        unit = self._unit(live, principal, headers, request_id)
        forced = False
        variant = live.control
        asked = headers.get("x-pp-variant")
        if asked and asked in live.targets and (live.allow_forcing or _operates(principal)):
            variant, forced = asked, True
            self.metrics.inc("experiment_forced", (live.name,))
        elif not live.pure_shadow:
            variant = live.layout.variant(bucket(live.salt, unit))
        return Route(
            reference=live.targets[variant],
            experiment=live,
            variant=variant,
            forced=forced,
            unit=unit,
            unit_hash=unit_hash(self.secret, unit),
        )

    def route_job(self, reference: str, owner: Principal) -> tuple[str, dict[str, Any]]:
        """An async job is assigned once, at submit, by its owner: every row goes to that variant."""
        route = self.route(reference, owner, None, uuid.uuid4().hex)
        if route.experiment is None or route.experiment.pure_shadow:
            return reference, {}
        return route.reference, {"experiment": route.experiment.name, "variant": route.variant}

    def _unit(
        self, live: LiveExperiment, principal: Principal | None, headers: Mapping[str, str], request_id: str
    ) -> str:
        unit: str | None = None
        if live.unit == "client":
            unit = headers.get("x-pp-unit") or (
                f"user:{principal.user_id}"
                if principal is not None and principal.user_id is not None
                else None
            )
        elif live.unit.startswith("header:"):
            unit = headers.get(live.unit.split(":", 1)[1].lower())
        else:
            return f"request:{request_id}"
        if not unit:
            self.metrics.inc("experiment_unsticky", (live.name,))
            return f"request:{request_id}"
        return unit

    # -- loading --------------------------------------------------------------------------

    async def load(self, reference: str) -> CachedModel:
        if self.ensembles is not None:
            name = reference[len(ENSEMBLE_PREFIX) :] if reference.startswith(ENSEMBLE_PREFIX) else reference
            ensembles = self.ensembles
            if ensembles.is_ensemble(name):  # its members may need loading: off the event loop
                ensemble: CachedModel | None = ensembles.peek(name) or await anyio.to_thread.run_sync(
                    ensembles.cached, name
                )
                if ensemble is not None:
                    return ensemble
        return await self.cache.aget(reference)

    def load_sync(self, reference: str) -> CachedModel:
        """For validation and worker threads; blocking."""
        if self.ensembles is not None:
            name = reference[len(ENSEMBLE_PREFIX) :] if reference.startswith(ENSEMBLE_PREFIX) else reference
            found: CachedModel | None = self.ensembles.cached(name)
            if found is not None:
                return found
        elif reference.startswith(ENSEMBLE_PREFIX):
            from prediction_provider.errors import ModelNotFound

            raise ModelNotFound(f"no ensemble {reference!r}", {"model": reference})
        return self.cache.get(reference)

    # -- serving --------------------------------------------------------------------------

    async def serve(
        self,
        route: Route,
        build: Callable[[CachedModel], FloatMatrix],
        *,
        request_id: str,
        channel: str,
        principal: Principal | None,
        outcome_key: str | None = None,
        run: Runner | None = None,
        to_output: ToOutput | None = None,
        members: bool = False,
        build_in_thread: bool = False,
        primary: CachedModel | None = None,
    ) -> tuple[Served, FloatMatrix]:
        """Answer ``route``: the primary behind its guard, else the first fallback that answers.
        A 4xx (unknown model, invalid features) propagates untouched; a model failure with no
        fallback left propagates as the protocol's 5xx."""
        started = time.perf_counter()
        runner = run or self._predict
        try:
            if primary is None:
                primary = await self.load(route.reference)
        except Exception as exc:
            if not is_model_failure(exc) or route.experiment is None:
                raise
            served = await self._fallback(route, None, None, exc, runner, started)
            return served, np.empty((0, 0))
        # Validation errors are the caller's: no breaker, no fallback. Large batches validate off the loop.
        matrix = await anyio.to_thread.run_sync(build, primary) if build_in_thread else build(primary)
        try:
            output, detail = await self._guarded(primary, matrix, runner)
            served = Served(primary, output, route, latency_ms=(time.perf_counter() - started) * 1000.0)
            if detail is not None:
                served.members_used = detail[0]
                served.members = detail[1] if members else None
        except Exception as exc:
            if not is_model_failure(exc):
                raise
            served = await self._fallback(route, primary, matrix, exc, runner, started)
        self._after(served, matrix, request_id, channel, principal, outcome_key, to_output or _as_output)
        return served, matrix

    async def _predict(self, cached: CachedModel, matrix: FloatMatrix) -> ModelOutput:
        return await self.predictions.predict_matrix(cached, matrix)

    async def _guarded(
        self, cached: CachedModel, matrix: FloatMatrix, runner: Runner
    ) -> tuple[Any, tuple[int, list[dict[str, Any]] | None] | None]:
        members: tuple[int, list[dict[str, Any]] | None] | None = None

        async def call() -> Any:
            nonlocal members
            if cached.loader == "ensemble" and runner == self._predict:
                output, detail = await anyio.to_thread.run_sync(cached.model.predict_detailed, matrix)  # type: ignore[attr-defined]
                members = (detail.members_used, detail.as_list() if hasattr(detail, "as_list") else None)
                return output
            return await runner(cached, matrix)

        if self.resilience is None:
            return await call(), members
        result = await self.resilience.call(cached.resolved.name, cached.resolved.version, call)
        return result, members

    async def _fallback(
        self,
        route: Route,
        primary: CachedModel | None,
        matrix: FloatMatrix | None,
        failure: Exception,
        runner: Runner,
        started: float,
    ) -> Served:
        """The experiment's control (for a non-control variant), then the model's own chain."""
        reason = failure_reason(failure)
        status = {"timeout": "timeout", "rejected": "rejected", "circuit_open": "rejected"}.get(
            reason, "error"
        )
        chain: list[str] = []
        live = route.experiment
        if live is not None and route.variant != live.control:
            chain.append(live.targets[live.control])
        model_name = (
            primary.resolved.name if primary is not None else (live.model if live else route.reference)
        )
        if self.resilience is not None:
            chain.extend(self.resilience.config(model_name).fallback)
        for target in chain:
            if target == PRIOR:
                if primary is None or matrix is None:
                    continue
                prior = await self._prior(primary, len(matrix))
                if prior is None:
                    continue
                self._count_fallback(primary, reason, PRIOR)
                return Served(
                    primary, prior, route, "fallback", PRIOR, reason, status,
                    (time.perf_counter() - started) * 1000.0,
                )  # fmt: skip
            try:
                cached = await self.load(target)
                if matrix is None:
                    continue
                if (
                    primary is not None
                    and cached.model.signature.feature_names != primary.model.signature.feature_names
                ):
                    continue  # a fallback must read the same columns to answer the same rows
                output, _ = await self._guarded(cached, matrix, runner)
            except Exception as exc:
                if not is_model_failure(exc):
                    raise
                log.info("fallback %s failed too: %s", target, exc)
                continue
            self._count_fallback(primary or cached, reason, target)
            return Served(
                cached, output, route, "fallback", target, reason, status,
                (time.perf_counter() - started) * 1000.0,
            )  # fmt: skip
        raise failure

    async def _prior(self, cached: CachedModel, rows: int) -> ModelOutput | None:
        """The majority class, with the class priors of the drift reference."""
        classes = cached.model.signature.classes
        if not classes or self.drift is None:
            return None
        name, version = cached.resolved.name, cached.resolved.version
        priors = self.drift.class_priors(name, version)
        if priors is None and version:  # not looked up yet: the first calls failed
            await anyio.to_thread.run_sync(self.drift.reference, name, version)
            priors = self.drift.class_priors(name, version)
        if not priors:
            return None
        probabilities = np.array([[float(priors.get(label, 0.0)) for label in classes]] * rows)
        total = probabilities.sum(axis=1, keepdims=True)
        probabilities = probabilities / np.where(total > 0, total, 1.0)
        label = classes[int(np.argmax(probabilities[0]))]
        return ModelOutput([label] * rows, probabilities)

    def _count_fallback(self, cached: CachedModel, reason: str, target: str) -> None:
        self.metrics.inc("fallback", (cached.resolved.name, cached.resolved.version or "", reason, target))

    # -- after the answer -----------------------------------------------------------------

    def _after(
        self,
        served: Served,
        matrix: FloatMatrix,
        request_id: str,
        channel: str,
        principal: Principal | None,
        outcome_key: str | None,
        to_output: ToOutput,
    ) -> None:
        try:
            output = to_output(served.output) if served.output is not None else None
            cached = served.cached
            signature = cached.model.signature
            if self.drift is not None and len(matrix):
                self.drift.observe(
                    cached.resolved.name,
                    cached.resolved.version,
                    signature.feature_names,
                    matrix,
                    signature.classes,
                    output.predictions if output is not None else [],
                    output.probabilities if output is not None else None,
                )
            live = served.route.experiment
            if live is not None:
                self._count(served, live)
                record_id = request_id if len(request_id) <= 36 else str(uuid.uuid4())
                if self.recorder is not None and _sampled(live.record_sample, served.route, request_id):
                    self._record(served, matrix, record_id, channel, principal, outcome_key, output, live)
                if self.shadows is not None and output is not None and len(matrix):
                    self._shadow(served, matrix, record_id, output, live)
            elif self.record_all and self.recorder is not None:
                self._record(served, matrix, request_id[:36], channel, principal, outcome_key, output, None)
        except Exception:  # bookkeeping must never fail an answer already computed
            log.exception("model operations bookkeeping failed")

    def _count(self, served: Served, live: LiveExperiment) -> None:
        self.metrics.inc(
            "experiment_requests",
            (live.name, served.route.variant or "", served.version or "", served.status, served.served_by),
        )
        self.metrics.observe((live.name, served.route.variant or ""), served.latency_ms / 1000.0)

    def _record(
        self,
        served: Served,
        matrix: FloatMatrix,
        record_id: str,
        channel: str,
        principal: Principal | None,
        outcome_key: str | None,
        output: ModelOutput | None,
        live: LiveExperiment | None,
    ) -> None:
        from prediction_provider.modelops.records import ServedRows

        assert self.recorder is not None
        signature = served.cached.model.signature
        keep_features = live is not None and live.record_features
        self.recorder.record(
            ServedRows(
                request_id=record_id,
                channel=channel,
                user_id=principal.user_id if principal is not None else None,
                username=principal.username if principal is not None else None,
                experiment=live.name if live is not None else None,
                variant=served.route.variant,
                target=served.route.reference,
                forced=served.route.forced,
                unit_hash=served.route.unit_hash,
                outcome_key=outcome_key,
                model_name=served.cached.resolved.name,
                model_version=served.cached.resolved.version,
                served_by="primary"
                if served.served_by == "primary"
                else f"fallback:{served.fallback_target}",
                fallback_reason=served.fallback_reason,
                status=served.status,
                latency_ms=served.latency_ms,
                classes=signature.classes,
                predictions=output.predictions if output is not None else [],
                probabilities=output.probabilities if output is not None else None,
                feature_names=signature.feature_names if keep_features else None,
                matrix=matrix,  # hashed always; the values are kept only with record.features
                created_at=self.clock.now(),
            )
        )

    def _shadow(
        self, served: Served, matrix: FloatMatrix, record_id: str, output: ModelOutput, live: LiveExperiment
    ) -> None:
        from prediction_provider.modelops.shadow import ShadowPairing, ShadowSpec

        assert self.shadows is not None
        route = served.route
        jobs: list[tuple[str, str, float, int, int, int, str]] = []
        plan = live.shadow
        if plan is not None:
            key = route.unit if plan.sample_by == "unit" and route.unit else record_id
            if shadow_sampled(live.salt, key, plan.percent):
                jobs.append(
                    (
                        "shadow",
                        plan.target,
                        plan.percent,
                        plan.timeout_ms,
                        plan.max_inflight,
                        plan.queue,
                        plan.sample_by,
                    )
                )
        if route.variant in live.compare_with_control and route.variant != live.control:
            jobs.append(("control", live.targets[live.control], 100.0, 250, 4, 256, "request"))
        if not jobs:
            return
        pairing = ShadowPairing(
            request_id=record_id,
            variant=route.variant,
            unit_hash=route.unit_hash,
            classes=served.cached.model.signature.classes,
            created_at=self.clock.now(),
            primary_labels=list(output.predictions),
            primary_probabilities=output.probabilities,
        )
        rows = np.array(matrix, copy=True)  # the same validated rows, never the caller's buffer
        for shadow_of, target, percent, timeout_ms, max_inflight, queue, sample_by in jobs:
            spec = ShadowSpec(
                target=target,
                timeout_ms=timeout_ms,
                max_inflight=max_inflight,
                queue=queue,
                percent=percent,
                sample_by=sample_by,
                shadow_of=shadow_of,
            )
            self.shadows.submit(live.name, spec, self._shadow_call(target, rows), pairing)

    def _shadow_call(self, target: str, rows: FloatMatrix) -> Callable[[], Awaitable[ModelOutput]]:
        async def call() -> ModelOutput:
            cached = await self.load(target)
            if cached.loader == "ensemble":
                output, _ = await anyio.to_thread.run_sync(cached.model.predict_detailed, rows)  # type: ignore[attr-defined]
                return output  # type: ignore[no-any-return]
            if self.resilience is None:
                return await anyio.to_thread.run_sync(self.predictions.run_matrix, cached, rows)

            async def guarded() -> ModelOutput:
                return await anyio.to_thread.run_sync(self.predictions.run_matrix, cached, rows)

            return await self.resilience.call(cached.resolved.name, cached.resolved.version, guarded)

        return call


def _operates(principal: Principal | None) -> bool:
    return principal is not None and allows(principal.role, Permission.OPERATE_MODELS)


def _sampled(sample: float, route: Route, request_id: str) -> bool:
    if sample >= 1.0:
        return True
    if sample <= 0.0:
        return False
    return bucket("record", route.unit or request_id) < sample * 10_000


def _as_output(output: Any) -> ModelOutput | None:
    return output if isinstance(output, ModelOutput) else None
