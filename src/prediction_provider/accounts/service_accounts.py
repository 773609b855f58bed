"""Accounts for programs that sign in with an API key alone (Prometheus scraping ``/metrics``).

Such an account gets a random password that nobody is told: it never logs in,
it only holds a key. Running the set-up again issues a new key (the old one
stops working at once), so the key on disk is always the one in force.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from prediction_provider.accounts.roles import Role
from prediction_provider.accounts.service import AccountService
from prediction_provider.errors import Conflict, InvalidInput, UserNotFound


def service_account_key(accounts: AccountService, username: str, role: Role) -> str:
    """A fresh key for ``username``, an active account of ``role``, created if missing.

    An existing account of another role, or one an admin deactivated, is refused
    rather than changed: that was someone's decision.
    """
    try:
        user = accounts.get(username)
    except UserNotFound:
        user = accounts.create_user(
            username, f"{username}@localhost.localdomain", secrets.token_urlsafe(32), role, active=True
        )
    if user["role"] != role:
        raise Conflict(f"{username} exists with the {user['role']} role, not {role}", {"username": username})
    if not user["is_active"]:
        raise InvalidInput(f"{username} is deactivated; activate it first", {"username": username})
    key: str = accounts.issue_api_key(username)["api_key"]
    return key


def write_key_file(path: Path, key: str) -> None:
    """``key`` alone in ``path``, replaced atomically so a reader never sees half a key.

    Mode 0644: the reader (Prometheus runs as ``nobody``) is another user; keep
    the file where only that program can reach it (a volume of its own).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.tmp")
    partial.write_text(key)
    partial.chmod(0o644)
    os.replace(partial, path)
