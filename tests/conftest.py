"""Session fixtures: real demo models trained once on a slice of the real bars."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pandas as pd
import pytest
import uvicorn

from prediction_provider.app import account_service, create_app
from prediction_provider.config import Settings
from prediction_provider.db import migrate
from prediction_provider.demo.training import DemoConfig, DemoSummary, train_demo_models
from prediction_provider.features.market_data import load_sample_bars
from prediction_provider.features.pipeline import compute_features
from tests.integration.database_fixtures import (  # noqa: F401 - fixtures
    postgres_databases,
    postgres_url,
    services_required,
)

TEST_DEMO = DemoConfig(symbols=("EURUSD", "GOOG"), max_bars=900, n_estimators=25)
MODEL = "eurusd-direction"


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pp_data")


@pytest.fixture(scope="session")
def demo_summary(data_dir: Path) -> DemoSummary:
    return train_demo_models(Settings(data_dir=data_dir), TEST_DEMO)


TEST_JWT_SECRET = "test-secret-" + "x" * 40


@pytest.fixture(scope="session")
def database_url(request: pytest.FixtureRequest) -> str | None:
    """SQLite under the data dir by default; ``PP_TEST_DATABASE=postgresql`` runs the suite on a
    fresh database of the real PostgreSQL server instead (scripts/test.sh does both)."""
    if os.environ.get("PP_TEST_DATABASE", "sqlite") != "postgresql":
        return None
    url: str = request.getfixturevalue("postgres_databases")()
    migrate.upgrade(url)
    return url


@pytest.fixture(scope="session")
def settings(data_dir: Path, demo_summary: DemoSummary, database_url: str | None) -> Settings:
    return Settings(
        data_dir=data_dir,
        database_url=database_url,
        max_batch_rows=2000,
        max_body_bytes=1_000_000,
        jwt_secret=TEST_JWT_SECRET,
        grpc_enabled=False,
        # The shared server is hammered by the whole suite; limits have tests of their own.
        rate_limit="100000/minute",
        login_lockout="10000/minute",
        login_failure_limit="10000/minute",
        max_concurrent_predictions=1000,
        # Servers of the suite score when a test asks (POST /api/v1/admin/scoring/run): a periodic
        # pass in every one over the shared database would race the tests that count scores.
        # tests/integration/test_scoring.py checks the periodic thread on its own.
        scoring_interval_s=0,
    )


@dataclass(frozen=True)
class Account:
    username: str
    password: str
    api_key: str
    user_id: int

    @property
    def headers(self) -> dict[str, str]:
        return {"X-API-KEY": self.api_key}


@pytest.fixture(scope="session")
def accounts(settings: Settings) -> dict[str, Account]:
    """One active account per role, each with an API key, in the suite's database."""
    service = account_service(settings)
    made = {}
    for role in ("admin", "client", "provider", "evaluator", "operator"):
        password = f"{role}-password-123"
        user = service.create_user(f"test-{role}", f"{role}@example.com", password, role, active=True)
        key = service.regenerate_api_key(user["id"])["api_key"]
        made[role] = Account(user["username"], password, key, user["id"])
    service.db.dispose()
    return made


@pytest.fixture
def client_headers(accounts: dict[str, Account]) -> dict[str, str]:
    return accounts["client"].headers


@pytest.fixture(scope="session")
def eurusd_features() -> pd.DataFrame:
    """Real feature rows, in the models' feature order."""
    return compute_features(load_sample_bars("EURUSD")).iloc[-200:]


@pytest.fixture(scope="session")
def feature_rows(eurusd_features: pd.DataFrame) -> list[dict[str, float]]:
    return [{k: float(v) for k, v in row.items()} for _, row in eurusd_features.iterrows()]


class LiveServer:
    """The real app served by uvicorn on a free loopback port, in a background thread."""

    def __init__(self, settings: Settings) -> None:
        self.app = create_app(settings)
        config = uvicorn.Config(self.app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("server did not start")
            self.thread.join(0.05)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)

    @property
    def services(self):  # type: ignore[no-untyped-def]
        return self.app.state.services


def live_settings(settings: Settings, **changes: object) -> Settings:
    """What the shared live server runs with: the test model warmed, gRPC on a free port."""
    update = {"warm_models": [MODEL], "default_model": MODEL, "grpc_enabled": True, "grpc_port": 0}
    return settings.model_copy(update={**update, **changes})


@pytest.fixture(scope="session")
def live_server(settings: Settings, accounts: dict[str, Account]) -> Iterator[LiveServer]:
    with LiveServer(live_settings(settings)) as server:
        yield server


@pytest.fixture(scope="session")
def grpc_frontend_binary() -> Path:
    """``pp-grpc-frontend``, built by scripts/build_grpc_frontend.sh (scripts/test.sh runs it)."""
    from prediction_provider.api.grpc.native_frontend import find_binary

    binary = find_binary(None)
    if binary is None:
        message = "pp-grpc-frontend is not built: run bash scripts/build_grpc_frontend.sh"
        if services_required():
            pytest.fail(message)
        pytest.skip(message)
    return binary


@pytest.fixture(scope="module", params=["python", "native"])
def grpc_server(
    request: pytest.FixtureRequest, live_server: LiveServer, settings: Settings
) -> Iterator[LiveServer]:
    """The live server with gRPC terminated by grpcio (the shared server) or by the native front end."""
    if request.param == "python":
        yield live_server
        return
    binary = request.getfixturevalue("grpc_frontend_binary")
    native = live_settings(settings, grpc_frontend="native", grpc_frontend_binary=binary)
    with LiveServer(native) as server:
        yield server


@pytest.fixture
def client(live_server: LiveServer, client_headers: dict[str, str]) -> Iterator[httpx.Client]:
    """An HTTP client signed in as the test client account."""
    with httpx.Client(base_url=live_server.url, timeout=60, headers=client_headers) as http:
        yield http


@pytest.fixture
def anonymous(live_server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_server.url, timeout=60) as http:
        yield http


class WithHeaders:
    """A protocol client whose every call carries the given headers (tritonclient takes them per call)."""

    def __init__(self, client: object, headers: dict[str, str]) -> None:
        self._client = client
        self._headers = headers

    def __getattr__(self, name: str) -> object:
        attribute = getattr(self._client, name)
        if callable(attribute) and name != "close":
            # A fresh dict per call: tritonclient.http writes its own headers into the one it gets.
            return lambda *args, **kwargs: attribute(*args, headers=dict(self._headers), **kwargs)
        return attribute
