"""Tee ``print`` output to ``OUTPUT_DIR/log.txt`` (Dassl's ``setup_logger``)."""

from __future__ import annotations

import os.path as osp
import sys
import time
from typing import TextIO

from .tools import mkdir_if_missing


class Logger:
    """Writes everything printed to the console and to a log file."""

    def __init__(self, fpath: str | None = None, console: TextIO | None = None) -> None:
        self.console = console or sys.stdout
        self.file = None
        if fpath is not None:
            mkdir_if_missing(osp.dirname(fpath))
            self.file = open(fpath, "w", buffering=1)  # line-buffered: a killed job's log ends at its last line

    def write(self, msg: str) -> None:
        self.console.write(msg)
        if self.file is not None:
            self.file.write(msg)

    def flush(self) -> None:
        self.console.flush()
        if self.file is not None:
            self.file.flush()

    def isatty(self) -> bool:
        return self.console.isatty()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


def setup_logger(output: str | None = None) -> None:
    if output is None:
        return
    fpath = output if output.endswith((".txt", ".log")) else osp.join(output, "log.txt")
    if osp.exists(fpath):
        # Never overwrite the log of an earlier run (e.g. before a resume).
        fpath += time.strftime("-%Y-%m-%d-%H-%M-%S")
    console = sys.stdout.console if isinstance(sys.stdout, Logger) else sys.stdout
    if isinstance(sys.stdout, Logger):
        sys.stdout.close()
    sys.stdout = Logger(fpath, console=console)
