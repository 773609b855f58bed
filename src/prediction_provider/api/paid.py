"""The paid path every protocol shares: reserve before the model runs (402 when the caller cannot
pay), charge durably after it answered and before the response is sent (see
``marketplace.paid_calls``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from prediction_provider.accounts.principal import Principal
from prediction_provider.api.deps import Services
from prediction_provider.marketplace.paid_calls import Charge
from prediction_provider.serving.cache import CachedModel


@asynccontextmanager
async def paid_answer(
    services: Services, principal: Principal, cached: CachedModel | str, rows: int = 1
) -> AsyncIterator[Charge | None]:
    """``None`` inside when the model is free for this caller; the charge otherwise. ``cached`` is
    the model asked for, or its name (an experiment's model: the price does not follow the variant)."""
    paid = services.paid_calls
    if paid is None:
        yield None
        return
    charge = paid.reserve(principal, cached if isinstance(cached, str) else cached.resolved.name, rows)
    try:
        yield charge
    except BaseException:
        paid.release(charge)
        raise
    await paid.commit(charge)


def charge_headers(charge: Charge | None) -> dict[str, str] | None:
    return None if charge is None else charge.header()
