#!/usr/bin/env bash
# Domain generalisation: evaluate the ImageNet model of cross_dataset/train.sh on an ImageNet variant.
#
#   DATA=/path/to/datasets bash scripts/domain_generalization/test.sh DATASET SEED [KEY VALUE ...]
#
# DATASET: imagenetv2 imagenet_sketch imagenet_a imagenet_r (ImageNet-A/-R: their 200-class subsets).
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"

(( $# >= 2 )) || ao_die "usage: $AO_SCRIPT DATASET SEED [KEY VALUE ...]"
DATASET=$1 SEED=$2
shift 2
ao_require_dataset "$DATASET" "$AO_DG_TARGETS" "domain generalisation"
ao_require_seed "$SEED"
ao_parse_extra "$@"
ao_require_data

ao_evaluate "$DATASET" all domain_generalization cross_dataset \
  "$(ao_run_dir cross_dataset train imagenet)" "$(ao_run_dir domain_generalization test "$DATASET")" \
  "bash scripts/cross_dataset/train.sh $SEED"
