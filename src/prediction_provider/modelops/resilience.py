"""Resilience of model calls (design §3.7): per-model timeout, bulkhead, circuit breaker and
fallback chain, with defaults from the settings and each model's own in ``model_resilience``.

One ``Resilience`` per process holds a breaker per (model, version). ``call`` guards one model
call: breaker → bulkhead → deadline (chaos, then the model) → the breaker's verdict. Operator
controls (force open/closed, reset) live in ``breaker_overrides`` and reach every worker through
the ops stamp (``reload``); the fallback chain itself is walked by the request path
(``modelops.gateway``), which reads ``config(model).fallback``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import anyio.to_thread
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from sqlalchemy import select
from sqlalchemy.orm import Session

from prediction_provider.db.base import utcnow
from prediction_provider.db.modelops_models import BreakerOverride, ModelResilience
from prediction_provider.db.session import Database
from prediction_provider.errors import InvalidInput, ModelTimeout, ModelUnavailable, PredictionProviderError
from prediction_provider.modelops import stamp
from prediction_provider.modelops.breaker import STATES, BreakerConfig, CircuitBreaker
from prediction_provider.modelops.metrics import OpsMetrics
from prediction_provider.serving.references import ALIAS_PATTERN, NAME_PATTERN

if TYPE_CHECKING:
    from prediction_provider.config import Settings
    from prediction_provider.modelops.chaos import Chaos

log = logging.getLogger(__name__)
T = TypeVar("T")

PRIOR = "prior"
MAX_FALLBACKS = 8
_NAME, _ALIAS = NAME_PATTERN.pattern.strip("^$"), ALIAS_PATTERN.pattern.strip("^$")
FALLBACK_TARGET = re.compile(rf"^models:/{_NAME}(/[0-9]{{1,9}}|@{_ALIAS})$")
CONTROLS = {"force-open": "force_open", "force-closed": "force_closed", "reset": "none"}


class BreakerSettings(BaseModel):
    """``BreakerConfig`` as the API reads and writes it."""

    model_config = ConfigDict(extra="forbid")

    window: Literal["count"] = "count"
    window_size: int = Field(ge=1, le=100_000)
    min_calls: int = Field(ge=1, le=100_000)
    failure_rate: float = Field(gt=0, le=1)
    slow_call_ms: float = Field(ge=0, le=3_600_000, description="0: calls are never judged slow")
    slow_call_rate: float = Field(gt=0, le=1)
    open_s: float = Field(gt=0, le=86_400)
    open_backoff: float = Field(ge=1, le=100)
    max_open_s: float = Field(gt=0, le=86_400)
    half_open_calls: int = Field(ge=1, le=10_000)

    @model_validator(mode="after")
    def _consistent(self) -> BreakerSettings:
        self.to_config()  # min_calls <= window_size, max_open_s >= open_s
        return self

    def to_config(self) -> BreakerConfig:
        return BreakerConfig(**self.model_dump(exclude={"window"}))


class ResilienceConfig(BaseModel):
    """One model's effective resilience: ``timeout_ms`` 0 and ``max_inflight`` 0 mean none."""

    model_config = ConfigDict(extra="forbid")

    timeout_ms: float = Field(ge=0, le=600_000)
    max_inflight: int = Field(ge=0, le=100_000)
    breaker: BreakerSettings
    fallback: list[str] = Field(default_factory=list, max_length=MAX_FALLBACKS)

    @field_validator("fallback")
    @classmethod
    def _targets(cls, targets: list[str]) -> list[str]:
        for target in targets:
            if target != PRIOR and not FALLBACK_TARGET.match(target):
                raise ValueError(f"{target!r}: use models:/name/version, models:/name@alias or prior")
        if len(set(targets)) != len(targets):
            raise ValueError("a fallback target is listed twice")
        if PRIOR in targets[:-1]:
            raise ValueError("prior always answers: it can only be the last fallback")
        return targets

    @classmethod
    def defaults(cls, settings: Settings) -> ResilienceConfig:
        return cls(
            timeout_ms=settings.model_timeout_ms,
            max_inflight=settings.model_max_inflight,
            breaker=BreakerSettings(
                window_size=settings.breaker_window_size,
                min_calls=min(settings.breaker_min_calls, settings.breaker_window_size),
                failure_rate=settings.breaker_failure_rate,
                slow_call_ms=settings.breaker_slow_call_ms,
                slow_call_rate=settings.breaker_slow_call_rate,
                open_s=settings.breaker_open_s,
                open_backoff=settings.breaker_open_backoff,
                max_open_s=max(settings.breaker_max_open_s, settings.breaker_open_s),
                half_open_calls=settings.breaker_half_open_calls,
            ),
        )

    def overlay(self, stored: dict[str, Any]) -> ResilienceConfig:
        """These defaults with a model's stored fields on top (a partial ``breaker`` too)."""
        merged = self.model_dump()
        for key, value in stored.items():
            if key == "breaker" and isinstance(value, dict):
                merged["breaker"] = {**merged["breaker"], **value}
            else:
                merged[key] = value
        return ResilienceConfig.model_validate(merged)


class BreakerSettingsUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    window: Literal["count"] | None = None
    window_size: int | None = Field(default=None, ge=1, le=100_000)
    min_calls: int | None = Field(default=None, ge=1, le=100_000)
    failure_rate: float | None = Field(default=None, gt=0, le=1)
    slow_call_ms: float | None = Field(default=None, ge=0, le=3_600_000)
    slow_call_rate: float | None = Field(default=None, gt=0, le=1)
    open_s: float | None = Field(default=None, gt=0, le=86_400)
    open_backoff: float | None = Field(default=None, ge=1, le=100)
    max_open_s: float | None = Field(default=None, gt=0, le=86_400)
    half_open_calls: int | None = Field(default=None, ge=1, le=10_000)


class ResilienceUpdate(BaseModel):
    """The body of ``PUT /models/{name}/resilience``: fields left out keep the settings' defaults."""

    model_config = ConfigDict(extra="forbid")

    timeout_ms: float | None = Field(default=None, ge=0, le=600_000)
    max_inflight: int | None = Field(default=None, ge=0, le=100_000)
    breaker: BreakerSettingsUpdate | None = None
    fallback: list[str] | None = Field(default=None, max_length=MAX_FALLBACKS)

    def stored(self) -> dict[str, Any]:
        return self.model_dump(exclude_unset=True, exclude_none=True)


class Resilience:
    """This process's breakers and bulkheads, and the resilience config of every model."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        metrics: OpsMetrics,
        chaos: Chaos | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.db = db
        self.metrics = metrics
        self.chaos = chaos
        self.clock = clock
        self._defaults = ResilienceConfig.defaults(settings)
        self._configs: dict[str, ResilienceConfig] = {}
        self._stored: dict[str, dict[str, Any]] = {}
        self._overrides: dict[tuple[str, str], tuple[str, int]] = {}  # (model, version) -> mode, reset_seq
        self._applied_resets: dict[tuple[str, str], int] = {}
        self._breakers: dict[tuple[str, str], CircuitBreaker] = {}
        self._inflight: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()

    # --- reading -------------------------------------------------------------------------------

    def config(self, model: str) -> ResilienceConfig:
        return self._configs.get(model, self._defaults)

    def breaker(self, model: str, version: str | None) -> CircuitBreaker:
        key = (model, version or "")
        breaker = self._breakers.get(key)
        if breaker is None:
            with self._lock:
                breaker = self._breakers.get(key)
                if breaker is None:
                    breaker = self._new_breaker(key)
        return breaker

    def inflight(self, model: str, version: str | None) -> int:
        return self._inflight.get((model, version or ""), 0)

    def describe(self, model: str) -> dict[str, Any]:
        """``GET /models/{name}/resilience``: the config, where it comes from, and this process's
        breaker of every version it has called or an operator has controlled."""
        with self._lock:
            versions = {v for m, v in self._breakers if m == model} | {
                v for m, v in self._overrides if m == model
            }
        breakers = []
        for version in sorted(versions, key=lambda v: (len(v), v)):
            view = self.breaker(model, version).snapshot()
            breakers.append({"version": version or None, **view, "inflight": self.inflight(model, version)})
        return {
            "model": model,
            "source": "model" if self._stored.get(model) else "defaults",  # PUT {}: the defaults
            "config": self.config(model).model_dump(),
            "breakers": breakers,
        }

    # --- the guard -----------------------------------------------------------------------------

    async def call(self, model: str, version: str | None, fn: Callable[[], Awaitable[T]]) -> T:
        """Call ``fn`` under the model's breaker, bulkhead and deadline (see the module doc).

        Raises ``ModelUnavailable`` (reason ``circuit_open`` or ``rejected``), ``ModelTimeout``,
        or ``fn``'s own error. Every failure but ``circuit_open`` is the breaker's verdict; a
        client error (status < 500) or a cancelled call gives no verdict."""
        key = (model, version or "")
        label = f"{model}/{version}" if version else model
        breaker = self.breaker(model, version)
        if not breaker.acquire():
            raise ModelUnavailable(
                f"model {label} is not called: its circuit breaker is open",
                reason="circuit_open",
                retry_after_s=max(breaker.retry_after_s(), 1.0),
                details={"model": model, "version": version},
            )
        config = self.config(model)
        if not self._enter(key, config.max_inflight):
            breaker.record(False, 0.0)
            raise ModelUnavailable(
                f"model {label} is not called: {config.max_inflight} calls are in flight already",
                reason="rejected",
                details={"model": model, "version": version, "max_inflight": config.max_inflight},
            )
        started = self.clock()
        try:
            if config.timeout_ms > 0:
                result = await self._before_deadline(key, label, fn, config.timeout_ms / 1000.0)
            else:
                try:
                    result = await self._invoke(key, fn)
                finally:
                    self._leave(key)
        except asyncio.CancelledError:  # the client went away: no verdict on the model
            breaker.release()
            raise
        except PredictionProviderError as exc:
            if _is_client_error(exc):
                breaker.release()
            else:
                self._count(key, False, self.clock() - started, breaker)
            raise
        except Exception:
            self._count(key, False, self.clock() - started, breaker)
            raise
        self._count(key, True, self.clock() - started, breaker)
        return result

    def _count(self, key: tuple[str, str], ok: bool, seconds: float, breaker: CircuitBreaker) -> None:
        """The breaker's verdict, and the per-model figures (the dashboard's RED per model)."""
        breaker.record(ok, seconds)
        self.metrics.inc("model_calls", (*key, "ok" if ok else "error"))
        self.metrics.observe(key, seconds, "model_call_duration_seconds")

    async def _before_deadline(
        self, key: tuple[str, str], label: str, fn: Callable[[], Awaitable[T]], timeout_s: float
    ) -> T:
        # A task, not wait_for: at the deadline the caller is answered while the call runs on (a
        # thread cannot be stopped); its slot is freed, and its late result dropped, when it ends.
        task = asyncio.ensure_future(self._invoke(key, fn))
        task.add_done_callback(lambda done: self._finished(key, done))
        done, _ = await asyncio.wait({task}, timeout=timeout_s)
        if not done:
            raise ModelTimeout(
                f"model {label} did not answer within {timeout_s * 1000:g} ms",
                {"model": key[0], "version": key[1] or None, "timeout_ms": timeout_s * 1000},
            )
        return task.result()

    def _finished(self, key: tuple[str, str], task: asyncio.Future[Any]) -> None:
        self._leave(key)
        if not task.cancelled():
            task.exception()  # retrieved, so a late failure is not logged as never retrieved

    async def _invoke(self, key: tuple[str, str], fn: Callable[[], Awaitable[T]]) -> T:
        chaos = self.chaos
        if chaos is not None:
            rule = chaos.rule(*key)
            if rule is not None:
                if rule.delay_ms > 0:
                    await anyio.to_thread.run_sync(chaos.before_call, *key)
                else:
                    chaos.before_call(*key)
        return await fn()

    def _enter(self, key: tuple[str, str], limit: int) -> bool:
        with self._lock:
            count = self._inflight.get(key, 0)
            if limit and count >= limit:
                return False
            self._inflight[key] = count + 1
        self.metrics.set("model_inflight", key, count + 1)
        return True

    def _leave(self, key: tuple[str, str]) -> None:
        with self._lock:
            count = self._inflight[key] = max(self._inflight.get(key, 1) - 1, 0)
        self.metrics.set("model_inflight", key, count)

    # --- following the database ----------------------------------------------------------------

    def reload(self, session: Session) -> None:
        """Read every model's config and every breaker control (a ``StampFollower`` callback)."""
        stored = {row.model: dict(row.config) for row in session.scalars(select(ModelResilience))}
        overrides = {
            (row.model, row.version): (row.mode, row.reset_seq)
            for row in session.scalars(select(BreakerOverride))
        }
        configs: dict[str, ResilienceConfig] = {}
        for model, fields in stored.items():
            try:
                configs[model] = self._defaults.overlay(fields)
            except ValidationError as exc:  # e.g. settings changed under a stored config
                log.warning("resilience of %s is invalid over these settings, using defaults: %s", model, exc)
        with self._lock:
            changed = {
                model
                for model in set(configs) | set(self._configs)
                if self.config_breaker(configs, model) != self.config_breaker(self._configs, model)
            }
            self._stored, self._configs, self._overrides = stored, configs, overrides
            for key in [key for key in self._breakers if key[0] in changed]:
                self._new_breaker(key)  # a new breaker config starts a fresh breaker
            for key, breaker in self._breakers.items():
                self._apply(key, breaker)

    def config_breaker(self, configs: dict[str, ResilienceConfig], model: str) -> BreakerConfig:
        return configs.get(model, self._defaults).breaker.to_config()

    def _new_breaker(self, key: tuple[str, str]) -> CircuitBreaker:
        model, version = key

        def moved(from_state: str, to_state: str) -> None:
            log.info("circuit %s/%s: %s -> %s", model, version, from_state, to_state)
            self.metrics.inc("circuit_transitions", (model, version, to_state))
            self.metrics.set_state("circuit_state", key, STATES, to_state)

        breaker = CircuitBreaker(self.config(model).breaker.to_config(), self.clock, moved)
        self.metrics.set_state("circuit_state", key, STATES, breaker.state)
        self._applied_resets[key] = self._overrides.get(key, ("none", 0))[1]  # a fresh breaker is reset
        self._apply(key, breaker)
        self._breakers[key] = breaker
        return breaker

    def _apply(self, key: tuple[str, str], breaker: CircuitBreaker) -> None:
        mode, reset_seq = self._overrides.get(key, ("none", 0))
        if reset_seq > self._applied_resets.get(key, 0):
            breaker.reset()
            self._applied_resets[key] = reset_seq
        breaker.force(mode)

    # --- writing (the routes) ------------------------------------------------------------------

    def check(self, update: ResilienceUpdate) -> ResilienceConfig:
        """The config ``update`` makes over the defaults; ``InvalidInput`` (422) if it does not hold."""
        try:
            return self._defaults.overlay(update.stored())
        except ValidationError as exc:
            raise InvalidInput("invalid resilience config", _details(exc)) from None

    def put_config(self, session: Session, model: str, update: ResilienceUpdate, actor: str | None) -> None:
        """Replace a model's stored resilience (422 if it does not hold over the defaults)."""
        self.check(update)
        fields = update.stored()
        row = session.get(ModelResilience, model)
        if row is None:
            session.add(ModelResilience(model=model, config=fields, updated_by=actor, updated_at=utcnow()))
        else:
            row.config, row.updated_by, row.updated_at = fields, actor, utcnow()
        stamp.bump(session)

    def control(self, session: Session, model: str, version: str, action: str, actor: str | None) -> None:
        """``force-open``, ``force-closed`` or ``reset`` (which also lifts a force) one version's
        breaker in every worker."""
        mode = CONTROLS[action]
        row = session.get(BreakerOverride, (model, version))
        if row is None:
            row = BreakerOverride(model=model, version=version, mode=mode, reset_seq=0)
            session.add(row)
        row.mode, row.updated_by, row.updated_at = mode, actor, utcnow()
        if action == "reset":
            row.reset_seq = (row.reset_seq or 0) + 1
        stamp.bump(session)


def _is_client_error(exc: PredictionProviderError) -> bool:
    from prediction_provider.api.errors import status_for  # the one place statuses live

    return status_for(exc) < 500


def _details(exc: ValidationError) -> list[dict[str, str]]:
    return [
        {"field": ".".join(str(part) for part in item.get("loc", ())) or "body", "error": item.get("msg", "")}
        for item in exc.errors()
    ]
