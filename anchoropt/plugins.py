"""Importing the modules that register trainers, datasets and config nodes.

Registration happens when a module is imported (Dassl's pattern), so the
command line imports them explicitly before it builds the config. Extra
modules (a user's own trainer or dataset) come from ``--plugin`` or the
``ANCHOROPT_PLUGINS`` environment variable (comma-separated module names).
"""

from __future__ import annotations

import importlib
import os
from typing import Iterable

from anchoropt.errors import ConfigError

BUILTIN_PLUGINS = ("anchoropt.datasets", "trainers")
PLUGINS_ENV = "ANCHOROPT_PLUGINS"


def load_plugins(extra: Iterable[str] = ()) -> list[str]:
    """Import the project's trainers and datasets plus ``extra`` modules; return what was imported."""
    names = list(BUILTIN_PLUGINS)
    names += [m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(",") if m.strip()]
    names += [m for m in extra if m]
    for name in names:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name and not name.startswith(f"{e.name}."):
                raise
            raise ConfigError(f"Cannot import plugin module {name!r}: {e}") from None
    return names
