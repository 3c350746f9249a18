"""Safe loading of Dassl-format checkpoints such as the officially released anchors.

Those files pickle optimizer and LR-scheduler *objects* (e.g. the warm-up
scheduler's ``successor``, a ``CosineAnnealingLR`` that references the
``SGD`` optimizer), so ``torch.load(weights_only=True)`` refuses them, while
``weights_only=False`` would run whatever the pickle names. Here every global
the pickle asks for is checked against an allow-list:

- tensor/parameter rebuild functions and plain containers are allowed;
- classes from ``torch.optim`` and ``dassl.optim`` (and their submodules) are
  replaced by inert placeholders that accept and discard their state;
- anything else is refused with a CheckpointError before it is imported.
"""

import _compat_pickle
import collections
import pickle
import types
from pathlib import Path
from typing import Any

import torch
import torch._utils

from anchoropt.errors import CheckpointError

_ALLOWED = {
    ("builtins", "dict"): dict,
    ("builtins", "list"): list,
    ("builtins", "tuple"): tuple,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "int"): int,
    ("builtins", "float"): float,
    ("builtins", "complex"): complex,
    ("builtins", "bool"): bool,
    ("builtins", "str"): str,
    ("builtins", "bytes"): bytes,
    ("builtins", "bytearray"): bytearray,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("collections", "defaultdict"): collections.defaultdict,
    ("torch", "Size"): torch.Size,
    ("torch", "device"): torch.device,
    ("torch._utils", "_rebuild_tensor"): torch._utils._rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): torch._utils._rebuild_parameter_with_state,
}
_INERT_PACKAGES = ("torch.optim", "dassl.optim")


class InertPickledObject:
    """Stand-in for a pickled optimizer/scheduler object: keeps no state, runs no code."""

    __slots__ = ()
    pickled_from = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> "InertPickledObject":
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass

    # Pickle feeds list/dict-like payloads through these; discard them too.
    def append(self, item: Any) -> None:
        pass

    def extend(self, items: Any) -> None:
        pass

    def __setitem__(self, key: Any, value: Any) -> None:
        pass

    def __repr__(self) -> str:
        return f"<inert {self.pickled_from}>"


def _python3_name(module: str, name: str) -> tuple[str, str]:
    """Protocol-2 pickles use Python 2 module names (`__builtin__`, `commands`); map them
    as pickle's own loader would, so checks and messages see the real target."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[(module, name)]
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


def _is_inert_module(module: str) -> bool:
    return any(module == package or module.startswith(package + ".") for package in _INERT_PACKAGES)


def _restricted_pickle_module(path: Path) -> types.SimpleNamespace:
    """A stand-in for the `pickle` module whose Unpickler only resolves allowed globals."""
    placeholders: dict[tuple[str, str], type] = {}

    class RestrictedUnpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            module, name = _python3_name(module, name)
            allowed = _ALLOWED.get((module, name))
            if allowed is not None:
                return allowed
            if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
                return getattr(torch, name)
            if _is_inert_module(module):
                key = (module, name)
                if key not in placeholders:
                    placeholders[key] = type(
                        name, (InertPickledObject,), {"__slots__": (), "pickled_from": f"{module}.{name}"}
                    )
                return placeholders[key]
            raise CheckpointError(
                f"refusing to unpickle {module}.{name} from {path}: a checkpoint may only hold tensors, "
                "plain containers and optimizer/scheduler state"
            )

    def load(file: Any, **kwargs: Any) -> Any:
        return RestrictedUnpickler(file, **kwargs).load()

    return types.SimpleNamespace(__name__="anchoropt_restricted_pickle", Unpickler=RestrictedUnpickler, load=load)


def load_official_checkpoint(path: str | Path) -> Any:
    """Load a torch.save'd Dassl checkpoint onto the CPU without executing pickled code.

    Optimizer/scheduler objects come back as `InertPickledObject` instances.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", pickle_module=_restricted_pickle_module(path), weights_only=False)
    except CheckpointError:
        raise
    except Exception as error:  # torch/pickle raise many types for damaged files
        raise CheckpointError(f"cannot read checkpoint {path}: {type(error).__name__}: {error}") from error


def is_inert(value: Any) -> bool:
    """True for placeholders that stand in for refused-to-run pickled objects."""
    return isinstance(value, InertPickledObject)
