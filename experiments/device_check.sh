#!/usr/bin/env bash
# One-call accelerator check: the benchmark rows the performance goals need, in one JSON + Markdown.
#
#   experiments/device_check.sh                      # on a GPU/TPU host; about 5-8 minutes
#   experiments/device_check.sh --out_dir=DIR        # default experiments/results/device_check_<device>
#   experiments/device_check.sh --dry_run            # print the commands, run nothing
#   experiments/device_check.sh --tiny               # the same commands at tiny sizes (checks them on a CPU)
#
# Rows (performance.md; experiments/bench_suite.py and bench_autoattack.py do the measuring):
#   1. steps: SA-MDRAD (ResNet-18 student + WRN-34-10, ResNet-50, VGG-16-BN teachers), PGD-AT and AdaAD
#      (teacher WRN-34-10), 32x32, batch 512, bfloat16, PGD-10: img/s median (min-max), compile + first
#      step, analytic GFLOP/img, MFU against the bf16 matmul ceiling measured on the device, peak memory;
#   2. AutoAttack (standard) on 10,000 points of a randomly initialised ResNet-18 on synthetic
#      CIFAR-shaped data labelled with its own predictions, eps 8/255: s per stage and per 1,000 points.
# Writes DIR/device_check.json (both records + the device) and DIR/device_check.md (both tables).
# Run it from the repository root of a checkout with the library installed; PYTHON picks the interpreter.
set -euo pipefail

PY="${PYTHON:-python}"
DRY=0
TINY=0
OUT_DIR=""
STEP_TIMEOUT="${STEP_TIMEOUT:-330}"   # seconds for the step rows
AA_TIMEOUT="${AA_TIMEOUT:-150}"       # seconds for the AutoAttack row

usage() { sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; }

for arg in "$@"; do
  case "$arg" in
    --dry_run) DRY=1 ;;
    --tiny) TINY=1 ;;
    --out_dir=*) OUT_DIR="${arg#--out_dir=}" ;;
    -h|--help) usage; exit 0 ;;
    *) echo "device_check.sh: unknown argument '$arg'; accepted: --dry_run, --tiny, --out_dir=DIR, --help" >&2; exit 2 ;;
  esac
done

cd "$(dirname "$0")/.."

if [[ $TINY == 1 ]]; then   # a loaded CPU compiles slowly: longer limits unless given
  STEP_TIMEOUT="${STEP_TIMEOUT_TINY:-1200}"
  AA_TIMEOUT="${AA_TIMEOUT_TINY:-600}"
  STEPS_ARGS=(--methods=sa_mdrad,pgd_at,adaad --models=resnet_tiny --width=1 --teachers=resnet_tiny,wrn_tiny,resnet_tiny
              --teacher_width=1 --image_size=8 --batches=8 --dtypes=bfloat16 --pgd_steps=2 --steps=1 --reps=1 --matmul_n=256)
  AA_ARGS=(--synthetic=resnet_tiny --image_size=8 --n_points=16 --batch=16 --eps_255=8 --reps=1)
else
  STEPS_ARGS=(--methods=sa_mdrad,pgd_at,adaad --models=resnet18 --width=1 --teachers=wrn34_10,resnet50,vgg16_bn
              --teacher_width=1 --image_size=32 --batches=512 --dtypes=bfloat16 --pgd_steps=10 --steps=5 --reps=3)
  AA_ARGS=(--synthetic=resnet18 --image_size=32 --n_points=10000 --batch=5000 --eps_255=8 --reps=1)
fi

if [[ -z "$OUT_DIR" ]]; then
  if [[ $DRY == 1 ]]; then
    OUT_DIR="experiments/results/device_check_DEVICE"
  else
    DEVICE=$("$PY" -c "import jax; print(jax.devices()[0].device_kind.replace(' ', '_'))")
    OUT_DIR="experiments/results/device_check_${DEVICE}$([[ $TINY == 1 ]] && echo _tiny)"
  fi
fi

run() {
  echo "+ $*"
  if [[ $DRY == 0 ]]; then "$@"; fi
}

run mkdir -p "$OUT_DIR"
START=$(date +%s)
run timeout "$STEP_TIMEOUT" "$PY" experiments/bench_suite.py "${STEPS_ARGS[@]}" \
    --out="$OUT_DIR/steps.json" --md="$OUT_DIR/steps.md" || echo "step rows: exit $? (partial results kept)"
run timeout "$AA_TIMEOUT" "$PY" experiments/bench_autoattack.py "${AA_ARGS[@]}" \
    --out="$OUT_DIR/autoattack.json" || echo "AutoAttack row: exit $?"

COMBINE='
import json, os, sys, time
out_dir, started = sys.argv[1], float(sys.argv[2])
def load(name):
    path = os.path.join(out_dir, name)
    return json.load(open(path)) if os.path.exists(path) else None
steps, aa = load("steps.json"), load("autoattack.json")
try:
    import jax
    device = {"kind": jax.devices()[0].device_kind, "platform": jax.devices()[0].platform, "count": jax.device_count()}
except Exception as e:  # noqa: BLE001
    device = {"error": str(e)}
record = {"device": device, "wall_s": time.time() - started, "load_average": os.getloadavg(),
          "steps": steps, "autoattack": aa}
json.dump(record, open(os.path.join(out_dir, "device_check.json"), "w"), indent=2)
wall = record["wall_s"]
md = [f"Device: {device}. Wall time {wall:.0f} s.", ""]
md += ["Training steps (experiments/bench_suite.py):", "", steps["table"] if steps else "(no step results)", ""]
if aa:
    per = aa["seconds_per_1000_points"]
    name, n, clean, robust = aa["model"]["name"], aa["n_points"], 100 * aa["clean_accuracy"], 100 * aa["robust_accuracy"]
    attacked, compile_s = aa["n_attacked"], aa["compile_seconds"].get("total", 0)
    md += ["AutoAttack (experiments/bench_autoattack.py, synthetic data):", "",
           "| model | points | clean % | robust % | attacked per stage | " + " | ".join(f"{s} s/1k" for s in per) + " | compile s |",
           "|---|---|---|---|---|" + "---|" * len(per) + "---|",
           f"| {name} | {n} | {clean:.1f} | {robust:.1f} | {attacked} | " + " | ".join(f"{v:.1f}" for v in per.values())
           + f" | {compile_s:.0f} |"]
else:
    md += ["(no AutoAttack result)"]
open(os.path.join(out_dir, "device_check.md"), "w").write("\n".join(md) + "\n")
print("\n".join(md))
print(f"wrote {out_dir}/device_check.json and device_check.md")
'
echo "+ $PY -c <combine steps.json + autoattack.json> $OUT_DIR"
if [[ $DRY == 0 ]]; then "$PY" -c "$COMBINE" "$OUT_DIR" "$START"; fi
