"""CoOp-compatible entry point: ``python train.py --root DATA --trainer CoOp ...`` (see README)."""

from anchoropt.cli.train import console_main

if __name__ == "__main__":
    console_main()
