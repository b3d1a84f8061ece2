"""Connecting the long jobs to Ray (``svdgrad sweep --backend ray``, ``svdgrad study --backend ray``).

``ray.init(address=HOST:PORT)`` where no Ray cluster listens does not fail: it logs GCS time-outs and
retries for good (over 10 minutes seen with Ray 2.60).  An address Ray cannot parse, or ``auto`` with no
cluster running, raises Ray's own ValueError or ConnectionError.  ``connect`` turns both into one
SvdgradError naming where the address came from (``--ray-address`` or ``RAY_ADDRESS``) and what to do.
"""

from __future__ import annotations

import socket

from ._errors import SvdgradError

#: Seconds to wait for a TCP connection to HOST:PORT before concluding that no Ray cluster is there.
PROBE_TIMEOUT_S = 5.0


def _host_port(address: str) -> tuple[str, int] | None:
    """(host, port) of a plain ``HOST:PORT`` address; None for ``auto``, ``local``, ``ray://...`` and the rest
    (left to Ray)."""
    if "://" in address:
        return None
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def connect(address: str, source: str, **kwargs) -> None:
    """``ray.init(address=address, **kwargs)``, or SvdgradError if no Ray cluster answers at ``address``.

    ``source`` names where the address came from (``--ray-address``, ``RAY_ADDRESS``) in the message.
    """
    import ray

    target = _host_port(address)
    if target is not None:
        try:
            socket.create_connection(target, timeout=PROBE_TIMEOUT_S).close()
        except OSError as exc:
            raise SvdgradError(f"Expected a Ray cluster at {source}={address}; nothing answers there ({exc}). "
                               f"Start one there (`ray start --head`), correct {source}, or leave {source} out "
                               f"to start a local Ray instance.") from None
    try:
        ray.init(address=address, **kwargs)
    except (ValueError, ConnectionError, RuntimeError) as exc:
        if ray.is_initialized():  # (a half-made connection)
            ray.shutdown()
        why = str(exc).strip().rstrip(".")
        raise SvdgradError(f"Expected a Ray cluster at {source}={address}; Ray could not connect: {why}. Check "
                           f"{source} (and, for a cluster that runs, `ray status` on its head node), or leave "
                           f"{source} out to start a local Ray instance.") from None
