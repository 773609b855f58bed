"""A model's resilience (timeout, bulkhead, breaker, fallback chain) and its breakers' controls,
and test-only fault injection (design §3.7).

Changes are stored in the database and live in every worker within a second (the ops stamp); this
process applies them before it answers. Every change is audited by the request envelope's audit
row, and the rows keep who made them. The chaos routes exist only with ``PP_CHAOS=1``
(``chaos_router`` is included then, so they are 404 otherwise)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Path
from fastapi.responses import Response
from mlflow.exceptions import MlflowException
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from prediction_provider.api.auth import FaultInjector, ModelOperator, ModelReader
from prediction_provider.api.deps import Services, ServicesDep
from prediction_provider.api.query_params import DeclaredQueryOnly
from prediction_provider.api.schemas import ErrorBody
from prediction_provider.errors import InvalidInput, ModelNotFound, PredictionFailed, RegistryUnavailable
from prediction_provider.modelops.chaos import Chaos, ChaosRuleIn, rule_view
from prediction_provider.modelops.resilience import PRIOR, Resilience, ResilienceUpdate
from prediction_provider.serving.references import NAME_PATTERN

router = APIRouter(tags=["resilience"])
chaos_router = APIRouter(prefix="/api/v1/admin/chaos", tags=["chaos"])


def _errors(*entries: tuple[int, str]) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": ErrorBody, "description": text} for status, text in entries}


ERRORS = _errors(
    (401, "Not signed in"),
    (403, "Operators and admins only (reading: anyone who may read models)"),
    (404, "Unknown model or version"),
    (422, "Invalid config: a field out of range, min_calls over window_size, or a bad fallback target"),
)
CHAOS_ERRORS = _errors(
    (401, "Not signed in"), (403, "Admins only"), (404, "No such rule"), (422, "Invalid rule")
)
ModelName = Annotated[str, Path(pattern=NAME_PATTERN.pattern, max_length=128)]
VersionPath = Annotated[str, Path(pattern=r"^[0-9]{1,9}$")]
Control = Literal["force-open", "force-closed", "reset"]


class BreakerControlIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: str = Field(pattern=r"^[0-9]{1,9}$", description="The model version whose breaker to control.")


def resilience_of(services: Services) -> Resilience:
    resilience: Resilience | None = getattr(services, "resilience", None)
    if resilience is None:
        raise PredictionFailed("resilience is not available in this process")
    return resilience


def chaos_of(services: Services) -> Chaos:
    chaos: Chaos | None = getattr(services, "chaos", None)
    if chaos is None:
        raise PredictionFailed("fault injection is not available in this process")
    return chaos


def require_model(services: Services, name: str, version: str | None = None) -> None:
    """404 unless ``name`` (and ``version``) is registered."""
    client = services.registry.client
    try:
        client.get_registered_model(name)
        if version is not None:
            client.get_model_version(name, version)
    except (OSError, ConnectionError) as exc:
        raise RegistryUnavailable(f"model registry unreachable: {exc}") from exc
    except Exception as exc:  # MLflow answers a missing name or version with an exception
        label = f"version {version} of model {name!r}" if version is not None else f"model {name!r}"
        raise ModelNotFound(f"no {label}", {"model": name, "version": version}) from exc


def require_targets(services: Services, targets: list[str]) -> None:
    """422 naming every fallback target that names no registered version or alias (a typo would
    otherwise show only when the primary fails)."""
    client, missing = services.registry.client, []
    for index, target in enumerate(targets):
        if target == PRIOR:
            continue
        body = target.removeprefix("models:/")
        try:
            if "@" in body:
                name, alias = body.split("@", 1)
                found = alias in (client.get_registered_model(name).aliases or {})
            else:
                name, version = body.split("/", 1)
                found = client.get_model_version(name, version) is not None
        except (OSError, ConnectionError) as exc:
            raise RegistryUnavailable(f"model registry unreachable: {exc}") from exc
        except MlflowException:  # a missing name or version
            found = False
        if not found:
            missing.append({"field": f"fallback.{index}", "error": f"{target} is not registered"})
    if missing:
        raise InvalidInput("fallback targets that do not exist", missing)


def write_and_follow(services: Services, write: Callable[[Session], None]) -> None:
    """Commit a change, then apply it here before answering (other workers follow the stamp)."""
    with services.db.session() as session:
        write(session)
    if services.ops_stamp is not None:
        services.ops_stamp.refresh(force=True)
        return
    with services.db.session() as session:  # no follower (a bare test app): reload by hand
        for part in (getattr(services, "resilience", None), getattr(services, "chaos", None)):
            if part is not None:
                part.reload(session)


@router.get(
    "/models/{name}/resilience", responses=ERRORS, summary="A model's resilience config and breaker states"
)
async def get_resilience(
    name: ModelName, principal: ModelReader, services: ServicesDep, _query: DeclaredQueryOnly = None
) -> dict[str, Any]:
    """The effective config (``source``: the model's own, or the settings' defaults) and this
    process's breaker of each version it has called or an operator has controlled: state
    (closed, open, half_open), operator mode, window figures and seconds to the next probe."""
    resilience = resilience_of(services)
    await run_in_threadpool(require_model, services, name)
    return resilience.describe(name)


@router.put("/models/{name}/resilience", responses=ERRORS, summary="Set a model's resilience")
async def put_resilience(
    name: ModelName,
    principal: ModelOperator,
    services: ServicesDep,
    body: Annotated[ResilienceUpdate, Body()],
) -> dict[str, Any]:
    """Replaces the model's stored config: fields left out (in ``breaker`` too) take the settings'
    defaults, so ``{}`` returns the model to them. ``fallback`` lists ``models:/name/version``,
    ``models:/name@alias`` or ``prior`` (last), tried in order after the experiment's control. A
    changed breaker config starts fresh breakers."""
    resilience = resilience_of(services)

    def work() -> dict[str, Any]:
        require_model(services, name)
        require_targets(services, resilience.check(body).fallback)
        write_and_follow(
            services, lambda session: resilience.put_config(session, name, body, principal.username)
        )
        return resilience.describe(name)

    return await run_in_threadpool(work)


@router.post("/models/{name}/resilience/{control}", responses=ERRORS, summary="Force or reset a breaker")
async def control_breaker(
    name: ModelName,
    control: Control,
    principal: ModelOperator,
    services: ServicesDep,
    body: Annotated[BreakerControlIn, Body()],
) -> dict[str, Any]:
    """``force-open``: the version is never called (its fallback answers); ``force-closed``: always
    called, failures not judged; ``reset``: lifts a force and closes the breaker with an empty
    window. Applies in every worker."""
    resilience = resilience_of(services)

    def work() -> dict[str, Any]:
        require_model(services, name, body.version)
        write_and_follow(
            services,
            lambda session: resilience.control(session, name, body.version, control, principal.username),
        )
        return resilience.describe(name)

    return await run_in_threadpool(work)


@chaos_router.get("", responses=CHAOS_ERRORS, summary="Fault-injection rules (tests only)")
async def list_chaos(
    principal: FaultInjector, services: ServicesDep, _query: DeclaredQueryOnly = None
) -> dict[str, Any]:
    """Every rule, expired ones included (``active`` false), with ``hits``: calls that reached the
    model under it (this process's are counted at once, other workers' within a second)."""
    chaos = chaos_of(services)

    def work() -> dict[str, Any]:
        chaos.flush()
        now = chaos.clock.now()
        with services.db.session() as session:
            rules = [rule_view(row, now) for row in chaos.list(session)]
        return {"rules": rules, "count": len(rules)}

    return await run_in_threadpool(work)


@chaos_router.get("/{model}/{version}", responses=CHAOS_ERRORS, summary="One fault-injection rule")
async def get_chaos(
    model: ModelName, version: VersionPath, principal: FaultInjector, services: ServicesDep
) -> dict[str, Any]:
    chaos = chaos_of(services)

    def work() -> dict[str, Any]:
        chaos.flush()
        with services.db.session() as session:
            row = chaos.get(session, model, version)
            if row is None:
                raise ModelNotFound(
                    f"no chaos rule for {model}/{version}", {"model": model, "version": version}
                )
            return rule_view(row, chaos.clock.now())

    return await run_in_threadpool(work)


@chaos_router.put(
    "/{model}/{version}", responses=CHAOS_ERRORS, summary="Make a model version fail or slow down"
)
async def put_chaos(
    model: ModelName,
    version: VersionPath,
    principal: FaultInjector,
    services: ServicesDep,
    body: Annotated[ChaosRuleIn, Body()],
) -> dict[str, Any]:
    """Calls to the version fail with ``fail_rate`` and wait ``delay_ms`` first, in every worker and
    on every path (shadows and fallbacks included), for ``ttl_s`` seconds. Replacing a rule
    restarts its ``hits``."""
    chaos = chaos_of(services)

    def work() -> dict[str, Any]:
        view: dict[str, Any] = {}

        def write(session: Session) -> None:
            view.update(
                rule_view(chaos.put(session, model, version, body, principal.username), chaos.clock.now())
            )

        write_and_follow(services, write)
        return view

    return await run_in_threadpool(work)


@chaos_router.delete("/{model}/{version}", status_code=204, responses=CHAOS_ERRORS, summary="Clear a rule")
async def delete_chaos(
    model: ModelName, version: VersionPath, principal: FaultInjector, services: ServicesDep
) -> Response:
    chaos = chaos_of(services)

    def work() -> None:
        removed: list[bool] = []
        write_and_follow(services, lambda session: removed.append(chaos.delete(session, model, version)))
        if not removed[0]:
            raise ModelNotFound(f"no chaos rule for {model}/{version}", {"model": model, "version": version})

    await run_in_threadpool(work)
    return Response(status_code=204)
