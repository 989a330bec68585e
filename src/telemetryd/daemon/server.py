"""The daemon's parts that face clients, put together: listeners, spool intake, tails.

:class:`Server` builds the events and control listeners (daemon/listeners/) on the
listening sockets it is given (and the HTTP listener, with daemon/otlp.py's OTLP and
hook endpoints, when it has an HTTP socket), the control operations they answer with, the spool
intake and the tail subscriptions. ``daemon/main.py`` runs each of
:attr:`Server.listeners` and the spool loop in its task tree and calls
:meth:`Server.stop` on shutdown.
"""

from __future__ import annotations

import functools
import socket

from telemetryd import wire
from telemetryd.config import Config
from telemetryd.daemon.forward import Forwarder
from telemetryd.daemon.ingest import Ingestor
from telemetryd.daemon.ingest_workers import Workers
from telemetryd.daemon.journal import Journal
from telemetryd.daemon.listeners import Listener
from telemetryd.daemon.listeners.control import ControlListener
from telemetryd.daemon.listeners.events import EventsListener, settle
from telemetryd.daemon.listeners.http import HttpListener
from telemetryd.daemon.listeners.operations import Operations
from telemetryd.daemon.listeners.sockets import Peers
from telemetryd.daemon.otlp import Receiver
from telemetryd.daemon.spool import SpoolIntake
from telemetryd.daemon.store_worker import StoreClient
from telemetryd.daemon.tail import Tails
from telemetryd.paths import Paths


class HttpSocket:
    """The HTTP listener's socket (None with ``error`` when it could not be bound), its
    address as configured and the bearer token (None: none required)."""

    def __init__(
        self,
        address: str,
        sock: socket.socket | None,
        token: str | None,
        error: str | None = None,
    ) -> None:
        self.address = address
        self.sock = sock
        self.token = token
        self.error = error


class Server:
    def __init__(
        self,
        paths: Paths,
        config: Config,
        ingestor: Ingestor,
        journal: Journal,
        events_socket: socket.socket,
        control_socket: socket.socket,
        store: StoreClient | None = None,
        http: HttpSocket | None = None,
    ) -> None:
        peers = Peers(config.ingest.allowed_uids)  # checked once, at start
        self.tails = Tails(journal)
        # [forward]: the journal shipped to an OTLP endpoint (daemon/forward.py); None: off.
        self.forwarder: Forwarder | None = None
        if config.forward.endpoint:
            self.forwarder = Forwarder(paths.state_dir, config.forward, journal)
        # The ingest worker processes: the events listener runs them, `status` shows them.
        self.workers = Workers()
        self.operations = Operations(
            paths,
            config,
            ingestor,
            journal,
            self.tails,
            lambda: (self.events.connections, self.control.connections),
            store,
            self.workers,
            self.http_status,
            self.forwarder.status if self.forwarder is not None else None,
        )
        self.events = EventsListener(
            events_socket, config.ingest, ingestor, journal, peers, self.workers
        )
        self.control = ControlListener(
            control_socket, config.ingest, peers, self.operations.dispatch()
        )
        self.listeners: list[Listener] = [self.events, self.control]
        self.http_socket = http
        self.http: HttpListener | None = None
        self.receiver: Receiver | None = None
        if http is not None and http.sock is not None:
            self.http = HttpListener(
                http.sock, config.http, ingestor, journal, http.token, paths.http_token_file
            )
            self.receiver = Receiver(self.http, self.workers)
            self.http.routes.update(self.receiver.routes())
            self.listeners.append(self.http)
            if self.forwarder is not None:
                self.forwarder.own_listener = http.sock.getsockname()[:2]
        self.spool = SpoolIntake(
            paths, config, ingestor, journal, functools.partial(settle, journal)
        )

    def http_status(self) -> wire.HttpStatus | None:
        where = self.http_socket
        if where is None:
            return None
        if self.http is None or self.receiver is None:
            return wire.HttpStatus(address=where.address, listening=False, error=where.error)
        host, port = self.http.sock.getsockname()[:2]  # (the port, when 0 was configured)
        return wire.HttpStatus(
            address=f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
            listening=True,
            connections=self.http.connections,
            requests=self.http.requests,
            records=self.receiver.records,
            rejected=self.receiver.rejected,
        )

    @property
    def connections(self) -> int:
        """Open events connections."""
        return self.events.connections

    def stop(self) -> None:
        """Stop accepting and reading: each connection acknowledges what it has and closes."""
        for listener in self.listeners:
            listener.stop()
        self.tails.stop()
