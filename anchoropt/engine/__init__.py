"""The engine seam: the one module trainers and datasets import Dassl names from.

With the real ``dassl`` package importable, its registries, config, data
manager, evaluator and trainer loop are used; otherwise (or with
``ANCHOROPT_ENGINE=builtin``) the built-in, Dassl-compatible core is.
``ANCHOROPT_ENGINE=dassl`` insists on the real package.

In both modes the checkpoint functions, the LR scheduler builder and
``write_json`` are this project's (Dassl's break on current PyTorch or are not
atomic), and ``TrainerX`` carries ``TrainerExtensions``.
"""

from __future__ import annotations

import importlib
import importlib.util
import os

from anchoropt.errors import UserError

ENGINE_ENV = "ANCHOROPT_ENGINE"
_CHOICES = ("auto", "builtin", "dassl")


class EngineError(UserError):
    """The requested engine cannot be used."""


def _select_engine() -> tuple[str, str]:
    wanted = os.environ.get(ENGINE_ENV, "auto").strip().lower() or "auto"
    if wanted not in _CHOICES:
        raise EngineError(f"{ENGINE_ENV}={wanted!r} is not one of {list(_CHOICES)}")
    if wanted == "builtin":
        return "builtin", f"forced by {ENGINE_ENV}=builtin"
    try:
        # Only this module of the seam imports dassl (it needs torch.utils.tensorboard, sklearn, ...).
        importlib.import_module("anchoropt.engine._dassl_names")
    except ImportError as e:
        if wanted == "dassl":
            raise EngineError(
                f"{ENGINE_ENV}=dassl but the dassl package cannot be imported ({e}). Install it from "
                "https://github.com/KaiyangZhou/Dassl.pytorch (see the README, 'Engine: real Dassl or the "
                f"built-in core') or unset {ENGINE_ENV}."
            ) from None
        if importlib.util.find_spec("dassl") is None:
            return "builtin", "dassl package not installed"
        return "builtin", f"dassl is installed but cannot be imported: {e}"
    return "dassl", "dassl package found" if wanted == "auto" else f"forced by {ENGINE_ENV}=dassl"


ENGINE, ENGINE_REASON = _select_engine()

if ENGINE == "dassl":
    from anchoropt.engine._dassl_names import *  # noqa: F401,F403
else:
    from anchoropt.engine._builtin_names import *  # noqa: F401,F403

from anchoropt.engine.builtin.tools import write_json  # noqa: E402, F401  (atomic in both modes)
from anchoropt.engine.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402, F401
from anchoropt.engine.lr_scheduler import build_lr_scheduler  # noqa: E402, F401


def engine_description() -> str:
    """One line for the start-up banner and the results file."""
    if ENGINE == "dassl":
        from anchoropt.engine._dassl_names import DASSL_VERSION

        return f"dassl ({DASSL_VERSION}; {ENGINE_REASON})"
    return f"builtin ({ENGINE_REASON})"
