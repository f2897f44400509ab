#!/usr/bin/env bash
# The whole VLA set from no data, one step after the other, every step timed:
#   1. the scripted expert's demonstrations with both cameras at 64 px (seeded, so an existing
#      folder is the same data and is reused),
#   2. a tiny SmolVLA trained from scratch on them ($RUNS/${NAME}0),
#   3. for each entry of STAGES: DAgger rounds driven by the run before (300 episodes each, the
#      expert labelling every state the policy reaches; two at a time), then a warm restart on all
#      the data so far, the windows of DAgger episodes whose driver failed drawn 8 x as often,
#   4. the last run stored float16 ($RUNS/${NAME}_vla), its REMAC LoRA and its A2C2 head trained on
#      it, side by side,
#   5. with SHIP=1, those three copied into async_vla_ros/checkpoints and the manifest rewritten.
# Each step's wall time goes to stdout and is appended to $TIMES (tab-separated: step, seconds,
# ran or reused, the invocation's start time).
#
# usage: scripts/train_vla.sh [--dry-run]
# env:   NAME     run prefix                         [B]
#        S0_STEPS steps of the run from scratch      [48000]
#        STAGES   steps of each warm restart         ["24000 24000 24000 16000 16000"]
#        ROUNDS   each stage's DAgger rounds, stages split by |, driven by the run before it
#                 ["intercept intercept2 track pick_moving bifurcate|intercept intercept2 bifurcate
#                   pick_moving|intercept intercept2 bifurcate pick_moving|track track2|track track2
#                   intercept intercept2"]
#        SEED     first DAgger seed (stage i, round X: SEED + 10000 i + 1000 SLOT[X], below)  [200000]
#        SHIP     1: install into async_vla_ros/checkpoints   [0]
#        RESUME   1: reuse a DAgger folder or run that exists and is finished; one left unfinished
#                 (a killed step), or made before a step it depends on was redone, is redone
#                 (else an existing one is an error)  [0]
#        PROCS    processes per `train vla` (--procs: 2 trains on both cores, 1.5x faster per step,
#                 measured; B5 was trained with 1, the shipped v14 (chain D) with 2)  [1]
#        TIMES    where the times go                  [$RUNS/${NAME}_times.tsv]
#        DATA, RUNS  where data and runs go           [data, runs]
#        EXPERT_EPISODES, DAGGER_EPISODES, REMAC_STEPS, HEAD_STEPS  (smaller for a smoke test)
#                 ["200 600 400" per task at seeds 0 and 1, bifurcate at seed 2; 300; 1000; 3000]
# What it gives and how long it takes on the 2-core machine this project is measured on is in
# docs/training.md, "the eighth attempt": the defaults make B5 (the bar met on five sets, at most
# 2.94 h for the whole set); `NAME=D PROCS=2 SHIP=1` made and installed the shipped v14 (the bar met
# on five sets, 8,561 s for the whole set, measured).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

DRY=0
[[ "${1:-}" == "--dry-run" ]] && DRY=1
NAME="${NAME:-B}"
S0_STEPS="${S0_STEPS:-48000}"
read -r -a STAGES <<<"${STAGES:-24000 24000 24000 16000 16000}"
IFS='|' read -r -a ROUNDS <<<"${ROUNDS:-intercept intercept2 track pick_moving bifurcate|intercept intercept2 bifurcate \
pick_moving|intercept intercept2 bifurcate pick_moving|track track2|track track2 intercept intercept2}"
if [[ ${#ROUNDS[@]} != "${#STAGES[@]}" ]]; then
    echo "train_vla.sh: ${#STAGES[@]} STAGES but ${#ROUNDS[@]} ROUNDS (one |-separated list of rounds per stage)" >&2
    exit 2
fi
# a DAgger round's folder name: its task, a digit for another round of it; its seed slot (step 3)
declare -A SLOT=([intercept]=0 [intercept2]=1 [track]=2 [pick_moving]=3 [bifurcate]=4 [track2]=5 [pick_moving2]=6
    [bifurcate2]=7)
for r in "${ROUNDS[@]}"; do
    for x in $r; do
        [[ -n "${SLOT[$x]:-}" ]] || {
            echo "train_vla.sh: unknown round in '$r' (rounds: ${!SLOT[*]})" >&2
            exit 2
        }
    done
done
SEED="${SEED:-200000}"
SHIP="${SHIP:-0}"
RESUME="${RESUME:-0}"
DATA="${DATA:-data}"
RUNS="${RUNS:-runs}"
TIMES="${TIMES:-$RUNS/${NAME}_times.tsv}"
read -r N200 N600 N400 <<<"${EXPERT_EPISODES:-200 600 400}"
DAGGER_EPISODES="${DAGGER_EPISODES:-300}"
PROCS="${PROCS:-1}"
REMAC_STEPS="${REMAC_STEPS:-1000}"
HEAD_STEPS="${HEAD_STEPS:-3000}"
AVR="${AVR:-$ROOT/.venv/bin/async-vla-ros}"
[[ -x "$AVR" ]] || AVR=async-vla-ros
PY="${PY:-$ROOT/.venv/bin/python}"
[[ -x "$PY" ]] || PY=python3
export MUJOCO_GL="${MUJOCO_GL:-egl}"
export MALLOC_MMAP_THRESHOLD_=131072 # frees the frames' pages as they are copied (peak ~9.6 GB)

TASKS=(track intercept bifurcate pick_moving)
TRAIN="--num-threads 1 --procs $PROCS --width 128 --pad-dims 0 --no-progress"
IMG="--images scene wrist --image-size 64"
EXPERT=()
for T in "${TASKS[@]}"; do EXPERT+=("$DATA/demos_vla/$T"); done
for T in "${TASKS[@]}"; do EXPERT+=("$DATA/demos_vla600/$T"); done
EXPERT+=("$DATA/demos_vla400/bifurcate")

log() { printf '%s [train_vla] %s\n' "$(date -u +%H:%M:%S)" "$*"; }
T_ALL=$(date +%s)
RUN_ID=$(date -u +%Y-%m-%dT%H:%M:%S.%3NZ)
[[ $DRY == 1 || -e "$TIMES" ]] || { mkdir -p "$(dirname "$TIMES")"; printf 'step\tseconds\tstatus\trun\n' >"$TIMES"; }
# timed STEP CMD...: run (or, dry, print) one command; its time into $TIMES
timed() {
    local step=$1
    shift
    if [[ $DRY == 1 ]]; then
        echo "$*"
        return 0
    fi
    local t0=$SECONDS
    log "$step: $*"
    "$@"
    printf '%s\t%d\tran\t%s\n' "$step" $((SECONDS - t0)) "$RUN_ID" >>"$TIMES"
    log "$step: $((SECONDS - t0)) s (all so far $(($(date +%s) - T_ALL)) s)"
}
# fresh DIR: does the step that makes DIR run? Without RESUME=1 an existing DIR is an error (never
# overwritten). With it, DIR is reused when finished (train.common.unfinished: the record its command
# writes last) and nothing it depends on ran in this invocation (STALE=1, set at each step below from
# RAN); else it is removed and redone. RAN=1 once a run or round is (re)made here.
RAN=0 STALE=0
fresh() {
    [[ $DRY == 1 ]] && return 0
    if [[ ! -e "$1" ]]; then
        RAN=1
        return 0
    fi
    local why
    why=$("$PY" -c "import sys; from async_vla_ros.train.common import unfinished; print(unfinished(sys.argv[1]) or '')" "$1")
    if [[ $RESUME != 1 ]]; then
        echo "train_vla.sh: $1 exists${why:+ ($why)}; RESUME=1 reuses it (or redoes it if unfinished), or choose another NAME" >&2
        exit 2
    fi
    if [[ -z "$why" && $STALE == 0 ]]; then
        log "$1 exists: reused (RESUME=1)"
        printf '%s\t0\treused\t%s\n' "$1" "$RUN_ID" >>"$TIMES"
        return 1
    fi
    [[ -n "$why" ]] || why="made before a step it depends on was redone"
    log "$1 exists but is unfinished: $why; removed, redone (RESUME=1)"
    rm -rf -- "$1"
    RAN=1
    return 0
}
# two commands at a time: pair STEP_A "CMD_A" STEP_B "CMD_B" (either may be empty)
pair() {
    local pids=()
    if [[ $DRY == 1 ]]; then # printed in order
        [[ -n "$2" ]] && timed "$1" $2
        [[ -n "$4" ]] && timed "$3" $4
        return 0
    fi
    [[ -n "$2" ]] && { timed "$1" $2 & pids+=($!); }
    [[ -n "$4" ]] && { timed "$3" $4 & pids+=($!); }
    local p
    for p in "${pids[@]}"; do wait "$p"; done
}

# 1. the expert's demonstrations (seeded: an existing folder is the same data)
expert() { # TASK EPISODES SEED OUT
    if [[ $DRY == 0 && -e "$4/meta/info.json" ]]; then
        log "$4 exists: reused (seeded expert demonstrations)"
        printf '%s\t0\treused\t%s\n' "$4" "$RUN_ID" >>"$TIMES"
        return 0
    fi
    timed "$4" "$AVR" demos "$1" --episodes "$2" --seed "$3" --batch 50 --noise 0.01 $IMG --no-progress --out "$4"
}
for T in "${TASKS[@]}"; do expert "$T" "$N200" 0 "$DATA/demos_vla/$T"; done
for T in "${TASKS[@]}"; do expert "$T" "$N600" 1 "$DATA/demos_vla600/$T"; done
expert bifurcate "$N400" 2 "$DATA/demos_vla400/bifurcate"

# 2. from scratch
if fresh "$RUNS/${NAME}0"; then
    timed "$RUNS/${NAME}0" "$AVR" train vla --demos "${EXPERT[@]}" --out "$RUNS/${NAME}0" --steps "$S0_STEPS" $TRAIN
fi

# 3. DAgger rounds and warm restarts. A round's folder names its task (a digit: another round of it)
# and its seed: stage i's round X uses SEED + 10000 i + 1000 SLOT[X] (SLOT above); two at a time
DAGGER=()
round() { # DRIVER ROUND SEED OUT: its command into CMD (empty when OUT is reused)
    CMD=""
    fresh "$4" || return 0
    CMD="$AVR demos ${2%[0-9]} --episodes $DAGGER_EPISODES --seed $3 --batch 50 $IMG --driver lerobot:$1 --no-progress --out $4"
}
for i in "${!STAGES[@]}"; do
    prev="$RUNS/${NAME}$i" D="$DATA/dagger_${NAME}$i" k=$((SEED + 10000 * i))
    STALE=$RAN # the rounds depend on the run before
    read -r -a R <<<"${ROUNDS[$i]}"
    for ((j = 0; j < ${#R[@]}; j += 2)); do
        A="" B="" X=${R[$j]} Y=${R[$((j + 1))]:-}
        round "$prev" "$X" $((k + 1000 * SLOT[$X])) "$D/$X" && A=$CMD
        [[ -n "$Y" ]] && round "$prev" "$Y" $((k + 1000 * SLOT[$Y])) "$D/$Y" && B=$CMD
        pair "$D/$X" "$A" "$D/$Y" "$B"
        DAGGER+=("$D/$X")
        [[ -n "$Y" ]] && DAGGER+=("$D/$Y")
    done
    next="$RUNS/${NAME}$((i + 1))"
    STALE=$RAN # the restart on the run before and its rounds
    if fresh "$next"; then
        timed "$next" "$AVR" train vla --demos "${EXPERT[@]}" "${DAGGER[@]}" --out "$next" --init "$prev" \
            --oversample-failed 8 --steps "${STAGES[$i]}" --lr 2.5e-4 $TRAIN
    fi
done
LAST="$RUNS/${NAME}${#STAGES[@]}"

# 4. float16, then its REMAC LoRA and A2C2 head side by side
V="$RUNS/${NAME}_vla"
STALE=$RAN
if fresh "$V"; then
    # made under another name and renamed when whole: a copy cut short is never taken for a result
    timed "$V" bash -c "rm -rf '$V.partial' && cp -r '$LAST' '$V.partial' && '$PY' -c \
        \"from async_vla_ros.train.manifest import compact_fp16_folder; compact_fp16_folder('$V.partial')\" \
        && mv '$V.partial' '$V'"
fi
REMAC="" HEAD=""
STALE=$RAN
fresh "$RUNS/${NAME}_remac" && REMAC="$AVR train remac --variant clean --base lerobot:$V \
    --demos ${EXPERT[*]:0:4} --out $RUNS/${NAME}_remac --steps $REMAC_STEPS --batch-size 32 --base-samples 1 --num-threads 1 --no-progress"
fresh "$RUNS/${NAME}_a2c2.pt" && HEAD="$AVR train a2c2 --base lerobot:$V --demos ${EXPERT[*]:0:8} \
    --out $RUNS/${NAME}_a2c2.pt --steps $HEAD_STEPS --hidden 256 --depth 3 --num-threads 1 --no-progress"
pair "$RUNS/${NAME}_remac" "$REMAC" "$RUNS/${NAME}_a2c2.pt" "$HEAD"

# 5. install
if [[ $SHIP == 1 ]]; then
    CK=async_vla_ros/checkpoints
    timed ship bash -c "rm -rf $CK/vla $CK/vla_remac && cp -r $V $CK/vla && cp -r $RUNS/${NAME}_remac $CK/vla_remac \
        && cp $RUNS/${NAME}_a2c2.pt $CK/vla_a2c2.pt && '$PY' -c \"from async_vla_ros.train.manifest \
import compact_fp16, compact_fp16_folder; compact_fp16_folder('$CK/vla_remac'); compact_fp16('$CK/vla_a2c2.pt')\" \
        && '$PY' -m async_vla_ros.train.manifest --keep-fp32"
fi
[[ $DRY == 1 ]] || log "done in $(($(date +%s) - T_ALL)) s; times in $TIMES"
