#!/usr/bin/env bash
# The GPU measurements of the training-speed targets ("Train at GPU speed") in one prepared device call,
# every table into $OUT.
#
#   ../shared/tools/device_prepare.sh            # here, once per session (packs BasicSR wheels, zoo and data)
#   device run: command "bash benchmarks/gpu_train_speed.sh", carry [".device"], timeout_s 590
#
# Phases, most important first, each under its own time limit so that a slow one cannot take the others'
# time (the whole call must end inside the device's 10-minute command limit; the limits add up to 9.5 minutes).
# The benchmarks write their JSON after every result, so a phase stopped by its limit keeps what it measured:
#   1. operator: bench_converse2d.py --cases train s2 (forward+backward against two FFT pairs; s = 2 against
#      the direct formulation)
#   2. step: bench_train_step.py, the four recipes in eager, bf16 and checkpoint modes
#   3. compile: bench_train_step.py --modes compile for the three ConverseNet recipes
#   4. targets: benchmarks/train_speed_targets.py over 1-3 (targets.md)
#   5. tests: the CUDA tier (pytest -m cuda: operator against the oracle, fullgraph compile of every
#      architecture and dynamic shapes, opcheck, train: compile modes default and reduce-overhead), first the
#      fast part (aot_eager tracing), then inductor's kernels with the time left
# Files in $OUT (at most 8 come back): log.txt (everything printed), converse2d_cuda.json, train_step_cuda.json,
# train_step_compile_cuda.json, targets.md, pytest.txt.
#
# Without a GPU, DEVICE=cpu QUICK=1 runs the same plumbing at toy sizes (OUT defaults to ./gpu_out).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu_out}
mkdir -p "$OUT"
DEVICE=${DEVICE:-cuda}
PY=${PY:-python3}
if [ "$DEVICE" = cuda ] && [ -f .device/env.sh ]; then
  source .device/env.sh || { echo 'gpu_train_speed: .device/env.sh failed (run ../shared/tools/device_prepare.sh here first)'; exit 2; }
fi
exec > >(tee -a "$OUT/log.txt") 2>&1
SIZES=() REPEAT=20 STEPS=10 WARMUP=3 OP_CASES=(train s2)
if [ "${QUICK:-0}" = 1 ]; then SIZES=(--batch 1 --size 16) REPEAT=1 STEPS=1 WARMUP=1 OP_CASES=(s2); fi

phase() {  # phase NAME LIMIT_SECONDS COMMAND...
  local name=$1 limit=$2 start=$SECONDS rc
  shift 2
  echo; echo "=== $name (limit ${limit} s): $*"
  timeout --kill-after=10 "$limit" "$@"
  rc=$?
  echo "=== $name: exit $rc after $((SECONDS - start)) s$([ $rc = 124 ] && echo ' (time limit reached)')"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi ($DEVICE run)"
phase operator 60 "$PY" benchmarks/bench_converse2d.py --device "$DEVICE" --cases "${OP_CASES[@]}" --repeat "$REPEAT" \
  --json "$OUT/converse2d_$DEVICE.json"
phase step 120 "$PY" benchmarks/bench_train_step.py --device "$DEVICE" --modes eager bf16 checkpoint \
  --steps "$STEPS" --warmup "$WARMUP" "${SIZES[@]}" --json "$OUT/train_step_$DEVICE.json"
phase compile 240 "$PY" benchmarks/bench_train_step.py --device "$DEVICE" --modes compile \
  --recipes dncnn msrresnet usrnet --steps "$STEPS" --warmup "$WARMUP" "${SIZES[@]}" \
  --json "$OUT/train_step_compile_$DEVICE.json"
steps=()
for f in "$OUT/train_step_$DEVICE.json" "$OUT/train_step_compile_$DEVICE.json"; do [ -f "$f" ] && steps+=("$f"); done
targets=(--device "$DEVICE")
[ ${#steps[@]} -gt 0 ] && targets+=(--train-step "${steps[@]}")
[ -f "$OUT/converse2d_$DEVICE.json" ] && targets+=(--converse2d "$OUT/converse2d_$DEVICE.json")
echo; echo "=== targets"
"$PY" benchmarks/train_speed_targets.py "${targets[@]}" | tee "$OUT/targets.md"
if [ "$DEVICE" = cuda ]; then
  tests=(tests/ops tests/archs/test_compile.py tests/models/test_amp.py)
  phase tests 90 "$PY" -m pytest -q -rfEs -m 'cuda and not slow' -p no:cacheprovider "${tests[@]}" > "$OUT/pytest.txt" 2>&1
  phase tests-inductor 60 "$PY" -m pytest -q -rfEs -m 'cuda and slow' -p no:cacheprovider "${tests[@]}" >> "$OUT/pytest.txt" 2>&1
  grep -E '^(FAILED|ERROR)|passed|failed|=== tests' "$OUT/pytest.txt"
fi
echo; echo "gpu_train_speed: done in $SECONDS s; files in $OUT: $(ls "$OUT" | tr '\n' ' ')"
