"""Settings, read once and passed down: defaults < config file < environment < CLI flags.

The config file is TOML, named by ``PP_CONFIG_FILE``; every field can also be
set as ``PP_<FIELD>`` in the environment. CLI flags are passed to ``Settings``
as keyword arguments, which pydantic-settings ranks highest.
"""

from __future__ import annotations

import os
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
    bootstrap_admin_username: str | None = None
    bootstrap_admin_password: str | None = Field(default=None, repr=False)
    bootstrap_admin_email: str | None = None
    rate_limit: str = Field(
        default="1200/minute", description="Requests per user, or per address if anonymous."
    )
    login_rate_limit: str = Field(
        default="3/minute", description="Login attempts per address and per username."
    )
    max_concurrent_predictions: int = Field(default=10, ge=1, description="In-flight predictions per user.")
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    grpc_enabled: bool = True
    grpc_port: int = Field(
        default=8001, ge=0, le=65535, description="Open Inference Protocol over gRPC (0 = any free port)."
    )
    log_level: str = "info"
    access_log: bool = False

    max_models: int = Field(default=8, ge=1, description="LRU capacity of loaded models.")
    warm_models: Annotated[list[str], NoDecode] = Field(default_factory=list)
    alias_refresh_seconds: float = Field(
        default=30.0,
        ge=0,
        description="How long a moving reference (alias, bare name) stays resolved before "
        "the registry is asked again.",
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
    batching: Literal["auto", "on", "off"] = Field(
        default="auto", description="Adaptive batching of single-row calls; auto = on for tree models."
    )
    max_batch_size: int = Field(default=64, ge=1, description="Rows merged into one model call at most.")
    max_batch_latency_ms: float = Field(
        default=2.0, ge=0, description="How long a batch may wait to fill, only under load."
    )
    confidence_high: float = Field(default=0.6, gt=0, le=1)
    confidence_medium: float = Field(default=0.45, gt=0, le=1)

    @field_validator("warm_models", "trusted_model_roots", "cors_origins", mode="before")
    @classmethod
    def _lists_from_strings(cls, value: object) -> object:
        return _split_list(value)

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
