#!/usr/bin/env bash
# Base-to-novel, step 2: evaluate the model trained by base2new/train.sh on the new classes of DATASET.
#
#   DATA=/path/to/datasets bash scripts/base2new/test.sh DATASET SEED [KEY VALUE ...]
#
# Give it the same TRAINER, OUTPUT, CFG, SHOTS and extra options as train.sh (those that shape the model,
# e.g. MODEL.BACKBONE.PATH, N_CTX; OPTIM.* ones do not matter). The model of the training run's last epoch is
# loaded. For a *_AnchorOPT trainer the Stage I anchor alone is evaluated on the new classes too (trainer
# AnchorOPT_StageI in the tables). An evaluation already done (and newer than the model) is not redone.
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"

ao_dataset_seed_args "$AO_BASE2NEW_DATASETS $AO_TOYWORLD_DATASETS" "base-to-novel" "$@"

hint=$(ao_same_settings scripts/base2new/train.sh "$DATASET" "$SEED")
if [ "$STAGE1_ONLY" != 1 ]; then
  ao_evaluate "$DATASET" new base2new "base2new/$DATASET" \
    "$(ao_run_dir base2new train_base "$DATASET")" "$(ao_run_dir base2new test_new "$DATASET")" "$hint"
fi

# AnchorOPT: also the Stage I anchor alone ("[A] of <class>.") on the new classes (the paper's Stage I row);
# with STAGE1_ONLY=1 only that.
if ao_is_two_stage && [ -z "$AO_USER_ANCHOR" ]; then
  ao_use_stage1
  stage1_dir=$(ao_run_dir base2new train_base "$DATASET")
  if ao_finished "$stage1_dir" || [ "$DRY_RUN" = 1 ]; then
    ao_evaluate "$DATASET" new base2new "base2new/$DATASET" "$stage1_dir" \
      "$(ao_run_dir base2new test_new "$DATASET")" "$hint"
  else
    ao_say "note: the Stage I run $stage1_dir has no results.json, so its anchor is not evaluated alone"
  fi
fi
