"""One benchmark client process (standard library only; run by path, not imported).

    python bench/client.py stream  SOCKET PAYLOAD BARRIER_FD
    python bench/client.py perconn SOCKET EVENT   BARRIER_FD SECONDS

Both connect / load everything first, print ``ready``, then block on the
barrier pipe until the orchestrator closes its end, so every client starts at
once and process start-up is never timed.

``stream``: one connection; ``sendall`` of the whole pre-built payload (mmap'ed,
so many clients share one copy in the page cache), half-close, read replies
until EOF. ``perconn``: the hook pattern, in a loop until SECONDS have passed:
connect, send one event, half-close, read the summary, close.

Prints one JSON line: monotonic start/end (CLOCK_MONOTONIC is system-wide, so
the orchestrator can compare clients), the CPU this process used between them,
and what the daemon replied.
"""

import _socket
import json
import mmap
import os
import resource
import sys
import time

AF_UNIX = _socket.AF_UNIX
SOCK_STREAM = _socket.SOCK_STREAM
SHUT_WR = _socket.SHUT_WR


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _wait(barrier: int) -> None:
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    os.read(barrier, 1)  # EOF once the orchestrator closes the write end


def stream(path: str, payload: str, barrier: int) -> dict:
    with open(payload, "rb") as f:
        data = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
    data.madvise(mmap.MADV_WILLNEED)
    view = memoryview(data)
    sum(view[::4096])  # fault the pages in before the clock starts
    sock = _socket.socket(AF_UNIX, SOCK_STREAM)
    sock.connect(path)
    _wait(barrier)
    cpu0 = _cpu()
    t0 = time.monotonic()
    sock.sendall(view)
    t_sent = time.monotonic()
    sock.shutdown(SHUT_WR)
    received = []
    while chunk := sock.recv(65536):
        received.append(chunk)
    t1 = time.monotonic()
    cpu = _cpu() - cpu0
    sock.close()
    reply = b"".join(received).decode(errors="replace")
    return {"t0": t0, "t_sent": t_sent, "t1": t1, "cpu": cpu, "bytes": len(data), "reply": reply}


def perconn(path: str, event_file: str, barrier: int, seconds: float) -> dict:
    with open(event_file, "rb") as f:
        event = f.read()
    expected = b'{"ok":true,"lines":1,"accepted":1,"rejected":0,"duplicates":0}\n'
    new = _socket.socket
    monotonic = time.monotonic
    ok = bad = 0
    first_bad = None
    _wait(barrier)
    cpu0 = _cpu()
    t0 = monotonic()
    deadline = t0 + seconds
    while monotonic() < deadline:
        for _ in range(16):  # read the clock less often
            sock = new(AF_UNIX, SOCK_STREAM)
            sock.connect(path)
            sock.sendall(event)
            sock.shutdown(SHUT_WR)
            reply = sock.recv(4096)
            if reply == expected:
                ok += 1
            else:
                while chunk := sock.recv(4096):
                    reply += chunk
                if reply == expected:
                    ok += 1
                else:
                    bad += 1
                    if first_bad is None:
                        first_bad = reply.decode(errors="replace")
            sock.close()
    t1 = monotonic()
    cpu = _cpu() - cpu0
    return {"t0": t0, "t1": t1, "cpu": cpu, "ok": ok, "bad": bad, "first_bad": first_bad}


def main() -> None:
    mode, path, payload, barrier = sys.argv[1:5]
    if mode == "stream":
        result = stream(path, payload, int(barrier))
    elif mode == "perconn":
        result = perconn(path, payload, int(barrier), float(sys.argv[5]))
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
