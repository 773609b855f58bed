"""Who owns a registered model name (``model_owners``): only its owner may offer it.

An admin assigns ownership of a model already in the registry; a provider becomes the owner of a
model it uploads (``marketplace.uploads`` claims the name before registering it).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from prediction_provider.accounts.principal import Principal
from prediction_provider.accounts.roles import Permission, allows
from prediction_provider.clock import Clock
from prediction_provider.db.market_models import ModelOwner
from prediction_provider.db.models import User
from prediction_provider.db.session import Database
from prediction_provider.errors import InvalidInput, ModelNameTaken, ModelNotFound, UserNotFound
from prediction_provider.serving.registry import ModelRegistry


@dataclass(frozen=True, slots=True)
class Ownership:
    """One ``model_owners`` row, with the owner's username."""

    model_name: str
    provider_id: int
    provider: str
    assigned_by: str | None
    assigned_at: datetime

    def as_dict(self) -> dict[str, Any]:
        return {
            "model_name": self.model_name,
            "provider": self.provider,
            "provider_id": self.provider_id,
            "assigned_by": self.assigned_by,
            "assigned_at": self.assigned_at,
        }


def _may_own(role: str) -> bool:
    """Providers and admins own models: those holding MANAGE_MODELS."""
    try:
        return allows(role, Permission.MANAGE_MODELS)
    except ValueError:  # a role name this version does not know
        return False


class ModelOwnership:
    """Reads and writes ``model_owners``; ``assigned_at`` comes from the one clock."""

    def __init__(self, db: Database, clock: Clock, registry: ModelRegistry) -> None:
        self._db = db
        self._clock = clock
        self._registry = registry

    def assign(self, model_name: str, provider_username: str, actor: Principal) -> Ownership:
        """Make ``provider_username`` the owner of registered model ``model_name`` (an admin's act;
        the route checks the permission). ``ModelNotFound`` (404) when the registry has no such
        model, ``UserNotFound`` (404) for an unknown user, ``InvalidInput`` (422) when the user is
        neither a provider nor an admin. A previous owner is replaced."""
        self._registry.versions(model_name)  # raises ModelNotFound
        with self._db.session() as session:
            user = session.scalars(select(User).where(User.username == provider_username)).first()
            if user is None:
                raise UserNotFound(f"no user {provider_username!r}", {"username": provider_username})
            if not _may_own(user.role):
                raise InvalidInput(
                    f"{provider_username!r} is a {user.role}: only providers and admins own models",
                    [{"field": "username", "error": "must be a provider or an admin"}],
                )
            row = session.get(ModelOwner, model_name, with_for_update=True)
            if row is None:
                row = ModelOwner(model_name=model_name)
                session.add(row)
            row.provider_id = user.id
            row.assigned_by = actor.username
            row.assigned_at = self._clock.now()
            session.flush()
            return Ownership(model_name, user.id, user.username, row.assigned_by, row.assigned_at)

    def owner_of(self, model_name: str) -> int | None:
        """The owner's user id, or None when nobody owns ``model_name``."""
        with self._db.session() as session:
            row = session.get(ModelOwner, model_name)
            return row.provider_id if row is not None else None

    def owned_by(self, user_id: int) -> list[str]:
        """Names of the models ``user_id`` owns, sorted."""
        with self._db.session() as session:
            query = select(ModelOwner.model_name).where(ModelOwner.provider_id == user_id)
            return sorted(session.scalars(query))

    def owners_of(self, model_names: Collection[str]) -> dict[str, str]:
        """The owners' usernames of those of ``model_names`` someone owns: one query for a page."""
        if not model_names:
            return {}
        with self._db.session() as session:
            rows = session.execute(
                select(ModelOwner.model_name, User.username)
                .join(User, User.id == ModelOwner.provider_id)
                .where(ModelOwner.model_name.in_(list(model_names)))
            ).all()
            return {str(name): str(username) for name, username in rows}

    def is_owner(self, user_id: int, model_name: str) -> bool:
        return self.owner_of(model_name) == user_id

    def page(self, provider_id: int | None, limit: int, offset: int) -> tuple[list[Ownership], int]:
        """Ownerships by model name, ``limit`` from ``offset`` (one provider's, or everyone's when
        ``provider_id`` is None), and how many there are in all."""
        condition = [ModelOwner.provider_id == provider_id] if provider_id is not None else []
        with self._db.session() as session:
            total = session.scalar(select(func.count()).select_from(ModelOwner).where(*condition)) or 0
            rows = session.execute(
                select(ModelOwner, User.username)
                .join(User, User.id == ModelOwner.provider_id)
                .where(*condition)
                .order_by(ModelOwner.model_name)
                .limit(limit)
                .offset(offset)
            ).all()
            found = [
                Ownership(row.model_name, row.provider_id, username, row.assigned_by, row.assigned_at)
                for row, username in rows
            ]
        return found, int(total)

    def claim(self, model_name: str, provider: Principal) -> bool:
        """Own ``model_name`` before uploading a version of it: True when this call made the claim,
        False when ``provider`` owned it already. ``ModelNameTaken`` (409) when someone else owns
        it, or when the registry has it and nobody owns it (an admin assigns those)."""
        assert provider.user_id is not None
        owner = self.owner_of(model_name)
        if owner == provider.user_id:
            return False
        if owner is None and not self._registered(model_name):
            try:
                with self._db.session() as session:
                    session.add(
                        ModelOwner(
                            model_name=model_name,
                            provider_id=provider.user_id,
                            assigned_by=provider.username,
                            assigned_at=self._clock.now(),
                        )
                    )
                return True
            except IntegrityError:  # another upload claimed the name first
                if self.owner_of(model_name) == provider.user_id:
                    return False
        raise ModelNameTaken(
            f"model {model_name!r} exists and is not yours: choose another name",
            {"model": model_name},
        )

    def release(self, model_name: str, provider_id: int) -> None:
        """Undo a ``claim`` whose upload failed, so the name is free again."""
        with self._db.session() as session:
            row = session.get(ModelOwner, model_name)
            if row is not None and row.provider_id == provider_id:
                session.delete(row)

    def _registered(self, model_name: str) -> bool:
        try:
            self._registry.versions(model_name)
        except ModelNotFound:
            return False
        return True
