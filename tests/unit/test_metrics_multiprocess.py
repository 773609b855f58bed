"""``serve --workers N``: requests counted in several processes, summed by whichever one is scraped.

prometheus-client picks its mode once, at import, so each process here is a
fresh interpreter started inside ``multiprocess_metrics``, as the CLI starts
uvicorn's workers.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from prediction_provider.config import Settings
from prediction_provider.observability.multiprocess import MULTIPROC_ENV, multiprocess_metrics
from tests.unit.test_metrics import ITEM, requests_of, samples, value

REPOSITORY = Path(__file__).resolve().parents[2]

SERVE = """
import asyncio, sys
import httpx
from prediction_provider.observability.metrics import AppMetrics, multiprocess_enabled
from tests.unit.test_metrics import items_app

assert multiprocess_enabled()

async def main(count: int) -> None:
    transport = httpx.ASGITransport(app=items_app(AppMetrics(lambda: None)))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        for index in range(count):
            assert (await client.get(f"/api/v1/items/{index}")).status_code == 200

asyncio.run(main(int(sys.argv[1])))
"""

SCRAPE = """
import sys
from prediction_provider.observability.metrics import AppMetrics
sys.stdout.write(AppMetrics(lambda: None).exposition().decode())
"""


def python(code: str, *args: str) -> str:
    """Run ``code`` in a fresh interpreter with this environment (the multiprocess directory included)."""
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=REPOSITORY,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_scrape_of_any_process_sums_the_requests_of_all_of_them(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, port=18123)
    with multiprocess_metrics(settings) as directory:
        assert directory.is_relative_to(tmp_path / "prometheus")
        python(SERVE, "3")
        python(SERVE, "4")
        scraped = samples(python(SCRAPE))
    assert requests_of(scraped, ITEM, "GET", 200) == 7
    assert value(scraped, "pp_http_request_duration_seconds_count", method="GET", route=ITEM) == 7
    # Each process can only see itself: process metrics would describe whichever one answered.
    assert not [name for name, _ in scraped if name.startswith("process_")]


def test_values_of_a_previous_run_are_cleared_before_and_after(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, port=18124)
    with multiprocess_metrics(settings) as directory:
        python(SERVE, "5")
    assert list(directory.glob("*.db")) == []
    assert MULTIPROC_ENV not in os.environ
    with multiprocess_metrics(settings):
        python(SERVE, "2")
        scraped = samples(python(SCRAPE))
    assert requests_of(scraped, ITEM, "GET", 200) == 2


def test_a_directory_the_operator_chose_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    chosen = tmp_path / "chosen"
    chosen.mkdir()
    monkeypatch.setenv(MULTIPROC_ENV, str(chosen))
    with multiprocess_metrics(Settings(data_dir=tmp_path / "data")) as directory:
        assert directory == chosen
        python(SERVE, "1")
        assert list(chosen.glob("*.db"))
    assert os.environ[MULTIPROC_ENV] == str(chosen)
    assert not (tmp_path / "data" / "prometheus").exists()
