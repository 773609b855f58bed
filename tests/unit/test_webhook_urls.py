"""Which webhook URLs the server calls: http(s) only, no credentials, no private targets by default."""

from __future__ import annotations

import pytest

from prediction_provider.webhooks.urls import UnsafeWebhookUrl, check_webhook_url, is_public, resolve_target


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://example.com/hook", "only http and https"),
        ("file:///etc/passwd", "only http and https"),
        ("example.com/hook", "only http and https"),
        ("https://user:secret@example.com/hook", "credentials"),
        ("https://token@example.com/hook", "credentials"),
        ("https:///hook", "no host"),
        ("https://example.com:99999/hook", "port"),
        ("https://example.com/" + "x" * 2048, "longer than"),
    ],
)
def test_malformed_or_credentialed_urls_are_refused_always(url: str, reason: str) -> None:
    for allow_private in (False, True):
        with pytest.raises(UnsafeWebhookUrl, match=reason) as refused:
            check_webhook_url(url, allow_private=allow_private, field="webhook_url")
        assert refused.value.details == [{"field": "webhook_url", "error": refused.value.reason}]


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://localhost/hook",
        "http://api.localhost/hook",
        "http://10.0.0.5/hook",
        "http://192.168.1.1/hook",
        "http://172.16.0.1/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hook",
        "http://[fd00::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://0.0.0.0/hook",
        "http://224.0.0.1/hook",
    ],
)
def test_private_targets_are_refused_by_default_and_allowed_when_configured(url: str) -> None:
    with pytest.raises(UnsafeWebhookUrl):
        check_webhook_url(url, allow_private=False)
    with pytest.raises(UnsafeWebhookUrl):
        resolve_target(url, allow_private=False)
    assert check_webhook_url(url, allow_private=True) == url
    assert resolve_target(url, allow_private=True).url == url


def test_public_addresses_pass() -> None:
    assert check_webhook_url("https://8.8.8.8/hook", allow_private=False) == "https://8.8.8.8/hook"
    assert check_webhook_url("https://hooks.example.com/x?y=1", allow_private=False)
    assert is_public("1.1.1.1")
    assert is_public("2606:4700:4700::1111")
    assert not is_public("100.64.0.1")  # carrier-grade NAT is not the public internet
