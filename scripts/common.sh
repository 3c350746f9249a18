# Shared by the protocol scripts (sourced, never run on its own).
#
# Environment read here:
#   DATA     dataset root (required; CoOp's DATASETS.md layout)
#   OUTPUT   output root (default: <repository>/output; a relative path is relative to the current directory)
#   TRAINER  trainer (default CoOp_AnchorOPT)
#   CFG      shared trainer config name: configs/trainers/$TRAINER/$CFG.yaml (default: per trainer, below)
#   SHOTS    shots per class (default 16; DATASET.NUM_SHOTS in the extra options wins)
#   STAGE1_CFG   Stage I recipe: configs/trainers/AnchorOPT_StageI/$STAGE1_CFG.yaml, layered last after vit_b16.yaml
#                and the per-dataset file: released (default; the released anchors' settings, image CE included)
#                or mse_only (the paper's text and the public script: MSE weight 1, 20 epochs, no image term)
#   STAGE1_OPTS  extra KEY VALUE options for Stage I only (e.g. "OPTIM.MAX_EPOCH 1")
#   PYTHON   the interpreter (default: python)
#   DRY_RUN  1: print the train.py commands instead of running them
#   OVERWRITE  1: a run (or Stage I anchor) of other settings in the way is moved aside to <dir>.replaced-<n>
#            and redone; without it the script stops, naming the keys that differ. Nothing is ever deleted.
#   STAGE1_ONLY  1: a *_AnchorOPT trainer's train.sh learns only the Stage I anchor, its base2new test.sh
#            evaluates only the anchor alone (anchoropt-sweep schedules these once per dataset and seed)
#   DRY_RUN_CHECK  1 (with DRY_RUN=1): still check existing runs' settings (train.py --check-run), as a run would;
#            print: print each such check as a '? <train.py arguments>' line instead (for a caller that runs many
#            checks in one process: anchoropt-sweep)
#   XD_SOURCE  source dataset of cross_dataset/ and domain_generalization/ (default imagenet; toy_net: the toy world)
set -euo pipefail

AO_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
AO_SCRIPT="$(basename "$(dirname "$0")")/$(basename "$0")"
PYTHON=${PYTHON:-python}
# What the user set (repeated in the hints that name another script).
AO_GIVEN_CFG=${CFG:-} AO_GIVEN_SHOTS=${SHOTS:-} AO_GIVEN_OUTPUT=${OUTPUT:-} AO_GIVEN_STAGE1_CFG=${STAGE1_CFG:-}
# The scripts run this checkout's code, whatever the current directory.
export PYTHONPATH="$AO_REPO${PYTHONPATH:+:$PYTHONPATH}"
OUTPUT=${OUTPUT:-$AO_REPO/output}
TRAINER=${TRAINER:-CoOp_AnchorOPT}
SHOTS=${SHOTS:-16}
STAGE1_TRAINER=AnchorOPT_StageI
STAGE1_CFG=${STAGE1_CFG:-released}
STAGE1_SHARED_CFG=vit_b16
STAGE1_OPTS=${STAGE1_OPTS:-}
DRY_RUN=${DRY_RUN:-0}
STAGE1_ONLY=${STAGE1_ONLY:-0}
OVERWRITE=${OVERWRITE:-0}

AO_BASE2NEW_DATASETS="imagenet caltech101 oxford_pets stanford_cars oxford_flowers food101 fgvc_aircraft sun397 dtd eurosat ucf101"
# The toy world (anchoropt-toyworld build): its "ImageNet" toy_net, 3 targets and toy_net's 4 shifted variants.
AO_TOYWORLD_DATASETS="toy_net toy_patterns toy_objects toy_shapes"
XD_SOURCE=${XD_SOURCE:-imagenet}
case "$XD_SOURCE" in
  imagenet)
    AO_XD_TARGETS="caltech101 oxford_pets stanford_cars oxford_flowers food101 fgvc_aircraft sun397 dtd eurosat ucf101"
    AO_DG_TARGETS="imagenetv2 imagenet_sketch imagenet_a imagenet_r" ;;
  toy_net)
    AO_XD_TARGETS="toy_patterns toy_objects toy_shapes"
    AO_DG_TARGETS="toy_net_faded toy_net_sketch toy_net_clutter toy_net_pixel" ;;
  *) echo "error: XD_SOURCE must be imagenet or toy_net, got '$XD_SOURCE'" >&2; exit 2 ;;
esac
# Options the scripts own: the protocol defines them (SEED and DATA are arguments / environment).
AO_RESERVED_KEYS="DATASET.SUBSAMPLE_CLASSES RUN.PROTOCOL OUTPUT_DIR SEED DATASET.ROOT"

ao_die() { echo "error: $*" >&2; exit 2; }
ao_say() { echo "[$AO_SCRIPT] $*"; }

# Default shared config of each trainer (the settings of the published baselines).
ao_default_cfg() {
  case "$1" in
    CoOp) echo vit_b16 ;;  # ATPrompt's CoOp baseline: 16 context words, 200 epochs (ImageNet: 50, see its layers)
    MaPLe) echo vit_b16_c2_ep5_batch4_2ctx ;;
    CoCoOp) echo vit_b16_c4_ep10_batch1_ctxv1 ;;
    DePT) echo vit_b16_ep20_bs4_lr35 ;;  # the official vanilla DePT script: 20 epochs
    *) echo vit_b16 ;;  # ZeroshotCLIP*, the *_AnchorOPT trainers, anything else
  esac
}
CFG=${CFG:-$(ao_default_cfg "$TRAINER")}

ao_is_two_stage() { [[ "$TRAINER" == *_AnchorOPT ]]; }
ao_is_zero_shot() { [[ "$TRAINER" == ZeroshotCLIP* ]]; }

ao_require_data() {
  [ -n "${DATA:-}" ] || ao_die "DATA is not set: export DATA=/path/to/datasets (the folder holding the datasets, laid out as in CoOp's DATASETS.md)"
  [ -d "$DATA" ] || ao_die "DATA=$DATA is not a directory"
}

# ao_require_trainer: TRAINER has a config folder (checked before anything runs, Stage I included).
ao_require_trainer() {
  local dir="$AO_REPO/configs/trainers" have guess
  [ -d "$dir/$TRAINER" ] && return 0
  have=$(cd "$dir" 2>/dev/null && ls -d -- */ 2>/dev/null | tr -d / | tr '\n' ' ' || true)
  guess=$("$PYTHON" - "$TRAINER" $have 2>/dev/null <<'PY' || true
import difflib, sys
name, known = sys.argv[1], sys.argv[2:]
lowered = {k.lower(): k for k in known}
match = [lowered[name.lower()]] if name.lower() in lowered else difflib.get_close_matches(name.lower(), list(lowered), 1, 0.6)
print(f"did you mean {lowered.get(match[0], match[0])}? " if match else "")
PY
)
  ao_die "unknown TRAINER '$TRAINER' (no folder configs/trainers/$TRAINER); ${guess}valid trainers: ${have% }"
}

# ao_same_settings SCRIPT ARGS...: the command line of another protocol script with this run's settings
# (TRAINER, the CFG / SHOTS / OUTPUT / STAGE1_* given, the extra options), for hints.
ao_same_settings() {
  local words=("TRAINER=$TRAINER")
  [ -z "$AO_GIVEN_CFG" ] || words+=("CFG=$CFG")
  [ -z "$AO_GIVEN_SHOTS" ] || words+=("SHOTS=$SHOTS")
  [ -z "$AO_GIVEN_OUTPUT" ] || words+=("OUTPUT=$OUTPUT")
  [ -z "$AO_GIVEN_STAGE1_CFG" ] || words+=("STAGE1_CFG=$STAGE1_CFG")
  [ -z "$STAGE1_OPTS" ] || words+=("STAGE1_OPTS=$STAGE1_OPTS")
  [ "$XD_SOURCE" = imagenet ] || words+=("XD_SOURCE=$XD_SOURCE")
  words+=(bash "$@" ${AO_EXTRA[@]+"${AO_EXTRA[@]}"})
  local line
  line=$(printf '%q ' "${words[@]}")
  echo "${line% }"
}

ao_require_seed() {
  [[ "${1:-}" =~ ^[0-9]+$ ]] || ao_die "SEED must be a non-negative integer, got '${1:-}'"
}

# ao_require_dataset NAME "ALLOWED..." WHAT
ao_require_dataset() {
  local name=$1 allowed=$2 what=$3 d
  for d in $allowed; do [ "$d" = "$name" ] && return 0; done
  ao_die "unknown dataset '$name' for $what; expected one of: $allowed"
}

# ao_dataset_seed_args "ALLOWED..." WHAT DATASET SEED [KEY VALUE ...]: the command line of the scripts that
# take a dataset and a seed; sets DATASET and SEED, checks them, the extra options and DATA.
ao_dataset_seed_args() {
  local allowed=$1 what=$2
  shift 2
  (( $# >= 2 )) || ao_die "usage: $AO_SCRIPT DATASET SEED [KEY VALUE ...]"
  DATASET=$1 SEED=$2
  shift 2
  ao_require_dataset "$DATASET" "$allowed" "$what"
  ao_require_seed "$SEED"
  ao_parse_extra "$@"
  ao_require_data
}

# ao_parse_extra OPTS...: check KEY VALUE pairs; fill AO_EXTRA (all), AO_STAGE1_EXTRA (without OPTIM.*),
# adopt DATASET.NUM_SHOTS as SHOTS and note a user-given TRAINER.ANCHOROPT.ANCHOR_PATH.
ao_parse_extra() {
  ao_require_trainer
  AO_EXTRA=("$@")
  AO_STAGE1_EXTRA=()
  AO_USER_ANCHOR=""
  (( $# % 2 == 0 )) || ao_die "extra options must be KEY VALUE pairs, got: $*"
  local key value reserved
  while (( $# )); do
    key=$1 value=$2
    shift 2
    for reserved in $AO_RESERVED_KEYS; do
      [ "$key" != "$reserved" ] || ao_die "$key is set by the protocol scripts; remove it from the extra options (SEED is an argument, DATA the dataset root)"
    done
    case "$key" in
      DATASET.NUM_SHOTS) SHOTS=$value ;;
      TRAINER.ANCHOROPT.ANCHOR_PATH) AO_USER_ANCHOR=$value ;;
    esac
    # Stage I keeps its own optimisation settings (epochs, LR, ...) unless STAGE1_OPTS says otherwise.
    [[ "$key" == OPTIM.* ]] || AO_STAGE1_EXTRA+=("$key" "$value")
  done
  [[ "$SHOTS" =~ ^[0-9]+$ ]] || ao_die "SHOTS / DATASET.NUM_SHOTS must be a positive integer, got '$SHOTS'"
}

# ao_config_args TRAINER CFG LAYER: --config-file for the shared config, then the protocol layer
# (configs/trainers/TRAINER/LAYER.yaml, e.g. base2new/oxford_pets or cross_dataset) when that file exists.
# Stage I: CFG is a recipe (STAGE1_CFG); the shared file is vit_b16.yaml and the recipe comes last (it wins).
ao_config_args() {
  local trainer=$1 cfg=$2 layer=$3 dir="$AO_REPO/configs/trainers/$1" recipe=""
  if [ "$trainer" = "$STAGE1_TRAINER" ] && [ "$cfg" != "$STAGE1_SHARED_CFG" ]; then
    recipe="$dir/$cfg.yaml"
    [ -f "$recipe" ] || ao_die "no Stage I recipe $recipe (STAGE1_CFG: released or mse_only)"
    cfg=$STAGE1_SHARED_CFG
  fi
  local shared="$dir/$cfg.yaml"
  if [ ! -f "$shared" ]; then
    local have
    have=$(cd "$dir" 2>/dev/null && ls -- *.yaml 2>/dev/null | sed 's/\.yaml$//' | tr '\n' ' ' || true)
    ao_die "no config file $shared for trainer $trainer (choose it with CFG, for Stage I with STAGE1_CFG); available: ${have:-none}"
  fi
  AO_CONFIG_ARGS=(--config-file "$shared")
  if [ -f "$dir/$layer.yaml" ]; then AO_CONFIG_ARGS+=(--config-file "$dir/$layer.yaml"); fi
  if [ -n "$recipe" ]; then AO_CONFIG_ARGS+=(--config-file "$recipe"); fi
}

ao_train_py() {
  if [ "$DRY_RUN" = 1 ]; then
    printf '+'; printf ' %q' "$PYTHON" "$AO_REPO/train.py" "$@"; printf '\n'
    return 0
  fi
  "$PYTHON" "$AO_REPO/train.py" "$@"
}

ao_finished() { [ -f "$1/results.json" ]; }

# ao_check_run DIR ARGS...: what DIR holds for the train.py command ARGS, in AO_RUN_STATE: finished,
# interrupted, absent, or (with OVERWRITE=1) conflict. A run of other settings stops the script with one line
# naming the keys that differ (train.py --check-run compares the run fingerprints; anchoropt/runs/identity.py).
ao_check_run() {
  local dir=$1
  shift
  AO_RUN_STATE=absent
  if [ -f "$dir/results.json" ] || [ -f "$dir/anchor.pth" ]; then
    AO_RUN_STATE=finished
  elif compgen -G "$dir/*/checkpoint" > /dev/null; then
    AO_RUN_STATE=interrupted
  fi
  [ "$AO_RUN_STATE" != absent ] && { [ "$DRY_RUN" != 1 ] || [ "${DRY_RUN_CHECK:-0}" != 0 ]; } || return 0
  if [ "$DRY_RUN" = 1 ] && [ "${DRY_RUN_CHECK:-0}" = print ]; then
    printf '?'; printf ' %q' "$@"; printf '\n'
    return 0
  fi
  local overwrite=()
  [ "$OVERWRITE" != 1 ] || overwrite=(--overwrite)
  AO_RUN_STATE=$(PYTHONWARNINGS=ignore "$PYTHON" "$AO_REPO/train.py" --check-run ${overwrite[@]+"${overwrite[@]}"} "$@") \
    || exit 2
}

# ao_overwrite_args: --overwrite when AO_RUN_STATE is conflict (OVERWRITE=1), in AO_OVERWRITE_ARGS.
ao_overwrite_args() {
  AO_OVERWRITE_ARGS=()
  if [ "$AO_RUN_STATE" = conflict ]; then
    AO_OVERWRITE_ARGS=(--overwrite)
    ao_say "OVERWRITE=1: the run in $1 has other settings; it is moved aside to $1.replaced-<n> (not deleted)"
  fi
}

# ao_report DIR WHAT: print the accuracy recorded in DIR/results.json.
ao_report() {
  [ "$DRY_RUN" = 1 ] && return 0
  "$PYTHON" - "$1/results.json" "$2" <<'PY'
import json, sys
record = json.load(open(sys.argv[1]))
print(f"{sys.argv[2]} accuracy: {record['metrics']['accuracy']:.2f}% "
      f"({record['trainer']}, {record['dataset']}, seed {record['seed']}; {sys.argv[1]})")
PY
}

# ao_load_args TRAIN_DIR: the --load-epoch of the model the training run itself tested (its last epoch,
# or model-best when it selected on validation), read from the run's own config in results.json.
ao_load_args() {
  local which
  which=$("$PYTHON" - "$1/results.json" <<'PY'
import json, sys
import yaml
cfg = yaml.safe_load(json.load(open(sys.argv[1]))["config"])
print("best" if cfg["TEST"]["FINAL_MODEL"] == "best_val" else int(cfg["OPTIM"]["MAX_EPOCH"]))
PY
)
  AO_LOAD_ARGS=()
  if [ "$which" != best ]; then AO_LOAD_ARGS=(--load-epoch "$which"); fi
}

# ao_stage1_check DATASET SUBSAMPLE PROTOCOL LAYER ANCHOR_DIR: the Stage I command (AO_STAGE1_CMD) and what
# ANCHOR_DIR holds for it (AO_STAGE1_STATE). An anchor learned with other settings or from another descriptions
# file (its provenance) stops the script, unless OVERWRITE=1.
ao_stage1_check() {
  local dataset=$1 subsample=$2 protocol=$3 layer=$4 anchor_dir=$5
  ao_config_args "$STAGE1_TRAINER" "$STAGE1_CFG" "$layer"
  local stage1_opts
  read -ra stage1_opts <<< "$STAGE1_OPTS"
  AO_STAGE1_CMD=(--root "$DATA" --seed "$SEED" --trainer "$STAGE1_TRAINER"
    --dataset-config-file "$AO_REPO/configs/datasets/$dataset.yaml" "${AO_CONFIG_ARGS[@]}"
    --output-dir "$anchor_dir"
    DATASET.NUM_SHOTS "$SHOTS" ${AO_STAGE1_EXTRA[@]+"${AO_STAGE1_EXTRA[@]}"} ${stage1_opts[@]+"${stage1_opts[@]}"}
    DATASET.SUBSAMPLE_CLASSES "$subsample" RUN.PROTOCOL "$protocol")
  ao_check_run "$anchor_dir" "${AO_STAGE1_CMD[@]}"
  AO_STAGE1_STATE=$AO_RUN_STATE
  [ -f "$anchor_dir/anchor.pth" ] || [ "$AO_STAGE1_STATE" != finished ] || AO_STAGE1_STATE=interrupted
}

# ao_stage1 DATASET SUBSAMPLE ANCHOR_DIR: learn the anchor (after ao_stage1_check).
ao_stage1() {
  local dataset=$1 subsample=$2 anchor_dir=$3
  AO_RUN_STATE=$AO_STAGE1_STATE
  ao_overwrite_args "$anchor_dir"
  ao_say "Stage I: learning the anchor for $dataset ($subsample classes, seed $SEED) in $anchor_dir"
  ao_train_py ${AO_OVERWRITE_ARGS[@]+"${AO_OVERWRITE_ARGS[@]}"} "${AO_STAGE1_CMD[@]}"
  if [ "$DRY_RUN" != 1 ] && [ ! -f "$anchor_dir/anchor.pth" ]; then
    ao_die "Stage I finished without writing $anchor_dir/anchor.pth"
  fi
  AO_STAGE1_STATE=finished
}

# ao_train DATASET SUBSAMPLE PROTOCOL LAYER TRAIN_DIR ANCHOR_DIR: train (both stages for *_AnchorOPT) and
# test on the training classes; skip a finished run of the same settings; an unfinished one resumes from its
# checkpoints; a run of other settings stops the script (OVERWRITE=1: moved aside, then retrained).
ao_train() {
  local dataset=$1 subsample=$2 protocol=$3 layer=$4 train_dir=$5 anchor_dir=$6
  if [ "$STAGE1_ONLY" = 1 ]; then
    ao_is_two_stage || ao_die "STAGE1_ONLY=1 needs a *_AnchorOPT trainer, got TRAINER=$TRAINER"
    [ -z "$AO_USER_ANCHOR" ] || return 0
    ao_stage1_check "$dataset" "$subsample" "$protocol" "$layer" "$anchor_dir"
    if [ "$AO_STAGE1_STATE" = finished ]; then
      ao_say "Stage I done before: reusing the anchor in $anchor_dir"
    else
      ao_stage1 "$dataset" "$subsample" "$anchor_dir"
    fi
    return 0
  fi
  local stage2=() reused=""
  if ao_is_two_stage; then
    if [ -n "$AO_USER_ANCHOR" ]; then
      AO_ANCHOR=$AO_USER_ANCHOR
      reused="Stage I skipped: using TRAINER.ANCHOROPT.ANCHOR_PATH $AO_ANCHOR from the extra options"
    else
      AO_ANCHOR=$anchor_dir
      ao_stage1_check "$dataset" "$subsample" "$protocol" "$layer" "$anchor_dir"
      # A new anchor first, so that the Stage II check below sees the anchor Stage II starts from.
      if [ "$AO_STAGE1_STATE" = finished ]; then
        reused="Stage I done before: reusing the anchor in $anchor_dir"
      else
        ao_stage1 "$dataset" "$subsample" "$anchor_dir"
      fi
    fi
    stage2=(TRAINER.ANCHOROPT.ANCHOR_PATH "$AO_ANCHOR")
  fi
  ao_config_args "$TRAINER" "$CFG" "$layer"
  local mode=()
  if ao_is_zero_shot; then mode=(--eval-only); fi
  local cmd=(--root "$DATA" --seed "$SEED" --trainer "$TRAINER"
    --dataset-config-file "$AO_REPO/configs/datasets/$dataset.yaml" "${AO_CONFIG_ARGS[@]}"
    --output-dir "$train_dir" ${mode[@]+"${mode[@]}"}
    DATASET.NUM_SHOTS "$SHOTS" ${stage2[@]+"${stage2[@]}"} ${AO_EXTRA[@]+"${AO_EXTRA[@]}"}
    DATASET.SUBSAMPLE_CLASSES "$subsample" RUN.PROTOCOL "$protocol")
  ao_check_run "$train_dir" "${cmd[@]}"
  if [ "$AO_RUN_STATE" = finished ]; then
    ao_say "already finished, not retrained: $train_dir (same settings; set another OUTPUT to run it again)"
    ao_report "$train_dir" "$subsample-class"
    return 0
  fi
  ao_overwrite_args "$train_dir"
  if [ -n "$reused" ]; then ao_say "$reused"; fi
  if ao_is_zero_shot; then
    ao_say "$TRAINER: nothing to train; evaluating on $dataset ($subsample classes) in $train_dir"
  elif [ "$AO_RUN_STATE" = interrupted ]; then
    ao_say "resuming the unfinished run in $train_dir"
  else
    ao_say "training $TRAINER on $dataset ($subsample classes, seed $SEED) in $train_dir"
  fi
  ao_train_py ${AO_OVERWRITE_ARGS[@]+"${AO_OVERWRITE_ARGS[@]}"} "${cmd[@]}"
  ao_report "$train_dir" "$subsample-class"
}

# ao_evaluate DATASET SUBSAMPLE PROTOCOL LAYER TRAIN_DIR EVAL_DIR TRAIN_HINT: evaluate the trained model of
# TRAIN_DIR (built with the training run's configs, LAYER) on DATASET; skip an evaluation of the same settings
# and model that is newer than the model; an evaluation of other settings or another model stops the script
# (OVERWRITE=1: moved aside).
ao_evaluate() {
  local dataset=$1 subsample=$2 protocol=$3 layer=$4 train_dir=$5 eval_dir=$6 hint=$7
  local model=()
  if ! ao_is_zero_shot; then
    if ! ao_finished "$train_dir"; then
      [ "$DRY_RUN" = 1 ] || ao_die "no finished training run in $train_dir; run first: $hint"
      AO_LOAD_ARGS=(--load-epoch "<the training run's last epoch>")
    else
      ao_load_args "$train_dir"
    fi
    model=(--model-dir "$train_dir" ${AO_LOAD_ARGS[@]+"${AO_LOAD_ARGS[@]}"})
  fi
  ao_config_args "$TRAINER" "$CFG" "$layer"
  local cmd=(--root "$DATA" --seed "$SEED" --trainer "$TRAINER"
    --dataset-config-file "$AO_REPO/configs/datasets/$dataset.yaml" "${AO_CONFIG_ARGS[@]}"
    --output-dir "$eval_dir" --eval-only ${model[@]+"${model[@]}"}
    DATASET.NUM_SHOTS "$SHOTS" ${AO_EXTRA[@]+"${AO_EXTRA[@]}"}
    DATASET.SUBSAMPLE_CLASSES "$subsample" RUN.PROTOCOL "$protocol")
  ao_check_run "$eval_dir" "${cmd[@]}"
  if [ "$AO_RUN_STATE" = finished ] && { ao_is_zero_shot || [ ! "$train_dir/results.json" -nt "$eval_dir/results.json" ]; }; then
    ao_say "already evaluated: $eval_dir (same settings and model; set another OUTPUT to run it again)"
    ao_report "$eval_dir" "$subsample-class"
    return 0
  fi
  ao_overwrite_args "$eval_dir"
  ao_say "evaluating $TRAINER on $dataset ($subsample classes, seed $SEED) in $eval_dir"
  ao_train_py ${AO_OVERWRITE_ARGS[@]+"${AO_OVERWRITE_ARGS[@]}"} "${cmd[@]}"
  ao_report "$eval_dir" "$subsample-class"
}

# Directory layout (CoOp-like). Stage I is a run of trainer AnchorOPT_StageI in the same layout; its anchor is
# shared by every *_AnchorOPT trainer.
ao_run_dir() {  # PROTOCOL KIND DATASET [TRAINER CFG] -> $OUTPUT/PROTOCOL/KIND/DATASET/shots_K/TRAINER/CFG/seedS
  echo "$OUTPUT/$1/$2/$3/shots_$SHOTS/${4:-$TRAINER}/${5:-$CFG}/seed$SEED"
}
ao_anchor_dir() {  # PROTOCOL KIND DATASET: the Stage I run for those
  ao_run_dir "$1" "$2" "$3" "$STAGE1_TRAINER" "$STAGE1_CFG"
}

# Switch the globals to Stage I (for evaluating the anchor alone): its trainer, config and options.
ao_use_stage1() {
  TRAINER=$STAGE1_TRAINER
  CFG=$STAGE1_CFG
  local stage1_opts
  read -ra stage1_opts <<< "$STAGE1_OPTS"
  AO_EXTRA=(${AO_STAGE1_EXTRA[@]+"${AO_STAGE1_EXTRA[@]}"} ${stage1_opts[@]+"${stage1_opts[@]}"})
}
