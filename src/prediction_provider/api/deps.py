"""Typed dependencies, so a route's signature reads like a sentence."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request

from prediction_provider.accounts.service import AccountService
from prediction_provider.accounts.throttle import Throttle
from prediction_provider.config import Settings
from prediction_provider.db.session import Database
from prediction_provider.modelops.metrics import OpsMetrics
from prediction_provider.modelops.stamp import StampFollower
from prediction_provider.observability.audit import AuditWriter
from prediction_provider.serving.cache import ModelCache
from prediction_provider.serving.inference import PredictionService
from prediction_provider.serving.registry import ModelRegistry

if TYPE_CHECKING:
    from prediction_provider.accounts.web_sessions import WebSessions
    from prediction_provider.clock import ManualClock, ReplayClock, SystemClock
    from prediction_provider.demo.traffic import DemoTraffic
    from prediction_provider.features.market_sources import MarketSources
    from prediction_provider.forecasts.service import ForecastService
    from prediction_provider.jobs.runtime import JobRuntime
    from prediction_provider.ledger.service import LedgerService
    from prediction_provider.marketplace.ownership import ModelOwnership
    from prediction_provider.marketplace.paid_calls import PaidCalls
    from prediction_provider.marketplace.service import Marketplace
    from prediction_provider.marketplace.uploads import ModelUploads
    from prediction_provider.modelops.chaos import Chaos
    from prediction_provider.modelops.drift.monitor import DriftMonitor
    from prediction_provider.modelops.ensembles import Ensembles
    from prediction_provider.modelops.experiments import Experiments
    from prediction_provider.modelops.gateway import ModelOps
    from prediction_provider.modelops.records import ExperimentRecorder
    from prediction_provider.modelops.resilience import Resilience
    from prediction_provider.modelops.rollout import RolloutController
    from prediction_provider.modelops.shadow import ShadowRunner
    from prediction_provider.outcomes.scoring import Scorer
    from prediction_provider.outcomes.service import Outcomes
    from prediction_provider.serving.unloaded import UnloadedModels
    from prediction_provider.signals.records import SignalRecorder
    from prediction_provider.trading.accounts import TradingAccountService
    from prediction_provider.trading.decisions import DecisionService
    from prediction_provider.webhooks.outbox import WebhookDispatcher


@dataclass(slots=True)
class Services:
    """What the lifespan builds once per app and every request shares."""

    settings: Settings
    registry: ModelRegistry
    cache: ModelCache
    predictions: PredictionService
    gpu_available: bool
    db: Database
    accounts: AccountService
    throttle: Throttle
    audit: AuditWriter
    warm_errors: dict[str, str] = field(default_factory=dict)
    grpc_port: int | None = None
    jobs: JobRuntime | None = None
    decisions: DecisionService | None = None
    trading_accounts: TradingAccountService | None = None
    unloaded: UnloadedModels | None = None
    market: MarketSources | None = None
    forecasts: ForecastService | None = None
    clock: SystemClock | ManualClock | ReplayClock | None = None
    demo_traffic: DemoTraffic | None = None  # PP_DEMO_TRAFFIC: forecasts as replayed bars close
    marketplace: Marketplace | None = None  # offers, quotes, paid requests, leases, the ledger
    webhooks: WebhookDispatcher | None = None
    paid_calls: PaidCalls | None = None  # synchronous paid predictions
    signal_records: SignalRecorder | None = None  # the record of every answered entry/exit signal
    scorer: Scorer | None = None  # resolves and scores served answers as their outcomes arrive
    outcomes: Outcomes | None = None  # the leaderboard, performance and scores of predictions
    ledger: LedgerService | None = None  # wallets, limits, statements, invoices, the ledger check
    ownership: ModelOwnership | None = None  # who owns which registered model
    model_uploads: ModelUploads | None = None  # providers' uploads in safe formats
    # Model operations: process-local figures, and the stamp that makes a change live everywhere.
    ops_metrics: OpsMetrics = field(default_factory=OpsMetrics)
    ops_stamp: StampFollower | None = None
    modelops: ModelOps | None = None  # the request path: experiments, resilience, fallbacks, shadows
    experiments: Experiments | None = None
    rollouts: RolloutController | None = None  # canary steps, promotion and rollback (one leader)
    resilience: Resilience | None = None  # timeouts, bulkheads, breakers per model version
    chaos: Chaos | None = None  # test-only fault injection (PP_CHAOS=1)
    ensembles: Ensembles | None = None  # named combinations of model versions, served like models
    drift: DriftMonitor | None = None  # live inputs and outputs binned against training references
    experiment_records: ExperimentRecorder | None = None  # experiment traffic, written off the request path
    shadows: ShadowRunner | None = None  # bounded shadow calls after the primary answered
    web_sessions: WebSessions | None = None  # the dashboard's sessions (PP_DASHBOARD_ENABLED)


def is_ready(services: Services) -> bool:
    """Registry reachable and every warm model loaded; blocking (it asks the registry)."""
    return services.registry.ping() and not services.warm_errors


async def get_services(request: Request) -> Services:
    """Async on purpose: FastAPI runs plain ``def`` dependencies in the threadpool (~0.2 ms)."""
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def services_of(request: Request) -> Services:
    """For the inference hot paths only: FastAPI's dependency solving costs ~50 µs a
    request, a tenth of a single-row prediction's whole budget, so those routes read
    the services straight from the app."""
    services: Services = request.app.state.services
    return services
