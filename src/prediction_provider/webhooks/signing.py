"""Standard Webhooks signatures (https://www.standardwebhooks.com/).

Every delivery carries three headers:

* ``webhook-id``: the message id (``msg_...``), the same on every retry, so a receiver can drop
  duplicates;
* ``webhook-timestamp``: when this attempt was signed, in integer Unix seconds;
* ``webhook-signature``: ``v1,<base64 HMAC-SHA256>`` of ``"{id}.{timestamp}.{body}"``, keyed with the
  base64-decoded part of the secret after ``whsec_``. Several space-separated signatures may be
  sent (during a secret rotation); one match is enough.

A receiver verifies the raw body bytes before parsing them (``verify`` below does exactly what the
README describes) and refuses timestamps more than five minutes from its clock, which stops replays.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Mapping
from datetime import datetime

SECRET_PREFIX = "whsec_"  # noqa: S105 - the format's prefix, not a secret
SIGNATURE_VERSION = "v1"
SECRET_BYTES = 24
DEFAULT_TOLERANCE_S = 5 * 60


class WebhookVerificationError(Exception):
    """A delivery whose headers are missing, too old or too new, or whose signature does not match."""


def generate_secret() -> str:
    """A fresh endpoint secret: ``whsec_`` + base64 of 24 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def derived_secret(server_secret: str, user_id: int) -> str:
    """A user's default secret (for per-request ``webhook_url``s): HMAC-SHA256 of the user id keyed
    with the server's secret, so nothing is stored and every API process computes the same one."""
    digest = hmac.new(server_secret.encode(), f"pp-webhook-user:{user_id}".encode(), hashlib.sha256)
    return SECRET_PREFIX + base64.b64encode(digest.digest()).decode("ascii")


def secret_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_`` secret (the prefix is optional, as in the reference libraries)."""
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("a webhook secret is whsec_ followed by base64") from exc
    if not key:
        raise ValueError("a webhook secret must not be empty")
    return key


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: ``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode('ascii')}"


def signed_headers(secret: str, message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers of one delivery attempt, with its content type."""
    return {
        "content-type": "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, message_id, timestamp, body),
    }


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: datetime,
    tolerance_s: int = DEFAULT_TOLERANCE_S,
) -> str:
    """Checks a received delivery and returns its ``webhook-id``; raises ``WebhookVerificationError``.

    ``headers`` may use any case. ``body`` is the raw request body, byte for byte as received.
    """
    lowered = {name.lower(): value for name, value in headers.items()}
    message_id = lowered.get("webhook-id")
    stamp = lowered.get("webhook-timestamp")
    signatures = lowered.get("webhook-signature")
    if not message_id or not stamp or not signatures:
        raise WebhookVerificationError("missing webhook-id, webhook-timestamp or webhook-signature")
    try:
        timestamp = int(stamp)
    except ValueError as exc:
        raise WebhookVerificationError("webhook-timestamp is not integer Unix seconds") from exc
    skew = now.timestamp() - timestamp
    if skew > tolerance_s:
        raise WebhookVerificationError("webhook-timestamp is too old")
    if skew < -tolerance_s:
        raise WebhookVerificationError("webhook-timestamp is too new")
    expected = sign(secret, message_id, timestamp, body).partition(",")[2]
    for candidate in signatures.split():
        version, _, value = candidate.partition(",")
        if version == SIGNATURE_VERSION and hmac.compare_digest(value.encode(), expected.encode()):
            return message_id
    raise WebhookVerificationError("no signature matches")
