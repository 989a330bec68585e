"""Where telemetryd keeps its sockets, journal, spool, database and config.

One environment variable, ``TELEMETRYD_HOME``, moves everything under one
directory::

    $TELEMETRYD_HOME/
      run/events.sock  run/control.sock    (0700 directory, 0600 sockets)
      journal/  spool/  quarantine/  telemetry.duckdb  telemetryd.lock  http-token
      config.toml

Without it, the platform's conventions apply (via platformdirs): on Linux the
sockets live in ``$XDG_RUNTIME_DIR/telemetryd`` (platformdirs' fallback when the
variable is unset), state in ``$XDG_STATE_HOME/telemetryd`` and the config in
``$XDG_CONFIG_HOME/telemetryd``; on macOS under ``~/Library``.

:func:`check_state_dir` says (creating nothing) when the daemon cannot keep its state
somewhere: a path with a character DuckDB reads specially (``? * [ \\``), not UTF-8,
under a file, or not writable.

This module is imported on the `telemetryctl send` hot path, so it imports only
``os`` and ``sys`` at module level; platformdirs (~20 ms to import) is loaded
only when the fast rules in :func:`events_socket_fast` do not apply.
"""

from __future__ import annotations

import os
import sys

APP = "telemetryd"
ENV_HOME = "TELEMETRYD_HOME"
EVENTS_SOCKET = "events.sock"
CONTROL_SOCKET = "control.sock"
DATABASE = "telemetry.duckdb"
CONFIG_FILE = "config.toml"
LOCK_FILE = "telemetryd.lock"
HTTP_TOKEN = "http-token"
FORWARD_DIR = "forward"  # the forwarder's position and refused events (daemon/forward.py)
# The runtime directory's name under TELEMETRYD_HOME.
RUN_DIR = "run"

# sun_path is 108 bytes on Linux and 104 on macOS/BSD, including the final NUL.
SUN_PATH_MAX = 108 if sys.platform.startswith("linux") else 104


class Paths:
    """Every path telemetryd uses, resolved once."""

    __slots__ = ("config_dir", "runtime_dir", "state_dir")

    def __init__(self, runtime_dir: str, state_dir: str, config_dir: str) -> None:
        self.runtime_dir = runtime_dir
        self.state_dir = state_dir
        self.config_dir = config_dir

    @property
    def events_socket(self) -> str:
        return os.path.join(self.runtime_dir, EVENTS_SOCKET)

    @property
    def control_socket(self) -> str:
        return os.path.join(self.runtime_dir, CONTROL_SOCKET)

    @property
    def journal_dir(self) -> str:
        return os.path.join(self.state_dir, "journal")

    @property
    def spool_dir(self) -> str:
        return os.path.join(self.state_dir, "spool")

    @property
    def quarantine_dir(self) -> str:
        return os.path.join(self.state_dir, "quarantine")

    @property
    def database(self) -> str:
        return os.path.join(self.state_dir, DATABASE)

    @property
    def lock_file(self) -> str:
        return os.path.join(self.state_dir, LOCK_FILE)

    @property
    def config_file(self) -> str:
        return os.path.join(self.config_dir, CONFIG_FILE)

    @property
    def http_token_file(self) -> str:
        """The HTTP listener's bearer token (0600, made at the daemon's first start)."""
        return os.path.join(self.state_dir, HTTP_TOKEN)

    @property
    def forward_dir(self) -> str:
        return os.path.join(self.state_dir, FORWARD_DIR)

    def own_directories(self) -> list[str]:
        """The directories the daemon keeps, for nothing else to write in: the journal,
        spool, quarantine, the forwarder's, and the sockets'."""
        return [
            self.journal_dir,
            self.spool_dir,
            self.quarantine_dir,
            self.forward_dir,
            self.runtime_dir,
        ]

    def as_dict(self) -> dict[str, str]:
        return {
            "events_socket": self.events_socket,
            "control_socket": self.control_socket,
            "journal_dir": self.journal_dir,
            "spool_dir": self.spool_dir,
            "quarantine_dir": self.quarantine_dir,
            "database": self.database,
            "config_file": self.config_file,
            "lock_file": self.lock_file,
            "runtime_dir": self.runtime_dir,
            "state_dir": self.state_dir,
            "http_token_file": self.http_token_file,
        }


def _home(environ: dict[str, str] | os._Environ[str]) -> str | None:
    home = environ.get(ENV_HOME)
    return os.path.abspath(os.path.expanduser(home)) if home else None


def home_dir() -> str | None:
    """``TELEMETRYD_HOME`` as an absolute path, None when it is not set."""
    return _home(os.environ)


def _runtime_from_env(env: dict[str, str] | os._Environ[str]) -> str | None:
    """``$XDG_RUNTIME_DIR/telemetryd`` on Linux when the variable is set.

    Used as is (the daemon makes its own directory 0700 and checks its owner),
    so that `send`, which cannot afford to import platformdirs, and the daemon
    agree by construction.
    """
    runtime = env.get("XDG_RUNTIME_DIR")
    # (a relative one is no runtime directory, as the XDG spec and platformdirs say: a
    # hook run in each project's directory would look for the daemon in each)
    if runtime and os.path.isabs(runtime) and sys.platform.startswith("linux"):
        return os.path.join(runtime, APP)
    return None


def under_home(home: str) -> Paths:
    """The paths with everything under one directory, as ``TELEMETRYD_HOME`` puts them."""
    return Paths(os.path.join(home, RUN_DIR), home, home)


def resolve(environ: dict[str, str] | os._Environ[str] | None = None) -> Paths:
    """The paths for this user, honouring ``TELEMETRYD_HOME``."""
    env = os.environ if environ is None else environ
    home = _home(env)
    if home is not None:
        return under_home(home)
    import warnings

    import platformdirs

    runtime = _runtime_from_env(env)
    if runtime is None:
        with warnings.catch_warnings():
            # Its fallback (no XDG_RUNTIME_DIR, as under cron or su) is fine for us;
            # the warning would land in every hook's output.
            warnings.simplefilter("ignore")
            try:
                runtime = platformdirs.user_runtime_dir(APP)
            except OSError as exc:  # its /tmp/runtime-<uid> is another user's, say
                from telemetryd.errors import PathError

                raise PathError(
                    f"no directory for the sockets: {exc} (or set {ENV_HOME})"
                ) from None
    return Paths(runtime, platformdirs.user_state_dir(APP), platformdirs.user_config_dir(APP))


def spool_dir() -> str:
    """Where `send` and `hook` keep events the daemon did not take: the state directory's
    ``spool``, found without the runtime directory (which may be what failed)."""
    home = _home(os.environ)
    if home is not None:
        return under_home(home).spool_dir
    import platformdirs

    return os.path.join(platformdirs.user_state_dir(APP), "spool")


def events_socket_fast() -> str:
    """The events socket path, without importing platformdirs when the rule is simple."""
    home = _home(os.environ)
    if home is not None:
        return os.path.join(home, RUN_DIR, EVENTS_SOCKET)
    runtime = _runtime_from_env(os.environ)
    if runtime is not None:
        return os.path.join(runtime, EVENTS_SOCKET)
    return resolve().events_socket


def within(path: str, directories: list[str]) -> str | None:
    """The first of ``directories`` that ``path`` is, or is inside (links resolved);
    None when none."""
    real = os.path.realpath(path)
    for directory in directories:
        mine = os.path.realpath(directory)
        if real == mine or real.startswith(mine + os.sep):
            return directory
    return None


def check_socket_path(path: str) -> None:
    """Raise PathError when ``path`` does not fit in ``sun_path``."""
    size = len(os.fsencode(path))
    if size >= SUN_PATH_MAX:
        from telemetryd.errors import PathError

        raise PathError(
            f"socket path {path!r} is {size} bytes; sockets need fewer than {SUN_PATH_MAX} "
            f"(sun_path). Point {ENV_HOME} at a shorter directory."
        )


# Characters DuckDB gives a meaning in a file path: it reads ``?`` as the start of a URL
# query (its write-ahead log for ``/a?b/telemetry.duckdb`` becomes ``/a.wal?b/...``),
# ``?``, ``*`` and ``[`` as glob patterns where it reads journal files (``*`` would also
# match other directories), and ``\\`` as a directory separator.
DUCKDB_SPECIAL = "?*[\\"


def check_state_dir(where: Paths) -> None:
    """Raise PathError, naming the directory and the problem, when telemetryd cannot keep
    its state (and its sockets) where ``where`` says. Creates nothing."""
    from telemetryd.errors import PathError

    state = where.state_dir
    special = sorted({char for char in state if char in DUCKDB_SPECIAL})
    if special:
        raise PathError(
            f"state directory {state!r} contains {' '.join(special)}, which DuckDB reads as "
            f"part of a pattern or URL in file paths; choose a directory without "
            f"{' '.join(DUCKDB_SPECIAL)} (set {ENV_HOME})"
        )
    try:
        state.encode("utf-8")
    except UnicodeEncodeError:
        raise PathError(
            f"state directory {state!r} is not valid UTF-8, which DuckDB needs in file paths"
        ) from None
    for what, directory in (("state directory", state), ("socket directory", where.runtime_dir)):
        problem = _unusable(directory)
        if problem is not None:
            raise PathError(f"{what} {directory}: {problem}")


def _unusable(directory: str) -> str | None:
    """Why ``directory`` cannot be used (or created) by this user, or None."""
    path = directory
    while not os.path.lexists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    if not os.path.isdir(path):
        return f"{path} is not a directory"
    if not os.access(path, os.W_OK | os.X_OK):
        reason = "read-only" if _read_only(path) else "permission denied"
        where = "it" if path == directory else f"its parent {path}"
        return f"{where} is not writable ({reason})"
    return None


def _read_only(path: str) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except (AttributeError, OSError):
        return False
