"""Standard Webhooks signatures: the spec's reference vector, secrets, and what verify() refuses."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest
import standardwebhooks

from prediction_provider.webhooks.signing import (
    WebhookVerificationError,
    derived_secret,
    generate_secret,
    secret_key,
    sign,
    signed_headers,
    verify,
)

# The reference vector of the Standard Webhooks test suites.
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TIMESTAMP = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
AT_VECTOR = datetime.fromtimestamp(VECTOR_TIMESTAMP, UTC)


def test_the_reference_vector_signs_as_the_spec_says() -> None:
    assert sign(VECTOR_SECRET, VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY) == VECTOR_SIGNATURE


def test_the_reference_vector_verifies_and_returns_its_id() -> None:
    headers = {
        "Webhook-Id": VECTOR_ID,
        "Webhook-Timestamp": str(VECTOR_TIMESTAMP),
        "Webhook-Signature": VECTOR_SIGNATURE,
    }
    assert verify(VECTOR_SECRET, headers, VECTOR_BODY, now=AT_VECTOR) == VECTOR_ID


def test_the_reference_library_accepts_our_signatures() -> None:
    secret = generate_secret()
    now = datetime.now(UTC)
    body = b'{"type":"prediction_request.completed","id":"msg_1","data":{"price":"0.500000"}}'
    headers = signed_headers(secret, "msg_1", int(now.timestamp()), body)
    assert standardwebhooks.Webhook(secret).verify(body.decode(), headers) is not None


def test_we_accept_the_reference_librarys_signatures() -> None:
    secret = generate_secret()
    now = datetime.now(UTC)
    body = '{"hello": "world"}'
    signature = standardwebhooks.Webhook(secret).sign("msg_2", now, body)
    headers = {
        "webhook-id": "msg_2",
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature,
    }
    assert verify(secret, headers, body.encode(), now=now) == "msg_2"


def test_generated_secrets_carry_24_random_bytes() -> None:
    first, second = generate_secret(), generate_secret()
    assert first.startswith("whsec_")
    assert first != second
    assert len(secret_key(first)) == 24


def test_a_users_default_secret_is_stable_per_user_and_server_secret() -> None:
    server = "s" * 48
    assert derived_secret(server, 7) == derived_secret(server, 7)
    assert derived_secret(server, 7) != derived_secret(server, 8)
    assert derived_secret(server, 7) != derived_secret("t" * 48, 7)
    assert len(base64.b64decode(derived_secret(server, 7).removeprefix("whsec_"))) == 32


def vector_headers(**changes: str) -> dict[str, str]:
    headers = {
        "webhook-id": VECTOR_ID,
        "webhook-timestamp": str(VECTOR_TIMESTAMP),
        "webhook-signature": VECTOR_SIGNATURE,
    }
    return {**headers, **changes}


def test_a_tampered_body_is_refused() -> None:
    with pytest.raises(WebhookVerificationError, match="no signature matches"):
        verify(VECTOR_SECRET, vector_headers(), b'{"test": 2432232315}', now=AT_VECTOR)


def test_another_id_is_refused() -> None:
    with pytest.raises(WebhookVerificationError):
        verify(VECTOR_SECRET, vector_headers(**{"webhook-id": "msg_other"}), VECTOR_BODY, now=AT_VECTOR)


def test_a_wrong_secret_is_refused() -> None:
    with pytest.raises(WebhookVerificationError):
        verify(generate_secret(), vector_headers(), VECTOR_BODY, now=AT_VECTOR)


def test_an_old_timestamp_is_refused_even_with_a_valid_signature() -> None:
    with pytest.raises(WebhookVerificationError, match="too old"):
        verify(VECTOR_SECRET, vector_headers(), VECTOR_BODY, now=AT_VECTOR + timedelta(minutes=6))


def test_a_timestamp_from_the_future_is_refused() -> None:
    with pytest.raises(WebhookVerificationError, match="too new"):
        verify(VECTOR_SECRET, vector_headers(), VECTOR_BODY, now=AT_VECTOR - timedelta(minutes=6))


def test_within_the_tolerance_is_accepted() -> None:
    assert verify(VECTOR_SECRET, vector_headers(), VECTOR_BODY, now=AT_VECTOR + timedelta(minutes=4))


def test_one_matching_signature_among_several_is_enough() -> None:
    several = f"v1,bm90IGl0 v2,{VECTOR_SIGNATURE[3:]} {VECTOR_SIGNATURE}"
    headers = vector_headers(**{"webhook-signature": several})
    assert verify(VECTOR_SECRET, headers, VECTOR_BODY, now=AT_VECTOR) == VECTOR_ID


def test_missing_headers_are_refused() -> None:
    for name in ("webhook-id", "webhook-timestamp", "webhook-signature"):
        headers = vector_headers()
        del headers[name]
        with pytest.raises(WebhookVerificationError, match="missing"):
            verify(VECTOR_SECRET, headers, VECTOR_BODY, now=AT_VECTOR)


def test_a_timestamp_that_is_not_a_number_is_refused() -> None:
    with pytest.raises(WebhookVerificationError, match="Unix seconds"):
        verify(
            VECTOR_SECRET, vector_headers(**{"webhook-timestamp": "yesterday"}), VECTOR_BODY, now=AT_VECTOR
        )
