#!/usr/bin/env bash
# Base-to-novel, step 1: train on the base classes of DATASET with SEED and test on them.
#
#   DATA=/path/to/datasets bash scripts/base2new/train.sh DATASET SEED [KEY VALUE ...]
#
# DATASET: imagenet caltech101 oxford_pets stanford_cars oxford_flowers food101 fgvc_aircraft sun397 dtd
# eurosat ucf101; the toy world: toy_net toy_patterns toy_objects toy_shapes. TRAINER (default CoOp_AnchorOPT),
# OUTPUT, CFG, SHOTS, STAGE1_OPTS, PYTHON, DRY_RUN: see scripts/common.sh. For a *_AnchorOPT trainer Stage I
# (the anchor) runs first when its anchor does not exist.
# Extra KEY VALUE options go to every train.py call; OPTIM.* ones only to Stage II (Stage I: STAGE1_OPTS).
# A finished run is not redone; an unfinished one resumes from its checkpoints.
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"

ao_dataset_seed_args "$AO_BASE2NEW_DATASETS $AO_TOYWORLD_DATASETS" "base-to-novel" "$@"

ao_train "$DATASET" base base2new "base2new/$DATASET" \
  "$(ao_run_dir base2new train_base "$DATASET")" "$(ao_anchor_dir base2new train_base "$DATASET")"
