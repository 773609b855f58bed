"""Setting up the marketplace in a live server's database, as an admin and a provider would."""

from __future__ import annotations

import uuid
from decimal import Decimal

from prediction_provider.db.market_models import ModelOwner
from tests.conftest import Account, LiveServer


def deposit(server: LiveServer, account: Account, amount: str, currency: str = "USD") -> None:
    """Fund ``account``'s wallet from the outside world (what the admin deposit route writes)."""
    services = server.services
    micros = int(Decimal(amount) * 1_000_000)
    with services.db.session() as session:
        journal = services.marketplace.journal
        journal.lock(session)
        journal.single(
            session,
            f"dep:test:{uuid.uuid4()}",
            "world",
            f"client:{account.user_id}",
            micros,
            currency,
            "deposit",
        )


def own(server: LiveServer, model: str, account: Account) -> None:
    """Make ``account`` the owner of ``model`` unless someone already is."""
    with server.services.db.session() as session:
        if session.get(ModelOwner, model) is None:
            session.add(ModelOwner(model_name=model, provider_id=account.user_id, assigned_by="test"))
