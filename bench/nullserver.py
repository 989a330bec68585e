"""A server that does nothing but the protocol: the ceiling for connection per event.

    python bench/nullserver.py SOCKET

asyncio (uvloop when importable, as the daemon uses) on a Unix socket: counts
the lines of each connection and, at the client's half-close, answers the
summary line telemetryd would send, without validating or writing anything.
What it reaches is the most any asyncio daemon could on this machine with
these clients; telemetryd's own figure is to be read against it.
"""

import asyncio
import os
import signal
import sys


class Null(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        self.lines = 0

    def data_received(self, data):
        self.lines += data.count(b"\n")

    def eof_received(self):
        n = self.lines
        self.transport.write(
            b'{"ok":true,"lines":%d,"accepted":%d,"rejected":0,"duplicates":0}\n' % (n, n)
        )
        return False  # close once written


async def serve(path):
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    loop.add_signal_handler(signal.SIGTERM, stop.set_result, None)
    server = await loop.create_unix_server(Null, path, backlog=1024)
    async with server:
        await stop
    os.unlink(path)


def main():
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(sys.argv[1]))
    else:
        uvloop.run(serve(sys.argv[1]))


if __name__ == "__main__":
    main()
