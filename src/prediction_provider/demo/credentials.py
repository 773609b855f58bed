"""The demo's accounts: an active admin and client with a new password and API key on every start.

They are printed one value per line with plain ``print`` (Rich wraps at 80 columns when
stdout is not a terminal, which put a line break inside a copied key) and written to
``<data_dir>/demo-credentials.txt``, readable by its owner alone, as ``NAME=value`` lines a
shell can load (``set -a; . .pp_data/demo-credentials.txt; set +a``): ``$KEY`` and
``$ADMIN_KEY`` are the names the README's snippets use.
"""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from prediction_provider.accounts.service import AccountService
from prediction_provider.errors import UserNotFound

FILE_NAME = "demo-credentials.txt"
# (role, username, the prefix of its variables in the file)
DEMO_ACCOUNTS = (("admin", "admin", "ADMIN"), ("client", "demo-client", "CLIENT"))


@dataclass(frozen=True, slots=True)
class DemoCredentials:
    role: str
    username: str
    password: str
    api_key: str
    prefix: str

    @property
    def key_variable(self) -> str:
        return "KEY" if self.role == "client" else f"{self.prefix}_KEY"


def refresh_demo_accounts(accounts: AccountService) -> list[DemoCredentials]:
    """Create the demo accounts if needed; give each a new random password and API key."""
    made = []
    for role, username, prefix in DEMO_ACCOUNTS:
        password = secrets.token_urlsafe(18)
        try:
            user = accounts.get(username)
            if not user["is_active"]:
                accounts.set_active(username, True)
            accounts.set_password(user["id"], password)
        except UserNotFound:
            user = accounts.create_user(username, f"{username}@demo.invalid", password, role, active=True)
        api_key = accounts.regenerate_api_key(user["id"])["api_key"]
        made.append(DemoCredentials(role, username, password, api_key, prefix))
    return made


def credentials_file(data_dir: Path) -> Path:
    return data_dir / FILE_NAME


def write_credentials(path: Path, credentials: Sequence[DemoCredentials], url: str) -> Path:
    """``NAME=value`` lines, mode 0600 from the first byte (and again if the file was there)."""
    lines = [f"# prediction-provider demo at {url}: new passwords and keys on every start"]
    for account in credentials:
        lines += [
            f"{account.prefix}_USERNAME={account.username}",
            f"{account.prefix}_PASSWORD={account.password}",
            f"{account.key_variable}={account.api_key}",
        ]
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        os.fchmod(file.fileno(), 0o600)
        file.write("\n".join(lines) + "\n")
    return path


def print_credentials(credentials: Sequence[DemoCredentials], path: Path, out: TextIO | None = None) -> None:
    """Each username, password and key on a line of its own, never wrapped, whatever ``out`` is."""
    out = out or sys.stdout
    print(f"Demo accounts (new passwords and keys on every start; also in {path}):", file=out)
    for account in credentials:
        print(f"  {account.role} username: {account.username}", file=out)
        print(f"  {account.role} password: {account.password}", file=out)
        print(f"  {account.role} API key:  {account.api_key}", file=out)
    out.flush()
