"""Running ``train.py`` from tests: in-process on the current engine, or in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def dassl_available() -> bool:
    try:
        import dassl.engine  # noqa: F401
    except ImportError:
        return False
    return True


def subprocess_env(engine: str = "builtin", **extra: str) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    env["ANCHOROPT_ENGINE"] = engine
    env.update(extra)
    return env


def run_train_subprocess(
    args: list[str], engine: str = "builtin", timeout: float = 600, **env: str
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, os.path.join(REPO, "train.py"), *args],
        cwd=REPO,
        env=subprocess_env(engine, **env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_train(args: list[str], engine: str | None = None) -> int:
    """Run train.py's ``main`` in this process (on this process's engine, or when ``engine`` matches it),
    else in a subprocess on ``engine``."""
    from anchoropt.engine import ENGINE

    if engine is None or engine == ENGINE:
        from anchoropt.cli.train import main

        return main(args)
    proc = run_train_subprocess(args, engine=engine)
    if proc.returncode != 0:
        raise RuntimeError(f"train.py failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return 0
