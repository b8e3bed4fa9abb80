"""Starting or joining the Ray session a sweep runs in: a local instance kept to this machine, or a cluster that
must answer within a timeout."""

from __future__ import annotations

import os
import socket
import warnings
from typing import Any

from bioplaus.errors import ConfigError

TIMEOUT_VARIABLE = "BIOPLAUS_RAY_TIMEOUT"
DEFAULT_TIMEOUT = 5.0
"""Seconds a cluster named by ``address`` has to accept a connection (``$BIOPLAUS_RAY_TIMEOUT`` overrides it)."""
UNAUTHENTICATED = (
    "the local Ray instance's services listen on this machine's network ports without token authentication: "
    "anyone who can reach them can run code as you. Set RAY_AUTH_MODE=token (recent Ray turns it on by "
    "default), or keep the machine behind a firewall"
)


def connect_timeout() -> float:
    """The seconds a Ray cluster has to answer: ``$BIOPLAUS_RAY_TIMEOUT``, else :data:`DEFAULT_TIMEOUT`."""
    text = os.environ.get(TIMEOUT_VARIABLE, "").strip()
    if not text:
        return DEFAULT_TIMEOUT
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise ConfigError(f"{TIMEOUT_VARIABLE}={text!r} must be a positive number of seconds, e.g. 5")
    return seconds


def _host_and_port(address: str) -> tuple[str, int] | None:
    """The ``host:port`` that ``address`` names (``ray://`` or none as its scheme); ``None`` for ``auto`` and
    ``local``, which Ray resolves on this machine."""
    rest = address.split("://", 1)[1] if "://" in address else address
    host, _, port = rest.rstrip("/").rpartition(":")
    if not host or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def check_reachable(address: str, timeout: float) -> None:
    """Fail fast, with ``ConfigError``, where nothing accepts a connection at ``address`` within ``timeout``
    seconds (Ray itself would retry for about a minute)."""
    target = _host_and_port(address)
    if target is None:
        return
    try:
        socket.create_connection(target, timeout=timeout).close()
    except OSError as err:
        raise ConfigError(
            f"cannot reach the Ray cluster at {address} within {timeout:g} s ({err.strerror or err}); "
            f"start it (ray start --head), fix --address, or raise {TIMEOUT_VARIABLE}"
        ) from None


def start_or_join(ray: Any, address: str | None, workers: int) -> None:
    """Join the Ray cluster at ``address``, or with none start a local instance with ``workers`` CPUs.

    A local instance has no dashboard and names itself by the loopback address (``_node_ip_address``), so its
    workers talk over loopback; Ray still opens its ports on every interface, which is safe only with token
    authentication: without it, :data:`UNAUTHENTICATED` is warned.
    """
    if address:
        check_reachable(address, connect_timeout())
        try:
            ray.init(address=address, log_to_driver=False)
        except ConnectionError as err:
            raise ConfigError(f"cannot join the Ray cluster at {address} ({err}); fix --address") from None
        return
    ray.init(num_cpus=workers, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    if os.environ.get("RAY_AUTH_MODE", "").strip().lower() != "token":
        warnings.warn(UNAUTHENTICATED, RuntimeWarning, stacklevel=3)
