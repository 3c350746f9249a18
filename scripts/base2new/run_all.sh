#!/usr/bin/env bash
# Base-to-novel for one trainer: train.sh then test.sh for every dataset and seed, then the table.
#
#   DATA=/path/to/datasets TRAINER=CoOp bash scripts/base2new/run_all.sh [KEY VALUE ...]
#
# DATASETS (default: the 11 datasets) and SEEDS (default "1 2 3") choose what runs; everything else as in
# train.sh. Runs already finished are skipped, so rerunning after a failure continues where it stopped.
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"

DATASETS=${DATASETS:-$AO_BASE2NEW_DATASETS}
SEEDS=${SEEDS:-1 2 3}
ao_parse_extra "$@"
ao_require_data
for dataset in $DATASETS; do
  ao_require_dataset "$dataset" "$AO_BASE2NEW_DATASETS $AO_TOYWORLD_DATASETS" "base-to-novel"
done
for seed in $SEEDS; do ao_require_seed "$seed"; done

here=$(dirname "${BASH_SOURCE[0]}")
for dataset in $DATASETS; do
  for seed in $SEEDS; do
    bash "$here/train.sh" "$dataset" "$seed" "$@"
    bash "$here/test.sh" "$dataset" "$seed" "$@"
  done
done
[ "$DRY_RUN" = 1 ] || "$PYTHON" -m anchoropt.cli.results "$OUTPUT/base2new" --seeds $SEEDS
