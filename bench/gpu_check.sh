#!/usr/bin/env bash
# bench/gpu_check.sh OUT_DIR: verify a GPU machine in one command, everything left in OUT_DIR.
#
#   1. doctor.json       selfee-fast doctor --json (machine: torch/GPU, driver, DALI + a real NVDEC decode,
#                        ONNX Runtime's CUDA provider, TensorRT engine build, PyAV)
#   2. gpu_tests.log/xml pytest -m "gpu or trt", strict (SELFEE_STRICT=1: a fallback fails the test)
#   3. train_step.json   training step, ResNet-50, batch 256, 256x192, bf16, channels-last (bench/train_step.py)
#      pipeline.json     DALI training pipeline samples/s and NVDEC embedding decode frames/s (bench/pipeline.py)
#      embed.json        embedding end to end, torch and TensorRT FP16 (bench/embed.py)
#   4. summary.md        one table of every figure, plus steps.txt (exit status and seconds of each step)
#
# Built to finish within 8 minutes on one H100/H200: every step has a time limit, and a step that fails
# or runs out of time is recorded and the next one runs. Without a CUDA GPU it prints one line and exits 0.
# Run it from the repository root (or set SELFEE_REPO); PYTHON picks the interpreter (default: python).
set -u
OUT=${1:?usage: bench/gpu_check.sh OUT_DIR}
PY=${PYTHON:-python}
REPO=${SELFEE_REPO:-$(cd "$(dirname "$0")/.." && pwd)}

if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" >/dev/null 2>&1; then
  echo "gpu_check: no CUDA GPU here (torch.cuda.is_available() is false): nothing to check"
  exit 0
fi

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
cd "$REPO" || exit 1
export SELFEE_STRICT=1
: > "$OUT/steps.txt"
failed=0

step() {  # step NAME LIMIT_S COMMAND...: stdout+stderr to NAME.log, status and seconds to steps.txt
  local name=$1 limit=$2
  shift 2
  local t0=$SECONDS rc
  echo "gpu_check: $name (at most ${limit}s)"
  timeout --kill-after=10 "$limit" "$@" > "$OUT/$name.log" 2>&1
  rc=$?
  printf '%-12s rc=%-3s %4ss\n' "$name" "$rc" "$((SECONDS - t0))" | tee -a "$OUT/steps.txt"
  [ "$rc" -eq 0 ] || failed=1
}

step doctor 40 sh -c "\"$PY\" -m selfee doctor --json > \"$OUT/doctor.json\""
step gpu_tests 180 "$PY" -m pytest -q -m "gpu or trt" -p no:cacheprovider --junitxml="$OUT/gpu_tests.xml" tests
step train_step 45 "$PY" -m selfee.bench.train_step --device cuda --batch-size 256 --size 256 192 --amp bf16 \
  --no-compile --steps 10 --repeats 3 --out "$OUT/train_step.json"
step pipeline 60 "$PY" -m selfee.bench.pipeline --device cuda --skip-original --embed --batch-size 256 \
  --frames 1200 --batches 8 --repeats 2 --out "$OUT/pipeline.json"
step embed 135 "$PY" -m selfee.bench.embed --device cuda --backends torch tensorrt --precision fp16 \
  --video-frames 2000 --out "$OUT/embed.json"

"$PY" - "$OUT" <<'PYEOF' | tee "$OUT/summary.md"
import json, sys
from pathlib import Path

out = Path(sys.argv[1])
rows = []
for name in ("train_step", "pipeline", "embed"):
    path = out / f"{name}.json"
    if not path.is_file():
        rows.append((name, "-", "-", "no result (see %s.log)" % name))
        continue
    for r in json.loads(path.read_text()).get("results", []):
        what = r.get("backend") or r.get("loader") or " ".join(str(r[k]) for k in ("amp", "compile") if k in r)
        for metric in ("samples_per_s", "model_fps", "end_to_end_fps"):
            if metric in r:
                value = r[metric]
                rows.append((name, what, metric, "-" if value is None else f"{value:,.0f}"))
        if r.get("error") or r.get("note"):
            rows.append((name, what, "note", str(r.get("error") or r.get("note"))[:120]))
steps = (out / "steps.txt").read_text().split("\n")
print("| benchmark | what | metric | value |\n|---|---|---|---|")
for row in rows:
    print("| " + " | ".join(row) + " |")
print("\nsteps (exit status, seconds):\n\n```\n" + "\n".join(s for s in steps if s) + "\n```")
PYEOF
echo "gpu_check: results in $OUT"
exit $failed
