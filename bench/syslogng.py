"""syslog-ng with its json-parser, a streaming-ingest baseline run from extracted packages.

    python -m bench.syslogng install   fetch and unpack it (`make bench` runs this)
    python -m bench.syslogng check     say whether it is there and runs

syslog-ng conflicts with rsyslog as a Debian package (both provide a system log
daemon), and rsyslog is the other baseline, so syslog-ng is never installed.
Instead ``install`` fetches ``syslog-ng-core`` with ``apt-get download`` (in
Debian 12 it carries ``libjson-plugin.so``, json-parser; where that lives in a
separate ``syslog-ng-mod-json``, that is fetched too), then every shared-library
package it depends on that is not installed (``apt-cache depends``, recursively:
on Debian 12 libivykis0, libnet1 and libpcre3), and unpacks them all with
``dpkg-deb -x`` into ``bench/.deps/syslog-ng/`` (ignored by git). ``ldd`` must then
find every library. The binary runs from there with ``LD_LIBRARY_PATH`` and
``--module-path`` pointing into that tree.

:class:`SyslogNg` is the server: a ``unix-stream()`` source on a socket in a fresh
directory under /tmp (the same transport as the rsyslog baseline's imptcp),
``flags(no-parse)`` so the message is the whole line, ``json-parser()`` into
``.json.*`` name-value pairs, and a ``file()`` destination whose template writes
those pairs back out as one JSON object per line (``format-json``), with flow
control so that nothing is dropped when the file falls behind.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from bench import BenchError
from bench.procs import FileSink, _clean_env, _wait_connectable

ROOT = Path(__file__).resolve().parent / ".deps" / "syslog-ng"
CORE = "syslog-ng-core"
JSON_MODULE = "syslog-ng-mod-json"  # json-parser, where it is packaged apart
Log = Callable[[str], None]
_LIB_DIRS = ("usr/lib/x86_64-linux-gnu", "lib/x86_64-linux-gnu", "usr/lib/syslog-ng")


def binary() -> Path | None:
    """The extracted ``syslog-ng`` binary, if ``install`` has run."""
    path = ROOT / "usr" / "sbin" / "syslog-ng"
    return path if path.exists() else None


def module_path() -> Path:
    """The plugin directory (``usr/lib/syslog-ng/<version>``) in the extracted tree."""
    candidates = sorted(p.parent for p in ROOT.glob("usr/lib/syslog-ng/*/libaffile.so"))
    if not candidates:
        raise BenchError(f"no syslog-ng plugins under {ROOT} (python -m bench.syslogng install)")
    return candidates[-1]


def environment() -> dict[str, str]:
    """The environment syslog-ng runs with: its libraries first on the search path."""
    dirs = [str(ROOT / d) for d in _LIB_DIRS]
    if os.environ.get("LD_LIBRARY_PATH"):
        dirs.append(os.environ["LD_LIBRARY_PATH"])
    return _clean_env(LD_LIBRARY_PATH=":".join(dirs))


def _run(argv: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)


def _installed(package: str) -> bool:
    status = _run(["dpkg-query", "-W", "-f", "${db:Status-Status}", package])
    return status.returncode == 0 and status.stdout.strip() == "installed"


def _library_depends(package: str) -> list[str]:
    """The shared-library packages (``lib*``) ``package`` depends on; scripts and
    virtual packages (``lsb-base``, ``<system-log-daemon>``) do not matter to the binary."""
    out = _run(
        [
            "apt-cache", "depends", "--no-recommends", "--no-suggests", "--no-conflicts",
            "--no-breaks", "--no-replaces", "--no-enhances", package,
        ]
    )  # fmt: skip
    if out.returncode != 0:
        raise BenchError(f"apt-cache depends {package}: {out.stderr.strip()}")
    names = []
    for line in out.stdout.splitlines():
        kind, _, name = line.strip().lstrip("|").partition(": ")
        if kind in ("Depends", "PreDepends") and name.startswith("lib"):
            names.append(name.split(":")[0])
    return names


def _download(packages: list[str], into: Path, log: Log) -> None:
    """``apt-get download``; after one ``apt-get update`` if the package lists are stale."""
    argv = ["apt-get", "download", "-q", *packages]
    got = _run(argv, cwd=into)
    if got.returncode != 0:
        sudo = [] if os.geteuid() == 0 else ["sudo"]
        log("  apt-get update (package lists for apt-get download) ...")
        updated = _run([*sudo, "apt-get", "update", "-qq"])
        if updated.returncode != 0:
            raise BenchError(f"apt-get update failed: {updated.stderr.strip()[-500:]}")
        got = _run(argv, cwd=into)
    if got.returncode != 0:
        raise BenchError(f"apt-get download {' '.join(packages)}: {got.stderr.strip()[-500:]}")


def missing_libraries() -> list[str]:
    """The libraries ``ldd`` cannot find for the extracted binary (empty when it runs)."""
    path = binary()
    if path is None:
        return ["syslog-ng itself"]
    out = subprocess.run(
        ["ldd", str(path)], env=environment(), capture_output=True, text=True, check=False
    )
    return [line.split()[0] for line in out.stdout.splitlines() if "not found" in line]


def install(log: Log = print) -> Path:
    """Fetch and unpack syslog-ng and the libraries it lacks into :data:`ROOT`
    (nothing to do when it is there and ``ldd`` finds everything); the binary."""
    existing = binary()
    if existing is not None and not missing_libraries() and _has_json_parser():
        log(f"syslog-ng baseline: {existing} ({version()})")
        return existing
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise BenchError("the syslog-ng baseline needs apt-get and dpkg-deb (Debian, Ubuntu)")
    ROOT.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="syslog-ng-download-", dir=ROOT.parent))
    try:
        tree = staging / "root"
        todo, seen = [CORE], set()
        while todo:
            batch = [p for p in dict.fromkeys(todo) if p not in seen]
            todo = []
            if not batch:
                break
            seen.update(batch)
            log(f"  apt-get download {' '.join(batch)}")
            _download(batch, staging, log)
            for package in batch:
                todo += [dep for dep in _library_depends(package) if not _installed(dep)]
        for deb in sorted(staging.glob("*.deb")):
            unpacked = _run(["dpkg-deb", "-x", str(deb), str(tree)])
            if unpacked.returncode != 0:
                raise BenchError(f"dpkg-deb -x {deb.name}: {unpacked.stderr.strip()}")
        if not list(tree.glob("usr/lib/syslog-ng/*/libjson-plugin.so")):
            log(f"  json-parser is packaged apart: apt-get download {JSON_MODULE}")
            _download([JSON_MODULE], staging, log)
            for deb in staging.glob(f"{JSON_MODULE}_*.deb"):
                _run(["dpkg-deb", "-x", str(deb), str(tree)])
        shutil.rmtree(ROOT, ignore_errors=True)
        tree.rename(ROOT)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    missing = missing_libraries()
    if missing:
        raise BenchError(f"syslog-ng unpacked in {ROOT}, but ldd cannot find {missing}")
    if not _has_json_parser():
        raise BenchError(f"syslog-ng unpacked in {ROOT} has no json-parser plugin")
    path = binary()
    assert path is not None
    log(f"  syslog-ng ready: {path} ({version()})")
    return path


def _has_json_parser() -> bool:
    return bool(list(ROOT.glob("usr/lib/syslog-ng/*/libjson-plugin.so")))


def version() -> str:
    path = binary()
    if path is None:
        return "not installed"
    out = subprocess.run(
        [str(path), "--version"], env=environment(), capture_output=True, text=True, check=False
    )
    first = (out.stdout or out.stderr).splitlines()
    if not first:
        return f"exit {out.returncode}"
    # "syslog-ng 3 (3.38.1)": the full version is in the parentheses
    return first[0].rpartition("(")[2].rstrip(")").strip() or first[0].strip()


SYSLOG_NG_CONF = """\
@version: {config_version}
options {{
  log-msg-size(65536); use-dns(no); dns-cache(no); chain-hostnames(no);
  stats-freq(0); mark-freq(0); threaded(yes);
}};
source s_bench {{
  unix-stream("{sock}" flags(no-parse) max-connections(64)
               log-iw-size({window}) log-fetch-limit({fetch}));
}};
parser p_json {{ json-parser(prefix(".json.")); }};
destination d_out {{
  file("{out}" template("$(format-json --scope none --key .json.* --shift-levels 2)\\n")
       flush-lines({flush}) log-fifo-size({fifo}));
}};
log {{ source(s_bench); parser(p_json); destination(d_out); flags(flow-control); }};
"""


class SyslogNg(FileSink):
    """syslog-ng in the foreground, from :data:`ROOT`: unix-stream -> json-parser -> file.

    Settings in the spirit of the rsyslog baseline's: a 100k-message destination
    queue, 1,000-line writes, a window of 1,000 messages in flight per connection
    (64 connections), no fsync. ``flags(flow-control)`` makes the sources stop
    reading while the destination is full, as the kernel pushes back on telemetryd's
    clients, instead of dropping messages."""

    name = "syslog-ng+json-parser"

    def __init__(self, fifo: int = 100_000, flush: int = 1000, fetch: int = 1000) -> None:
        super().__init__("sngb-")
        self.socket_path = str(self.dir / "in.sock")
        self.out = self.dir / "out.log"
        self.settings = {"fifo": fifo, "flush": flush, "fetch": fetch, "window": 64 * fetch}

    def config_text(self) -> str:
        config_version = ".".join(module_path().name.split(".")[:2])
        return SYSLOG_NG_CONF.format(
            config_version=config_version, sock=self.socket_path, out=self.out, **self.settings
        )

    def start(self) -> None:
        path = binary()
        if path is None:
            raise BenchError("syslog-ng is not unpacked (python -m bench.syslogng install)")
        conf = self.dir / "syslog-ng.conf"
        conf.write_text(self.config_text())
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    str(path), "-F", "--no-caps", "--stderr",
                    f"--module-path={module_path()}",
                    f"--cfgfile={conf}",
                    f"--persist-file={self.dir / 'syslog-ng.persist'}",
                    f"--pidfile={self.dir / 'syslog-ng.pid'}",
                    f"--control={self.dir / 'syslog-ng.ctl'}",
                ],
                env=environment(),
                cwd=self.dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )  # fmt: skip
        _wait_connectable(self.socket_path, self.proc, self.log_path, "syslog-ng")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    command = args[0] if args else "check"
    try:
        if command == "install":
            install()
        elif command == "check":
            missing = missing_libraries()
            if missing or not _has_json_parser():
                print(f"syslog-ng not usable from {ROOT}: missing {missing or ['json-parser']}")
                return 1
            print(f"{binary()}: {version()}")
        else:
            print(__doc__.split("\n\n")[1])
            return 2
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
