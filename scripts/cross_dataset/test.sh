#!/usr/bin/env bash
# Cross-dataset, step 2: evaluate the ImageNet (XD_SOURCE) model of cross_dataset/train.sh on all classes of DATASET.
#
#   DATA=/path/to/datasets bash scripts/cross_dataset/test.sh DATASET SEED [KEY VALUE ...]
#
# DATASET: caltech101 oxford_pets stanford_cars oxford_flowers food101 fgvc_aircraft sun397 dtd eurosat ucf101.
# AnchorOPT models carry their (ImageNet) anchor, so the source anchor is used on the target classes.
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"

ao_dataset_seed_args "$AO_XD_TARGETS" "cross-dataset evaluation" "$@"

ao_evaluate "$DATASET" all cross_dataset cross_dataset \
  "$(ao_run_dir cross_dataset train "$XD_SOURCE")" "$(ao_run_dir cross_dataset test "$DATASET")" \
  "$(ao_same_settings scripts/cross_dataset/train.sh "$SEED")"
