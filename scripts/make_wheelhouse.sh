#!/usr/bin/env bash
# What scripts/gpu_check.sh needs on an offline GPU machine, in the git-ignored gpu_carry/:
#   gpu_carry/wheelhouse/cpXY/   Linux x86-64 wheels of nmt's dependencies for CPython X.Y
#   gpu_carry/wheelhouse/any/    the version-independent (py3-none-any) ones, stored once
#   gpu_carry/data/multi30k/     Multi30k's gzipped files (NMT_DATA=gpu_carry/data there)
#   bash scripts/make_wheelhouse.sh [PYVER ...]      (default 3.12, the GPU image's; e.g. 3.11 3.12)
# A version below 3.11 is skipped: nmt needs 3.11 (pyproject.toml), and gpu_check.sh stops there.
# Not torch or nvidia-*: the GPU machine's own torch is used. Not numpy, matplotlib, lxml and
# matplotlib's compiled dependencies either (HEAVY below): 45 MB per Python version, more than
# the device tool carries (64 MiB, working tree included), and its image has them all
# (/work/.library/device/KINDS.md); gpu_check.sh says so when one is missing there.
# pip evaluates the packages' environment markers for the Python running it (PY, 3.11), not
# for --python-version; for 3.11 and later no dependency of these packages differs.
# The wheelhouse is rebuilt from scratch each run; the total is printed, and the script fails
# above GPU_CARRY_MAX_MIB (default 48).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-.venv/bin/python}"
DEST=gpu_carry
MAX_MIB="${GPU_CARRY_MAX_MIB:-48}"
# pyproject.toml's runtime dependencies, then what tests/gpu and bench_families' plot need
PACKAGES=("numpy>=1.24" "sentencepiece>=0.2" "sacrebleu>=2.4" "typer>=0.12" "pyyaml>=6" "tqdm>=4.60" "rich>=13"
  "pytest>=8" "hypothesis>=6" "matplotlib>=3.7")
HEAVY=(numpy matplotlib pillow fonttools contourpy kiwisolver lxml)  # wheel name prefixes, dropped
[ $# -gt 0 ] || set -- 3.12
[ -n "${NMT_DATA:-}" ] || NMT_DATA=$(realpath ../shared/data)

rm -rf "$DEST/wheelhouse"
mkdir -p "$DEST/wheelhouse/any" "$DEST/data/multi30k"
for ver in "$@"; do
  [[ "$ver" =~ ^3\.([0-9]+)$ ]] || { echo "error: '$ver' is not a Python version like 3.12" >&2; exit 2; }
  if [ "${BASH_REMATCH[1]}" -lt 11 ]; then
    echo "== Python $ver: skipped (nmt needs Python >= 3.11)"
    continue
  fi
  dir="$DEST/wheelhouse/cp${ver/./}"
  mkdir -p "$dir"
  echo "== Python $ver -> $dir"
  # this machine's pip.conf names a local index folder that may not exist: keep its warnings out
  "$PY" -m pip download -q --disable-pip-version-check --only-binary=:all: --python-version "$ver" \
    --implementation cp --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux_2_28_x86_64 -d "$dir" "${PACKAGES[@]}" \
    2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
  for name in "${HEAVY[@]}"; do rm -f "$dir/$name"-[0-9]*.whl; done
  for whl in "$dir"/*-none-any.whl; do
    [ -e "$whl" ] || continue
    if [ -e "$DEST/wheelhouse/any/${whl##*/}" ]; then rm "$whl"; else mv "$whl" "$DEST/wheelhouse/any/"; fi
  done
done
cp "$NMT_DATA"/multi30k/*.gz "$DEST/data/multi30k/"
chmod u+w "$DEST"/data/multi30k/*.gz  # copied read-only from the shared folder; the next run overwrites them

du -sh "$DEST"/wheelhouse/* "$DEST/data"
total_kib=$(du -sk "$DEST" | cut -f1)
echo "gpu_carry total: $((total_kib / 1024)) MiB (device tool limit: 64 MiB with the working tree)"
if [ "$total_kib" -gt $((MAX_MIB * 1024)) ]; then
  echo "error: gpu_carry is over ${MAX_MIB} MiB; build fewer Python versions (the GPU image's python3 is 3.12)" >&2
  exit 1
fi
