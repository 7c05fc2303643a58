"""The command line's error contract, in one place.

- Bad input (`ScalelabError`, an argument the parser rejects, a path the file system refuses): one
  line on stderr naming what is wrong and where, exit code 2, no traceback.
- Anything else is a bug: one line on stderr naming the error and a log file that holds the
  traceback, exit code 1. The log goes to `$SCALELAB_LOG_DIR` (default: the temporary folder).
- Ctrl-C: "interrupted", exit code 130.
"""
from __future__ import annotations

import difflib
import errno
import os
import sys
import tempfile
import time
import traceback
from typing import Any, Callable

from scalelab.errors import ScalelabError

# File-system refusals that a user's path causes (not a full disk or a hardware fault).
_PATH_ERRNOS = {errno.ENOTDIR, errno.EISDIR, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOENT, errno.EEXIST,
                errno.ENAMETOOLONG, errno.ELOOP}


def say(line: str) -> None:
    print(" ".join(str(line).split()), file=sys.stderr)


def run(app: Callable[..., Any], argv: list[str] | None, prog: str = "scalelab") -> None:
    """Run the typer app under the contract; always ends in SystemExit."""
    import typer

    click = _click_exceptions()
    try:
        rv = app(args=argv, prog_name=prog, standalone_mode=False)
    except ScalelabError as e:
        say(f"error: {e}")
        raise SystemExit(e.exit_code) from None
    except click.NoArgsIsHelpError as e:  # `scalelab`, `scalelab tasks`: the help, as asked
        print(e.ctx.get_help() if e.ctx is not None else str(e))
        raise SystemExit(0) from None
    except click.UsageError as e:
        say(f"error: {usage_line(e)}")
        raise SystemExit(2) from None
    except click.ClickException as e:
        say(f"error: {e.format_message()}")
        raise SystemExit(e.exit_code) from None
    except (KeyboardInterrupt, typer.Abort):
        say("interrupted")
        raise SystemExit(130) from None
    except OSError as e:
        if e.errno in _PATH_ERRNOS and (e.filename is not None):
            say(f"error: {e.filename}: {e.strerror or e}")
            raise SystemExit(2) from None
        internal(e)
    except SystemExit:
        raise
    except Exception as e:  # noqa: BLE001 - the contract: one line and a log, never a bare traceback
        internal(e)
    raise SystemExit(rv if isinstance(rv, int) else 0)


def _click_exceptions() -> Any:
    """The click exceptions typer raises (typer vendors its own copy of click in recent releases)."""
    import importlib

    import typer

    return importlib.import_module(typer.BadParameter.__module__)


def usage_line(e: Any) -> str:
    """click's usage box as one line: the message, the commands where a name was not one, and where
    to look."""
    msg = " ".join(e.format_message().split())
    ctx = e.ctx
    path = ctx.command_path if ctx is not None else "scalelab"
    commands = getattr(ctx.command, "commands", None) if ctx is not None else None
    if msg.startswith("No such command") and commands and "Did you mean" not in msg:
        name = msg.split("'")[1] if msg.count("'") >= 2 else ""
        close = difflib.get_close_matches(name, list(commands), n=3, cutoff=0.5)
        msg = f"{msg.rstrip('.')}; " + (f"did you mean {', '.join(close)}?" if close else
                                         f"commands: {', '.join(commands)}")
    return f"{msg.rstrip('.') if not msg.endswith('?') else msg} (see `{path} --help`)"


def internal(e: BaseException) -> None:
    """A bug: one line with the log file's path; the traceback goes to the log. Exit code 1."""
    where = log_traceback(e)
    first = " ".join(str(e).split())[:300]
    say(f"internal error: {type(e).__name__}: {first} (a bug; traceback in {where})")
    raise SystemExit(1) from None


def log_traceback(e: BaseException) -> str:
    folder = os.environ.get("SCALELAB_LOG_DIR") or tempfile.gettempdir()
    text = f"scalelab {' '.join(sys.argv)}\n{time.strftime('%Y-%m-%dT%H:%M:%S%z')}\n" + "".join(
        traceback.format_exception(type(e), e, e.__traceback__))
    try:
        os.makedirs(folder, exist_ok=True)
        fd, path = tempfile.mkstemp(prefix="scalelab-error-", suffix=".log", dir=folder)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        return path
    except OSError:
        return "(no log: the log folder is not writable)"
