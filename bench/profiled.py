"""Run the daemon under cProfile (``python -m cProfile`` with a dump at any exit).

    python bench/profiled.py OUT.prof [telemetryd arguments...]

Wall-clock timer (cProfile's default; a CPU-clock timer is a system call per
function call and drowns the per-event hot path). So a system call that wakes a
client on a 2-core machine may be charged with time the client then ran.
Only the main thread is seen, not the journal's worker threads.
"""

import cProfile
import runpy
import sys


def main() -> None:
    out = sys.argv[1]
    sys.argv = ["telemetryd", *sys.argv[2:]]
    profile = cProfile.Profile()
    try:
        profile.runcall(runpy.run_module, "telemetryd", run_name="__main__", alter_sys=True)
    finally:
        profile.dump_stats(out)


if __name__ == "__main__":
    main()
