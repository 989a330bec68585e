"""Unix sockets: binding one safely, the instance lock, who is at the other end.

Shared by the listeners: :func:`bind_unix` (0600 in a 0700 directory, never taking
over a live socket), :func:`bind_tcp` (the HTTP listener's), :func:`acquire_lock`
(one daemon per state directory),
:class:`Peers` (SO_PEERCRED / LOCAL_PEERCRED: only allowed uids), and
:class:`Conn`, a connection on its raw non-blocking socket whose replies are best
effort and which can refuse a client without a reset.
"""

from __future__ import annotations

import _socket
import contextlib
import fcntl
import logging
import os
import socket
import stat
import struct
import sys
from collections.abc import Iterable

import anyio

from telemetryd import wire
from telemetryd.errors import AlreadyRunning, PathError
from telemetryd.paths import check_socket_path

log = logging.getLogger(__name__)

SEND_TIMEOUT = 10.0  # seconds a reply may wait for the client to read
_LINGER_SECONDS = 1.0  # a refused client gets this long to stop sending
_LINGER_READS = 16
_SO_PEERCRED: int | None = getattr(socket, "SO_PEERCRED", None)


def acquire_lock(path: str) -> int:
    """Hold an exclusive lock on ``path`` for the life of the process (one daemon per state dir)."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise AlreadyRunning(f"another telemetryd (pid {holder}) holds {path}") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _private_dir(directory: str) -> None:
    os.makedirs(directory, mode=0o700, exist_ok=True)
    info = os.stat(directory)
    if info.st_uid != os.getuid():
        raise PathError(f"{directory} belongs to uid {info.st_uid}, not to this user")
    if info.st_mode & 0o077:
        os.chmod(directory, 0o700)


def bind_unix(path: str, backlog: int = 1024) -> socket.socket:
    """Bind a listening socket at ``path`` (0600, in a 0700 directory).

    A socket file that still answers belongs to a live daemon and is never
    taken over; one that refuses connections is stale and replaced.
    """
    check_socket_path(path)
    _private_dir(os.path.dirname(path))
    if os.path.lexists(path):
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            raise PathError(f"{path} exists and is not a socket; not touching it")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(1.0)
        try:
            probe.connect(path)
        except (ConnectionRefusedError, FileNotFoundError):
            log.info("replacing stale socket %s", path)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        except OSError as exc:
            raise AlreadyRunning(f"{path} exists and cannot be probed: {exc}") from None
        else:
            raise AlreadyRunning(f"a live process is listening on {path}")
        finally:
            probe.close()
    sock = listen_private(path, backlog)
    sock.setblocking(False)
    return sock


def listen_private(path: str, backlog: int) -> socket.socket:
    """A listening socket bound at ``path`` (nothing there now) that only this user can
    connect to: 0600 from the moment it exists."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(path)
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    sock.listen(backlog)
    return sock


def bind_tcp(host: str, port: int, backlog: int = 1024) -> socket.socket:
    """A listening TCP socket on ``host``:``port`` (IPv6 when ``host`` has a colon)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, backlog=backlog)
    sock.setblocking(False)
    return sock


_UCRED = struct.Struct("3i")  # struct ucred {pid_t pid; uid_t uid; gid_t gid;}


def peer_uid(sock: _socket.socket) -> int | None:
    """The uid of the process at the other end (SO_PEERCRED, or LOCAL_PEERCRED on macOS/BSD)."""
    if _SO_PEERCRED is not None:
        creds = sock.getsockopt(socket.SOL_SOCKET, _SO_PEERCRED, _UCRED.size)
        return int(_UCRED.unpack(creds)[1])
    if sys.platform == "darwin" or "bsd" in sys.platform:
        # getpeereid() reads struct xucred {u_int cr_version; uid_t cr_uid; ...}
        # via getsockopt(SOL_LOCAL=0, LOCAL_PEERCRED=1).
        xucred = sock.getsockopt(0, getattr(socket, "LOCAL_PEERCRED", 1), 76)
        return int(struct.unpack_from("2I", xucred)[1])
    return None


class Peers:
    """The uids that may connect: ``allowed``, or when it is empty the daemon's own."""

    def __init__(self, allowed: Iterable[int] = ()) -> None:
        uids = frozenset(allowed)
        self.allowed = uids or frozenset({os.getuid()})

    def refusal(self, sock: _socket.socket) -> bytes | None:
        """A ``forbidden_peer`` Closing line for a peer that may not connect, else None."""
        uid = peer_uid(sock)
        if uid is not None and uid not in self.allowed:
            log.warning("refused a connection from uid %s", uid)
            return closing(wire.FORBIDDEN_PEER, f"uid {uid} may not connect")
        return None


def closing(code: str, message: str) -> bytes:
    """A Closing line."""
    return wire.encode_line(wire.Closing(code, message))


class Conn:
    """A connection on its raw non-blocking socket.

    Replies are best effort: a client that stops reading (or shut its read side)
    is still a producer, so its events are journaled and its replies dropped.
    """

    __slots__ = ("deaf", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.deaf = False

    def recv_now(self, size: int) -> bytes | None:
        """What is buffered (b"" at EOF), or None when nothing is."""
        try:
            return self.sock.recv(size)
        except BlockingIOError:
            return None
        except OSError:  # ECONNRESET and the like: the client is gone
            self.deaf = True
            return b""

    async def refuse(self, reason: bytes) -> None:
        """Send ``reason`` and close without a reset: closing a socket with unread input
        makes the kernel reset the connection, and the client would never see why."""
        await self.send(reason)
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)
        with anyio.move_on_after(_LINGER_SECONDS):
            for _ in range(_LINGER_READS):  # drop what the client still sends, up to a bound
                chunk = self.recv_now(65536)
                if chunk is None:
                    await anyio.wait_readable(self.sock)
                elif not chunk:
                    break

    async def send(self, data: bytes) -> None:
        view = memoryview(data)
        while view and not self.deaf:
            try:
                view = view[self.sock.send(view) :]
            except BlockingIOError:
                with anyio.move_on_after(SEND_TIMEOUT) as scope:
                    await anyio.wait_writable(self.sock)
                self.deaf = scope.cancelled_caught
            except OSError:  # EPIPE, ECONNRESET: nobody is listening any more
                self.deaf = True
