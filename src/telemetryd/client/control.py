"""Requests to the daemon's control socket (status, flush, rebuild, gc), one line each way.

Reply lines are read and classified by :mod:`telemetryd.client.query`, the one reader
of control replies.
"""

from __future__ import annotations

import socket
import time
from typing import Any

from telemetryd import wire
from telemetryd.client.query import Replies, read_reply
from telemetryd.errors import DaemonUnavailable, ProtocolError

DEFAULT_TIMEOUT = 5.0


def request(path: str, message: wire.Request, timeout: float = DEFAULT_TIMEOUT) -> dict[str, Any]:
    """Send one control request and return its reply. DaemonUnavailable says why not
    (DaemonBusy when the daemon is up but turned the connection away for load)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
        sock.sendall(wire.encode_line(message))
        replies = Replies(sock, deadline=time.monotonic() + timeout)
        line = next(replies.lines(), None)
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
    if line is None:
        raise DaemonUnavailable(f"the daemon closed {path} without answering")
    answer = read_reply(line)
    if "error" in answer:
        raise DaemonUnavailable(f"the daemon could not do it: {answer.get('message')}")
    if not answer.get("ok"):
        raise ProtocolError(f"the daemon's reply is not an answer: {line[:200]!r}")
    return answer
