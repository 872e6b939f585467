"""Which requests the studio answers: the Host names it was given (``allowed_hosts``: the
loopback names, the address it is bound to, each ``--allow-host``; never any name), so a page
on another site cannot reach it through DNS rebinding; and an ``Origin`` only when it is
``http://`` one of those names on the studio's own port (``origin_allowed``: never compared
with the request's own Host header, which the other site controls)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Final
from urllib.parse import urlsplit

_LOOPBACK_NAMES: Final = ("127.0.0.1", "localhost", "::1", "[::1]")


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def check_host_name(name: str) -> str:
    """``name`` as an allowed Host name (lowercase, no brackets); ValueError unless it is a
    plain host name or address: no wildcard, port, scheme or path."""
    bare = name.strip().lower()
    bare = bare[1:-1] if bare.startswith("[") and bare.endswith("]") else bare
    if _address(bare) is None and (
        not bare or any(not (ch.isalnum() or ch in ".-_") for ch in bare)
    ):
        raise ValueError(
            f"--allow-host {name!r}: give one host name or address (no '*', port or scheme)"
        )
    return bare


def allowed_hosts(host: str, extra: Iterable[str] = ()) -> list[str]:
    """Host names the studio answers (in the Host header and the Origin alike): the loopback
    names, the address it is bound to (unless that is every interface, ``0.0.0.0`` or
    ``::``, which no browser asks for) and each of ``extra`` (``--allow-host``). Never
    ``*``: any other name is refused, so a page on another site cannot reach the studio
    through DNS rebinding."""
    names = {*_LOOPBACK_NAMES, *(check_host_name(name) for name in extra)}
    address = _address(host)
    if host and not (address is not None and address.is_unspecified):
        names.add(check_host_name(host))
    for name in list(names):  # an IPv6 address as the Host header writes it, too
        address = _address(name)
        if address is not None and address.version == 6:
            names.update({str(address), f"[{address}]"})
    return sorted(names)


def origin_allowed(origin: str, hosts: Iterable[str], port: int) -> bool:
    """Whether ``origin`` is the studio's own: ``http``, a host of ``hosts``, port ``port``."""
    try:
        parts = urlsplit(origin)
        origin_port = parts.port or (80 if parts.scheme == "http" else None)
    except ValueError:
        return False
    names = {name.strip("[]").lower() for name in hosts}
    return (
        parts.scheme == "http"
        and (parts.hostname or "") in names
        and origin_port == port
        and parts.path in ("", "/")
        and not parts.query
        and parts.username is None
    )


def is_loopback(host: str) -> bool:
    address = _address(host)
    return host == "localhost" or (address is not None and address.is_loopback)
