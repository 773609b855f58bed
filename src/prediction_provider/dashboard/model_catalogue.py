"""What the Models pages show, gathered from the services the API's model routes call.

Each figure is shown only to a role the API would give it to: traffic figures need
``READ_METRICS`` (``/api/v1/metrics/series``), owners' usernames ``MANAGE_USERS``
(``/api/v1/admin/models/owners``), a provider sees which models are its own
(``/api/v1/provider/models``), and prices come from the public offers (``READ_MODELS``).
Everything here is blocking: views call it through ``run_in_threadpool``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from prediction_provider.accounts.principal import Principal
from prediction_provider.accounts.roles import Permission, allows
from prediction_provider.api.deps import Services
from prediction_provider.ledger.money import format_amount
from prediction_provider.observability.series import Figures, MetricSeries
from prediction_provider.serving.cache import CachedModel

HOUR_S = 3600.0


@dataclass(frozen=True, slots=True)
class Loaded:
    """One cached version of a model, in this process."""

    version: str
    loader: str
    framework: str
    load_seconds: float
    task: str
    features: int


@dataclass(slots=True)
class ModelRow:
    name: str
    description: str | None
    versions: int
    aliases: dict[str, str]
    loaded: list[Loaded] = field(default_factory=list)
    figures: Figures | None = None
    owner: str | None = None
    price: str | None = None


def may(principal: Principal, permission: Permission) -> bool:
    return allows(principal.role, permission)


def loaded_by_name(services: Services) -> dict[str, list[Loaded]]:
    found: dict[str, list[Loaded]] = {}
    for entry in services.cache.entries():
        found.setdefault(entry.resolved.name, []).append(loaded_of(entry))
    return found


def loaded_of(entry: CachedModel) -> Loaded:
    signature = entry.model.signature
    return Loaded(
        entry.resolved.version or "-", entry.loader, entry.model.framework, entry.load_seconds,
        str(signature.task), len(signature.features),
    )  # fmt: skip


def model_figures(series: MetricSeries | None) -> dict[str, Figures] | None:
    """Last-hour figures by model from the metric ring, or None when there is no ring."""
    if series is None:
        return None
    return series.snapshot(HOUR_S).models


def cheapest_prices(services: Services, names: list[str]) -> dict[str, str]:
    """The cheapest active offer's price per model (``GET /api/v1/market/offers``), as text."""
    if services.marketplace is None or not names:
        return {}
    wanted = set(names)
    found: dict[str, str] = {}
    for priced in services.marketplace.offers.search():  # cheapest first
        name = priced.offer.model_name
        if name in wanted and name not in found:
            found[name] = f"{format_amount(priced.price.amount)} {priced.offer.currency}"
    return found


def owners(services: Services, principal: Principal, names: list[str]) -> dict[str, str]:
    """Owners as the API shows them: every owner's username to admins, "you" to an owner."""
    if services.ownership is None:
        return {}
    if may(principal, Permission.MANAGE_USERS):
        return services.ownership.owners_of(names)
    if may(principal, Permission.MANAGE_MODELS) and principal.user_id is not None:
        mine = set(services.ownership.owned_by(principal.user_id))
        return {name: "you" for name in names if name in mine}
    return {}


def catalogue_page(
    services: Services,
    principal: Principal,
    series: MetricSeries | None,
    text: str | None,
    mine: bool,
    limit: int,
    offset: int,
) -> tuple[list[ModelRow], int]:
    """One page of the catalogue (``GET /api/v1/models``), searched and, for a provider asking
    for its own, narrowed to the models it owns."""
    only: set[str] | None = None
    if mine and services.ownership is not None and principal.user_id is not None:
        only = set(services.ownership.owned_by(principal.user_id))
    entries, total = services.registry.search_models(text, only, limit, offset)
    names = [str(entry["name"]) for entry in entries]
    loaded = loaded_by_name(services)
    figures = (
        model_figures(series) if series is not None and may(principal, Permission.READ_METRICS) else None
    )
    owned = owners(services, principal, names)
    prices = cheapest_prices(services, names)
    rows = [
        ModelRow(
            name=name,
            description=entry.get("description"),
            versions=len(entry.get("versions") or []),
            aliases=dict(entry.get("aliases") or {}),
            loaded=sorted(loaded.get(name, []), key=lambda item: item.version),
            figures=None if figures is None else figures.get(name),
            owner=owned.get(name),
            price=prices.get(name),
        )
        for entry, name in zip(entries, names, strict=True)
    ]
    return rows, total


def with_created(versions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Versions with ``created``: MLflow's creation time (epoch milliseconds) as a UTC datetime."""
    return [
        {**v, "created": datetime.fromtimestamp(v["created_at"] / 1000, UTC) if v.get("created_at") else None}
        for v in versions
    ]


def example_request(name: str, signature: dict[str, Any]) -> dict[str, Any]:
    """A body ``POST /api/v1/predict`` accepts: one value per feature of the signature."""
    features = {str(item["name"]): 0.0 for item in signature.get("features", [])}
    return {"model": name, "features": features, "return_proba": bool(signature.get("classes"))}
