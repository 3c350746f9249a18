#!/usr/bin/env bash
# Domain generalisation: evaluate the ImageNet model of cross_dataset/train.sh on an ImageNet variant.
#
#   DATA=/path/to/datasets bash scripts/domain_generalization/test.sh DATASET SEED [KEY VALUE ...]
#
# DATASET: imagenetv2 imagenet_sketch imagenet_a imagenet_r (ImageNet-A/-R: their 200-class subsets); with
# XD_SOURCE=toy_net: toy_net_faded toy_net_sketch toy_net_clutter toy_net_pixel.
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"

ao_dataset_seed_args "$AO_DG_TARGETS" "domain generalisation" "$@"

ao_evaluate "$DATASET" all domain_generalization cross_dataset \
  "$(ao_run_dir cross_dataset train "$XD_SOURCE")" "$(ao_run_dir domain_generalization test "$DATASET")" \
  "$(ao_same_settings scripts/cross_dataset/train.sh "$SEED")"
