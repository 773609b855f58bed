"""Who is calling, as every layer below the API sees it."""

from __future__ import annotations

from dataclasses import dataclass

from prediction_provider.accounts.roles import Role


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling, as far as every layer below the API needs to know."""

    user_id: int | None
    username: str | None
    role: Role
    via: str  # "api_key", "jwt" or "anonymous"

    @classmethod
    def guest(cls) -> Principal:
        return cls(None, None, Role.GUEST, "anonymous")
