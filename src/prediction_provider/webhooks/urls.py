"""Which webhook URLs the server will call: the SSRF defence.

A URL must be ``http`` or ``https``, name a host and carry no credentials. Unless
``PP_WEBHOOK_ALLOW_PRIVATE`` is true, its host must also resolve only to public addresses: loopback,
private (RFC 1918, unique-local), link-local (cloud metadata at 169.254.169.254), multicast and
reserved ranges are refused, so a webhook cannot be aimed at the server's own network. The check runs
twice: when a URL is registered (literal addresses and ``localhost``), and at every delivery after
resolving the name, and the request then goes to the very address that was checked (the TLS name
stays the host's), so a name that re-resolves elsewhere between check and connect (DNS rebinding)
does not get through. Redirects are never followed.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit, urlunsplit

from prediction_provider.errors import InvalidInput

MAX_URL_LENGTH = 2048
LOCAL_NAMES = ("localhost", "localhost.localdomain")


class UnsafeWebhookUrl(InvalidInput):
    """A webhook URL the server refuses to call (422)."""

    code = "invalid_webhook_url"

    def __init__(self, reason: str, field: str = "url") -> None:
        super().__init__(f"webhook URL refused: {reason}", [{"field": field, "error": reason}])
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Target:
    """Where one delivery goes: ``url`` (the checked address when pinned) with the ``Host`` header and
    TLS server name of the URL's own host."""

    url: str
    host_header: str | None = None
    sni_hostname: str | None = None


def is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone id
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def parse_webhook_url(url: str, *, allow_private: bool, field: str = "url") -> SplitResult:
    """The URL split into its parts, or ``UnsafeWebhookUrl``; no DNS lookup (registration time)."""
    if len(url) > MAX_URL_LENGTH:
        raise UnsafeWebhookUrl(f"longer than {MAX_URL_LENGTH} characters", field)
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https"):
        raise UnsafeWebhookUrl("only http and https URLs are allowed", field)
    if parts.username is not None or parts.password is not None:
        raise UnsafeWebhookUrl("credentials in the URL are not allowed", field)
    host = parts.hostname
    if not host:
        raise UnsafeWebhookUrl("the URL has no host", field)
    try:
        parts.port  # noqa: B018 - raises on a port out of range
    except ValueError as exc:
        raise UnsafeWebhookUrl("the port is not a number from 0 to 65535", field) from exc
    if not allow_private:
        if host.rstrip(".").lower() in LOCAL_NAMES or host.rstrip(".").lower().endswith(".localhost"):
            raise UnsafeWebhookUrl("local host names are not allowed", field)
        if literal_address(host) and not is_public(host):
            raise UnsafeWebhookUrl("private, loopback and reserved addresses are not allowed", field)
    return parts


def check_webhook_url(url: str, *, allow_private: bool, field: str = "url") -> str:
    """``url`` if the server may call it (for routes that accept a URL, e.g. a request's
    ``webhook_url``), else ``UnsafeWebhookUrl`` (422) naming ``field``."""
    parse_webhook_url(url, allow_private=allow_private, field=field)
    return url.strip()


def literal_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


def resolve_target(url: str, *, allow_private: bool) -> Target:
    """Delivery time: the checked, resolved target of ``url``, or ``UnsafeWebhookUrl``."""
    parts = parse_webhook_url(url, allow_private=allow_private)
    if allow_private:
        return Target(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    if literal_address(host):
        return Target(url)  # checked above
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise UnsafeWebhookUrl(f"cannot resolve {host}: {exc}") from exc
    addresses = [str(info[4][0]) for info in infos]
    if not addresses or not all(is_public(address) for address in addresses):
        raise UnsafeWebhookUrl(f"{host} resolves to a private, loopback or reserved address")
    address = addresses[0]
    pinned_host = f"[{address}]" if ":" in address else address
    netloc = f"{pinned_host}:{parts.port}" if parts.port else pinned_host
    host_header = f"{host}:{parts.port}" if parts.port else host
    pinned = urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))
    return Target(pinned, host_header, host if parts.scheme == "https" else None)
