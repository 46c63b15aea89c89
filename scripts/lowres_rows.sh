#!/usr/bin/env bash
# The five rows of BENCHMARKS.md "Better models from little parallel data" (low-resource de->en on Multi30k):
#   (1) scratch on 5k pairs      (2) pretrain + fine-tune      (3) 5k + tagged back-translation
#   (4) pretrain + fine-tune on 5k + tagged back-translation      (5) all 29k pairs (the upper bound)
# MIN minutes of training wall time per stage (validation included). Rows 3 and 4 need the reverse en->de model
# (5k pairs, MIN minutes) and its back-translation of mono.en; rows 2 and 4 share one pretraining (MIN minutes).
#   usage: NMT_DATA=$(realpath ../shared/data) MIN=15 bash scripts/lowres_rows.sh OUT_DIR [ROW...]   (ROW: 1..5)
# Output: OUT_DIR/<row>/ experiments, OUT_DIR/<row>.<test set>.json (nmt evaluate --json: BLEU, chrF), OUT_DIR/log.
set -euo pipefail
R="$(realpath -m "${1:?usage: lowres_rows.sh OUT_DIR [ROW...]}")"; shift
ROWS="${*:-1 2 3 4 5}"
: "${NMT_DATA:?export NMT_DATA=\$(realpath ../shared/data)}"
MIN="${MIN:-15}"
NMT="${NMT:-nmt}"
export LOWRES="$R/data"
mkdir -p "$R"
log() { echo "$1 $(date -u +%FT%TZ)" | tee -a "$R/log"; }
[ -f "$LOWRES/mono.en" ] || bash "$(dirname "$0")/make_lowres_multi30k.sh" "$LOWRES"
C=configs/lowres_de_en.yaml
P=configs/lowres_de_en_pretrain.yaml
BT_SOURCE="data.splits.train=[$LOWRES/train5k, {path: $R/bt/mono, weight: 0.5, tag: bt}]"

stage() {  # stage NAME COMMAND CONFIG ARGS...: prepare (train/pretrain) and train for MIN minutes
  local name=$1 cmd=$2 cfg=$3; shift 3
  $NMT prepare "$cfg" --set "workdir=$R/$name" "$@" > "$R/$name.prepare.log" 2>&1
  $NMT "$cmd" "$cfg" --set "workdir=$R/$name" "$@" --set "train.max_minutes=$MIN" > "$R/$name.train.log" 2>&1
  log "$name: $cmd done"
}
score() {  # score ROW: best.pt on both test sets
  for s in test_2016_flickr test_2017_flickr; do
    $NMT evaluate "$R/$1/checkpoints/best.pt" --src "$LOWRES/$s.de" --ref "$LOWRES/$s.en" \
      --out "$R/$1.$s.hyp" --json > "$R/$1.$s.json"
  done
  log "$1: scored"
}
back_translation() {  # the reverse model and the back-translated mono.en (once)
  [ -f "$R/bt/mono.de" ] && return
  stage reverse train "$C" --set data.src_lang=en --set data.tgt_lang=de
  mkdir -p "$R/bt"
  $NMT backtranslate "$R/reverse/checkpoints/best.pt" -i "$LOWRES/mono.en" -o "$R/bt/mono" --json > "$R/bt.json"
  log "back-translation done"
}
pretraining() {  # pretraining on mono.de + mono.en (once); its vocabulary also samples the tagged BT source
  [ -f "$R/pre/pretrain/checkpoints/best.pt" ] && return
  back_translation
  stage pre pretrain "$P" --set "$BT_SOURCE"
}
for row in $ROWS; do
  case $row in
    1) stage scratch train "$C"; score scratch ;;
    2) pretraining; stage ft train "$P" --set "data.splits.train=$LOWRES/train5k" \
         --set "train.init_from=$R/pre/pretrain/checkpoints/best.pt"; score ft ;;
    3) back_translation; stage bt5k train "$C" --set "$BT_SOURCE"; score bt5k ;;
    4) pretraining; stage ftbt train "$P" --set "$BT_SOURCE" \
         --set "train.init_from=$R/pre/pretrain/checkpoints/best.pt"; score ftbt ;;
    5) stage full train "$C" --set "data.splits.train=$NMT_DATA/multi30k/train"; score full ;;
    *) echo "unknown row $row (1..5)"; exit 2 ;;
  esac
done
