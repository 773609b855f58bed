"""Controls for the suite's own instruments: a users-table snapshot that saw nothing would prove nothing."""

from __future__ import annotations

import httpx
import pytest

from prediction_provider.db.session import Database
from tests.conftest import LiveServer
from tests.security.support import new_account, users_unchanged


@pytest.mark.parametrize(
    ("change", "column"),
    [
        ({"full_name": "changed"}, "full_name"),
        ({"role": "evaluator"}, "role"),
        ({"is_active": False}, "is_active"),
    ],
)
def test_users_unchanged_notices_a_change_to_one_column(
    admin: httpx.Client, db: Database, change: dict[str, object], column: str
) -> None:
    account = new_account(admin, "sec-snapshot")
    with pytest.raises(AssertionError, match=column), users_unchanged(db):
        assert admin.put(f"/api/v1/admin/users/{account.user_id}", json=change).status_code == 200


def test_users_unchanged_notices_a_new_user_and_a_new_key(
    live_server: LiveServer, admin: httpx.Client, db: Database
) -> None:
    with pytest.raises(AssertionError, match="added"), users_unchanged(db):
        new_account(admin, "sec-snapshot", with_key=False)
    account = new_account(admin, "sec-snapshot")
    with (
        httpx.Client(base_url=live_server.url, headers=account.headers, timeout=60) as own,
        pytest.raises(AssertionError, match="api_key_digest"),
        users_unchanged(db),
    ):
        assert own.post("/api/v1/auth/regenerate-key").status_code == 200
