"""Requests to the daemon's control socket (status, flush), one line each way."""

from __future__ import annotations

import socket
from typing import Any

import msgspec

from telemetryd import wire
from telemetryd.errors import DaemonUnavailable

DEFAULT_TIMEOUT = 5.0


def request(path: str, message: wire.Request, timeout: float = DEFAULT_TIMEOUT) -> dict[str, Any]:
    """Send one control request and return its reply; DaemonUnavailable says why not."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
        sock.sendall(wire.encode_line(message))
        reply = sock.makefile("rb").readline(1 << 24)
    except FileNotFoundError:
        raise DaemonUnavailable(f"not running (no socket at {path})") from None
    except ConnectionRefusedError:
        raise DaemonUnavailable(f"not running (nothing listens on {path})") from None
    except TimeoutError:
        raise DaemonUnavailable(f"no answer on {path} within {timeout:g} s") from None
    except OSError as exc:
        raise DaemonUnavailable(f"cannot reach {path}: {exc.strerror or exc}") from None
    finally:
        sock.close()
    if not reply:
        raise DaemonUnavailable(f"the daemon closed {path} without answering")
    answer: dict[str, Any] = msgspec.json.decode(reply)
    if "error" in answer:
        raise DaemonUnavailable(f"the daemon could not do it: {answer.get('message')}")
    return answer
