#!/usr/bin/env bash
# Cross-dataset (and domain generalisation), step 1: train on ImageNet (XD_SOURCE), all classes, with SEED.
#
#   DATA=/path/to/datasets bash scripts/cross_dataset/train.sh SEED [KEY VALUE ...]
#
# Uses configs/trainers/$TRAINER/$CFG.yaml plus configs/trainers/$TRAINER/cross_dataset.yaml when it exists;
# for a *_AnchorOPT trainer Stage I learns the ImageNet anchor first (AnchorOPT_StageI/cross_dataset.yaml).
# Environment and extra options as in scripts/base2new/train.sh.
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"

(( $# >= 1 )) || ao_die "usage: $AO_SCRIPT SEED [KEY VALUE ...]"
SEED=$1
shift
ao_require_seed "$SEED"
ao_parse_extra "$@"
ao_require_data

ao_train "$XD_SOURCE" all cross_dataset cross_dataset \
  "$(ao_run_dir cross_dataset train "$XD_SOURCE")" "$(ao_anchor_dir cross_dataset train "$XD_SOURCE")"
