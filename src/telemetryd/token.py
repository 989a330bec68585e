"""The HTTP listener's bearer token: one file, ``http-token`` in the state directory.

The daemon makes it at its first start (:func:`load_or_create`): 32 random bytes as
43 characters of URL-safe base64 and a newline, mode 0600, written to a temporary
name and linked into place so that a reader never sees half a token and two starters
agree on one. `telemetryctl otel env` and `hooks install --http` read it (and make it
the same way when the daemon has never run). To change the token, delete the file and
run `telemetryctl otel env` (or restart the daemon): a running daemon reads the file
again when a request's token is not the one it holds and the file has changed.
"""

from __future__ import annotations

import base64
import os
import secrets

from telemetryd.errors import PathError

_BYTES = 32
MAX_CHARS = 1024  # a token longer than this is refused (it was cut to this, silently)


def read(path: str) -> str | None:
    """The token in ``path``, or None when there is no file."""
    try:
        with open(path, encoding="ascii") as f:
            text = f.read(MAX_CHARS + 64).strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise PathError(f"cannot read the HTTP token {path}: {exc}") from None
    if not text:
        raise PathError(f"the HTTP token file {path} is empty; delete it to make a new one")
    if len(text) > MAX_CHARS:
        raise PathError(
            f"the HTTP token in {path} is longer than {MAX_CHARS} characters; "
            "delete the file to make a new one"
        )
    return text


def readable_by_others(path: str) -> bool:
    """Whether users other than the owner may read the token file (its mode)."""
    try:
        return bool(os.stat(path).st_mode & 0o044)
    except OSError:
        return False


def load_or_create(path: str) -> str:
    """The token in ``path``, made first when there is none (0600, all or nothing)."""
    found = read(path)
    if found is not None:
        return found
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    token = base64.urlsafe_b64encode(secrets.token_bytes(_BYTES)).rstrip(b"=").decode()
    temporary = f"{path}.{os.getpid()}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, f"{token}\n".encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(temporary, path)  # fails if another process made one meanwhile: use that
    except FileExistsError:
        pass
    finally:
        os.unlink(temporary)
    found = read(path)
    assert found is not None
    return found
