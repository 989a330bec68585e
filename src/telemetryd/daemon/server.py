"""The daemon's parts that face clients, put together: listeners, spool intake, tails.

:class:`Server` builds the events and control listeners (daemon/listeners/) on the
listening sockets it is given, the control operations they answer with, the spool
intake and the tail subscriptions. ``daemon/main.py`` runs each of
:attr:`Server.listeners` and the spool loop in its task tree and calls
:meth:`Server.stop` on shutdown.
"""

from __future__ import annotations

import functools
import socket

from telemetryd.config import Config
from telemetryd.daemon.ingest import Ingestor
from telemetryd.daemon.ingest_workers import Workers
from telemetryd.daemon.journal import Journal
from telemetryd.daemon.listeners import Listener
from telemetryd.daemon.listeners.control import ControlListener
from telemetryd.daemon.listeners.events import EventsListener, settle
from telemetryd.daemon.listeners.operations import Operations
from telemetryd.daemon.listeners.sockets import Peers
from telemetryd.daemon.spool import SpoolIntake
from telemetryd.daemon.store_worker import StoreClient
from telemetryd.daemon.tail import Tails
from telemetryd.paths import Paths


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
    ) -> None:
        peers = Peers(config.ingest.allowed_uids)  # checked once, at start
        self.tails = Tails(journal)
        # The ingest worker processes: the events listener runs them, `status` shows them.
        self.workers = Workers(ingestor.prices)
        self.operations = Operations(
            paths,
            config,
            ingestor,
            journal,
            self.tails,
            lambda: (self.events.connections, self.control.connections),
            store,
            self.workers,
        )
        self.events = EventsListener(
            events_socket, config.ingest, ingestor, journal, peers, self.workers
        )
        self.control = ControlListener(
            control_socket, config.ingest, peers, self.operations.dispatch()
        )
        self.listeners: list[Listener] = [self.events, self.control]
        self.spool = SpoolIntake(
            paths, config, ingestor, journal, functools.partial(settle, journal)
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
