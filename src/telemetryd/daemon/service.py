"""Service-manager integration: the sd_notify protocol, spoken directly.

systemd (and test harnesses) pass ``NOTIFY_SOCKET``, a datagram socket to which
the daemon reports ``READY=1`` once it serves, ``STOPPING=1`` when it begins
to shut down, and ``STATUS=...`` lines. No libsystemd is needed: each message
is one datagram.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)


class Notifier:
    """Sends sd_notify messages when ``NOTIFY_SOCKET`` is set; does nothing otherwise."""

    def __init__(self, address: str | None = None) -> None:
        address = address if address is not None else os.environ.get("NOTIFY_SOCKET")
        self._address = None
        if address:
            # A leading "@" names a socket in the abstract namespace.
            self._address = "\0" + address[1:] if address.startswith("@") else address

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def notify(self, *fields: str) -> None:
        if self._address is None:
            return
        message = "\n".join(fields).encode()
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            try:
                sock.sendto(message, self._address)
            except OSError as exc:
                log.warning("cannot notify the service manager at %s: %s", self._address, exc)
