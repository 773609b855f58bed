"""Anonymous jobs: a job-scoped read token, and Idempotency-Keys scoped by the caller's address.

With ``PP_REQUIRE_AUTH=false`` anyone may submit a job, and an anonymous caller
has no account to read it back with. Each anonymous submit therefore answers a
read token: 32 random bytes, shown once, kept only as a SHA-256 digest (as API
keys are), that lets whoever holds it read that one job (its state, history,
result files) and nothing else. Without it an anonymous caller cannot read
another anonymous caller's job.

Anonymous callers share no account, so their Idempotency-Keys would share one
namespace: a second caller reusing a common key (``order-1``) would be handed
the first caller's job. Their keys are scoped by the caller's address instead:
the stored key is a digest of address and key.
"""

from __future__ import annotations

import hashlib
import secrets

from prediction_provider.accounts import credentials

TOKEN_PREFIX = "ppj_"  # noqa: S105 - a prefix that tells the token apart, not a secret
TOKEN_BYTES = 32
HEADER = "X-Job-Token"


def issue() -> tuple[str, str]:
    """A new read token and the digest to store for it (kept as API keys are)."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)
    return token, credentials.api_key_digest(token)


def grants(stored_digest: str | None, token: str | None) -> bool:
    """Whether ``token`` is the one issued for a job whose digest is ``stored_digest``."""
    if stored_digest is None or not token:
        return False
    return credentials.digests_match(stored_digest, credentials.api_key_digest(token))


def scoped_idempotency_key(key: str | None, address: str) -> str | None:
    """An anonymous caller's key as stored: bound to the caller's address."""
    if key is None:
        return None
    return "anon:" + hashlib.sha256(f"{address}\0{key}".encode()).hexdigest()
