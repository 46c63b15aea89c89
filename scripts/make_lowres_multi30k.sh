#!/usr/bin/env bash
# The low-resource simulation of BENCHMARKS.md ("Better models from little parallel data"), from Multi30k
# task 1 de-en, with no monolingual line whose translation is anywhere in training:
#   parallel:   train lines 1-5,000 (de and en)
#   mono.de:    German of train lines 5,001-17,000 only   (denoising pretraining)
#   mono.en:    English of train lines 17,001-29,000 only (back-translated into German by an en->de model;
#               pretraining too, configs/lowres_de_en_pretrain.yaml)
# The fr and cs sides are translations of these lines: not used.
#   usage: NMT_DATA=$(realpath ../shared/data) bash scripts/make_lowres_multi30k.sh OUT_DIR
set -euo pipefail
OUT="${1:?usage: make_lowres_multi30k.sh OUT_DIR}"
: "${NMT_DATA:?export NMT_DATA=\$(realpath ../shared/data)}"
M="$NMT_DATA/multi30k"
mkdir -p "$OUT"
for lang in de en; do
  gzip -dc "$M/train.$lang.gz" | sed -n '1,5000p' > "$OUT/train5k.$lang"
  gzip -dc "$M/val.$lang.gz" > "$OUT/val.$lang"
  for t in test_2016_flickr test_2017_flickr; do gzip -dc "$M/$t.$lang.gz" > "$OUT/$t.$lang"; done
done
gzip -dc "$M/train.de.gz" | sed -n '5001,17000p' > "$OUT/mono.de"
gzip -dc "$M/train.en.gz" | sed -n '17001,29000p' > "$OUT/mono.en"
wc -l "$OUT"/train5k.* "$OUT"/mono.* | sed '$d'
