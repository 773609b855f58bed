"""docker-compose.yml and the Dockerfile, checked without a Docker engine.

A wrong setting, a mount of a file nobody makes, a port the server does not
listen on or a binary the image never built fail no test run: they fail the
first ``docker compose up``. So the stack is checked here against the code:
every ``PP_*`` variable is a real setting that validates, every mounted file
is committed or written by a service, the ports agree, the health check
follows ``PP_PORT``, and the image builds the native gRPC front end it ships.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from prediction_provider.config import Settings

ROOT = Path(__file__).resolve().parents[2]
PROVIDER_SERVICES = ("setup", "api", "worker")
# ${VAR:?message} is filled in by the operator at `docker compose up`; ${VAR:-default} may be.
REQUIRED = re.compile(r"\$\{[A-Z_]+:\?[^}]*\}")
DEFAULTED = re.compile(r"\$\{[A-Z_]+:-([^}]*)\}")


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def compose_environment(overrides: dict[str, str] | None = None) -> dict[str, str]:
    """The API's environment as compose fills it in, with ``overrides`` for the operator's variables."""
    environment: dict[str, str] = compose()["services"]["api"]["environment"]
    filled = {}
    for name, value in environment.items():
        text = str(value)
        for variable, given in (overrides or {}).items():
            text = re.sub(r"\$\{" + variable + r":[-?][^}]*\}", given, text)
        text = REQUIRED.sub("x" * 40, DEFAULTED.sub(r"\1", text))
        filled[name] = text
    return filled


def settings_under(monkeypatch: pytest.MonkeyPatch, environment: dict[str, str]) -> Settings:
    for name in list(os.environ):
        if name.startswith("PP_"):
            monkeypatch.delenv(name)
    for name, value in {**dockerfile_environment(), **environment}.items():
        monkeypatch.setenv(name, value)
    return Settings()


def dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text()


def stages() -> dict[str, str]:
    """Each build stage's instructions, by name (the last, unnamed one is ``runtime``)."""
    text = re.sub(r"\\\n", " ", dockerfile())  # one line per instruction
    found: dict[str, str] = {}
    for part in re.split(r"(?m)^FROM ", text)[1:]:
        header, _, body = part.partition("\n")
        words = header.split()
        found[words[2] if len(words) == 3 and words[1].upper() == "AS" else "runtime"] = body
    return found


def dockerfile_environment() -> dict[str, str]:
    env_lines = re.findall(r"(?m)^ENV (.+)$", re.sub(r"\\\n\s*", " ", stages()["runtime"]))
    pairs = [word.split("=", 1) for line in env_lines for word in shlex.split(line)]
    return {name: value for name, value in pairs if name.startswith("PP_")}


def test_every_service_of_the_stack_shares_one_environment() -> None:
    services = compose()["services"]
    shared = services["api"]["environment"]
    for name in PROVIDER_SERVICES:
        assert services[name]["environment"] == shared
        assert services[name]["image"] == services["api"]["image"]


def test_compose_settings_are_known_and_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    environment = compose_environment()
    known = {f"PP_{name.upper()}" for name in Settings.model_fields}
    assert set(environment) <= known, set(environment) - known
    assert set(dockerfile_environment()) <= known, set(dockerfile_environment()) - known
    settings = settings_under(monkeypatch, environment)
    assert settings.job_backend == "celery"
    assert settings.broker_url == "redis://redis:6379/0"
    assert settings.database.startswith("postgresql+psycopg://")
    assert settings.broker_visibility_timeout > settings.job_time_limit_seconds


def test_the_rabbitmq_profile_offers_the_workers_a_rabbitmq_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    services = compose()["services"]
    rabbitmq = services["rabbitmq"]
    assert rabbitmq["profiles"] == ["rabbitmq"]  # opt-in: Redis stays the default broker
    assert rabbitmq["healthcheck"]["test"][0] == "CMD"
    user = rabbitmq["environment"]["RABBITMQ_DEFAULT_USER"]
    password = rabbitmq["environment"]["RABBITMQ_DEFAULT_PASS"]
    assert user != "guest"  # RabbitMQ's guest may only connect from localhost
    header = (ROOT / "docker-compose.yml").read_text()
    documented = re.search(r"PP_BROKER_URL=(amqp://\S+) docker compose --profile rabbitmq up", header)
    assert documented is not None
    url = documented.group(1)
    assert url.startswith(f"amqp://{user}:{password}@rabbitmq:")
    settings = settings_under(monkeypatch, compose_environment({"PP_BROKER_URL": url}))
    assert settings.broker_url == url
    for name in PROVIDER_SERVICES:
        assert services[name]["depends_on"]["rabbitmq"] == {"condition": "service_healthy", "required": False}


def mounts(service: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """``(source, target, read_only)`` of each of a service's volumes."""
    found = []
    for mount in service.get("volumes", []):
        source, target, *options = mount.split(":")
        found.append((source, target, "ro" in options))
    return found


def written_files(service: dict[str, Any]) -> list[PurePosixPath]:
    """The files a service's command writes with ``--out``."""
    command = service.get("command", "")
    return [PurePosixPath(path) for path in re.findall(r"--out\s+(\S+?)\"?(?:\s|$)", command)]


def test_every_mounted_file_is_committed_or_written_by_a_service() -> None:
    services = compose()["services"]
    named_volumes = set(compose()["volumes"])
    committed = set(
        subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    )
    for name, service in services.items():
        for source, _target, _ in mounts(service):
            if source.startswith(("./", "/")):
                # A missing bind source becomes an empty directory on `docker compose up`.
                relative = os.path.normpath(source)
                assert relative in committed, f"{name} mounts {source}, which is not in git"
            else:
                assert source in named_volumes, f"{name} mounts an undeclared volume {source}"


def test_the_prometheus_scrape_key_is_written_by_setup_into_a_volume_prometheus_reads() -> None:
    services = compose()["services"]
    scrape = yaml.safe_load((ROOT / "deploy/prometheus.yml").read_text())["scrape_configs"][0]
    key_file = PurePosixPath(scrape["authorization"]["credentials_file"])
    [(volume, read_at)] = [
        (source, PurePosixPath(target))
        for source, target, read_only in mounts(services["prometheus"])
        if read_only and key_file.is_relative_to(target)
    ]
    [written] = written_files(services["setup"])
    [written_at] = [
        PurePosixPath(target) for source, target, _ in mounts(services["setup"]) if source == volume
    ]
    assert written.relative_to(written_at) == key_file.relative_to(read_at)
    assert "users service-key prometheus --role operator" in services["setup"]["command"]
    assert services["prometheus"]["depends_on"]["setup"] == {"condition": "service_completed_successfully"}
    # The image makes the mount point the setup user's, so the new volume is writable by it.
    runtime = stages()["runtime"]
    assert re.search(r"mkdir -p [^&]*" + re.escape(str(written_at)), runtime)
    assert re.search(r"chown provider [^&\n]*" + re.escape(str(written_at)), runtime)


def test_ports_agree_across_the_image_the_stack_and_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_under(monkeypatch, compose_environment())
    services = compose()["services"]
    published = {int(port.split(":")[-1]) for port in services["api"]["ports"]}
    assert published == {settings.port, settings.grpc_port}
    exposed = {int(port) for line in re.findall(r"(?m)^EXPOSE (.+)$", dockerfile()) for port in line.split()}
    assert exposed == published
    scrape = yaml.safe_load((ROOT / "deploy/prometheus.yml").read_text())["scrape_configs"][0]
    [target] = scrape["static_configs"][0]["targets"]
    assert target == f"api:{settings.port}"


def test_the_builder_stage_builds_the_grpc_frontend_the_runtime_stage_copies() -> None:
    built = stages()
    [(stage, source, target)] = re.findall(
        r"(?m)^COPY --from=(\S+) (\S+) (\S+pp-grpc-frontend)$", built["runtime"]
    )
    builder = built[stage]
    assert "COPY native ./native" in builder
    assert "scripts/build_grpc_frontend.sh" in builder
    [venv] = re.findall(r"PP_VENV=(\S+) bash scripts/build_grpc_frontend.sh", builder)
    assert source == f"{venv}/bin/pp-grpc-frontend"  # where the script puts it ($VENV/bin)
    assert "libgrpc++-dev" in builder
    # Where the server looks: beside the runtime's python (native_frontend.find_binary).
    assert PurePosixPath(target).parent == PurePosixPath("/opt/venv/bin")
    assert "libgrpc++" in built["runtime"]  # the shared libraries it links against
    bases = re.findall(r"(?m)^FROM (\S+)", dockerfile())
    assert len(set(bases)) == 1, bases  # one Debian release: the built binary finds its libraries
    script = (ROOT / "scripts/build_grpc_frontend.sh").read_text()
    assert 'TARGET="$VENV/bin/pp-grpc-frontend"' in script


class LiveProbe(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/health/live" else 404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def probe_server() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), LiveProbe)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()
    thread.join(5)


def healthcheck_command() -> list[str]:
    line = re.sub(r"\\\n\s*", " ", dockerfile())
    [command] = re.findall(r"(?m)^HEALTHCHECK .*? CMD (.+)$", line)
    return shlex.split(command)


def test_the_health_check_probes_the_port_pp_port_names(probe_server: int) -> None:
    command = healthcheck_command()
    assert command[0] == "python"
    environment = {"PATH": os.environ["PATH"]}
    ran = subprocess.run([sys.executable, *command[1:]], env={**environment, "PP_PORT": str(probe_server)})
    assert ran.returncode == 0
    with ThreadingHTTPServer(("127.0.0.1", 0), LiveProbe) as closed:
        unused = closed.server_address[1]  # bound, then closed: nothing listens there
    ran = subprocess.run(
        [sys.executable, *command[1:]], env={**environment, "PP_PORT": str(unused)}, capture_output=True
    )
    assert ran.returncode != 0


def test_services_without_an_http_port_do_not_run_the_images_health_check() -> None:
    services = compose()["services"]
    for name in ("setup", "worker"):
        assert services[name]["healthcheck"] == {"disable": True}
    assert "healthcheck" not in services["api"]  # the image's, on PP_PORT
