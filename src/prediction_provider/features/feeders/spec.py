"""Feeder specs: one string that names where a symbol's bars come from.

``backtesting``, ``database``, ``yfinance``, ``csv:<path>``, ``parquet:<path>``,
or any installed ``prediction_provider.feeders`` plugin (``name`` or
``name:<path>``). A training run records the spec it read, and the server
reads that symbol's bars from the same spec, so a symbol trained from a CSV
file is served from that file while the others stay on ``PP_FEEDER``.

A spec may come from a request or a manifest, so a path in it is confined
before anything opens it: it must resolve under the data dir or one of the
dataset roots (``PP_DATA_ROOTS``; the rule ``jobs.datasets.resolve_dataset``
applies to batch datasets). A relative path is taken under
``data_dir/datasets``. The one path left unconfined is the operator's own
``PP_FEEDER_PATH``. A path may be a ``{symbol}`` / ``{symbol_lower}`` template
(``csv:bars/{symbol}_H1.csv``); a single file holds the symbol of its name
(``acme.csv`` holds ``ACME``). The files hold bars at ``PP_FEEDER_INTERVAL``
when it is set, else at the interval the caller asks for (the interval a symbol
is trained and served at: a daily file read as hourly bars would lose its last
day as an unfinished bar). Every other feeder setting (column map, time format,
upstream of ``database``) is the configured one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from prediction_provider.errors import FeederUnavailable, InvalidInput
from prediction_provider.features.feeders.base import BarFeeder
from prediction_provider.features.feeders.registry import feeder_plugins, load_feeder
from prediction_provider.serving.trust import is_under_roots

if TYPE_CHECKING:
    from prediction_provider.config import Settings

# Plugins whose bars live in files: they need a path. The other built-ins take none.
FILE_PLUGINS = frozenset({"csv", "parquet"})
PATHLESS_PLUGINS = frozenset({"backtesting", "database", "yfinance"})
_PLUGIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_EXAMPLES = "backtesting, database, yfinance, csv:<path>, parquet:<path> or <plugin>[:<path>]"


@dataclass(frozen=True, slots=True)
class FeederSpec:
    """A parsed feeder spec: the plugin's entry-point name and, for file feeders, a path.

    ``str()`` gives the canonical spec back (``csv:/data/datasets/acme.csv``),
    the form manifests and model tags store.
    """

    plugin: str
    path: str | None = None

    def __str__(self) -> str:
        return self.plugin if self.path is None else f"{self.plugin}:{self.path}"


def parse_feeder_spec(spec: str | FeederSpec) -> FeederSpec:
    """The plugin and path of ``spec``, checked against the installed plugins (no path confined yet).

    ``InvalidInput`` for a malformed spec, a file feeder without a path, a
    path-less built-in given one, or a bad ``{symbol}`` template;
    ``FeederUnavailable`` naming the installed plugins for an unknown plugin.
    """
    if isinstance(spec, FeederSpec):
        return spec
    text = spec.strip() if isinstance(spec, str) else ""
    plugin, colon, path = text.partition(":")
    plugin = plugin.strip()
    if not _PLUGIN_NAME.match(plugin):
        raise _invalid(spec, f"a feeder spec is {_EXAMPLES}")
    installed = feeder_plugins()
    if plugin not in installed:
        raise FeederUnavailable(
            f"no feeder plugin named {plugin!r} (feeder spec {text!r})",
            {"available": sorted(installed), "spec": text},
        )
    path = path.strip()
    if colon and not path:
        raise _invalid(spec, f"{plugin}: names no path")
    if plugin in FILE_PLUGINS and not path:
        raise _invalid(spec, f"{plugin} needs a path: {plugin}:<file or {{symbol}} template>")
    if plugin in PATHLESS_PLUGINS and path:
        raise _invalid(spec, f"the {plugin} feeder takes no path")
    if path:
        _check_template(spec, path)
    return FeederSpec(plugin, path or None)


def configured_spec(settings: Settings) -> FeederSpec:
    """The spec of the feeder ``PP_FEEDER`` / ``PP_FEEDER_PATH`` configure (the default source)."""
    return FeederSpec(settings.feeder, settings.feeder_path or None)


def spec_roots(settings: Settings) -> tuple[Path, ...]:
    """Where a spec's path may point: the dataset roots (``data_dir/datasets`` first) and the data dir."""
    return tuple(dict.fromkeys((*settings.dataset_roots, settings.data_dir.resolve())))


def resolve_feeder_spec(spec: str | FeederSpec, settings: Settings) -> FeederSpec:
    """``spec`` parsed, with its path made absolute and confined to ``spec_roots``.

    The configured ``PP_FEEDER`` spec is trusted as the operator wrote it.
    A path outside the roots answers ``InvalidInput`` naming the roots.
    """
    parsed = parse_feeder_spec(spec)
    if parsed.path is None or parsed == configured_spec(settings):
        return parsed
    roots = spec_roots(settings)
    candidate = Path(parsed.path).expanduser()
    if not candidate.is_absolute():
        candidate = roots[0] / candidate
    # A template is confined as the file of any symbol would be (symbols cannot hold a slash).
    sample = Path(str(candidate).format(symbol="X", symbol_lower="x"))
    if not is_under_roots(sample, roots):
        raise InvalidInput(
            f"feeder path {parsed.path} is outside the data roots: put the file under "
            f"{roots[0]} or add its folder to PP_DATA_ROOTS",
            [{"field": "source", "error": "not under the data dir or PP_DATA_ROOTS"}],
        )
    resolved = candidate.parent.resolve() / candidate.name if _templated(parsed.path) else candidate.resolve()
    return FeederSpec(parsed.plugin, str(resolved))


def feeder_for_spec(spec: str | FeederSpec, settings: Settings, *, interval: str | None = None) -> BarFeeder:
    """The feeder ``spec`` names, built through the plugin registry with the configured settings.

    A single file's symbol comes from its name unless the spec is the configured
    one (then ``PP_FEEDER_SYMBOL`` still applies). ``interval`` is the interval of
    the files a spec names when ``PP_FEEDER_INTERVAL`` is not set.
    """
    resolved = resolve_feeder_spec(spec, settings)
    if resolved == configured_spec(settings):
        return load_feeder(resolved.plugin, settings)
    update: dict[str, object] = {"feeder": resolved.plugin, "feeder_path": resolved.path}
    if resolved.path is not None:
        update["feeder_symbol"] = None
        if interval is not None and "feeder_interval" not in settings.model_fields_set:
            update["feeder_interval"] = interval
    return load_feeder(resolved.plugin, settings.model_copy(update=update))


def _templated(path: str) -> bool:
    return "{symbol" in path


def _check_template(spec: str, path: str) -> None:
    try:
        path.format(symbol="X", symbol_lower="x")
    except (KeyError, IndexError, ValueError) as exc:
        raise _invalid(spec, "a path may hold only the {symbol} and {symbol_lower} placeholders") from exc


def _invalid(spec: object, error: str) -> InvalidInput:
    return InvalidInput(
        f"invalid feeder spec {spec!r}: {error}",
        [{"field": "source", "error": error}],
    )
