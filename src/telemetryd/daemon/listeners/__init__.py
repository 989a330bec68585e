"""The daemon's ways in, one module each, composed by :mod:`telemetryd.daemon.server`.

Every listener has the same shape (:class:`Listener`): ``serve()`` accepts on its
socket until ``stop()`` is called, then returns once each of its connections has
finished (acknowledged what it read, been answered, been told the daemon stops);
``connections`` counts the open ones for `status`.

- :mod:`.events`: the events socket (NDJSON events in, rejections and summaries out);
- :mod:`.control`: the control socket (requests in, replies out): limits, slots,
  timeouts; each request goes to :mod:`.dispatch`, the table of operations that
  :mod:`.operations` fills (one handler per request type, typed replies);
- :mod:`.sockets`: binding, the instance lock, peer uids, refusing a client.
"""

from __future__ import annotations

from typing import Protocol

from anyio.abc import TaskStatus


class Listener(Protocol):
    connections: int  # open now

    async def serve(self, *, task_status: TaskStatus[None] = ...) -> None:
        """Accept until :meth:`stop`; return once every connection has finished."""

    def stop(self) -> None:
        """Stop accepting, and tell the open connections to finish."""
