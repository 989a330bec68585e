"""The HTTP token file: made once, private, the same for every reader."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from telemetryd import token
from telemetryd.errors import PathError


def test_made_once_private_and_kept(tmp_path: Path) -> None:
    path = str(tmp_path / "state" / "http-token")
    assert token.read(path) is None
    first = token.load_or_create(path)
    assert len(first) == 43 and first.isascii()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert token.load_or_create(path) == first == token.read(path)
    assert os.listdir(tmp_path / "state") == ["http-token"]  # no temporary file left


def test_two_tokens_differ(tmp_path: Path) -> None:
    assert token.load_or_create(str(tmp_path / "a")) != token.load_or_create(str(tmp_path / "b"))


def test_an_empty_file_is_an_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "http-token"
    path.write_text("\n")
    with pytest.raises(PathError, match="http-token is empty"):
        token.load_or_create(str(path))


def test_a_token_past_the_limit_is_refused_not_cut(tmp_path: Path) -> None:
    """A 5,000-character token was read as its first 1,024: the whole value got 401."""
    path = tmp_path / "http-token"
    path.write_text("t" * token.MAX_CHARS + "\n")
    assert token.read(str(path)) == "t" * token.MAX_CHARS
    path.write_text("t" * 5000 + "\n")
    with pytest.raises(PathError, match="longer than 1024 characters"):
        token.read(str(path))
