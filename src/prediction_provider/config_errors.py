"""Configuration mistakes as one line a person can act on, instead of a traceback.

``prediction-provider serve`` and ``worker`` check the settings (and, for ``serve``, the JWT
secret) before any server or worker process starts; a mistake ends the command with one line
on stderr that names the setting by its environment variable, says what is wrong and how to
fix it, and exit code 2 (the usual code for a usage error).
"""

from __future__ import annotations

import re
import tomllib
from typing import Any

from pydantic import ValidationError
from pydantic_settings import SettingsError

from prediction_provider.config import CONFIG_FILE_ENV, Settings

EXIT_CODE = 2
MIN_JWT_SECRET = 32
WHERE = "in the environment, the PP_CONFIG_FILE file or a command-line option"


class ConfigurationError(RuntimeError):
    """A setting that cannot be used; ``str()`` is the one line shown to the user."""


def env_name(field: str) -> str:
    return f"PP_{field.upper()}"


def _with_env_names(text: str) -> str:
    """``broker_visibility_timeout must exceed ...`` -> ``PP_BROKER_VISIBILITY_TIMEOUT must exceed ...``."""
    names = sorted(Settings.model_fields, key=len, reverse=True)
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, names)) + r")\b")
    return pattern.sub(lambda match: env_name(match.group(1)), text)


def _describe(error: dict[str, Any]) -> str:
    message = str(error["msg"]).removeprefix("Value error, ")
    location = [str(part) for part in error.get("loc", ())]
    field = location[0] if location else None
    if field not in Settings.model_fields:  # a check across several settings
        return f"{_with_env_names(message)} (fix them {WHERE})"
    assert field is not None
    item = f"[{']['.join(location[1:])}]" if len(location) > 1 else ""
    # Secrets (repr=False) are never echoed.
    shown = "" if not Settings.model_fields[field].repr else f"={error.get('input')!r}"
    return f"{env_name(field)}{item}{shown} is invalid: {message[:1].lower()}{message[1:]} (fix it {WHERE})"


def one_line(exc: Exception) -> str:
    """What is wrong with the configuration, on one line."""
    if isinstance(exc, ValidationError):
        text = "; ".join(_describe(dict(error)) for error in exc.errors())
    elif isinstance(exc, SettingsError):  # a value the source could not even parse (e.g. bad JSON)
        field = re.search(r'field "(\w+)"', str(exc))
        name = env_name(field.group(1)) if field else "a setting"
        text = f"{name} could not be parsed: a list or table setting takes JSON here (fix it {WHERE})"
    elif isinstance(exc, tomllib.TOMLDecodeError):
        text = f"{CONFIG_FILE_ENV} is not valid TOML: {exc}"
    elif isinstance(exc, FileNotFoundError):
        text = f"{exc}: point {CONFIG_FILE_ENV} at an existing TOML file, or unset it"
    else:
        text = str(exc)
    return "configuration error: " + " ".join(text.split())


def load(**flags: Any) -> Settings:
    """``Settings`` from flags, environment and config file; raises ``ConfigurationError``."""
    try:
        return Settings(**flags)
    except (ValidationError, SettingsError, tomllib.TOMLDecodeError, FileNotFoundError) as exc:
        raise ConfigurationError(one_line(exc)) from exc


def require_jwt_secret(settings: Settings) -> None:
    """The server signs bearer tokens with PP_JWT_SECRET; only the demo may run on a random one."""
    if not settings.demo_mode and len(settings.jwt_secret) < MIN_JWT_SECRET:
        raise missing_jwt_secret(settings)


def missing_jwt_secret(settings: Settings) -> ConfigurationError:
    state = (
        "is not set"
        if not settings.jwt_secret
        else f"is too short ({len(settings.jwt_secret)} characters, at least {MIN_JWT_SECRET} needed)"
    )
    return ConfigurationError(
        f"configuration error: PP_JWT_SECRET {state}: set it to a random string of at least "
        f"{MIN_JWT_SECRET} characters, e.g. export PP_JWT_SECRET=$(python -c 'import secrets; "
        "print(secrets.token_hex(32))') (only `prediction-provider demo` runs without one)"
    )
