"""``train.py``: CoOp's command line, on either engine.

    python train.py --root DATA --seed 1 --trainer CoOp_AnchorOPT \
        --dataset-config-file configs/datasets/imagenet.yaml \
        --config-file configs/trainers/CoOp_AnchorOPT/vit_b16.yaml \
        --output-dir output/... DATASET.NUM_SHOTS 16 DATASET.SUBSAMPLE_CLASSES base
"""

from __future__ import annotations

import argparse
import os
import sys

from anchoropt.cli.errors import run_cli
from anchoropt.cli.output_lock import OutputDirLock
from anchoropt.errors import ConfigError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Train or evaluate a prompt-learning trainer (CoOp's train.py interface).")
    p.add_argument("--root", type=str, default="", help="path to the datasets root")
    p.add_argument("--output-dir", type=str, default="", help="output directory")
    p.add_argument("--resume", type=str, default="", help="checkpoint directory to resume training from")
    p.add_argument("--seed", type=int, default=None, help="random seed (0 is a valid seed; negative = random)")
    p.add_argument("--source-domains", type=str, nargs="+", help="source domains for DA/DG")
    p.add_argument("--target-domains", type=str, nargs="+", help="target domains for DA/DG")
    p.add_argument("--transforms", type=str, nargs="+", help="data augmentation methods")
    p.add_argument(
        "--config-file",
        type=str,
        action="append",
        default=[],
        help="trainer config file; repeat to layer files (e.g. shared settings, then per-dataset ones)",
    )
    p.add_argument("--dataset-config-file", type=str, default="", help="dataset config file")
    p.add_argument("--trainer", type=str, default="", help="name of trainer")
    p.add_argument("--backbone", type=str, default="", help="name of the CLIP backbone (MODEL.BACKBONE.NAME)")
    p.add_argument("--head", type=str, default="", help="name of head")
    p.add_argument("--eval-only", action="store_true", help="evaluation only")
    p.add_argument("--model-dir", type=str, default="", help="load the model from this directory (eval-only)")
    p.add_argument("--load-epoch", type=int, default=None, help="load model.pth.tar-<epoch> (default: best)")
    p.add_argument("--no-train", action="store_true", help="build the trainer but do not train")
    p.add_argument("--plugin", action="append", default=[], help="extra module that registers trainers/datasets")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="when --output-dir holds a run with other settings, move it aside to <dir>.replaced-<n> (nothing is "
        "deleted) and start afresh; without it such a run stops train.py with the keys that differ",
    )
    p.add_argument(
        "--check-run",
        action="store_true",
        help="only say what --output-dir holds for this command: finished, interrupted or absent (a run with "
        "other settings is an error naming the keys that differ; with --overwrite it prints conflict)",
    )
    p.add_argument("--debug", action="store_true", help="show tracebacks for user errors")
    p.add_argument("opts", default=None, nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    return p


def overrides_from_args(args: argparse.Namespace) -> dict:
    pairs = {
        "DATASET.ROOT": args.root,
        "OUTPUT_DIR": args.output_dir,
        "RESUME": args.resume,
        "DATASET.SOURCE_DOMAINS": args.source_domains,
        "DATASET.TARGET_DOMAINS": args.target_domains,
        "INPUT.TRANSFORMS": args.transforms,
        "TRAINER.NAME": args.trainer,
        "MODEL.BACKBONE.NAME": args.backbone,
        "MODEL.HEAD.NAME": args.head,
    }
    out = {k: v for k, v in pairs.items() if v}
    out["RUN.CONFIG_FILE"] = ",".join(args.config_file)
    out["RUN.DATASET_CONFIG_FILE"] = args.dataset_config_file
    if args.seed is not None:
        out["SEED"] = args.seed
    return out


def setup_cfg(args: argparse.Namespace):
    from anchoropt.config import build_config

    return build_config(args.dataset_config_file, args.config_file, args.opts or [], overrides_from_args(args))


def _check_registered(cfg) -> None:
    from anchoropt.cli.run_start import did_you_mean
    from anchoropt.engine import DATASET_REGISTRY, TRAINER_REGISTRY

    for what, name, registry, flag in (
        ("trainer", cfg.TRAINER.NAME, TRAINER_REGISTRY, "--trainer"),
        ("dataset", cfg.DATASET.NAME, DATASET_REGISTRY, "DATASET.NAME (--dataset-config-file)"),
    ):
        known = sorted(registry.registered_names())
        if name not in known:
            hint = did_you_mean(name, known)
            raise ConfigError(f"Unknown {what} {name!r} ({flag}); {hint}registered: {', '.join(known)}")


def _configured(args: argparse.Namespace, draw_seed: bool = True):
    """The run's config, checked as far as it can be without data or a model, and the notes for its header.
    ``draw_seed``: a negative SEED becomes a drawn one (a run's); False leaves it as given (a status query)."""
    from anchoropt.cli.run_start import cap_workers, check_epochs, settle_seed
    from anchoropt.plugins import load_plugins

    load_plugins(args.plugin)
    cfg = setup_cfg(args)
    _check_registered(cfg)
    check_epochs(cfg, trains=not (args.eval_only or args.no_train))
    # Before the identity: a drawn seed is this run's seed.
    notes = [settle_seed(cfg) if draw_seed else "", cap_workers(cfg)]
    return cfg, notes


def main(argv: list[str] | None = None) -> int:
    from anchoropt.engine.builtin.logger import Logger

    args = build_parser().parse_args(argv)
    cfg, notes = _configured(args)
    if args.check_run:
        return _print_run_status(args, cfg)
    _move_aside_if_asked(args, cfg)  # before the lock: nothing in a refused or moved run is touched
    console = sys.stdout
    # Nothing is written into the output folder until the trainer is built (its inputs are then known to be
    # usable): the log is held in memory, and the lock creates a new folder only on commit.
    lock = OutputDirLock(cfg.OUTPUT_DIR)
    with lock:
        sys.stdout = Logger(console=console)
        try:
            return _run(args, cfg, lock, notes)
        finally:
            if sys.stdout is not console:  # the logger tees stdout into log.txt; undo for in-process callers
                logger, sys.stdout = sys.stdout, console
                logger.close()  # closes its file only, never the console


def _same_dir(a: str, b: str) -> bool:
    return bool(a and b) and os.path.realpath(a) == os.path.realpath(b)


def _evaluates_in_place(args: argparse.Namespace, cfg) -> bool:
    """``--eval-only --model-dir X --output-dir X``: the evaluation belongs to the training run in X."""
    return bool(args.eval_only) and _same_dir(args.model_dir, cfg.OUTPUT_DIR)


def _identity_inputs(args: argparse.Namespace, cfg):
    from anchoropt.config import get_default_config
    from anchoropt.runs.identity import flat_config, model_identity

    model = model_identity(args.model_dir, args.load_epoch) if args.eval_only and args.model_dir else None
    return model, flat_config(get_default_config())


def command_status(argv: list[str]):
    """What the output directory of the ``train.py`` command ``argv`` holds for it: a
    `anchoropt.runs.identity.RunStatus` (``.state``: finished / interrupted / absent / conflict, with
    ``.differences`` and ``.message()``), as ``train.py --check-run`` finds it, in this process (tools that
    check many protocol commands at once: sweeps). Raises `anchoropt.errors.UserError` where train.py would stop."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit:  # argparse has printed why
        raise ConfigError(f"train.py cannot parse the arguments {argv}") from None
    cfg, _ = _configured(args, draw_seed=False)
    return _status(args, cfg)


def _status(args: argparse.Namespace, cfg):
    from anchoropt.runs.identity import RunStatus, run_status

    if _evaluates_in_place(args, cfg):
        return RunStatus(cfg.OUTPUT_DIR, "absent")
    model, defaults = _identity_inputs(args, cfg)
    return run_status(cfg.OUTPUT_DIR, cfg, model, defaults)


def _print_run_status(args: argparse.Namespace, cfg) -> int:
    from anchoropt.runs.identity import RunConflict

    status = _status(args, cfg)
    for note in status.notes:
        print(f"note: {note}", file=sys.stderr)
    if status.conflict and not args.overwrite:
        raise RunConflict(status.message())
    print(status.state)
    return 0


def _move_aside_if_asked(args: argparse.Namespace, cfg) -> None:
    """A run of other settings in OUTPUT_DIR: an error naming the keys, or with --overwrite moved aside."""
    from anchoropt.runs.identity import RunConflict, format_differences, move_aside

    status = _status(args, cfg)
    for note in status.notes + _anchor_notes(cfg):
        print(f"note: {note}")
    if not status.conflict:
        return
    if not args.overwrite:
        raise RunConflict(status.message())
    probe = OutputDirLock(cfg.OUTPUT_DIR).acquire()  # no job may be writing there (writes nothing)
    try:
        moved = move_aside(cfg.OUTPUT_DIR)
    finally:
        probe.release()
    print(
        f"--overwrite: moved the earlier run ({format_differences(status.differences)}) to {moved}; "
        f"starting afresh in {cfg.OUTPUT_DIR}"
    )


def _anchor_notes(cfg) -> list[str]:
    from anchoropt.runs.identity import ANCHOR_PATH_KEY, run_identity

    path = run_identity(cfg)["config"].get(ANCHOR_PATH_KEY)
    if not path:
        return []
    from anchoropt.runs.provenance import anchor_note

    note = anchor_note(str(path))
    return [note] if note else []


def _claim_output_dir(args: argparse.Namespace, cfg) -> None:
    """Under the lock: check again (another job may have written meanwhile), then record this run's identity."""
    from anchoropt.runs.identity import check_run, run_identity, write_identity

    if _evaluates_in_place(args, cfg):
        return
    model, defaults = _identity_inputs(args, cfg)
    check_run(cfg.OUTPUT_DIR, cfg, model, defaults)
    write_identity(cfg.OUTPUT_DIR, run_identity(cfg, model))


def _run(args: argparse.Namespace, cfg, lock: OutputDirLock, notes: list[str]) -> int:
    from anchoropt.cli.run_start import header_lines
    from anchoropt.datasets.image_check import check_images
    from anchoropt.engine import TRAINER_REGISTRY, build_trainer, engine_description, set_random_seed
    from anchoropt.engine.builtin.logger import log_only

    mode = "Evaluating" if args.eval_only else "Training"
    for line in header_lines(cfg, TRAINER_REGISTRY.get(cfg.TRAINER.NAME), mode, notes):
        print(line)
    print(f"engine: {engine_description()}")
    log_only("** Arguments **")
    for key in sorted(vars(args)):
        log_only(f"{key}: {getattr(args, key)}")
    log_only("** Config **")
    log_only(str(cfg))
    set_random_seed(cfg.SEED)
    trainer = build_trainer(cfg)
    if not args.no_train:
        check_images(trainer.splits_read(training=not args.eval_only), cfg.DATASET.NAME)
    if args.eval_only:
        if args.model_dir:
            trainer.load_model(args.model_dir, epoch=args.load_epoch)
        elif trainer.get_model_names():
            raise ConfigError("--eval-only needs --model-dir (the output directory of a training run)")
    lock.commit()
    _claim_output_dir(args, cfg)
    sys.stdout.attach(os.path.join(cfg.OUTPUT_DIR, "log.txt"))
    if args.eval_only:
        trainer.test()
    elif not args.no_train:
        trainer.train()
    return 0


def console_main() -> None:
    sys.exit(run_cli(main)())
