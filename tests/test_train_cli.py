"""train.py's command line: CoOp's flags, clear one-line errors, one job per output directory."""

import os
import subprocess
import sys
import time

import pytest

from anchoropt.cli.output_lock import OutputDirBusy, OutputDirLock
from anchoropt.cli.train import build_parser, main, setup_cfg
from anchoropt.errors import ConfigError
from tests.support.engine_runs import REPO, run_train_subprocess, subprocess_env

TOY = ["--plugin", "tests.support.toy_plugin"]


def test_seed_zero_is_honoured_and_flags_map_to_config():
    args = build_parser().parse_args(
        [
            "--seed",
            "0",
            "--root",
            "/d",
            "--trainer",
            "CoOp",
            "--backbone",
            "ViT-B/32",
            "--output-dir",
            "/o",
            "DATASET.NUM_SHOTS",
            "4",
        ]
    )
    cfg = setup_cfg(args)
    assert (
        cfg.SEED,
        cfg.DATASET.ROOT,
        cfg.TRAINER.NAME,
        cfg.MODEL.BACKBONE.NAME,
        cfg.OUTPUT_DIR,
        cfg.DATASET.NUM_SHOTS,
    ) == (0, "/d", "CoOp", "ViT-B/32", "/o", 4)
    assert setup_cfg(build_parser().parse_args([])).SEED == -1


def test_unknown_trainer_lists_registered_ones(tmp_path):
    with pytest.raises(ConfigError, match=r"Unknown trainer 'Nope' \(--trainer\); registered: .*ToyLinear"):
        main(TOY + ["--trainer", "Nope", "--output-dir", str(tmp_path), "DATASET.NAME", "ToyColors"])


def test_unknown_dataset_lists_registered_ones(tmp_path):
    with pytest.raises(ConfigError, match=r"Unknown dataset 'Nope'.*registered: .*ToyColors"):
        main(TOY + ["--trainer", "ToyLinear", "--output-dir", str(tmp_path), "DATASET.NAME", "Nope"])


def test_unknown_config_key_is_named(tmp_path):
    with pytest.raises(ConfigError, match="TRAINER.TOY.HIDEN"):
        main(TOY + ["--trainer", "ToyLinear", "TRAINER.TOY.HIDEN", "3"])


def test_user_error_is_one_line_without_traceback(tmp_path):
    proc = run_train_subprocess(TOY + ["--trainer", "Nope", "--output-dir", str(tmp_path)])
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: Unknown trainer 'Nope'")
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    debug = run_train_subprocess(TOY + ["--debug", "--trainer", "Nope", "--output-dir", str(tmp_path)])
    assert "Traceback" in debug.stderr


def test_second_job_on_same_output_dir_is_refused(tmp_path):
    with OutputDirLock(str(tmp_path)) as lock:
        lock.commit()
        with pytest.raises(OutputDirBusy, match=f"pid {os.getpid()}"):
            OutputDirLock(str(tmp_path)).acquire()
    OutputDirLock(str(tmp_path)).acquire().release()  # free again once released


def test_lock_of_a_killed_job_does_not_block(tmp_path):
    code = (
        "import sys, time; from anchoropt.cli.output_lock import OutputDirLock; "
        f"lock = OutputDirLock({str(tmp_path)!r}).acquire(); lock.commit(); print('locked', flush=True); "
        "time.sleep(60)"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code], cwd=REPO, env=subprocess_env(), stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(OutputDirBusy, match=f"pid {holder.pid}"):
            OutputDirLock(str(tmp_path)).acquire()
    finally:
        holder.kill()
        holder.wait()
    time.sleep(0.1)
    OutputDirLock(str(tmp_path)).acquire().release()
