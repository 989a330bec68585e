"""telemetryd's hook entries in Claude Code's ``settings.json``: merged in, taken out.

Claude Code reads hooks from ``~/.claude/settings.json`` (``$CLAUDE_CONFIG_DIR``
when set), a project's ``.claude/settings.json`` and ``.claude/settings.local.json``::

    {"hooks": {"PreToolUse": [{"matcher": "*",
                               "hooks": [{"type": "command", "command": "...", "timeout": 10}]}]}}

Each event maps to a list of matcher groups, each with a list of handlers. Ours
is one group per event whose only handler runs ``telemetryctl hook claude-code``;
a handler is ours when its command runs that (whatever the path to telemetryctl).
:func:`install` replaces our handlers and leaves every other key, group and
handler as it was; :func:`uninstall` removes ours and the groups and event lists
that only they filled. Both are idempotent. A file that changes is first copied
to ``settings.json.bak-<UTC time>``, then replaced atomically (same mode).

With an :class:`HttpHook`, every event that allows it gets an ``http`` handler
instead, which posts the payload to the daemon's ``/v1/hooks/claude-code``::

    {"type": "http", "url": "http://127.0.0.1:4318/v1/hooks/claude-code",
     "headers": {"Authorization": "Bearer $TELEMETRYD_HTTP_TOKEN"},
     "allowedEnvVars": ["TELEMETRYD_HTTP_TOKEN"], "timeout": 10}

SessionStart (and Setup) allow command hooks only, so they keep ours. Claude Code
fills ``$TELEMETRYD_HTTP_TOKEN`` from its environment, where the ``env`` block of
its settings puts it: install writes the token there when asked to (the user's or
a project's uncommitted settings.local.json) and then makes the file 0600; an http
handler is ours when its URL ends in ``/v1/hooks/claude-code``. Uninstall (and an
install of command hooks) takes the ``env`` entry out again.

With a :class:`StatusLine`, install also sets the status line (one per settings
file) to ``telemetryctl statusline``::

    {"statusLine": {"type": "command", "command": ".../telemetryctl statusline", "padding": 0}}

A status line that is not ours (its command does not run ``telemetryctl statusline``)
is kept unless the StatusLine says to replace it; uninstall removes the status line
only when it is ours.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shlex
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from telemetryd.errors import TelemetryError
from telemetryd.paths import ENV_HOME

# Our handler's command: telemetryctl, these words, then only the hook's own options.
HOOK_WORDS = ["hook", "claude-code"]
HOOK_FLAGS = ("--context", "--prompt-text")
HOOK_VALUE_OPTIONS = ("--timeout", "--socket")
# Every hook event telemetryd records. Tool events take a matcher; "*" is all tools.
EVENTS = (
    "SessionStart",
    "SessionEnd",
    "UserPromptSubmit",
    "PreToolUse",
    "PostToolUse",
    "PostToolUseFailure",
    "SubagentStart",
    "SubagentStop",
    "Stop",
    "StopFailure",
    "PreCompact",
    "PostCompact",
    "Notification",
)
MATCHER_EVENTS = ("PreToolUse", "PostToolUse", "PostToolUseFailure")
# Events whose hooks can only be commands (or MCP tools): no http handler there.
COMMAND_ONLY_EVENTS = ("SessionStart", "Setup")
TIMEOUT_S = 10  # Claude Code's own cap on one handler; the hook gives up after ~1 s anyway
HTTP_PATH = "/v1/hooks/claude-code"  # the daemon's endpoint for http hooks
TOKEN_ENV = "TELEMETRYD_HTTP_TOKEN"  # the variable the http hooks' header reads
STATUSLINE_KEY = "statusLine"
STATUSLINE_MARKER = "statusline"


@dataclass(frozen=True)
class HttpHook:
    """Install http handlers posting to ``url``; ``token``, when given, goes into the
    settings' ``env`` block as TELEMETRYD_HTTP_TOKEN (and the file becomes 0600)."""

    url: str
    token: str | None = None


@dataclass(frozen=True)
class StatusLine:
    """Install ``command`` as the status line; ``replace`` one that is not ours."""

    command: str
    replace: bool = False


class SettingsError(TelemetryError):
    """A settings.json cannot be read or written."""


def user_settings(environ: dict[str, str] | None = None) -> Path:
    """``$CLAUDE_CONFIG_DIR/settings.json`` (its first entry), else ``~/.claude/settings.json``."""
    env = os.environ if environ is None else environ
    config = (env.get("CLAUDE_CONFIG_DIR") or "").split(",")[0].strip()
    base = Path(config).expanduser() if config else Path(env.get("HOME") or Path.home()) / ".claude"
    return base / "settings.json"


def project_settings(directory: str | Path, local: bool = False) -> Path:
    """A project's ``.claude/settings.json`` (``settings.local.json`` with ``local``)."""
    name = "settings.local.json" if local else "settings.json"
    return Path(directory).expanduser() / ".claude" / name


def telemetryctl_path() -> str:
    """The telemetryctl to put in the command: this one when it is a file, else from PATH."""
    argv0 = Path(sys.argv[0])
    if argv0.name == "telemetryctl" and argv0.exists():
        return str(argv0.resolve())
    found = shutil.which("telemetryctl")
    return found or "telemetryctl"


def _with_home(parts: list[str], home: str | None) -> str:
    """``parts`` as a shell command, run with ``TELEMETRYD_HOME=home`` when ``home`` is
    given: Claude Code runs its hooks in its own environment, where a home set only
    in the installing shell is not (the events would go to the default place)."""
    joined = shlex.join(parts)
    return joined if home is None else f"{ENV_HOME}={shlex.quote(home)} {joined}"


def command(
    executable: str | None = None,
    *,
    context: bool = False,
    prompt_text: bool = False,
    home: str | None = None,
) -> str:
    """The shell command of our handler (``home``: the TELEMETRYD_HOME it runs with)."""
    parts = [executable or telemetryctl_path(), "hook", "claude-code"]
    if context:
        parts.append("--context")
    if prompt_text:
        parts.append("--prompt-text")
    return _with_home(parts, home)


def statusline_command(executable: str | None = None, home: str | None = None) -> str:
    """The shell command of our status line (``home``: as :func:`command`'s)."""
    return _with_home([executable or telemetryctl_path(), STATUSLINE_MARKER], home)


def statusline_entry(handler_command: str) -> dict[str, Any]:
    return {"type": "command", "command": handler_command, "padding": 0}


def is_our_statusline(entry: Any) -> bool:
    if not isinstance(entry, dict) or not isinstance(entry.get("command"), str):
        return False
    try:
        words = _without_variables(shlex.split(entry["command"]))
    except ValueError:
        return False
    return (
        len(words) >= 2 and Path(words[0]).name == "telemetryctl" and words[1] == STATUSLINE_MARKER
    )


def _without_variables(words: list[str]) -> list[str]:
    """A command's words after the variables set before it (``NAME=value``)."""
    while words and "=" in words[0] and words[0].partition("=")[0].isidentifier():
        words = words[1:]
    return words


def is_ours(handler: Any) -> bool:
    if not isinstance(handler, dict):
        return False
    if handler.get("type") == "http":
        url = handler.get("url")
        return isinstance(url, str) and url.rstrip("/").endswith(HTTP_PATH)
    command = handler.get("command")
    return isinstance(command, str) and _runs_our_hook(command)


def _runs_our_hook(command: str) -> bool:
    """Whether ``command`` runs `telemetryctl hook claude-code` and nothing else: the
    hook's own options after it, variables set before it (``NAME=value``). A command
    that does more, say a pipe into our hook, is the user's and stays."""
    try:
        words = _without_variables(shlex.split(command))
    except ValueError:
        return False
    if len(words) < 3 or Path(words[0]).name != "telemetryctl" or words[1:3] != HOOK_WORDS:
        return False
    rest = iter(words[3:])
    for word in rest:
        name, eq, _ = word.partition("=")
        if name in HOOK_FLAGS and not eq:
            continue
        if name in HOOK_VALUE_OPTIONS and (eq or next(rest, None) is not None):
            continue
        return False
    return True


def http_handler(url: str) -> dict[str, Any]:
    """Our http handler: the payload posted to ``url`` with the token from the environment."""
    return {
        "type": "http",
        "url": url,
        "headers": {"Authorization": f"Bearer ${TOKEN_ENV}"},
        "allowedEnvVars": [TOKEN_ENV],
        "timeout": TIMEOUT_S,
    }


def load(path: Path) -> dict[str, Any]:
    """The settings in ``path``; ``{}`` when it does not exist."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise SettingsError(f"cannot read {path}: {exc.strerror}") from None
    if not text.strip():
        return {}
    try:
        settings = json.loads(text, parse_float=_finite, parse_constant=_not_a_number)
    except json.JSONDecodeError as exc:
        raise SettingsError(f"{path} is not valid JSON ({exc}); left unchanged") from None
    except _NotFinite as exc:  # (written back, it would be Infinity: not JSON)
        raise SettingsError(
            f"{path} holds the number {exc}, which JSON cannot hold; left unchanged"
        ) from None
    if not isinstance(settings, dict):
        raise SettingsError(f"{path} does not hold a JSON object; left unchanged")
    return settings


class _NotFinite(ValueError):
    """A number that is no JSON number once read (1e999, NaN, Infinity)."""


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NotFinite(text)
    return value


def _not_a_number(text: str) -> float:
    raise _NotFinite(text)


def _hooks(settings: dict[str, Any], path: Path) -> dict[str, Any]:
    hooks = settings.get("hooks")
    if hooks is None:
        return {}
    if not isinstance(hooks, dict):
        raise SettingsError(f"{path}: `hooks` is not an object; left unchanged")
    return hooks


def _strip(groups: list[Any]) -> list[Any]:
    """``groups`` without our handlers, and without the groups only they filled."""
    kept = []
    for group in groups:
        handlers = group.get("hooks") if isinstance(group, dict) else None
        if not isinstance(handlers, list) or not any(is_ours(h) for h in handlers):
            kept.append(group)
            continue
        others = [h for h in handlers if not is_ours(h)]
        if others:
            kept.append({**group, "hooks": others})
    return kept


def _ours_count(groups: list[Any]) -> int:
    return sum(
        is_ours(h)
        for g in groups
        if isinstance(g, dict) and isinstance(g.get("hooks"), list)
        for h in g["hooks"]
    )


def without_ours(settings: dict[str, Any], path: Path = Path("settings.json")) -> dict[str, Any]:
    """A copy of ``settings`` without our handlers (and what only they filled)."""
    out: dict[str, Any] = json.loads(json.dumps(settings))
    hooks = _hooks(out, path)
    for event in list(hooks):
        if isinstance(hooks[event], list) and _ours_count(hooks[event]):
            kept = _strip(hooks[event])
            if kept:
                hooks[event] = kept
            else:
                del hooks[event]
    if "hooks" in out and not hooks:
        del out["hooks"]
    _set_token(out, None, path)
    if is_our_statusline(out.get(STATUSLINE_KEY)):
        del out[STATUSLINE_KEY]
    return out


def _set_token(settings: dict[str, Any], value: str | None, path: Path) -> None:
    """Put ``value`` into ``settings["env"]`` as TELEMETRYD_HTTP_TOKEN, or take it out
    (and an ``env`` that only it filled)."""
    env = settings.get("env")
    if env is not None and not isinstance(env, dict):
        raise SettingsError(f"{path}: `env` is not an object; left unchanged")
    if value is not None:
        settings["env"] = {**(env or {}), TOKEN_ENV: value}
    elif env is not None and TOKEN_ENV in env:
        del env[TOKEN_ENV]
        if not env:
            del settings["env"]


def _group(event: str, handler_command: str, http: HttpHook | None = None) -> dict[str, Any]:
    group: dict[str, Any] = {}
    if event in MATCHER_EVENTS:
        group["matcher"] = "*"
    if http is not None and event not in COMMAND_ONLY_EVENTS:
        group["hooks"] = [http_handler(http.url)]
    else:
        group["hooks"] = [{"type": "command", "command": handler_command, "timeout": TIMEOUT_S}]
    return group


def with_ours(
    settings: dict[str, Any],
    handler_command: str,
    path: Path = Path("settings.json"),
    http: HttpHook | None = None,
) -> dict[str, Any]:
    """A copy of ``settings`` with exactly one handler of ours per event (an http one
    where ``http`` asks for it and the event allows it); an event that already has
    exactly that is left as it is (in place)."""
    out: dict[str, Any] = json.loads(json.dumps(settings))
    _set_token(out, http.token if http is not None else None, path)
    hooks = _hooks(out, path)
    out["hooks"] = hooks
    for event in list(hooks):
        if event not in EVENTS and isinstance(hooks[event], list) and _ours_count(hooks[event]):
            hooks[event] = _strip(hooks[event])  # from an install with more events
            if not hooks[event]:
                del hooks[event]
    for event in EVENTS:
        groups = hooks.get(event, [])
        if not isinstance(groups, list):
            raise SettingsError(f"{path}: `hooks.{event}` is not a list; left unchanged")
        desired = _group(event, handler_command, http)
        if _ours_count(groups) == 1 and desired in groups:
            continue
        hooks[event] = [*_strip(groups), desired]
    return out


def other_statusline(settings: dict[str, Any]) -> Any:
    """The settings' status line when there is one that is not ours, else None."""
    entry = settings.get(STATUSLINE_KEY)
    return None if entry is None or is_our_statusline(entry) else entry


def with_statusline(settings: dict[str, Any], statusline: StatusLine) -> dict[str, Any]:
    """``settings`` with our status line, unless another one is there and is not to be
    replaced (then unchanged); in place."""
    entry = settings.get(STATUSLINE_KEY)
    desired = statusline_entry(statusline.command)
    if entry == desired or (other_statusline(settings) is not None and not statusline.replace):
        return settings
    if is_our_statusline(entry) and isinstance(entry, dict):
        desired = {**entry, **desired, "padding": entry.get("padding", 0)}
    settings[STATUSLINE_KEY] = desired
    return settings


def render(settings: dict[str, Any]) -> str:
    return json.dumps(settings, indent=2, ensure_ascii=False) + "\n"


def _encoded(settings: dict[str, Any], path: Path) -> bytes:
    try:
        return render(settings).encode("utf-8")
    except UnicodeEncodeError:
        raise SettingsError(
            f"{path} holds text that is not Unicode (an unpaired surrogate escape, such as "
            "\\ud800); left unchanged"
        ) from None


def write(path: Path, settings: dict[str, Any], *, private: bool = False) -> Path | None:
    """Replace ``path`` with ``settings`` (atomically, same mode, 0600 with ``private``);
    the backup made, if any (a copy of the old file, with its mode, next to ``path``).

    A ``path`` that is a symbolic link (a dotfiles manager's) stays one: the file it
    points to is replaced. A file without write permission is left alone: its owner
    made it read-only."""
    data = _encoded(settings, path)
    target = Path(os.path.realpath(path)) if path.is_symlink() else path
    backup = None
    mode = 0o600
    if target.exists():
        current = target.stat().st_mode & 0o777
        if not current & 0o222:
            raise SettingsError(
                f"{path} is read-only (mode {current:04o}); left unchanged: make it "
                "writable to change it"
            )
        mode = 0o600 if private else current
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        backup = path.with_name(f"{path.name}.bak-{stamp}")
        n = 1
        while backup.exists():
            backup = path.with_name(f"{path.name}.bak-{stamp}-{n}")
            n += 1
        try:
            shutil.copy2(target, backup)
        except OSError as exc:
            raise SettingsError(
                f"cannot back up {path} to {backup}: {exc.strerror or exc}; left unchanged"
            ) from None
    temp = target.with_name(f".{target.name}.telemetryd-{os.getpid()}.tmp")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(temp, mode)
        os.replace(temp, target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            temp.unlink()  # (it may hold the token)
        raise SettingsError(f"cannot write {path}: {exc.strerror or exc}") from None
    return backup


class Change:
    """What install/uninstall did (or would do, with ``dry_run``)."""

    def __init__(
        self,
        path: Path,
        before: str,
        after: str,
        backup: Path | None,
        *,
        secrets: tuple[str, ...] = (),
        private: bool = False,
    ) -> None:
        self.path = path
        self.before = before
        self.after = after
        self.backup = backup
        self.secrets = secrets  # tokens diff() does not show
        self.private = private  # the file holds the token: it is (or would be) 0600
        self.kept_statusline: Any = None  # a status line not ours, kept as it was
        self.restored_statusline = False  # uninstall put back the one install replaced

    @property
    def changed(self) -> bool:
        return self.before != self.after

    def diff(self) -> str:
        import difflib

        text = "".join(
            difflib.unified_diff(
                self.before.splitlines(keepends=True),
                self.after.splitlines(keepends=True),
                f"{self.path} (before)",
                f"{self.path} (after)",
            )
        )
        for secret in self.secrets:
            text = text.replace(secret, "<the token>")
        return text


def _token_in(settings: dict[str, Any]) -> str | None:
    env = settings.get("env")
    value = env.get(TOKEN_ENV) if isinstance(env, dict) else None
    return value if isinstance(value, str) and value else None


def _apply(path: Path, new: dict[str, Any], dry_run: bool) -> Change:
    before = path.read_text(encoding="utf-8") if path.exists() else ""
    old = load(path)
    token = _token_in(new)
    private = token is not None
    secrets = tuple(t for t in dict.fromkeys((_token_in(old), token)) if t)
    if new == old:
        if private and not dry_run and path.exists():
            os.chmod(path, 0o600)  # the token is in it: whatever its mode was, now 0600
        return Change(path, before, before, None, secrets=secrets, private=private)
    after = _encoded(new, path).decode("utf-8")
    backup = None if dry_run else write(path, new, private=private)
    return Change(path, before, after, backup, secrets=secrets, private=private)


def install(
    path: Path,
    handler_command: str,
    *,
    http: HttpHook | None = None,
    statusline: StatusLine | None = None,
    dry_run: bool = False,
) -> Change:
    """Merge our handlers into the settings at ``path`` (http ones with ``http``), and
    our status line with ``statusline``. The Change's ``kept_statusline`` is another
    status line that was kept (not replaced)."""
    new = with_ours(load(path), handler_command, path, http)
    kept = None
    if statusline is not None:
        new = with_statusline(new, statusline)
        if not statusline.replace:
            kept = other_statusline(new)
    change = _apply(path, new, dry_run)
    change.kept_statusline = kept
    return change


def uninstall(path: Path, *, dry_run: bool = False, restore: Any = None) -> Change:
    """Take our handlers out of the settings at ``path``; ``restore``: the status line
    our install replaced, put back where ours was."""
    if not path.exists():
        return Change(path, "", "", None)
    settings = load(path)
    ours = is_our_statusline(settings.get(STATUSLINE_KEY))
    out = without_ours(settings, path)
    restored = ours and restore is not None and STATUSLINE_KEY not in out
    if restored:
        out[STATUSLINE_KEY] = restore
    change = _apply(path, out, dry_run)
    change.restored_statusline = restored
    return change


def installed(path: Path) -> list[str]:
    """The events that run our hook in the settings at ``path``."""
    settings = load(path)
    hooks = _hooks(settings, path)
    statusline = [STATUSLINE_KEY] if is_our_statusline(settings.get(STATUSLINE_KEY)) else []
    return statusline + [
        event
        for event, groups in hooks.items()
        if isinstance(groups, list)
        and any(
            isinstance(g, dict)
            and isinstance(g.get("hooks"), list)
            and any(map(is_ours, g["hooks"]))
            for g in groups
        )
    ]
