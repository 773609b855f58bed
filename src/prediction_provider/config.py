"""Settings, read once and passed down: defaults < config file < environment < CLI flags.

The config file is TOML, named by ``PP_CONFIG_FILE``; every field can also be
set as ``PP_<FIELD>`` in the environment. CLI flags are passed to ``Settings``
as keyword arguments, which pydantic-settings ranks highest.
"""

from __future__ import annotations

import os
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

CONFIG_FILE_ENV = "PP_CONFIG_FILE"


def _split_list(value: object) -> object:
    """Accept ``a,b,c`` in the environment as well as a JSON/TOML list."""
    if isinstance(value, str):
        stripped = value.strip()
        if stripped.startswith("["):
            import json

            return json.loads(stripped)
        return [item.strip() for item in stripped.split(",") if item.strip()]
    return value


class Settings(BaseSettings):
    """Everything the server, CLI and demo read from configuration."""

    model_config = SettingsConfigDict(env_prefix="PP_", extra="ignore", validate_default=True)

    data_dir: Path = Field(
        default=Path(".pp_data"),
        description="Where the embedded MLflow store, demo models and downloads live.",
    )
    mlflow_tracking_uri: str | None = Field(
        default=None,
        description="Any MLflow tracking URI; defaults to a sqlite store under data_dir.",
    )
    mlflow_registry_uri: str | None = None
    experiment_name: str = "prediction-provider-demo"
    trusted_model_roots: Annotated[list[Path], NoDecode] = Field(
        default_factory=list,
        description="Only files under these roots may be opened by file:// or unpickled. "
        "data_dir/artifacts and data_dir/models are always included.",
    )

    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; defaults to a SQLite file under data_dir."
    )
    redis_url: str | None = Field(default=None, description="Shared rate-limit state for several processes.")

    require_auth: bool = Field(
        default=True, description="When false, prediction routes also serve anonymous callers as guest."
    )
    require_activation: bool = Field(default=True, description="New users start inactive.")
    jwt_secret: str = Field(default="", repr=False, description="HS256 secret; required outside the demo.")
    jwt_lifetime_minutes: int = Field(default=60, ge=1, le=7 * 24 * 60)
    auth_cache_seconds: float = Field(
        default=2.0,
        ge=0,
        le=60,
        description="How long a key's owner is remembered. Changes to a user apply at once in the "
        "process that made them, and everywhere when PP_REDIS_URL is set; other worker processes "
        "without Redis notice within this time. 0 looks every credential up in the database.",
    )
    demo_mode: bool = Field(default=False, description="Set by `prediction-provider demo` only.")
    demo_traffic: bool = Field(
        default=False,
        description="Run the built-in demo traffic: a latest-bar forecast (and decision) of every served "
        "symbol each time one of its bars closes (the demo turns it on).",
    )
    bootstrap_admin_username: str | None = None
    bootstrap_admin_password: str | None = Field(default=None, repr=False)
    bootstrap_admin_email: str | None = None
    rate_limit: str = Field(
        default="1200/minute", description="Requests per user, or per address if anonymous."
    )
    login_lockout: str = Field(
        default="5/15 minutes",
        description="Failed logins per username; past it, that username is refused (429) even with "
        "the right password until the oldest failure leaves the window.",
    )
    login_failure_limit: str = Field(
        default="30/minute", description="Failed logins per client address, over all usernames."
    )
    login_rate_limit: str | None = Field(
        default=None,
        description="Deprecated alias of login_failure_limit (it used to count successful logins too).",
    )
    dashboard_enabled: bool = Field(
        default=True, description="Serve the web dashboard under /dashboard (same process, auth and audit)."
    )
    dashboard_idle_minutes: int = Field(
        default=30, ge=1, le=1440, description="A dashboard session ends after this long without use."
    )
    dashboard_session_hours: int = Field(
        default=12, ge=1, le=168, description="A dashboard session ends this long after sign-in, used or not."
    )
    dashboard_tick_s: float = Field(
        default=5.0, ge=0.2, le=60, description="How often the dashboard's live pages get a new snapshot."
    )
    limits_dir: Path | None = Field(
        default=None,
        description="Without PP_REDIS_URL, where the worker processes of one machine share rate limits, "
        "login failures and in-flight counts (an LMDB file). `serve --workers N` uses a fresh "
        "directory under data_dir when unset; one process keeps them in memory.",
    )
    limits_scope: Literal["machine", "process"] = Field(
        default="machine",
        description="Without PP_REDIS_URL, what `serve --workers N` counts limits over: every worker "
        "of the machine together (exact, through limits_dir), or each worker alone (faster under "
        "heavy load; a limit then lets N times through).",
    )
    max_concurrent_predictions: int = Field(default=10, ge=1, description="In-flight predictions per user.")
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    grpc_enabled: bool = True
    grpc_port: int = Field(
        default=8001, ge=0, le=65535, description="Open Inference Protocol over gRPC (0 = any free port)."
    )
    grpc_reflection: bool = Field(
        default=True,
        description="gRPC server reflection (grpcurl and other tools list the services without the .proto).",
    )
    grpc_frontend: Literal["python", "native"] = Field(
        default="python",
        description="What terminates gRPC: grpcio in the worker (python), or pp-grpc-frontend, a C++ "
        "process per worker that forwards each unary call to it (native: faster; no reflection or Watch).",
    )
    grpc_frontend_binary: Path | None = Field(
        default=None, description="pp-grpc-frontend to run (default: beside the Python, else on PATH)."
    )
    log_level: str = "info"
    access_log: bool = False
    opentelemetry: bool = Field(
        default=False,
        description="FastAPI's native OpenTelemetry spans, metrics and logs through the global providers "
        "(off by default: Prometheus serves the metrics, and the check cost every request ~10 µs).",
    )
    metrics_series_interval_s: float = Field(
        default=5.0,
        gt=0,
        le=3600,
        description="How often the in-process metric history (GET /api/v1/metrics/series) reads counters.",
    )
    metrics_series_slots: int = Field(
        default=720,
        ge=2,
        le=100_000,
        description="Samples the metric history keeps (720 every 5 s is one hour).",
    )

    max_models: int = Field(default=8, ge=1, description="LRU capacity of loaded models.")
    warm_models: Annotated[list[str], NoDecode] = Field(default_factory=list)
    alias_refresh_seconds: float = Field(
        default=30.0,
        ge=0,
        description="How long a moving reference (alias, bare name) stays resolved before "
        "the registry is asked again.",
    )
    model_state_refresh_ms: int = Field(
        default=500,
        ge=10,
        le=60_000,
        description="How often each process re-reads which models are unloaded (the model repository "
        "API). The process that answered an unload or load applies it at once, every process at once "
        "when PP_REDIS_URL is set; without Redis the others follow within this time.",
    )
    default_model: str | None = Field(
        default=None, description="The model POST /invocations scores (MLflow scoring protocol)."
    )
    max_batch_rows: int = Field(default=10_000, ge=1)
    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    predict_threads: int = Field(
        default=1,
        ge=0,
        description="Threads a model may use for one call (0 = the library default).",
    )
    predict_parallelism: int = Field(
        default=2,
        ge=1,
        description="Threads the rows of one large call are split across (1 = never split).",
    )
    parallel_min_rows: int = Field(
        default=512, ge=2, description="Rows from which a call is split across predict_parallelism threads."
    )
    batching: Literal["auto", "on", "off"] = Field(
        default="auto", description="Adaptive batching of single-row calls; auto = on for tree models."
    )
    max_batch_size: int = Field(default=64, ge=1, description="Rows merged into one model call at most.")
    max_batch_latency_ms: float = Field(
        default=2.0, ge=0, description="How long a batch may wait to fill, only under load."
    )
    pin_workers: bool = Field(
        default=False,
        description="Pin each worker process (event loop, batchers, gRPC threads) to a CPU of its own, for "
        "hosts that give the server its CPUs: hand-offs between threads on one CPU are cheaper.",
    )
    job_backend: Literal["inprocess", "celery"] = Field(
        default="inprocess",
        description="Who runs asynchronous jobs: a worker pool inside each API process, or Celery workers "
        "(`prediction-provider worker`) fed through PP_BROKER_URL.",
    )
    broker_url: str | None = Field(
        default=None, repr=False, description="Celery broker: redis://... or amqp://... (RabbitMQ)."
    )
    job_queue: str = Field(
        default="predictions", pattern=r"^[A-Za-z0-9._-]{1,64}$", description="Celery queue of the jobs."
    )
    job_workers: int = Field(default=2, ge=0, description="In-process executor threads (0 = none).")
    job_poll_seconds: float = Field(default=1.0, gt=0, description="How often idle executors look for work.")
    job_lease_seconds: float = Field(
        default=30.0,
        gt=0,
        description="A job whose worker has not reported for this long is taken back and run again.",
    )
    job_max_attempts: int = Field(default=3, ge=1)
    job_time_limit_seconds: float = Field(default=900.0, gt=0, description="Hard limit for one task.")
    broker_visibility_timeout: float = Field(
        default=3600.0,
        gt=0,
        description="Redis broker only: an unacknowledged task is redelivered after this long; "
        "it must exceed the task time limit.",
    )
    job_redispatch_seconds: float = Field(
        default=300.0,
        gt=0,
        description="Celery only: a job still pending this long after its last dispatch is sent again "
        "(claims are idempotent, so a duplicate message is harmless).",
    )
    batch_chunk_rows: int = Field(default=5000, ge=1, description="Rows per chunk of a batch-scoring job.")
    data_roots: Annotated[list[Path], NoDecode] = Field(
        default_factory=list,
        description="Datasets a batch job may read by path; data_dir/datasets is always included.",
    )
    max_upload_bytes: int = Field(default=256 * 1024 * 1024, ge=1024, description="Dataset uploads.")
    precomputed_path: Path | None = Field(
        default=None, description="Parquet file of precomputed predictions served by /predict/precomputed."
    )
    precomputed_key: str = Field(default="key", description="The key column of the precomputed file.")
    signal_predictor: str | None = Field(
        default=None,
        description="What answers /api/v1/predict/entry and /exit: binary_ideal_oracle (look-ahead, for "
        "backtests), lightgbm or mc_dropout, or a plugin's name. Default: the oracle when oracle_csv is "
        "set, else lightgbm.",
    )
    oracle_csv: Path | None = Field(
        default=None,
        description="Bars (DATE_TIME, OPEN, HIGH, LOW, CLOSE) the signal predictors read; the model-based "
        "ones fall back to the embedded EURUSD hourly bars.",
    )
    pip_size: Decimal = Field(
        default=Decimal("0.00001"), gt=0, description="Price of one point of the entry tp/sl/costs."
    )
    prediction_horizon: int = Field(
        default=30, ge=1, description="Fewest bars_remaining the oracle reports when its data runs out."
    )
    oracle_noise_probability: float = Field(
        default=0.0, ge=0, le=1, description="Chance that the oracle flips each answer (noise_probability)."
    )
    oracle_noise_seed: int = Field(default=42, description="Seed of the oracle's one noise stream.")
    oracle_noise_std: float = Field(
        default=0.0,
        ge=0,
        allow_inf_nan=False,
        description="noisy_ideal_oracle: standard deviation of the Gaussian noise added to each 0/1 answer "
        "before it is thresholded at 0.5 (POST /api/v1/predict/set_noise changes it while serving).",
    )
    mc_dropout_passes: int = Field(
        default=30, ge=2, le=1000, description="Stochastic passes of the mc_dropout signal predictor."
    )
    confidence_high: float = Field(default=0.6, gt=0, le=1)
    confidence_medium: float = Field(default=0.45, gt=0, le=1)
    feeder: str = Field(
        default="backtesting",
        description="Where bars come from: a prediction_provider.feeders plugin (backtesting = the embedded "
        "sample bars, csv, parquet, database, yfinance, or your own).",
    )
    feeder_path: str | None = Field(
        default=None,
        description="csv/parquet: a file, or a template with {symbol} or {symbol_lower} (data/{symbol}.csv).",
    )
    feeder_symbol: str | None = Field(
        default=None, description="csv/parquet: the symbol a single file holds (default: its name's stem)."
    )
    feeder_interval: str = Field(
        default="1h", description="csv/parquet: the interval of the bars in the files."
    )
    feeder_columns: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict,
        description="csv/parquet: the file column of each bar field, `time=DATE_TIME,open=OPEN,...`; "
        "`time=Date+Time` joins two columns. Unnamed fields are found by their usual names.",
    )
    feeder_csv_names: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="csv: the columns, in order, of files without a header row."
    )
    feeder_csv_delimiter: str = Field(default=",", min_length=1, max_length=1)
    feeder_datetime_format: str | None = Field(
        default=None,
        description="csv/parquet: a strftime format (`%d.%m.%Y %H:%M:%S.%f`), ISO8601, or unix/unix_ms; "
        "default: ISO 8601 or the day-first `22.03.2017 08:00:00.000`, told apart by the first row.",
    )
    feeder_timezone: str = Field(
        default="UTC", description="The zone of times in files that carry no offset."
    )
    feeder_max_gap: str | None = Field(
        default=None,
        description="Refuse bars with a gap longer than this (e.g. 72h for hourly FX, 5d for daily "
        "equities); unset: no gap check.",
    )
    feeder_upstream: str | None = Field(
        default=None, description="database: the feeder whose bars the time_series_data table caches."
    )
    feeder_refresh_seconds: float = Field(
        default=60.0, ge=0, description="database cache: how often the upstream is asked for newer bars."
    )
    scoring_interval_s: float = Field(
        default=10.0,
        ge=0,
        description="How often the embedded scorer resolves and scores what has come due (0: only "
        "POST /api/v1/admin/scoring/run and the Celery beat task score).",
    )
    scoring_embedded: bool = Field(
        default=True,
        description="Run the periodic scoring pass in the API process; off where Celery beat schedules "
        "prediction_provider.score_due instead (both on is safe: each record is scored once).",
    )
    resolve_lag_s: float = Field(
        default=0.0, ge=0, description="How long after a target bar's close its outcome is resolved."
    )
    max_resolve_delay_s: float = Field(
        default=7 * 86400.0,
        gt=0,
        description="No bar closing within this long after the target time: the score is void.",
    )
    flat_band: float = Field(
        default=0.0,
        ge=0,
        allow_inf_nan=False,
        description="A realized return within ±flat_band is flat: excluded from direction scores.",
    )
    live_max_staleness_s: float = Field(
        default=4 * 86400.0,
        gt=0,
        description="A forecast whose data was older than this when it was asked (a question about the "
        "past, whose outcome the asker could know) is scored but left out of the leaderboard.",
    )
    decision_horizon_bars: int = Field(
        default=1, ge=1, description="Trading decisions are scored as closed this many bars later."
    )
    decision_spread: Decimal = Field(
        default=Decimal("0"), ge=0, description="Spread in price units paid per unit on a round trip."
    )
    decision_commission: Decimal = Field(
        default=Decimal("0"), ge=0, description="Commission per side of a scored trading decision."
    )
    benchmark_username: str = Field(
        default="benchmark",
        description="The platform account that asks every opted-in offer the same questions.",
    )
    scoring_round_interval_s: float = Field(
        default=86400.0,
        ge=0,
        description="How often a common round asks every opted-in offer (0: never; default daily).",
    )
    idempotency_in_flight_s: float = Field(
        default=60.0,
        gt=0,
        description="A keyed request still unanswered after this long is taken for a crashed process's: "
        "a retry with its Idempotency-Key runs again instead of answering 409. The business rows have "
        "their own keys (a job's owner and key, a transfer's id), so nothing is done twice.",
    )
    clock: Literal["system", "manual"] = Field(
        default="system",
        description="What every deadline, lease, quote expiry and sweep reads: the system clock, or a "
        "manual one set through POST /api/v1/admin/clock (tests).",
    )
    clock_start: datetime | None = Field(default=None, description="Where a manual clock starts (UTC).")
    bar_label: Literal["open", "close"] = Field(
        default="close",
        description="What a feeder's bar time is: its close time (close), or its open time (open, as the "
        "sample EURUSD CSVs are labelled: the bar closes one interval later). Bars are released, and "
        "read by forecasts and scoring, only once they have closed by the clock.",
    )
    market_clock: Literal["off", "replay", "manual"] = Field(
        default="off",
        description="The market replay: replay runs the one clock from market_clock_start at "
        "market_clock_speed, so recorded bars are released as they close; manual hands it to "
        "POST /api/v1/admin/clock (tests). Either takes precedence over PP_CLOCK; off: PP_CLOCK alone.",
    )
    market_clock_start: datetime | None = Field(
        default=None,
        description="Where the market clock starts (timezone-aware); replay default: 30 days before the "
        "last sample EURUSD bar closes.",
    )
    market_clock_speed: float = Field(
        default=60.0, gt=0, description="Replay speed: market seconds per wall-clock second."
    )
    currencies: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["USD", "EUR", "GBP"],
        description="ISO-4217 currencies wallets and offers may use (comma-separated).",
    )
    default_currency: str = Field(default="USD", pattern=r"^[A-Z]{3}$")
    platform_fee_bps: int = Field(
        default=1000, ge=0, le=10_000, description="The platform's share of a price, in basis points."
    )
    quote_ttl_s: float = Field(default=300.0, gt=0, description="How long a quote locks its price.")
    lease_s: float = Field(default=120.0, gt=0, description="An evaluator's lease, renewed by heartbeat.")
    result_margin_s: float = Field(
        default=60.0, ge=0, description="Results are refused this long before the target time."
    )
    request_ttl_s: float = Field(
        default=900.0,
        gt=0,
        description="Deadline of a request whose target time is already past (historical bars).",
    )
    hold_grace_s: float = Field(
        default=300.0, ge=0, description="A hold times out this long after its deadline."
    )
    sweep_interval_s: float = Field(
        default=5.0, gt=0, description="How often expired leases, deadlines and holds are swept."
    )
    low_balance: Decimal = Field(
        default=Decimal("1"),
        ge=0,
        description="A wallet whose available balance falls below this (by a submit) announces "
        "wallet.low_balance to its webhooks.",
    )
    market_max_attempts: int = Field(default=3, ge=1, description="Evaluator claims before a request fails.")
    max_open_requests: int = Field(
        default=5, ge=1, description="Open marketplace requests per client (the seed's 429)."
    )
    webhook_secret: str = Field(
        default="",
        repr=False,
        description="Derives each user's default webhook signing secret (for per-request webhook_url); "
        "empty: derived from PP_JWT_SECRET. Changing it changes every user's default secret.",
    )
    webhook_allow_private: bool = Field(
        default=False,
        description="Allow webhook URLs that resolve to loopback, private, link-local or reserved "
        "addresses (SSRF defence: off by default; tests and closed networks turn it on).",
    )
    webhook_poll_s: float = Field(
        default=1.0, gt=0, description="How often each API process delivers the webhooks that are due."
    )
    experiments: bool = Field(
        default=True,
        description="Serve running experiments (A/B, shadow, canary); false: every request goes where "
        "it asks.",
    )
    ops_refresh_ms: int = Field(
        default=250,
        ge=0,
        description="How often each process checks the model-operations stamp (experiments, resilience, "
        "breaker controls, chaos rules, ensembles); a change is live everywhere within this (0: only after "
        "this process's own changes).",
    )
    rollout_interval_s: float = Field(
        default=1.0,
        ge=0,
        description="How often the rollout controller (one leader among the API processes) looks for a due "
        "canary evaluation (0: only POST /api/v1/admin/rollouts/run).",
    )
    record_forecasts: bool = Field(
        default=True,
        description="Write a prediction_records row per forecast step served (false: forecasts are "
        "served unrecorded, and so never scored; benchmarks measure what recording costs with it).",
    )
    record_flush_ms: int = Field(
        default=500,
        ge=10,
        le=60_000,
        description="How often experiment and shadow records are written in batches (a crash loses at "
        "most this much of them).",
    )
    record_all: bool = Field(
        default=False,
        description="Record every model answer in prediction_records, not only experiment traffic.",
    )
    shadow_max_inflight: int = Field(
        default=8,
        ge=1,
        le=1024,
        description="Shadow calls in flight at once in one process, over all experiments (each "
        "experiment's own max_inflight applies too): the cap that protects the primary's latency.",
    )
    forecast_answer_cache: int = Field(
        default=4096,
        ge=0,
        description="Forecast steps kept per model version, bar and features (0: run the model every time).",
    )
    risk_budget: float = Field(
        default=0.1,
        gt=0,
        le=1,
        description="Fraction of equity a full-confidence decision may put at risk at the target "
        "volatility (POST /api/v1/predict sizing).",
    )
    target_volatility: float = Field(
        default=0.1, gt=0, le=5, description="Annualised volatility a decision's position is sized for."
    )
    lot_step: Decimal = Field(
        default=Decimal(1), gt=0, description="Decision quantities are rounded down to a multiple of this."
    )
    risk_max_position: Decimal = Field(
        default=Decimal("0.25"), gt=0, description="Largest position in one symbol, as a fraction of equity."
    )
    risk_max_sector: Decimal = Field(
        default=Decimal("0.5"), gt=0, description="Largest exposure to one sector, as a fraction of equity."
    )
    risk_max_leverage: Decimal = Field(
        default=Decimal("1.5"), gt=0, description="Largest gross exposure, as a multiple of equity."
    )
    risk_max_daily_loss: Decimal = Field(
        default=Decimal("0.02"),
        gt=0,
        le=1,
        description="Day's loss, as a fraction of the day's starting "
        "equity, after which only risk-reducing decisions are approved.",
    )
    paper_equity: Decimal = Field(
        default=Decimal(100_000),
        gt=0,
        description="Equity of the flat account a decision without `account` is sized and checked against.",
    )
    symbol_sectors: dict[str, str] = Field(
        default_factory=lambda: {"EURUSD": "fx", "GOOG": "technology"},
        description="Sector of each symbol for the sector-exposure check (JSON object in the environment); "
        "a position's stored sector takes precedence.",
    )
    regime_lookback_bars: int = Field(
        default=250, ge=30, le=20_000, description="Bars the regime filter and volatility estimate read."
    )
    account_cache_seconds: float = Field(
        default=1.0,
        ge=0,
        le=60,
        description="How long a trading account's positions and P&L are remembered for decisions. A change "
        "through this process applies at once; other worker processes see it within this time. 0 reads "
        "the database on every decision.",
    )
    model_timeout_ms: float = Field(
        default=0.0,
        ge=0,
        description="Default deadline of one model call (0: none); the caller is answered at the deadline "
        "and the late result discarded. PUT /models/{name}/resilience sets a model's own.",
    )
    model_max_inflight: int = Field(
        default=0, ge=0, description="Default bulkhead: calls in flight per model version (0: no limit)."
    )
    breaker_window_size: int = Field(default=100, ge=1, description="Breaker window: the last N verdicts.")
    breaker_min_calls: int = Field(default=20, ge=1, description="Verdicts before the window is judged.")
    breaker_failure_rate: float = Field(default=0.5, gt=0, le=1, description="Failure rate that opens it.")
    breaker_slow_call_ms: float = Field(default=0.0, ge=0, description="A call over this is slow (0: off).")
    breaker_slow_call_rate: float = Field(default=0.8, gt=0, le=1, description="Slow rate that opens it.")
    breaker_open_s: float = Field(default=30.0, gt=0, description="How long the first open lasts.")
    breaker_open_backoff: float = Field(
        default=2.0, ge=1, description="Each consecutive open lasts this many times longer."
    )
    breaker_max_open_s: float = Field(default=300.0, gt=0, description="The longest an open lasts.")
    breaker_half_open_calls: int = Field(default=3, ge=1, description="Probes let through when half open.")
    chaos: bool = Field(
        default=False,
        description="Tests only: enable fault injection (/api/v1/admin/chaos, admin), which makes chosen "
        "model versions fail or slow down in every worker.",
    )
    drift: bool = Field(
        default=True,
        description="Bin every predicted row's features and outputs on the version's reference profile "
        "(GET /models/{name}/drift, /monitoring/drift, pp_drift_* gauges).",
    )
    drift_window_rows: int = Field(
        default=1000, ge=1, description="Rows the current drift window gathers before it closes."
    )
    drift_bins: int = Field(
        default=10,
        ge=2,
        le=20,
        description="Reference quantile bins per feature (deciles by default); the KS grid has five "
        "times as many.",
    )
    drift_slot_s: int = Field(
        default=60, ge=1, le=3600, description="Seconds per drift counter slot (windows are built of slots)."
    )
    drift_sample_rate: float = Field(
        default=1.0, ge=0, le=1, description="Share of predicted rows counted for drift."
    )
    drift_flush_s: float = Field(
        default=2.0, gt=0, description="How often each process adds its drift counts to the shared table."
    )
    drift_min_rows: int = Field(
        default=200, ge=1, description="Rows a drift window needs to be judged (else insufficient_data)."
    )
    drift_window_max_s: int = Field(
        default=3600, ge=1, description="The longest span of one drift window, however few its rows."
    )

    @field_validator(
        "warm_models", "trusted_model_roots", "cors_origins", "data_roots", "currencies", mode="before"
    )
    @classmethod
    def _lists_from_strings(cls, value: object) -> object:
        return _split_list(value)

    @field_validator("market_clock_start")
    @classmethod
    def _check_market_clock_start(cls, value: datetime | None) -> datetime | None:
        # A naive time would be read in the server's zone: the replay would start hours off.
        if value is not None and value.tzinfo is None:
            raise ValueError("give a timezone-aware time, e.g. 2018-01-08T15:00:00Z")
        return value

    @field_validator("feeder_csv_names", mode="before")
    @classmethod
    def _feeder_names_from_string(cls, value: object) -> object:
        return _split_list(value)

    @field_validator("feeder_columns", mode="before")
    @classmethod
    def _feeder_columns_from_string(cls, value: object) -> object:
        """Accept ``time=DATE_TIME,open=OPEN`` in the environment as well as a JSON/TOML table."""
        if isinstance(value, str):
            stripped = value.strip()
            if stripped.startswith("{"):
                import json

                return json.loads(stripped)
            pairs = [item.split("=", 1) for item in stripped.split(",") if item.strip()]
            if any(len(pair) != 2 for pair in pairs):
                raise ValueError("use field=column pairs separated by commas, e.g. time=DATE_TIME,open=OPEN")
            return {key.strip(): column.strip() for key, column in pairs}
        return value

    @model_validator(mode="after")
    def _check_job_timeouts(self) -> Settings:
        # A Redis broker redelivers any task still unacknowledged after the visibility timeout:
        # shorter than the time limit, a long job would run twice at once.
        if self.broker_visibility_timeout <= self.job_time_limit_seconds:
            raise ValueError("broker_visibility_timeout must exceed job_time_limit_seconds")
        return self

    @field_validator("rate_limit", "login_lockout", "login_failure_limit", "login_rate_limit")
    @classmethod
    def _check_rate_limit(cls, value: str | None) -> str | None:
        from limits import parse

        if value is not None:
            try:
                parse(value)
            except ValueError:
                message = f"{value!r} is not a rate limit: write e.g. 30/minute or 5/15 minutes"
                raise ValueError(message) from None
        return value

    @model_validator(mode="after")
    def _apply_deprecated_login_rate_limit(self) -> Settings:
        if self.login_rate_limit and "login_failure_limit" not in self.model_fields_set:
            self.login_failure_limit = self.login_rate_limit
        return self

    @model_validator(mode="after")
    def _check_confidence_bands(self) -> Settings:
        if self.confidence_medium > self.confidence_high:
            raise ValueError("confidence_medium must not exceed confidence_high")
        return self

    @property
    def tracking_uri(self) -> str:
        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri
        return f"sqlite:///{(self.data_dir / 'mlflow.db').resolve()}"

    @property
    def database(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'provider.db').resolve()}"

    @property
    def artifacts_dir(self) -> Path:
        return (self.data_dir / "artifacts").resolve()

    @property
    def downloads_dir(self) -> Path:
        """Copies of models fetched from remote artifact stores: never trusted by default."""
        return (self.data_dir / "downloads").resolve()

    @property
    def results_dir(self) -> Path:
        return (self.data_dir / "results").resolve()

    @property
    def uploads_dir(self) -> Path:
        return (self.data_dir / "uploads").resolve()

    @property
    def dataset_roots(self) -> tuple[Path, ...]:
        roots = [(self.data_dir / "datasets").resolve(), self.uploads_dir]
        roots.extend(Path(root).expanduser().resolve() for root in self.data_roots)
        return tuple(dict.fromkeys(roots))

    @property
    def trusted_roots(self) -> tuple[Path, ...]:
        roots = [self.artifacts_dir, (self.data_dir / "models").resolve()]
        roots.extend(Path(root).expanduser().resolve() for root in self.trusted_model_roots)
        return tuple(dict.fromkeys(roots))

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get(CONFIG_FILE_ENV)
        if config_file:
            if not Path(config_file).is_file():
                raise FileNotFoundError(f"{CONFIG_FILE_ENV}={config_file} does not exist")
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
        return tuple(sources)
