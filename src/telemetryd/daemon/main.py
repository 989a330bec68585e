"""`telemetryd`: the daemon's entry point and its task tree.

::

    serve()
      store worker supervisor                (daemon/store_worker.py: the DuckDB child process)
      journal writer                         (runs until the connections are drained)
        listeners (daemon/listeners/)        (drained on shutdown, cut off after a deadline)
          events socket -> event-loop callbacks per client; ingest workers
                           (daemon/ingest_workers.py: child processes that check big chunks
                           of lines, started under load, stopped when idle)
          control socket -> a task per client
          HTTP (OTLP, http hooks) -> a task per client (daemon/listeners/http.py)
          spool intake, store loads and retention timers, signal watcher,
          the forwarder ([forward]: daemon/forward.py)
                                             (cancelled on shutdown)

SIGTERM / SIGINT: stop accepting, let every connection acknowledge what it has
read, finish writing, fsync; a running store worker loads the rest and stops;
exit 0. SIGHUP: reload the configuration and start a new journal segment
(daemon/reload.py says which settings apply live).
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable

import anyio
from anyio.abc import TaskStatus

from telemetryd import __version__, config, paths, token
from telemetryd.daemon.analyzer import Analyzer
from telemetryd.daemon.ingest import Ingestor
from telemetryd.daemon.journal import Journal
from telemetryd.daemon.listeners.sockets import acquire_lock, bind_tcp, bind_unix
from telemetryd.daemon.reload import Reloads, reload
from telemetryd.daemon.server import HttpSocket, Server
from telemetryd.daemon.service import Notifier, activated_sockets, watchdog
from telemetryd.daemon.store_worker import StoreClient, StoreWorker
from telemetryd.errors import TelemetryError

log = logging.getLogger("telemetryd")

DRAIN_TIMEOUT = 10.0  # seconds connections get to acknowledge at shutdown
FINAL_LOAD_TIMEOUT = 30.0  # seconds the store worker gets to load the rest at shutdown


async def serve(
    where: paths.Paths,
    settings: config.Config,
    notifier: Notifier,
    load: Callable[[], config.Config] | None = None,
) -> None:
    """Run the daemon until SIGTERM/SIGINT; ``load`` reads the configuration again (SIGHUP)."""
    lock = acquire_lock(where.lock_file)
    bound: list[_Bound] = []
    http: HttpSocket | None = None
    try:
        os.makedirs(where.spool_dir, mode=0o700, exist_ok=True)
        ingestor = Ingestor(settings.ingest)
        journal = Journal(
            where.journal_dir,
            where.quarantine_dir,
            settings.journal,
            max_pending_bytes=settings.ingest.max_pending_bytes,
        )
        await anyio.to_thread.run_sync(journal.open, ingestor.dedup)
        # DuckDB runs in the store worker, a child process started when needed
        # (daemon/store_worker.py): ingest never waits for it.
        worker = StoreWorker(where, settings)
        store = StoreClient(worker, journal, settings)
        # Sockets passed by systemd or launchd (never unlinked by us), else our own.
        passed = activated_sockets()
        events = passed.get("events") or _Bound.bind(where.events_socket, bound).sock
        control = passed.get("control") or _Bound.bind(where.control_socket, bound).sock
        http = _http_socket(where, settings.http, passed.get("http"))
        server = Server(where, settings, ingestor, journal, events, control, store, http)
        if server.forwarder is not None:
            store.hold_from = server.forwarder.hold_from
        analyzer = Analyzer(store, journal, ingestor, settings)
        server.operations.analyzer = analyzer
        on_hup = None
        if load is not None:
            reloads = Reloads()
            server.operations.reloads = reloads
            on_hup = functools.partial(
                reload, settings, load, journal, notifier, store.settings_changed, reloads
            )
        async with watchdog(notifier), anyio.create_task_group() as top:
            await top.start(worker.run)
            async with anyio.create_task_group() as writing:
                await writing.start(journal.run)
                with anyio.CancelScope() as drain:
                    async with anyio.create_task_group() as listening:
                        for listener in server.listeners:
                            await listening.start(listener.serve)
                        async with anyio.create_task_group() as loops:
                            loops.start_soon(server.spool.spool_loop)
                            loops.start_soon(store.run)
                            loops.start_soon(analyzer.run)
                            loops.start_soon(server.operations.warm_totals)
                            # [forward]: the journal to an OTLP endpoint (daemon/forward.py)
                            if server.forwarder is not None:
                                loops.start_soon(server.forwarder.run)
                            # Signal handlers are in place before READY=1: from then on,
                            # SIGTERM means a clean stop.
                            await loops.start(_watch_signals, loops.cancel_scope, on_hup)
                            served = server.http_status()
                            log.info(
                                "telemetryd %s listening on %s (durability %s)%s",
                                __version__,
                                where.events_socket,
                                settings.journal.durability,
                                ""
                                if served is None or not served.listening
                                else f" and on http://{served.address} (OTLP, http hooks)",
                            )
                            notifier.notify("READY=1", f"STATUS=listening on {where.events_socket}")
                        notifier.notify("STOPPING=1", "STATUS=draining connections")
                        log.info("stopping: draining %d connections", server.connections)
                        for socket_file in bound:  # new clients now find no socket and spool
                            socket_file.unlink()
                        server.stop()
                        drain.deadline = anyio.current_time() + DRAIN_TIMEOUT
                if drain.cancelled_caught:
                    log.warning("connections still open after %.0f s were cut off", DRAIN_TIMEOUT)
                journal.close_when_drained()
            # The writer has finished: the store worker loads the rest (started for it
            # if events are pending), then stops.
            if worker.running or store.pending:
                with anyio.move_on_after(FINAL_LOAD_TIMEOUT):
                    await store.refresh_or_log(costs=False)
            await worker.stop()
        log.info("stopped: %d events journaled this run", journal.events_written)
    finally:
        for socket_file in bound:
            socket_file.close()
        if http is not None and http.sock is not None:
            http.sock.close()
        os.close(lock)


def _http_socket(
    where: paths.Paths, settings: config.Http, passed: socket.socket | None
) -> HttpSocket | None:
    """The HTTP listener's socket (passed by the service manager, else bound here) and
    its token; None when it is turned off. A port that cannot be bound (another
    collector has it, say) is logged and shown by `status`: the daemon serves without."""
    if not settings.enabled:
        if passed is not None:
            passed.close()
        return None
    token_value = None
    if settings.require_token:
        try:
            token_value = token.load_or_create(where.http_token_file)
            if token.readable_by_others(where.http_token_file):
                log.warning(
                    "HTTP: other users can read the token file %s: `chmod 600` it",
                    where.http_token_file,
                )
        except (TelemetryError, OSError) as exc:  # (an empty or unreadable token file)
            log.error("HTTP listener off: %s", exc)
            if passed is not None:
                passed.close()
            return HttpSocket(settings.address, None, None, str(exc))
    if passed is not None:
        _check_passed_address(passed, settings.address)
        return HttpSocket(settings.address, passed, token_value)
    host, port = config.split_address(settings.address)
    try:
        sock = bind_tcp(host, port)
    except OSError as exc:
        error = exc.strerror or str(exc)
        log.error("HTTP listener off: cannot listen on %s: %s", settings.address, error)
        return HttpSocket(settings.address, None, token_value, error)
    return HttpSocket(settings.address, sock, token_value)


def _check_passed_address(passed: socket.socket, address: str) -> None:
    """Warn when the service manager's socket is not on ``[http] address``: the socket
    unit keeps the address it was installed with, while `telemetryctl otel env` hands
    agents the configured one, where nothing listens."""
    try:
        bound = passed.getsockname()
        host, port = config.split_address(address)
        wanted = {socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)[0][4][:2]}
    except (OSError, ValueError, TelemetryError):
        return
    if tuple(bound[:2]) not in wanted:
        log.warning(
            "HTTP: the service manager passed a socket on %s:%s, but [http] address is %s, "
            "which agents set up by `telemetryctl otel env` will use: run `telemetryctl "
            "service install` again to move the socket unit there",
            bound[0],
            bound[1],
            address,
        )


class _Bound:
    """A listening socket this process bound, and the file it created for it."""

    def __init__(self, path: str, sock: socket.socket) -> None:
        self.path = path
        self.sock = sock
        self.inode = os.stat(path).st_ino

    @classmethod
    def bind(cls, path: str, bound: list[_Bound]) -> _Bound:
        """Bind ``path`` and remember it in ``bound`` (for the cleanup)."""
        made = cls(path, bind_unix(path))
        bound.append(made)
        return made

    def unlink(self) -> None:
        """Remove the socket file, unless it is no longer ours (another daemon's, by now)."""
        try:
            if os.stat(self.path).st_ino == self.inode:
                os.unlink(self.path)
        except FileNotFoundError:
            pass

    def close(self) -> None:
        self.unlink()
        self.sock.close()


async def _watch_signals(
    scope: anyio.CancelScope,
    on_hup: Callable[[], Awaitable[object]] | None = None,
    *,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        task_status.started()
        async for signum in signals:
            if signum == signal.SIGHUP:
                if on_hup is not None:
                    await on_hup()
                continue
            log.info("%s received", signal.Signals(signum).name)
            scope.cancel()
            return


def _reload_config(path: str, overrides: list[str], required: bool) -> config.Config:
    """The configuration as loaded at start, loaded again (SIGHUP)."""
    return config.load(path, overrides=overrides, require_file=required)[0]


def _backend_options() -> dict[str, object]:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return {}
    return {"use_uvloop": True}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="telemetryd",
        description="Collect telemetry events from AI coding agents (runs in the foreground).",
    )
    parser.add_argument("--home", help=f"state directory (sets {paths.ENV_HOME})")
    parser.add_argument(
        "--config", help="configuration file (default: config.toml in the config dir)"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one setting, e.g. --set journal.durability=always",
    )
    parser.add_argument("--check", action="store_true", help="validate config and paths, then exit")
    parser.add_argument("--log-level", default=os.environ.get("TELEMETRYD_LOG_LEVEL", "INFO"))
    parser.add_argument("--version", action="version", version=f"telemetryd {__version__}")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=args.log_level.upper(),
        format="%(levelname)s %(name)s: %(message)s",
    )
    if args.home:
        os.environ[paths.ENV_HOME] = args.home
    os.umask(0o077)  # everything the daemon creates is private to its user
    try:
        where = paths.resolve()
        config_file = args.config or where.config_file
        settings, _ = config.load(config_file, overrides=args.set, require_file=bool(args.config))
        for warning in config.unknown_variables():
            log.warning("%s", warning)
        for socket_path in (where.events_socket, where.control_socket):
            paths.check_socket_path(socket_path)
        paths.check_state_dir(where)
        if args.check:
            print(f"configuration and paths are valid ({config_file})")
            return 0
        # A reload needs the file when the start read one: gone (or unreadable) then, it
        # is an error and the running settings stay, rather than all the defaults.
        required = bool(args.config) or config.file_present(config_file)
        load = functools.partial(_reload_config, config_file, args.set, required)
        anyio.run(serve, where, settings, Notifier(), load, backend_options=_backend_options())
    except TelemetryError as exc:
        log.error("%s", exc)
        return 1
    except OSError as exc:
        # Starting up: the state or socket directory is unusable after all (made
        # read-only, removed, full, ...). One line that names the path.
        named = f"{exc.filename}: " if exc.filename else ""
        log.error("cannot start: %s%s", named, exc.strerror or exc)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0
