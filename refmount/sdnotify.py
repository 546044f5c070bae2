"""systemd's notify protocol (``Type=notify``): one datagram per state change to ``$NOTIFY_SOCKET``.

Written out rather than pulling in a library: it is one sendto() on a Unix datagram socket.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)


def notify(state: str) -> bool:
    """Send e.g. ``READY=1`` or ``STOPPING=1``; False (and no error) when not run by systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace socket
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(state.encode(), address)
    except OSError as exc:
        log.warning("could not notify systemd (%s) of %r: %s", os.environ.get("NOTIFY_SOCKET"), state, exc)
        return False
    return True
