"""`python -m telemetryd.store serve|query`: the store worker, or one read-only query.

``serve`` is started by the daemon (store/worker.py); ``query`` by `telemetryctl query`
while the daemon is down (store/readonly.py).
"""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    command = argv[0] if argv else ""
    if command == "serve":
        # The database starts opening first, in a thread, while the worker's other
        # modules import (store/startup.py).
        from telemetryd.store import startup

        line, early = startup.begin()
        from telemetryd.store import worker

        return worker.main(line, early)
    if command == "query":
        from telemetryd.store import readonly

        return readonly.main(argv[1:])
    sys.stderr.write("usage: python -m telemetryd.store serve|query --database PATH\n")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
