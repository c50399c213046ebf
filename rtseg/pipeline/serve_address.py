"""Where the live page listens and who may watch: ``--serve [HOST:]PORT``, the token's
length, and the warning for an address other machines can reach."""

from __future__ import annotations

import ipaddress
import socket
from typing import Optional

from rtseg.errors import BadInput

DEFAULT_HOST = "127.0.0.1"
MIN_TOKEN = 16  # characters; shorter ones are guessable
TOKEN_HINT = 'python -c "import secrets; print(secrets.token_urlsafe())"'


def parse_address(text: str) -> tuple[str, int]:
    """``--serve [HOST:]PORT`` → (host, port): ``8080`` is 127.0.0.1:8080 (this machine
    only), ``0.0.0.0:8080`` every interface, ``[::1]:8080`` IPv6, port 0 any free port."""
    text = text.strip()
    if not text or not text.isprintable():
        raise BadInput(f"--serve {text!r}: expected [HOST:]PORT, e.g. 8080 or 0.0.0.0:8080")
    host, sep, port = text.rpartition(":")
    if sep and host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise BadInput(f"--serve {text}: write an IPv6 address in brackets, e.g. [::1]:8080")
    if sep and not host and port.isdigit():
        raise BadInput(f"--serve {text}: no host before ':'; give {port} (this machine only) "
                       f"or 0.0.0.0:{port} (every interface)")
    if not (port.isascii() and port.isdigit()) or int(port) > 65535:  # not "²" or "８０"
        raise BadInput(f"--serve {text}: expected [HOST:]PORT with a port from 0 to 65535, "
                       "e.g. 8080 or 0.0.0.0:8080")
    return host or DEFAULT_HOST, int(port)


def host_port(host: str, port: int) -> str:
    """``host:port`` as a URL writes it: an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def check_token(token: Optional[str]) -> None:
    """BadInput unless the token is None or at least MIN_TOKEN characters."""
    if token is None:
        return
    if len(token) < MIN_TOKEN:
        what = "empty" if not token else f"{len(token)} characters"
        raise BadInput(f"--serve-token: the token is {what}; use at least {MIN_TOKEN} random "
                       f"characters, e.g. from {TOKEN_HINT}")


def is_loopback(host: str) -> bool:
    """True when ``host`` (a name or an address) only ever means this machine."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError, ValueError):  # unknown, or not a name at all
        return False
    return bool(infos) and all(ipaddress.ip_address(i[4][0].split("%")[0]).is_loopback
                               for i in infos)


def exposure_warning(host: str, port: int, token: Optional[str]) -> Optional[str]:
    """The warning line for a bind other machines can reach (None on loopback)."""
    if is_loopback(host):
        return None
    guard = ("every request needs the token (plain HTTP: it is not encrypted)"
             if token else "anyone who can reach it can watch: add --serve-token")
    return (f"warning: --serve {host_port(host, port)} is reachable from other machines; "
            f"{guard}")
