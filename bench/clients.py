"""Start client processes, release them together, collect what each measured."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench import BenchError

CLIENT = str(Path(__file__).with_name("client.py"))
START_TIMEOUT = 60.0


class Group:
    """``count`` client processes, each given its own argv tail; all start at once."""

    def __init__(self, argvs: list[list[str]]) -> None:
        self.argvs = argvs
        self.procs: list[subprocess.Popen[str]] = []

    def run(self, timeout: float = 300.0) -> list[dict[str, Any]]:
        read_end, write_end = os.pipe()
        try:
            for argv in self.argvs:
                mode, path, data, *rest = argv
                self.procs.append(
                    subprocess.Popen(
                        [sys.executable, CLIENT, mode, path, data, str(read_end), *rest],
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE,
                        text=True,
                        pass_fds=(read_end,),
                    )
                )
            os.close(read_end)
            read_end = -1
            for proc in self.procs:
                assert proc.stdout is not None
                line = proc.stdout.readline()
                if line.strip() != "ready":
                    self._fail(proc, "did not get ready")
            os.close(write_end)  # the barrier: every client starts now
            write_end = -1
            results = []
            for proc in self.procs:
                out, err = proc.communicate(timeout=timeout)
                if proc.returncode != 0:
                    raise BenchError(f"client exited with {proc.returncode}: {err.strip()}")
                results.append(json.loads(out))
            return results
        except subprocess.TimeoutExpired:
            raise BenchError(f"clients did not finish within {timeout:g} s") from None
        finally:
            for fd in (read_end, write_end):
                if fd >= 0:
                    os.close(fd)
            for proc in self.procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()

    def _fail(self, proc: subprocess.Popen[str], what: str) -> None:
        proc.kill()
        _, err = proc.communicate()
        raise BenchError(f"client {what}: {err.strip()[-2000:]}")


def stream(socket_path: str, payloads: list[str]) -> list[dict[str, Any]]:
    """One streaming client per payload file."""
    return Group([["stream", socket_path, p] for p in payloads]).run()


def perconn(
    socket_path: str, event_file: str, clients: int, seconds: float
) -> list[dict[str, Any]]:
    argv = ["perconn", socket_path, event_file, f"{seconds}"]
    return Group([list(argv) for _ in range(clients)]).run()


def span(results: list[dict[str, Any]]) -> tuple[float, float]:
    """First byte sent and last reply received, over all clients."""
    return min(r["t0"] for r in results), max(r["t1"] for r in results)
