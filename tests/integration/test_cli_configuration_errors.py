"""A configuration mistake ends ``serve``/``worker`` with one line naming the setting, exit code 2,
no traceback: the real command, in a child process whose output is a pipe, not a terminal."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from prediction_provider.config_errors import one_line

SECRET = "x" * 40

# (command, environment, the setting the line must name, a word of what is wrong)
MISTAKES = [
    (["serve"], {}, "PP_JWT_SECRET", "not set"),
    (["serve"], {"PP_JWT_SECRET": "short"}, "PP_JWT_SECRET", "too short"),
    (["serve"], {"PP_JWT_SECRET": SECRET, "PP_PORT": "notanumber"}, "PP_PORT", "integer"),
    (["serve"], {"PP_JWT_SECRET": SECRET, "PP_PORT": "70000"}, "PP_PORT", "65535"),
    (
        ["serve"],
        {"PP_JWT_SECRET": SECRET, "PP_BROKER_VISIBILITY_TIMEOUT": "10"},
        "PP_JOB_TIME_LIMIT_SECONDS",
        "exceed",
    ),
    (["serve"], {"PP_JWT_SECRET": SECRET, "PP_SYMBOL_SECTORS": "fx"}, "PP_SYMBOL_SECTORS", "JSON"),
    (["serve"], {"PP_JWT_SECRET": SECRET, "PP_CONFIG_FILE": "/no/such/pp.toml"}, "PP_CONFIG_FILE", "exist"),
    (["worker"], {"PP_PORT": "notanumber"}, "PP_PORT", "integer"),
]


def run_cli(args: list[str], env: dict[str, str], data_dir: Path) -> subprocess.CompletedProcess[str]:
    clean = {key: value for key, value in os.environ.items() if not key.startswith("PP_")}
    clean.update(env, PP_DATA_DIR=str(data_dir))
    return subprocess.run(
        [sys.executable, "-m", "prediction_provider.cli", *args],
        env=clean, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("args", "env", "setting", "what"), MISTAKES, ids=[f"{a[0]} {s} {w}" for a, _, s, w in MISTAKES]
)
def test_a_configuration_mistake_is_one_line_and_exit_code_2(
    tmp_path: Path, args: list[str], env: dict[str, str], setting: str, what: str
) -> None:
    result = run_cli(args, env, tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert setting in lines[0]
    assert what in lines[0]
    assert lines[0].startswith("configuration error: ")
    assert "Traceback" not in result.stderr + result.stdout


def test_a_secret_that_fails_validation_is_not_echoed() -> None:
    from pydantic import BaseModel, Field, ValidationError

    class Shaped(BaseModel):  # jwt_secret is repr=False in Settings, as every secret is
        jwt_secret: int = Field(repr=False)

    with pytest.raises(ValidationError) as failed:
        Shaped(jwt_secret="hunter2-hunter2")  # type: ignore[arg-type]
    line = one_line(failed.value)
    assert "PP_JWT_SECRET" in line
    assert "hunter2" not in line
