#!/usr/bin/env bash
# The demo: generate -> prepare -> train -> evaluate -> translate, on CPU, in about 3 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
NMT="${NMT:-.venv/bin/nmt}"
PY="${PY:-.venv/bin/python}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
start=$(date +%s)
"$PY" -m nmt.demo data/demo/corpus
"$NMT" prepare configs/demo.yaml
"$NMT" train configs/demo.yaml --restart
"$NMT" evaluate configs/demo.yaml --split test --fail-under 90
cat > data/demo/examples.en <<'TXT'
three hundred twenty-one , forty-five , seven
one hundred one , ninety-nine , twelve , six hundred seventy-eight
twenty-one , two hundred , thirteen
TXT
echo "example translations (nmt translate data/demo/exp/checkpoints/best.pt -i data/demo/examples.en):"
"$NMT" translate data/demo/exp/checkpoints/best.pt -i data/demo/examples.en | paste data/demo/examples.en - | sed 's/\t/  ->  /'
echo "demo finished in $(( $(date +%s) - start )) s"
