"""Turning user errors into one line on stderr (tracebacks only with --debug)."""

from __future__ import annotations

import functools
import os
import sys
import traceback
import warnings
from typing import Callable

from anchoropt.errors import UserError

DEBUG_ENV = "ANCHOROPT_DEBUG"


def user_error_message(exc: BaseException) -> str:
    """The user-facing text of ``exc``, on one line.

    A ``UserError`` raised inside a DataLoader worker is re-raised by torch with
    the worker's traceback folded into the message; keep only its last line.
    Other line breaks (e.g. from a library's message quoted in ours) become spaces.
    """
    text = str(exc)
    if text.startswith("Caught ") and "Original Traceback" in text:
        last = text.strip().splitlines()[-1]
        _, _, rest = last.partition(": ")
        text = rest or last
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as ``warning: <message>`` (one line, no source excerpt): they are advice to users."""
    stream = file or sys.stderr
    try:
        stream.write(f"warning: {user_error_message(message) if isinstance(message, Warning) else message}\n")
    except (OSError, ValueError):
        pass


def run_cli(main: Callable[[list[str] | None], int | None]) -> Callable[[list[str] | None], int]:
    """Wrap a console ``main``: a ``UserError`` becomes ``error: <message>`` and exit code 2."""

    @functools.wraps(main)
    def wrapper(argv: list[str] | None = None) -> int:
        args = sys.argv[1:] if argv is None else list(argv)
        # The clip package imports pkg_resources, whose deprecation warning would otherwise
        # precede every command's output; it is not actionable for users.
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
        debug = "--debug" in args or os.environ.get(DEBUG_ENV, "") not in ("", "0")
        shown = warnings.showwarning
        if not debug:
            warnings.showwarning = _one_line_warning
        try:
            return main(args) or 0
        except UserError as e:
            if debug:
                raise
            sys.stdout.flush()
            print(f"error: {user_error_message(e)}", file=sys.stderr)
            # An error re-raised from a DataLoader worker keeps the loader's iterator in a reference cycle;
            # freeing the frames now stops its workers at once instead of at a later garbage collection,
            # which takes seconds (matters to callers that run main() in-process).
            traceback.clear_frames(e.__traceback__)
            return 2
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
        finally:
            warnings.showwarning = shown

    return wrapper
