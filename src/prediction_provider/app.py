"""``create_app(settings)``: the FastAPI app, with services wired in the lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib.util
import logging
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import TYPE_CHECKING

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool
from starlette.middleware.cors import CORSMiddleware

from prediction_provider import __version__
from prediction_provider.accounts.principal_cache import PrincipalCache
from prediction_provider.accounts.service import AccountService
from prediction_provider.accounts.throttle import Throttle
from prediction_provider.accounts.web_sessions import WebSessions
from prediction_provider.api.body_limit import BodySizeLimit
from prediction_provider.api.deps import Services
from prediction_provider.api.docs import install_docs
from prediction_provider.api.errors import install_error_handlers
from prediction_provider.api.hot_routes import HotRoutes, direct_routes
from prediction_provider.api.idempotency import IdempotencyKeys
from prediction_provider.api.middleware import RequestEnvelope
from prediction_provider.api.openapi_security import install_security_docs
from prediction_provider.api.options import AnswerOptions
from prediction_provider.api.routes import (
    admin,
    auth,
    decision_records,
    decisions,
    drift,
    ensembles,
    evaluator,
    experiment_records,
    experiments,
    health,
    invocations,
    jobs,
    ledger,
    market,
    metrics,
    models,
    monitoring,
    outcomes,
    plugins,
    precomputed,
    predict,
    provider_models,
    resilience,
    root,
    seed_billing,
    signals,
    trading_accounts,
    users,
    v2,
    webhooks,
)
from prediction_provider.api.trailing_slash import StripTrailingSlash
from prediction_provider.clock import SystemClock, clock_from_settings
from prediction_provider.config import Settings
from prediction_provider.config_errors import MIN_JWT_SECRET, missing_jwt_secret
from prediction_provider.dashboard.routes import install_dashboard
from prediction_provider.db import migrate
from prediction_provider.db.session import Database
from prediction_provider.demo.traffic import demo_traffic
from prediction_provider.errors import ModelUnloaded
from prediction_provider.features.market_sources import MarketSources
from prediction_provider.forecasts.factory import build_forecasts
from prediction_provider.jobs.runtime import start_job_runtime
from prediction_provider.ledger.journal import Journal
from prediction_provider.ledger.service import LedgerService
from prediction_provider.marketplace.ownership import ModelOwnership
from prediction_provider.marketplace.paid_calls import PaidCalls
from prediction_provider.marketplace.service import Marketplace, market_announcer
from prediction_provider.marketplace.uploads import ModelUploads
from prediction_provider.modelops.chaos import Chaos
from prediction_provider.modelops.drift.monitor import DriftMonitor
from prediction_provider.modelops.ensembles import Ensembles
from prediction_provider.modelops.factory import build_modelops, build_rollouts
from prediction_provider.modelops.records import ExperimentRecorder
from prediction_provider.modelops.resilience import Resilience
from prediction_provider.modelops.shadow import ShadowRunner
from prediction_provider.observability.audit import AuditWriter
from prediction_provider.observability.series import MetricSeries
from prediction_provider.outcomes.factory import build_scorer
from prediction_provider.outcomes.service import Outcomes
from prediction_provider.serving.affinity import pin_worker
from prediction_provider.serving.factory import build_model_serving
from prediction_provider.serving.unloaded import follow_unloaded_models
from prediction_provider.signals.records import SignalRecorder
from prediction_provider.trading.factory import build_trading
from prediction_provider.webhooks.outbox import WebhookDispatcher

if TYPE_CHECKING:  # grpc loads only when the gRPC port is served
    from prediction_provider.api.grpc.native_frontend import NativeFrontend
    from prediction_provider.api.grpc.server import RunningGrpcServer

log = logging.getLogger(__name__)

# Served by ``HotRoutes`` without FastAPI's routing: the prediction endpoints of every protocol.
HOT_PATHS = (
    ("POST", "/api/v1/predict"),
    ("POST", "/api/v1/predict/entry"),
    ("POST", "/api/v1/predict/exit"),
    ("POST", "/predict"),
    ("POST", "/predict/batch"),
    ("POST", "/v2/models/{name}/infer"),
    ("POST", "/v2/models/{name}/versions/{version}/infer"),
    ("POST", "/invocations"),
)


def detect_gpu() -> bool:
    """A CUDA device usable by an installed framework; checked without importing torch eagerly."""
    try:
        import onnxruntime

        if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
            return True
    except ImportError:
        pass
    if importlib.util.find_spec("torch") is not None:
        import torch

        return bool(torch.cuda.is_available())
    return False


def build_services(settings: Settings) -> Services:
    serving = build_model_serving(settings)
    db = open_database(settings)
    accounts = AccountService(
        db,
        jwt_secret(settings),
        timedelta(minutes=settings.jwt_lifetime_minutes),
        settings.require_activation,
        PrincipalCache(settings.auth_cache_seconds, settings.redis_url),
    )
    throttle = Throttle(
        settings.redis_url,
        settings.rate_limit,
        settings.login_lockout,
        settings.login_failure_limit,
        settings.max_concurrent_predictions,
        settings.limits_dir,
    )
    services = Services(
        settings,
        serving.registry,
        serving.cache,
        serving.predictions,
        detect_gpu(),
        db,
        accounts,
        throttle,
        AuditWriter(db),
    )
    services.clock = clock_from_settings(settings)
    if settings.dashboard_enabled:
        services.web_sessions = WebSessions(
            db,
            jwt_secret(settings),
            timedelta(minutes=settings.dashboard_idle_minutes),
            timedelta(hours=settings.dashboard_session_hours),
        )
    services.market = MarketSources(settings, clock=services.clock.now)
    services.decisions, services.trading_accounts = build_trading(settings, db, services.market)
    services.forecasts = build_forecasts(
        serving.registry,
        serving.cache,
        db,
        services.market,
        warm=True,
        answer_cache=settings.forecast_answer_cache,
        record=settings.record_forecasts,
    )
    services.marketplace = Marketplace(
        settings,
        db,
        services.clock,
        Journal(services.clock),
        services.forecasts,
        services.market,
        market_announcer(services.clock, settings),
    )
    services.ledger = LedgerService(db, services.marketplace.journal, services.clock, settings)
    services.ownership = ModelOwnership(db, services.clock, serving.registry)
    services.model_uploads = ModelUploads(
        settings, serving.registry, services.ownership, serving.cache.loaders
    )
    # Sends the outbox in every API process; started in the lifespan (SKIP LOCKED shares the work).
    services.webhooks = WebhookDispatcher(db, services.clock or SystemClock(), settings)
    services.paid_calls = PaidCalls(db, services.clock, Journal(services.clock))
    services.signal_records = SignalRecorder(db, settings, clock=services.clock.now)
    services.scorer = build_scorer(
        settings, db, services.clock, services.market, services.forecasts, services.decisions
    )
    services.outcomes = Outcomes(db, services.clock, settings)
    services.marketplace.outcomes = services.outcomes  # route: best follows the leaderboard
    # Before any warm-up: a name unloaded before a restart stays unloaded, and is not loaded.
    services.unloaded = follow_unloaded_models(
        serving.cache, db, settings.model_state_refresh_ms / 1000, settings.redis_url
    )
    services.experiment_records = ExperimentRecorder(db, settings.record_flush_ms / 1000)
    services.shadows = ShadowRunner(
        services.experiment_records, services.ops_metrics, settings.shadow_max_inflight
    )
    # Chaos expiry runs on the wall clock: a forgotten rule must lapse in real time, replay or not.
    services.chaos = Chaos(db, SystemClock()) if settings.chaos else None
    if services.chaos is not None:
        services.chaos.start()
    services.resilience = Resilience(db, settings, services.ops_metrics, services.chaos)
    services.ensembles = Ensembles(
        db, serving.cache, services.ops_metrics, serving.registry, services.resilience, services.chaos
    )
    if settings.drift:
        services.drift = DriftMonitor(db, settings, serving.registry, services.clock or SystemClock())
        services.drift.start()
    # Last: the request path wires in whatever model-operations parts were built above.
    build_modelops(services, settings.jwt_secret or "prediction-provider-demo")
    if services.drift is not None and services.ops_stamp is not None:
        services.ops_stamp.register(services.drift.reload)  # uploads and resets, live in every worker
    return services


def close_services(services: Services) -> None:
    """Stop what ``build_services`` started (writers flush what is queued, followers stop
    polling) before the database goes: a follower left polling a dropped database logs forever."""
    if services.demo_traffic is not None:
        services.demo_traffic.stop()  # first: it asks the services stopped below
    if services.ops_stamp is not None:
        services.ops_stamp.close()
    if services.rollouts is not None:
        services.rollouts.stop()
    if services.ensembles is not None:
        services.ensembles.close()  # its member threads
    services.predictions.close()
    services.audit.close()
    if services.decisions is not None:
        services.decisions.close()  # writes the decisions still queued
    if services.forecasts is not None:
        services.forecasts.close()  # writes the forecast records still queued
    if services.marketplace is not None:
        services.marketplace.close()
    if services.paid_calls is not None:
        services.paid_calls.close()
    if services.signal_records is not None:
        services.signal_records.close()  # writes the signal records still queued
    if services.shadows is not None:
        services.shadows.close()  # shadow jobs still waiting are recorded as dropped
    if services.experiment_records is not None:
        services.experiment_records.close()  # writes the experiment records still queued
    if services.chaos is not None:
        services.chaos.close()  # writes the hits counted here
    if services.drift is not None:
        services.drift.close()  # writes the drift counts still held
    if services.webhooks is not None:
        services.webhooks.stop()
    if services.scorer is not None:
        services.scorer.stop()
    if services.market is not None:
        services.market.close()
    if services.unloaded is not None:
        services.unloaded.close()
    services.db.dispose()
    for entry in services.cache.entries():
        entry.close()


def account_service(settings: Settings) -> AccountService:
    """Accounts without the rest of the server, for the CLI."""
    db = open_database(settings)
    return AccountService(
        db,
        jwt_secret(settings.model_copy(update={"demo_mode": True})),
        timedelta(minutes=settings.jwt_lifetime_minutes),
        settings.require_activation,
    )


def jwt_secret(settings: Settings) -> str:
    """The configured secret; the demo alone may run on a random one (tokens die with the process)."""
    if len(settings.jwt_secret) >= MIN_JWT_SECRET:
        return settings.jwt_secret
    if settings.demo_mode:
        return secrets.token_urlsafe(48)
    raise missing_jwt_secret(settings)


def open_database(settings: Settings) -> Database:
    """The database, migrated to the latest schema when it is the embedded SQLite file."""
    url = settings.database
    if url.startswith("sqlite"):
        migrate.upgrade(url)
    db = Database(url)
    if settings.bootstrap_admin_username and settings.bootstrap_admin_password:
        accounts_for_bootstrap = AccountService(db, "-", timedelta(minutes=1), settings.require_activation)
        accounts_for_bootstrap.bootstrap_admin(
            settings.bootstrap_admin_username,
            settings.bootstrap_admin_password,
            settings.bootstrap_admin_email or f"{settings.bootstrap_admin_username}@localhost.localdomain",
        )
    return db


async def start_grpc(services: Services) -> RunningGrpcServer | NativeFrontend:
    """The gRPC port, terminated by grpcio here or by the native front end (``PP_GRPC_FRONTEND``)."""
    settings = services.settings
    if settings.grpc_frontend == "native":
        from prediction_provider.api.grpc.native_frontend import find_binary, start_native_frontend

        binary = find_binary(settings.grpc_frontend_binary)
        if binary is None:
            raise RuntimeError(
                "PP_GRPC_FRONTEND=native, but pp-grpc-frontend is not built: "
                "run scripts/build_grpc_frontend.sh or set PP_GRPC_FRONTEND_BINARY"
            )
        return await start_native_frontend(services, settings.host, settings.grpc_port, binary)
    from prediction_provider.api.grpc.server import start_grpc_server

    return await start_grpc_server(services, settings.host, settings.grpc_port)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # First, so that every thread the services start inherits the CPU.
        cpu_claim = pin_worker() if settings.pin_workers else None
        services = await run_in_threadpool(build_services, settings)
        app.state.services = services
        for reference in settings.warm_models:
            # A model that fails to warm leaves the server up but not ready (/health/ready).
            try:
                cached = await run_in_threadpool(services.cache.warm, reference)
                log.info("warmed %s (%s)", reference, cached.resolved.uri)
            except ModelUnloaded:  # on purpose: not a failure, and it must not take memory
                log.info("not warming %s: unloaded through the model repository", reference)
            except Exception as exc:  # noqa: BLE001 - report and keep serving the others
                services.warm_errors[reference] = str(exc)
                log.error("could not warm %s: %s", reference, exc)
        job_runtime = await run_in_threadpool(
            start_job_runtime,
            settings,
            services.db,
            services.cache,
            services.predictions,
            services.forecasts,
            services.clock,
        )
        services.jobs = job_runtime
        if services.modelops is not None and settings.experiments:
            job_runtime.service.route = services.modelops.route_job
        if services.webhooks is not None:
            services.webhooks.start()
        if settings.demo_traffic:
            services.demo_traffic = demo_traffic(services)
            if services.demo_traffic is not None:
                services.demo_traffic.start()
        if services.scorer is not None:
            services.scorer.start()
        if services.shadows is not None:
            services.shadows.attach(asyncio.get_running_loop())  # async jobs' shadows run here too
        services.rollouts = build_rollouts(services)
        services.rollouts.start()
        if services.marketplace is not None:
            services.marketplace.attach(job_runtime.store, job_runtime.service.dispatcher.dispatch)
            services.marketplace.start()
        job_runtime.service.payments = services.paid_calls
        grpc_server = await start_grpc(services) if settings.grpc_enabled else None
        app.state.grpc_server = grpc_server
        if grpc_server is not None:
            services.grpc_port = grpc_server.port
        app.state.metric_series = MetricSeries.of_app(
            app.state.metrics, lambda: services.ops_metrics,
            interval_s=settings.metrics_series_interval_s, slots=settings.metrics_series_slots,
        )  # fmt: skip
        app.state.metric_series.start()
        # Start-up leaves ~350k long-lived objects (MLflow, frameworks, models); a full
        # collection scanning them took ~190 ms and stalled every in-flight request.
        # Freezing them keeps later collections down to what requests allocate.
        gc.collect()
        gc.freeze()
        yield
        gc.unfreeze()
        await app.state.metric_series.aclose()
        if grpc_server is not None:
            await grpc_server.stop(grace_s=5)
        job_runtime.stop()
        if services.shadows is not None:
            with contextlib.suppress(TimeoutError):  # shadows still running after 5 s are cancelled
                await asyncio.wait_for(services.shadows.drain(), 5)
        live = getattr(app.state, "dashboard_live", None)
        if live is not None:
            await live.aclose()
        close_services(services)
        if cpu_claim is not None:
            cpu_claim.release()

    app = FastAPI(
        title="Prediction Provider",
        version=__version__,
        description="Serving trained financial prediction models over HTTP.",
        lifespan=lifespan,
        # StripTrailingSlash serves /x/ as /x: no 307 that a client might not re-POST.
        redirect_slashes=False,
        # Served by install_docs from the package's own copies of Swagger UI and ReDoc.
        docs_url=None,
        redoc_url=None,
        telemetry=None
        if settings.opentelemetry
        else {"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    install_error_handlers(app)
    # The routers holding HOT_PATHS. FastAPI tries routers in the order they are included, matching
    # every route of each on the way: these come first, so their other requests skip ~80 routes.
    hot_modules = (decisions, signals, predict, v2, invocations)
    app.add_middleware(
        HotRoutes,
        routes=direct_routes((route for module in hot_modules for route in module.router.routes), HOT_PATHS),
        exception_handlers=app.exception_handlers,
    )
    # Outside HotRoutes (the hot paths are keyed too), inside BodySizeLimit (a bounded buffer).
    app.add_middleware(IdempotencyKeys, stale_after=timedelta(seconds=settings.idempotency_in_flight_s))
    app.add_middleware(
        BodySizeLimit,
        max_body_bytes=settings.max_body_bytes,
        upload_limits={
            jobs.DATASET_UPLOAD_PATH: settings.max_upload_bytes,
            provider_models.PROVIDER_UPLOAD_PATH: settings.max_upload_bytes,
        },
    )
    app.add_middleware(AnswerOptions)  # inside the envelope: an OPTIONS answer is audited and headed too
    app.add_middleware(RequestEnvelope, metrics=metrics.install(app))
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "X-API-KEY", "X-Request-ID"],
        )
    app.add_middleware(StripTrailingSlash)  # added last: outermost, before anything reads the path
    for module in (
        *hot_modules,
        health,
        experiments,
        experiment_records,
        ensembles,
        models,
        auth,
        users,
        admin,
        decision_records,
        trading_accounts,
        evaluator,
        jobs,
        ledger,
        market,
        seed_billing,
        provider_models,
        webhooks,
        outcomes,
        monitoring,
        drift,
        precomputed,
        metrics,
        plugins,
        resilience,
        root,
    ):
        app.include_router(module.router)
    if settings.chaos:  # fault injection exists only in test deployments
        app.include_router(resilience.chaos_router)
    if settings.dashboard_enabled:
        install_dashboard(app)
    # After the routers: the docs routes are matched last, not before every API route.
    install_docs(app)
    install_security_docs(app)
    return app
