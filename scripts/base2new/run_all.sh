#!/usr/bin/env bash
# Base-to-novel for one trainer: train.sh then test.sh for every dataset and seed, then the table.
#
#   DATA=/path/to/datasets TRAINER=CoOp bash scripts/base2new/run_all.sh [KEY VALUE ...]
#
# DATASETS (default: the 11 datasets) and SEEDS (default "1 2 3") choose what runs; everything else as in
# train.sh. A dataset whose folder is not under DATA is skipped, a failed run does not stop the others: both
# are listed after the table (exit code 1 when a run failed). Runs already finished are skipped, so rerunning
# after a failure continues where it stopped.
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"

DATASETS=${DATASETS:-$AO_BASE2NEW_DATASETS}
SEEDS=${SEEDS:-1 2 3}
ao_parse_extra "$@"
ao_require_data
for dataset in $DATASETS; do
  ao_require_dataset "$dataset" "$AO_BASE2NEW_DATASETS $AO_TOYWORLD_DATASETS" "base-to-novel"
done
for seed in $SEEDS; do ao_require_seed "$seed"; done

# The folder of each dataset under DATA (CoOp's DATASETS.md names, from the dataset catalog).
read -ra folders <<< "$("$PYTHON" -c 'import sys; from anchoropt.datasets.catalog import lookup
print(" ".join(lookup(name).folder for name in sys.argv[1:]))' $DATASETS)"

here=$(dirname "${BASH_SOURCE[0]}")
present=() skipped=() failed=()
i=0
for dataset in $DATASETS; do
  folder=${folders[$i]}
  i=$((i + 1))
  if [ ! -d "$DATA/$folder" ]; then
    skipped+=("$dataset: no folder $DATA/$folder (see CoOp's DATASETS.md, or anchoropt-prepare-data)")
    continue
  fi
  present+=("$dataset")
  for seed in $SEEDS; do
    for step in train test; do
      if ! bash "$here/$step.sh" "$dataset" "$seed" "$@"; then
        failed+=("$dataset seed $seed: $step.sh failed (its error is above; rerun: $(ao_same_settings "scripts/base2new/$step.sh" "$dataset" "$seed"))")
        break
      fi
    done
  done
done
(( ${#present[@]} )) || ao_die "none of the datasets ($DATASETS) is under DATA=$DATA: ${skipped[0]}"
if [ "$DRY_RUN" != 1 ]; then
  "$PYTHON" -m anchoropt.cli.results "$OUTPUT/base2new" --seeds $SEEDS || failed+=("the results table could not be built")
fi
for line in ${skipped[@]+"${skipped[@]}"}; do ao_say "skipped $line"; done
for line in ${failed[@]+"${failed[@]}"}; do ao_say "FAILED $line"; done
(( ${#failed[@]} == 0 )) || exit 1
