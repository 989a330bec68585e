"""Service-manager integration, spoken directly (no libsystemd).

Three protocols:

- **sd_notify**: systemd (and test harnesses) pass ``NOTIFY_SOCKET``, a datagram
  socket to which the daemon reports ``READY=1`` once it serves, ``STOPPING=1``
  when it begins to shut down, ``STATUS=...`` lines and, when the unit sets
  ``WatchdogSec=``, ``WATCHDOG=1`` at least every ``WATCHDOG_USEC``
  microseconds (we ping at half of it). Each message is one datagram.
- **sd_listen_fds**: with socket activation, systemd passes the listening
  sockets as descriptors 3, 4, ... and sets ``LISTEN_FDS`` (how many),
  ``LISTEN_PID`` (who they are for) and ``LISTEN_FDNAMES`` (colon-separated
  names). :func:`listen_fds` takes them and removes the variables, so that
  child processes do not believe the descriptors are theirs. The Unix sockets
  are named after their paths (``events``, ``control``); the one TCP socket
  (AF_INET or AF_INET6, the HTTP listener's) is ``http``.
- **launchd**: a LaunchAgent's ``Sockets`` are fetched by name with
  ``launch_activate_socket`` (macOS only, through ctypes; see
  :func:`launchd_sockets`).

:func:`activated_sockets` tries both and returns ``{}`` when the daemon was
started by hand, in which case it binds its own sockets.
"""

from __future__ import annotations

import logging
import os
import socket
import stat
import sys
from collections.abc import AsyncIterator, Iterable, Mapping, MutableMapping
from contextlib import asynccontextmanager

import anyio

from telemetryd.errors import ConfigError

log = logging.getLogger(__name__)

SD_LISTEN_FDS_START = 3  # the first descriptor systemd passes


class Notifier:
    """Sends sd_notify messages when ``NOTIFY_SOCKET`` is set; does nothing otherwise.

    ``environ`` (``os.environ`` by default) is read once, here.
    """

    def __init__(
        self, address: str | None = None, environ: Mapping[str, str] | None = None
    ) -> None:
        env = os.environ if environ is None else environ
        address = address if address is not None else env.get("NOTIFY_SOCKET")
        self._address = None
        if address:
            # A leading "@" names a socket in the abstract namespace.
            self._address = "\0" + address[1:] if address.startswith("@") else address
        self._watchdog = _watchdog_seconds(env)

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def notify(self, *fields: str) -> None:
        """Send one message; never blocks (this runs on the event loop).

        A receiver that does not read fills its queue (``net.unix.max_dgram_qlen``,
        often 10): the message is then dropped with a warning.
        """
        if self._address is None:
            return
        message = "\n".join(fields).encode()
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.setblocking(False)
            try:
                sock.sendto(message, self._address)
            except OSError as exc:
                log.warning("cannot notify the service manager at %s: %s", self._address, exc)

    def status(self, text: str) -> None:
        """Set the one-line status shown by ``systemctl status`` (newlines become spaces)."""
        self.notify("STATUS=" + " ".join(text.splitlines()))

    def watchdog_interval(self) -> float | None:
        """Seconds between ``WATCHDOG=1`` pings (half the manager's timeout), or None."""
        if self._address is None or self._watchdog is None:
            return None
        return self._watchdog / 2


def _watchdog_seconds(env: Mapping[str, str]) -> float | None:
    """``WATCHDOG_USEC`` in seconds, when it is meant for this process (sd_watchdog_enabled)."""
    usec = env.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    pid = env.get("WATCHDOG_PID")
    if pid and (not pid.isdigit() or int(pid) != os.getpid()):
        return None
    return int(usec) / 1_000_000


async def watchdog_loop(notifier: Notifier) -> None:
    """Send ``WATCHDOG=1`` at :meth:`Notifier.watchdog_interval` until cancelled.

    Returns at once when no watchdog is asked for. A ping proves that the event
    loop runs: a loop blocked for longer than ``WatchdogSec`` gets the daemon
    restarted.
    """
    interval = notifier.watchdog_interval()
    if interval is None:
        return
    log.debug("pinging the service manager's watchdog every %.3g s", interval)
    while True:
        notifier.notify("WATCHDOG=1")
        await anyio.sleep(interval)


@asynccontextmanager
async def watchdog(notifier: Notifier) -> AsyncIterator[None]:
    """Run :func:`watchdog_loop` while the body runs (through startup, serving and draining)."""
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(watchdog_loop, notifier)
        yield
        tasks.cancel_scope.cancel()


# -- sockets passed by systemd (LISTEN_FDS) ----------------------------------

_LISTEN_VARS = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")


def listen_fds(environ: MutableMapping[str, str] | None = None) -> dict[str, socket.socket]:
    """The listening sockets systemd passed, by name; ``{}`` when there are none.

    A socket's name is its entry in ``LISTEN_FDNAMES`` when that is unique among
    the passed descriptors. systemd gives every descriptor of one ``.socket``
    unit the same name (``FileDescriptorName=``, default the unit's name), so
    otherwise the name is the stem of the socket's path (``events`` for
    ``.../events.sock``), and ``http`` for a TCP socket. The variables are removed from ``environ``
    (``os.environ`` by default) whether or not they were meant for us.
    """
    env = os.environ if environ is None else environ
    values = {name: env.pop(name, None) for name in _LISTEN_VARS}
    pid, count, names = values["LISTEN_PID"], values["LISTEN_FDS"], values["LISTEN_FDNAMES"]
    if not pid or not count:
        return {}
    if not pid.isdigit() or int(pid) != os.getpid():
        log.warning("ignoring LISTEN_FDS meant for pid %s", pid)
        return {}
    if not count.isdigit():
        raise ConfigError(f"LISTEN_FDS={count!r} is not a number of descriptors")
    fds = range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + int(count))
    labels = names.split(":") if names else []
    if labels and len(labels) != len(fds):
        raise ConfigError(f"LISTEN_FDNAMES={names!r} does not name {len(fds)} descriptors")
    return _by_name([(fd, labels[i] if labels else "") for i, fd in enumerate(fds)])


def _by_name(passed: Iterable[tuple[int, str]]) -> dict[str, socket.socket]:
    sockets: list[tuple[str, socket.socket]] = []
    for fd, label in passed:
        os.set_inheritable(fd, False)
        sockets.append((label, _listening_socket(fd, label)))
    labels = [label for label, _ in sockets]
    out: dict[str, socket.socket] = {}
    for label, sock in sockets:
        name = label if label and label != "unknown" and labels.count(label) == 1 else None
        name = name or _default_name(sock)
        if name in out:
            raise ConfigError(f"two passed sockets are both named {name!r}")
        out[name] = sock
    return out


_FAMILIES = (socket.AF_UNIX, socket.AF_INET, socket.AF_INET6)
HTTP = "http"  # the name of the passed TCP socket (the HTTP listener's)


def _listening_socket(fd: int, label: str) -> socket.socket:
    """A socket object for a passed descriptor, checked to be a listening stream socket
    (Unix, or TCP over IPv4 or IPv6)."""
    what = f"descriptor {fd}" + (f" ({label})" if label else "")
    if not stat.S_ISSOCK(os.fstat(fd).st_mode):
        raise ConfigError(f"{what} passed by the service manager is not a socket")
    sock = socket.socket(fileno=fd)
    listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
    if sock.family not in _FAMILIES or sock.type != socket.SOCK_STREAM or not listening:
        sock.detach()
        raise ConfigError(
            f"{what} passed by the service manager is not a listening Unix or TCP socket"
        )
    sock.setblocking(False)
    return sock


def _default_name(sock: socket.socket) -> str:
    """``http`` for a TCP socket, the path's stem for a Unix one, else ``fd<N>``."""
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        return HTTP
    return _path_stem(sock) or f"fd{sock.fileno()}"


def _path_stem(sock: socket.socket) -> str | None:
    address = sock.getsockname()
    if not isinstance(address, str) or not address or address.startswith("\0"):
        return None
    return os.path.basename(address).partition(".")[0] or None


# -- sockets passed by launchd (macOS) ----------------------------------------


def launchd_sockets(names: Iterable[str]) -> dict[str, socket.socket]:
    """The sockets of the LaunchAgent's ``Sockets`` dict, by name; ``{}`` outside launchd.

    Best effort: uses ``launch_activate_socket(3)`` from libSystem when this is
    macOS and the function exists (10.10+); any failure means "bind your own".
    """
    if sys.platform != "darwin":
        return {}
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("System") or "libSystem.dylib")
        activate = libc.launch_activate_socket
    except (OSError, AttributeError):
        return {}
    activate.argtypes = [
        ctypes.c_char_p,
        ctypes.POINTER(ctypes.POINTER(ctypes.c_int)),
        ctypes.POINTER(ctypes.c_size_t),
    ]
    activate.restype = ctypes.c_int
    passed: list[tuple[int, str]] = []
    for name in names:
        fds = ctypes.POINTER(ctypes.c_int)()
        count = ctypes.c_size_t(0)
        # ESRCH: not started by launchd; ENOENT: no such socket name.
        if activate(name.encode(), ctypes.byref(fds), ctypes.byref(count)) != 0:
            continue
        got = [fds[i] for i in range(count.value)]
        libc.free(fds)
        if got:
            passed.append((got[0], name))
            for extra in got[1:]:  # a Unix path gives one; a host name may give IPv4 and IPv6
                os.close(extra)
    return _by_name(passed)


def activated_sockets(
    names: Iterable[str] = ("events", "control", HTTP),
) -> dict[str, socket.socket]:
    """Sockets from systemd (``LISTEN_FDS``) or launchd, by name (``events``, ``control``
    and, when the service files have the HTTP listener, ``http``); ``{}`` when started
    by hand."""
    return listen_fds() or launchd_sockets(names)
