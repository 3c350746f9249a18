# Shared by the protocol scripts (sourced, never run on its own).
#
# Environment read here:
#   DATA     dataset root (required; CoOp's DATASETS.md layout)
#   OUTPUT   output root (default: <repository>/output; a relative path is relative to the current directory)
#   TRAINER  trainer (default CoOp_AnchorOPT)
#   CFG      shared trainer config name: configs/trainers/$TRAINER/$CFG.yaml (default: per trainer, below)
#   SHOTS    shots per class (default 16; DATASET.NUM_SHOTS in the extra options wins)
#   STAGE1_CFG   Stage I config name: configs/trainers/AnchorOPT_StageI/$STAGE1_CFG.yaml (default vit_b16)
#   STAGE1_OPTS  extra KEY VALUE options for Stage I only (e.g. "OPTIM.MAX_EPOCH 1")
#   PYTHON   the interpreter (default: python)
#   DRY_RUN  1: print the train.py commands instead of running them
#   XD_SOURCE  source dataset of cross_dataset/ and domain_generalization/ (default imagenet; toy_net: the toy world)
set -euo pipefail

AO_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
AO_SCRIPT="$(basename "$(dirname "$0")")/$(basename "$0")"
PYTHON=${PYTHON:-python}
# The scripts run this checkout's code, whatever the current directory.
export PYTHONPATH="$AO_REPO${PYTHONPATH:+:$PYTHONPATH}"
OUTPUT=${OUTPUT:-$AO_REPO/output}
TRAINER=${TRAINER:-CoOp_AnchorOPT}
SHOTS=${SHOTS:-16}
STAGE1_TRAINER=AnchorOPT_StageI
STAGE1_CFG=${STAGE1_CFG:-vit_b16}
STAGE1_OPTS=${STAGE1_OPTS:-}
DRY_RUN=${DRY_RUN:-0}

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
ao_config_args() {
  local trainer=$1 cfg=$2 layer=$3 dir="$AO_REPO/configs/trainers/$1"
  local shared="$dir/$cfg.yaml"
  if [ ! -f "$shared" ]; then
    local have
    have=$(cd "$dir" 2>/dev/null && ls -- *.yaml 2>/dev/null | sed 's/\.yaml$//' | tr '\n' ' ' || true)
    ao_die "no config file $shared for trainer $trainer (choose it with CFG, for Stage I with STAGE1_CFG); available: ${have:-none}"
  fi
  AO_CONFIG_ARGS=(--config-file "$shared")
  if [ -f "$dir/$layer.yaml" ]; then AO_CONFIG_ARGS+=(--config-file "$dir/$layer.yaml"); fi
}

ao_train_py() {
  if [ "$DRY_RUN" = 1 ]; then
    printf '+'; printf ' %q' "$PYTHON" "$AO_REPO/train.py" "$@"; printf '\n'
    return 0
  fi
  "$PYTHON" "$AO_REPO/train.py" "$@"
}

ao_finished() { [ -f "$1/results.json" ]; }

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

# ao_stage1 DATASET SUBSAMPLE PROTOCOL LAYER ANCHOR_DIR: learn the anchor unless it exists (or the user gave one).
ao_stage1() {
  local dataset=$1 subsample=$2 protocol=$3 layer=$4 anchor_dir=$5
  if [ -n "$AO_USER_ANCHOR" ]; then
    AO_ANCHOR=$AO_USER_ANCHOR
    ao_say "Stage I skipped: using TRAINER.ANCHOROPT.ANCHOR_PATH $AO_ANCHOR from the extra options"
    return 0
  fi
  AO_ANCHOR=$anchor_dir
  if [ -f "$anchor_dir/anchor.pth" ]; then
    ao_say "Stage I done before: reusing the anchor in $anchor_dir"
    return 0
  fi
  ao_say "Stage I: learning the anchor for $dataset ($subsample classes, seed $SEED) in $anchor_dir"
  ao_config_args "$STAGE1_TRAINER" "$STAGE1_CFG" "$layer"
  local stage1_opts
  read -ra stage1_opts <<< "$STAGE1_OPTS"
  ao_train_py --root "$DATA" --seed "$SEED" --trainer "$STAGE1_TRAINER" \
    --dataset-config-file "$AO_REPO/configs/datasets/$dataset.yaml" "${AO_CONFIG_ARGS[@]}" \
    --output-dir "$anchor_dir" \
    DATASET.NUM_SHOTS "$SHOTS" ${AO_STAGE1_EXTRA[@]+"${AO_STAGE1_EXTRA[@]}"} ${stage1_opts[@]+"${stage1_opts[@]}"} \
    DATASET.SUBSAMPLE_CLASSES "$subsample" RUN.PROTOCOL "$protocol"
  if [ "$DRY_RUN" != 1 ] && [ ! -f "$anchor_dir/anchor.pth" ]; then
    ao_die "Stage I finished without writing $anchor_dir/anchor.pth"
  fi
}

# ao_train DATASET SUBSAMPLE PROTOCOL LAYER TRAIN_DIR ANCHOR_DIR: train (both stages for *_AnchorOPT) and
# test on the training classes; skip a finished run; an unfinished one resumes from its checkpoints.
ao_train() {
  local dataset=$1 subsample=$2 protocol=$3 layer=$4 train_dir=$5 anchor_dir=$6
  if ao_finished "$train_dir"; then
    ao_say "already finished, not retrained: $train_dir (delete it, or set another OUTPUT, to rerun)"
    ao_report "$train_dir" "$subsample-class"
    return 0
  fi
  local stage2=()
  if ao_is_two_stage; then
    ao_stage1 "$dataset" "$subsample" "$protocol" "$layer" "$anchor_dir"
    stage2=(TRAINER.ANCHOROPT.ANCHOR_PATH "$AO_ANCHOR")
  fi
  ao_config_args "$TRAINER" "$CFG" "$layer"
  local mode=()
  if ao_is_zero_shot; then
    mode=(--eval-only)
    ao_say "$TRAINER: nothing to train; evaluating on $dataset ($subsample classes) in $train_dir"
  elif compgen -G "$train_dir/*/checkpoint" > /dev/null; then
    ao_say "resuming the unfinished run in $train_dir"
  else
    ao_say "training $TRAINER on $dataset ($subsample classes, seed $SEED) in $train_dir"
  fi
  ao_train_py --root "$DATA" --seed "$SEED" --trainer "$TRAINER" \
    --dataset-config-file "$AO_REPO/configs/datasets/$dataset.yaml" "${AO_CONFIG_ARGS[@]}" \
    --output-dir "$train_dir" ${mode[@]+"${mode[@]}"} \
    DATASET.NUM_SHOTS "$SHOTS" ${stage2[@]+"${stage2[@]}"} ${AO_EXTRA[@]+"${AO_EXTRA[@]}"} \
    DATASET.SUBSAMPLE_CLASSES "$subsample" RUN.PROTOCOL "$protocol"
  ao_report "$train_dir" "$subsample-class"
}

# ao_evaluate DATASET SUBSAMPLE PROTOCOL LAYER TRAIN_DIR EVAL_DIR TRAIN_HINT: evaluate the trained model of
# TRAIN_DIR (built with the training run's configs, LAYER) on DATASET; skip an evaluation newer than the model.
ao_evaluate() {
  local dataset=$1 subsample=$2 protocol=$3 layer=$4 train_dir=$5 eval_dir=$6 hint=$7
  local model=()
  if ! ao_is_zero_shot; then
    if ! ao_finished "$train_dir"; then
      [ "$DRY_RUN" = 1 ] || ao_die "no finished training run in $train_dir; run first: $hint"
      AO_LOAD_ARGS=(--load-epoch "<the training run's last epoch>")
    elif ao_finished "$eval_dir" && [ ! "$train_dir/results.json" -nt "$eval_dir/results.json" ]; then
      ao_say "already evaluated: $eval_dir (delete it to rerun)"
      ao_report "$eval_dir" "$subsample-class"
      return 0
    else
      ao_load_args "$train_dir"
    fi
    model=(--model-dir "$train_dir" ${AO_LOAD_ARGS[@]+"${AO_LOAD_ARGS[@]}"})
  elif ao_finished "$eval_dir"; then
    ao_say "already evaluated: $eval_dir (delete it to rerun)"
    ao_report "$eval_dir" "$subsample-class"
    return 0
  fi
  ao_config_args "$TRAINER" "$CFG" "$layer"
  ao_say "evaluating $TRAINER on $dataset ($subsample classes, seed $SEED) in $eval_dir"
  ao_train_py --root "$DATA" --seed "$SEED" --trainer "$TRAINER" \
    --dataset-config-file "$AO_REPO/configs/datasets/$dataset.yaml" "${AO_CONFIG_ARGS[@]}" \
    --output-dir "$eval_dir" --eval-only ${model[@]+"${model[@]}"} \
    DATASET.NUM_SHOTS "$SHOTS" ${AO_EXTRA[@]+"${AO_EXTRA[@]}"} \
    DATASET.SUBSAMPLE_CLASSES "$subsample" RUN.PROTOCOL "$protocol"
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
