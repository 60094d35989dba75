"""The browser boundary: what a page of another site can make a browser do here.

With no token (the default) the API and UI answer anyone who reaches the port, and a
browser on the user's machine reaches it. Two checks keep other sites' pages out:

- **Host.** A page can get its own name resolved to 127.0.0.1 (DNS rebinding) and then
  read this origin; the browser still sends that name in ``Host``. Only this machine's
  names (``localhost``, its host name, the ``--host`` name), IP addresses (which no other
  site can rebind) and ``--allowed-hosts`` are answered.
- **Origin.** Anything but GET (SQL, sign-in) must come from this origin: browsers send
  ``Origin`` with every POST, and a foreign one is refused. Tools without a browser send
  none and are not affected; SQL never runs by GET (``/api/sql`` is POST only).

OTLP (``/v1/``) and ``/healthz`` are exempt: senders and probes name the collector as they
are configured (a Kubernetes service name, a load balancer), and a browser page cannot
post OTLP here (it would need a CORS preflight, which is never granted).
"""

from __future__ import annotations

import functools
import ipaddress
import socket
from urllib.parse import urlsplit

from aiohttp import web

from ._errors import Forbidden

__all__ = ["HostCheck", "check_browser_boundary"]

_EXEMPT_PREFIXES = ("/v1/",)
_EXEMPT_PATHS = ("/healthz",)
_SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


class HostCheck:
    """Which ``Host`` names are answered (see the module).

    Args:
        bind_host: the ``--host`` the collector listens on.
        allowed: ``--allowed-hosts``: comma-separated names; ``.example.com`` also allows
            its subdomains; ``*`` allows any name.
    """

    def __init__(self, bind_host: str, allowed: str = "") -> None:
        entries = {e.strip().lower().rstrip(".") for e in allowed.split(",") if e.strip()}
        self._any = "*" in entries
        self._suffixes = tuple(e for e in entries if e.startswith("."))
        self._names = {e for e in entries if not e.startswith(".")} | {bind_host.lower()}

    @functools.cached_property
    def _machine_names(self) -> frozenset[str]:
        names = {"localhost"}
        for name in (socket.gethostname(), socket.getfqdn()):
            names.add(name.lower().rstrip("."))
        return frozenset(names)

    def allows(self, host_header: str) -> bool:
        """Whether a request with this ``Host`` header is answered."""
        name = _host_name(host_header)
        if not name or self._any or _is_ip(name):
            return True
        if name == "localhost" or name.endswith(".localhost"):  # always loopback (RFC 6761)
            return True
        if name in self._names or name in self._machine_names:
            return True
        return any(name.endswith(suffix) or name == suffix[1:] for suffix in self._suffixes)


def check_browser_boundary(request: web.Request, hosts: HostCheck) -> None:
    """Refuse a request that a foreign page could have made (see the module).

    Raises:
        Forbidden: a host name not served here, or a cross-origin request that is not GET.
    """
    path = request.path
    if path.startswith(_EXEMPT_PREFIXES) or path in _EXEMPT_PATHS:
        return
    host = request.headers.get("Host", "")
    if not hosts.allows(host):
        raise Forbidden(
            f"Host {host!r} is not a name this collector serves; if it is yours (a proxy, a "
            "DNS name), start eventscope serve with --allowed-hosts "
            f"{_host_name(host) or host}"
        )
    if request.method in _SAFE_METHODS:
        return
    origin = request.headers.get("Origin")
    fetch_site = request.headers.get("Sec-Fetch-Site", "")
    if origin is not None:
        if not _same_origin(origin, host):
            raise Forbidden(
                f"a {request.method} from the page of another origin ({origin}) is refused"
            )
    elif fetch_site not in ("", "same-origin", "none"):
        raise Forbidden(f"a {request.method} from the page of another site is refused")


def _host_name(host_header: str) -> str:
    """The name (or address) of a ``Host`` header, without its port, lower case."""
    host = host_header.strip().lower()
    if host.startswith("["):  # [::1]:4318
        return host[1 : host.find("]")] if "]" in host else host
    if host.count(":") == 1:
        host = host.split(":")[0]
    return host.rstrip(".")


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _same_origin(origin: str, host_header: str) -> bool:
    """Whether ``Origin`` names the host (and, when ``Host`` has one, the port) that the
    request was sent to. ``null`` and anything unparsable are not the same origin. A
    ``Host`` without a port is what a TLS-terminating proxy forwards: the scheme may differ."""
    try:
        parts = urlsplit(origin.strip())
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    except ValueError:
        return False
    if not parts.hostname or port is None:
        return False
    host = host_header.strip().lower()
    explicit = host.rsplit(":", 1)[1] if host.count(":") == 1 or "]:" in host else None
    if explicit is not None and explicit != str(port):
        return False
    return parts.hostname.lower().rstrip(".") == _host_name(host)
