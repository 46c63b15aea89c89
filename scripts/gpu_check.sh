#!/usr/bin/env bash
# One prepared GPU check, for a session lent a GPU machine (offline; its own python3 and torch):
#   a. the CUDA tests (pytest -m cuda tests/gpu)
#   b. scripts/bench_train.py: base and big presets, bf16: target tokens/s, peak memory, MFU
#   c. Multi30k de->en, base preset, trained for GPU_CHECK_TRAIN_MINUTES, then test_2016_flickr BLEU
#   d. scripts/bench_families.py: the four model families under one short budget, by-length table + plot
# Each step has its own timeout and log under $OUT (default gpu_check_out/); $OUT/summary.md
# grows after every step, so a run cut short still reports what it did. The whole run stays
# inside GPU_CHECK_BUDGET_S (default 290 s): a step that would start after it is skipped.
#
#   bash scripts/make_wheelhouse.sh 3.12      # here, once: wheels + Multi30k into gpu_carry/
#   bash scripts/gpu_check.sh                 # there, with gpu_carry carried (docs/gpu-check.md)
#   bash scripts/gpu_check.sh --dry-run       # anywhere: the same steps on CPU with tiny budgets
#
# Without CUDA (and without --dry-run) it exits at once with status 2.
# Settings (environment): GPU_CHECK_DEVICE=cuda|cpu (cpu = --dry-run), GPU_CHECK_STEPS ("a b c d"),
# GPU_CHECK_BUDGET_S, GPU_CHECK_TRAIN_MINUTES (1.5), GPU_CHECK_COMPILE (false: torch.compile's first
# compile costs tens of seconds per model; auto measures the compiled path), GPU_CHECK_PYTHON
# (python3), GPU_CARRY (gpu_carry), GPU_CHECK_WORK (data/gpu_check), GPU_CHECK_VENV.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
ROOT=$(pwd)

DEVICE="${GPU_CHECK_DEVICE:-cuda}"
for arg in "$@"; do
  case "$arg" in
    --dry-run) DEVICE=cpu ;;
    -h | --help) awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument '$arg' (see --help)" >&2; exit 2 ;;
  esac
done
case "$DEVICE" in
  cuda | cpu) ;;
  *) echo "gpu_check.sh: GPU_CHECK_DEVICE must be cuda or cpu, not '$DEVICE'" >&2; exit 2 ;;
esac
PY="${GPU_CHECK_PYTHON:-python3}"

# ---------------------------------------------------------------- 0. a GPU, or stop at once
"$PY" - "$DEVICE" <<'EOF'
import sys
try:
    import torch
except ImportError as exc:
    print(f"gpu_check.sh: {sys.executable} cannot import torch ({exc}); set GPU_CHECK_PYTHON", file=sys.stderr)
    sys.exit(3)
if sys.argv[1] == "cuda" and not torch.cuda.is_available():
    print(
        f"no CUDA device: gpu_check.sh needs a GPU (torch {torch.__version__} under {sys.executable} sees none); "
        "bash scripts/gpu_check.sh --dry-run runs its steps on CPU",
        file=sys.stderr,
    )
    sys.exit(2)
EOF
rc=$?
[ $rc = 0 ] || exit $rc

if [ "$DEVICE" = cuda ]; then
  BUDGET_S="${GPU_CHECK_BUDGET_S:-290}"
  TRAIN_MINUTES="${GPU_CHECK_TRAIN_MINUTES:-1.5}"
  PRESETS=(base big)
  PRECISION=bf16
  BENCH=(--steps 50 --log-every 10)
  FAMILY_MINUTES=0.1
  FAMILIES=(--speed-repeats 3)  # all four
  EXTRA=()  # the configs' own decoding (beam 5)
  export OMP_NUM_THREADS="${OMP_NUM_THREADS:-4}"
  # seconds per step: a, prepare, b (each preset), c's evaluate, d; c's training gets its minutes + 60
  LIMIT_A=100 LIMIT_PREP=60 LIMIT_B=75 LIMIT_EVAL=60 LIMIT_D=150 LIMIT_SETUP=90
else
  BUDGET_S="${GPU_CHECK_BUDGET_S:-900}"
  TRAIN_MINUTES="${GPU_CHECK_TRAIN_MINUTES:-0.1}"
  PRESETS=(tiny)
  PRECISION=fp32
  BENCH=(--steps 6 --log-every 2)
  FAMILY_MINUTES=0.1
  # one Transformer and one recurrent family; an untrained model's beam search over 1,000
  # sentences takes minutes on 2 cores, so greedy validation/evaluation and one speed run
  FAMILIES=(--only transformer luong --speed-repeats 1)
  EXTRA=(decode.beam=1 train.log_every=2)
  export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
  LIMIT_A=120 LIMIT_PREP=120 LIMIT_B=120 LIMIT_EVAL=120 LIMIT_D=600 LIMIT_SETUP=120
fi
COMPILE="${GPU_CHECK_COMPILE:-false}"
STEPS=" ${GPU_CHECK_STEPS:-a b c d} "
CARRY=$(realpath -m "${GPU_CARRY:-gpu_carry}")
WORK=$(realpath -m "${GPU_CHECK_WORK:-data/gpu_check}")
OUT=$(realpath -m "${OUT:-gpu_check_out}")
VENV=$(realpath -m "${GPU_CHECK_VENV:-${TMPDIR:-/tmp}/gpu_check_venv}")
CONFIG=configs/multi30k_de_en.yaml
SUMMARY="$OUT/summary.md"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
mkdir -p "$OUT"
# WORK holds experiment dirs; removed only when an earlier run of this script made it
[ -e "$WORK/.gpu_check" ] && rm -rf "$WORK"
mkdir -p "$WORK" && touch "$WORK/.gpu_check"
FAILED=0

say() { echo "$*" | tee -a "$SUMMARY"; }
# step NAME LIMIT_S LOG CMD...: run CMD under `timeout` (its whole process group), stderr to
# LOG, stdout to $WORK/stdout (then appended to LOG); one summary line with status and seconds.
step() {
  local name=$1 limit=$2 log=$3 left t0 rc status
  shift 3
  left=$((BUDGET_S - SECONDS))
  if [ "$left" -lt 20 ]; then
    say "- **$name**: skipped: the ${BUDGET_S} s budget is spent (rerun with GPU_CHECK_STEPS)"
    FAILED=1
    return 99
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "== $name (limit ${limit} s)"
  echo "== $name (limit ${limit} s): $*" >>"$log"
  t0=$SECONDS
  timeout --kill-after=10 "$limit" "$@" 2>>"$log" >"$WORK/stdout"
  rc=$?
  cat "$WORK/stdout" >>"$log"
  case $rc in
    0) status=ok ;;
    124 | 137) status="TIMED OUT after ${limit} s" ;;
    *) status="FAILED (exit $rc; see ${log##*/})" ;;
  esac
  [ "$rc" = 0 ] || FAILED=1
  LAST_S=$((SECONDS - t0))
  say "- **$name**: $status in ${LAST_S} s"
  return "$rc"
}
# a field of the JSON line(s) in $WORK/stdout, as "key=value, ..." for the summary
fields() {
  "$PY" - "$WORK/stdout" "$@" <<'EOF'
import json, sys
lines = [x for x in open(sys.argv[1]).read().splitlines() if x.startswith("{")]
record = json.loads(lines[-1]) if lines else {}
print(", ".join(f"{k}={record.get(k)}" for k in sys.argv[2:]))
EOF
}

{
  echo "# gpu_check $(date -u '+%Y-%m-%d %H:%M UTC'), device $DEVICE"
  echo
} >"$SUMMARY"
"$PY" - >>"$SUMMARY" <<'EOF'
import platform, sys
import torch
gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
cuda = torch.version.cuda or "-"
print(f"- python {platform.python_version()} ({sys.executable}), torch {torch.__version__} (CUDA {cuda}), GPU: {gpu}")
EOF

# ---------------------------------------------------------------- 1. dependencies (offline)
SETUP_LOG="$OUT/0_setup.log"
: >"$SETUP_LOG"
PYVER=$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  say "- python $PYVER: nmt needs Python >= 3.11 (pyproject.toml); stopping"
  exit 3
fi
WHEELS="$CARRY/wheelhouse/cp${PYVER/./}"
# dist:module:min; numpy and lxml (sacrebleu imports it) are not in the wheelhouse: the GPU image has them
REQUIRED=(numpy:numpy:1.24 lxml:lxml:4 sentencepiece:sentencepiece:0.2 sacrebleu:sacrebleu:2.4 typer:typer:0.12
  pyyaml:yaml:6 tqdm:tqdm:4.60 rich:rich:13 pytest:pytest:8)
OPTIONAL=(hypothesis:hypothesis:6 matplotlib:matplotlib:3.7)  # tests/unit only; d's plot
missing() {  # the requirements (dist>=min) among "dist:module:min" args that $PY lacks
  "$PY" - "$@" <<'EOF'
import importlib.metadata as md
import importlib.util
import re
import sys

def key(version):
    return tuple(int(x) for x in re.findall(r"\d+", version)[:3])

for item in sys.argv[1:]:
    dist, module, low = item.split(":")
    try:
        have = md.version(dist)
    except md.PackageNotFoundError:
        have = None
    if have is None or importlib.util.find_spec(module) is None or key(have) < key(low):
        print(f"{dist}>={low}")
EOF
}
# a venv on top of $PY: --system-site-packages gives the base interpreter's packages, and a
# .pth adds $PY's own site-packages (the GPU image's python3 is itself a venv, holding torch)
make_venv() {
  rm -rf "$VENV"
  "$PY" -m venv --system-site-packages --without-pip "$VENV" || return 1
  local site
  site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])') || return 1
  "$PY" -c 'import sys; print("\n".join(p for p in sys.path if p.endswith(("site-packages", "dist-packages"))))' \
    >"$site/_gpu_check_parent.pth"
}
wheel_install() {  # pip from the venv (found through the .pth), wheels from the carry only
  env -u PIP_FIND_LINKS -u PIP_INDEX_URL -u PIP_EXTRA_INDEX_URL -u PIP_CONSTRAINT PIP_CONFIG_FILE=/dev/null \
    timeout "$LIMIT_SETUP" "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-index \
    --find-links "$WHEELS" --find-links "$CARRY/wheelhouse/any" "$@" >>"$SETUP_LOG" 2>&1
}
t0=$SECONDS
mapfile -t need < <(missing "${REQUIRED[@]}")
mapfile -t want < <(missing "${OPTIONAL[@]}")
if [ ${#need[@]} = 0 ] && [ ${#want[@]} = 0 ]; then
  if [ -d "$WHEELS" ]; then wheelhouse="$WHEELS not needed"; else wheelhouse="no wheelhouse for Python $PYVER carried"; fi
  say "- dependencies: all present in $PY, nothing installed ($wheelhouse)"
elif [ ! -d "$WHEELS" ]; then
  have=$(find "$CARRY/wheelhouse" -maxdepth 1 -name 'cp*' -printf '%f ' 2>/dev/null)
  say "- dependencies: $PY lacks ${need[*]} ${want[*]}, and there is no wheelhouse for Python $PYVER" \
    "($WHEELS; have: ${have:-none}): run \`bash scripts/make_wheelhouse.sh $PYVER\` on the dev machine and carry gpu_carry"
  [ ${#need[@]} = 0 ] || exit 3
else
  echo "installing from $WHEELS into $VENV: ${need[*]} ${want[*]}"
  make_venv >>"$SETUP_LOG" 2>&1 || { say "- dependencies: could not make a venv with $PY (see 0_setup.log)"; exit 3; }
  [ ${#need[@]} = 0 ] || wheel_install "${need[@]}"
  [ ${#want[@]} = 0 ] || wheel_install "${want[@]}" || echo "optional packages not installed: ${want[*]}" >>"$SETUP_LOG"
  PY="$VENV/bin/python"
  mapfile -t still < <(missing "${REQUIRED[@]}")
  mapfile -t want_left < <(missing "${OPTIONAL[@]}")
  if [ ${#still[@]} != 0 ]; then
    say "- dependencies: ${still[*]} still missing after installing from $WHEELS (not in the wheelhouse?" \
      "numpy and lxml are left out of it: see scripts/make_wheelhouse.sh); see 0_setup.log"
    exit 3
  fi
  say "- dependencies: installed ${need[*]} ${want[*]} from $WHEELS in $((SECONDS - t0)) s" \
    "${want_left[*]:+(optional, still missing: ${want_left[*]})}"
fi
if [ -f "$CARRY/data/multi30k/train.de.gz" ]; then
  export NMT_DATA="$CARRY/data"
elif [ ! -f "${NMT_DATA:-/nonexistent}/multi30k/train.de.gz" ]; then
  say "- data: no Multi30k in $CARRY/data or NMT_DATA: run scripts/make_wheelhouse.sh and carry gpu_carry"
  exit 3
fi
say "- NMT_DATA=$NMT_DATA, OMP_NUM_THREADS=$OMP_NUM_THREADS, train.compile=$COMPILE, budget ${BUDGET_S} s"
NMT=("$PY" -m nmt)

# ---------------------------------------------------------------- a. CUDA tests
if [[ "$STEPS" == *" a "* ]]; then
  step "a. pytest -m cuda tests/gpu" "$LIMIT_A" "$OUT/a_pytest.log" \
    "$PY" -m pytest -m cuda -q -p no:cacheprovider tests/gpu
  say "  - $(grep -E '(passed|failed|skipped|error)' "$WORK/stdout" | tail -1)"
fi

# ---------------------------------------------------------------- b. training throughput
M30K=(--set "workdir=$WORK/m30k")
COMMON=(--set "train.device=$DEVICE" --set "train.precision=$PRECISION" --set "train.compile=$COMPILE")
for extra in ${EXTRA[@]+"${EXTRA[@]}"}; do COMMON+=(--set "$extra"); done
if [[ "$STEPS" == *" b "* || "$STEPS" == *" c "* ]]; then
  step "prepare Multi30k" "$LIMIT_PREP" "$OUT/b_bench.log" "${NMT[@]}" prepare "$CONFIG" "${M30K[@]}"
fi
if [[ "$STEPS" == *" b "* ]]; then
  for preset in "${PRESETS[@]}"; do
    if step "b. bench_train $preset" "$LIMIT_B" "$OUT/b_bench.log" "$PY" scripts/bench_train.py "$CONFIG" \
      "${BENCH[@]}" "${M30K[@]}" "${COMMON[@]}" --set "model.preset=$preset"; then
      say "  - $(fields tgt_tokens_per_s s_per_update peak_cuda_gib mfu params gpu)"
    fi
  done
fi

# ---------------------------------------------------------------- c. a short real training run
if [[ "$STEPS" == *" c "* ]]; then
  TRAIN=("${M30K[@]}" "${COMMON[@]}" --set "model.preset=${PRESETS[0]}" --set "train.max_minutes=$TRAIN_MINUTES"
    --set train.valid_every=1000)
  limit=$("$PY" -c "print(int($TRAIN_MINUTES * 60) + 60)")
  step "c. train ${PRESETS[0]} for $TRAIN_MINUTES min" "$limit" "$OUT/c_train.log" \
    "${NMT[@]}" train "$CONFIG" --restart "${TRAIN[@]}"
  "$PY" - "$WORK/m30k/metrics.jsonl" <<'EOF' | tee -a "$SUMMARY" "$OUT/c_train.log"
import json, statistics, sys
try:
    records = [json.loads(x) for x in open(sys.argv[1])]
except OSError:
    sys.exit()
train = [r for r in records if r["event"] == "train"]
valid = [r for r in records if r["event"] == "valid"]
speed = statistics.median(r["tgt_tokens_per_s"] for r in train[1:] or train) if train else None
bleu = ", ".join(f"{r['step']}: {r['bleu']:.2f}" for r in valid)
steps = max((r["step"] for r in records), default=0)
print(f"  - steps={steps}, tgt_tokens_per_s={speed and round(speed)}, valid BLEU by step: {bleu}")
EOF
  if step "c. evaluate test_2016_flickr (best.pt)" "$LIMIT_EVAL" "$OUT/c_train.log" \
    "${NMT[@]}" evaluate "$CONFIG" --split test_2016_flickr --json --device "$DEVICE" "${TRAIN[@]}"; then
    say "  - test_2016_flickr: $("$PY" -c 'import json, sys; r = json.load(open(sys.argv[1]))
print(", ".join(f"{k}={v:.2f}" for k, v in r["scores"].items()))' "$WORK/stdout")"
  fi
fi

# ---------------------------------------------------------------- d. model families
if [[ "$STEPS" == *" d "* ]]; then
  FAMILY_SET=(--set "train.compile=$COMPILE")
  for extra in ${EXTRA[@]+"${EXTRA[@]}"}; do FAMILY_SET+=(--set "$extra"); done
  step "d. bench_families, $FAMILY_MINUTES min each" "$LIMIT_D" "$OUT/d_families.log" \
    "$PY" scripts/bench_families.py --minutes "$FAMILY_MINUTES" --device "$DEVICE" --out "$WORK/families" \
    "${FAMILIES[@]}" "${FAMILY_SET[@]}"
  [ -f "$WORK/families/results.json" ] && cp "$WORK/families/results.json" "$OUT/d_results.json"
  [ -f "$WORK/families/bleu_by_length.png" ] && cp "$WORK/families/bleu_by_length.png" "$OUT/d_bleu_by_length.png"
  if grep -q '^|' "$WORK/stdout"; then
    echo | tee -a "$SUMMARY"
    grep '^|' "$WORK/stdout" | tee -a "$SUMMARY"
    echo | tee -a "$SUMMARY"
  fi
fi

say "- total: ${SECONDS} s; logs and summary in $OUT"
exit $FAILED
