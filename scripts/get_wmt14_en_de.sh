#!/usr/bin/env bash
# WMT14 English-German (gzipped, one sentence per line) into DEST/wmt14_en_de, from statmt.org,
# with line counts verified:
#   train.{en,de}.gz  Europarl v7 + Common Crawl + News Commentary v9 (de-en), concatenated:
#                     1,920,209 + 2,399,123 + 201,288 = 4,520,620 lines, the training data of
#                     fairseq's prepare-wmt14en2de.sh --icml17. TFDS/Hugging Face's wmt14 de-en
#                     counts 4,508,785 pairs: they skip pairs with an empty side, as `nmt prepare` does.
#   valid.{en,de}.gz  newstest2013 (3,000 lines, the plain text in dev.tgz)
#   test.{en,de}.gz   newstest2014 full (3,003 lines, test-full.tgz): sacreBLEU's wmt14/full, its
#                     <seg> text extracted as sacreBLEU does, so scores match `sacrebleu -t wmt14/full`.
#                     (sacreBLEU's plain wmt14 is the filtered set, 2,737 lines.)
# The archives (about 1.6 GB) are kept in DEST/wmt14_en_de/orig; delete them once this succeeds.
# Nothing is downloaded for splits already present and complete, so with NMT_DATA pointing at a
# complete copy this is a no-op.
#   bash scripts/get_wmt14_en_de.sh DEST       (then: export NMT_DATA=$(realpath DEST))
# WMT14_URL replaces https://statmt.org (a mirror with the same wmt13/ and wmt14/ paths);
# WMT14_LINES_{EUROPARL,COMMONCRAWL,NC,VALID,TEST} replace the expected line counts.
set -euo pipefail
DEST="${1:-${NMT_DATA:-data/wmt14-root}}"
BASE="${WMT14_URL:-https://statmt.org}"
OUT="$DEST/wmt14_en_de"
ORIG="$OUT/orig"
N_EUROPARL="${WMT14_LINES_EUROPARL:-1920209}"
N_COMMONCRAWL="${WMT14_LINES_COMMONCRAWL:-2399123}"
N_NC="${WMT14_LINES_NC:-201288}"
N_VALID="${WMT14_LINES_VALID:-3000}"
N_TEST="${WMT14_LINES_TEST:-3003}"
N_TRAIN=$((N_EUROPARL + N_COMMONCRAWL + N_NC))
mkdir -p "$ORIG"
trap 'rm -rf "$ORIG/x" "$ORIG"/*.part "$OUT"/*.part' EXIT   # what a failed or interrupted run left

count() { # lines of a plain or gzipped file
  gzip -dcf "$1" | wc -l | tr -d ' '
}

complete() { # SPLIT N: both sides present with N lines each
  local lang
  for lang in en de; do
    [ -f "$OUT/$1.$lang.gz" ] && [ "$(count "$OUT/$1.$lang.gz")" = "$2" ] || return 1
  done
}

fetch() { # PATH under BASE -> ORIG/NAME (kept: a second run does not download it again)
  local f
  f="$ORIG/$(basename "$1")"
  [ -f "$f" ] && return 0
  echo "downloading $1"
  if ! curl -fsSL --retry 3 -o "$f.part" "$BASE/$1"; then
    rm -f "$f.part"
    echo "error: could not download $BASE/$1" >&2
    exit 1
  fi
  mv "$f.part" "$f"
}

extract() { # ARCHIVE MEMBER... -> ORIG/x/MEMBER
  mkdir -p "$ORIG/x"
  tar -xzf "$ORIG/$1" -C "$ORIG/x" "${@:2}"
}

check() { # FILE N VAR: FILE has N lines, else an error naming the variable that overrides N
  local n
  n=$(count "$1")
  if [ "$n" != "$2" ]; then
    echo "error: $1 has $n lines, expected $2 (if the release changed, set $3=$n)" >&2
    exit 1
  fi
}

publish() { # SPLIT LANG: SPLIT.LANG.gz.part -> SPLIT.LANG.gz
  mv "$OUT/$1.$2.gz.part" "$OUT/$1.$2.gz"
}

sgm_to_text() { # SGM: the <seg> contents, whitespace trimmed and collapsed, as sacreBLEU extracts them
  PYTHONIOENCODING=utf-8 python3 - "$1" <<'EOF'
import re
import sys

with open(sys.argv[1], encoding="utf-8", newline="\n") as fh:
    for line in fh:
        if line.startswith("<seg "):
            print(re.sub(r"\s+", " ", re.sub(r"<seg.*?>(.*)</seg>.*?", r"\1", line).strip()))
EOF
}

if ! complete train "$N_TRAIN"; then
  parts=(training/europarl-v7.de-en commoncrawl.de-en training/news-commentary-v9.de-en)
  fetch wmt13/training-parallel-europarl-v7.tgz
  fetch wmt13/training-parallel-commoncrawl.tgz
  fetch wmt14/training-parallel-nc-v9.tgz
  extract training-parallel-europarl-v7.tgz "${parts[0]}".{en,de}
  extract training-parallel-commoncrawl.tgz "${parts[1]}".{en,de}
  extract training-parallel-nc-v9.tgz "${parts[2]}".{en,de}
  for lang in en de; do
    check "$ORIG/x/${parts[0]}.$lang" "$N_EUROPARL" WMT14_LINES_EUROPARL
    check "$ORIG/x/${parts[1]}.$lang" "$N_COMMONCRAWL" WMT14_LINES_COMMONCRAWL
    check "$ORIG/x/${parts[2]}.$lang" "$N_NC" WMT14_LINES_NC
  done
  echo "writing train.en.gz and train.de.gz ($N_TRAIN lines)"
  for lang in en de; do
    for p in "${parts[@]}"; do cat "$ORIG/x/$p.$lang"; done | gzip -n >"$OUT/train.$lang.gz.part"
    publish train "$lang"
  done
  rm -rf "$ORIG/x"
fi

if ! complete valid "$N_VALID"; then
  fetch wmt14/dev.tgz
  extract dev.tgz dev/newstest2013.{en,de}
  for lang in en de; do check "$ORIG/x/dev/newstest2013.$lang" "$N_VALID" WMT14_LINES_VALID; done
  for lang in en de; do
    gzip -n <"$ORIG/x/dev/newstest2013.$lang" >"$OUT/valid.$lang.gz.part"
    publish valid "$lang"
  done
  rm -rf "$ORIG/x"
fi

if ! complete test "$N_TEST"; then
  fetch wmt14/test-full.tgz
  extract test-full.tgz test-full/newstest2014-deen-{src.en,ref.de}.sgm
  sgm_to_text "$ORIG/x/test-full/newstest2014-deen-src.en.sgm" | gzip -n >"$OUT/test.en.gz.part"
  sgm_to_text "$ORIG/x/test-full/newstest2014-deen-ref.de.sgm" | gzip -n >"$OUT/test.de.gz.part"
  for lang in en de; do check "$OUT/test.$lang.gz.part" "$N_TEST" WMT14_LINES_TEST; done
  for lang in en de; do publish test "$lang"; done
  rm -rf "$ORIG/x"
fi

echo "WMT14 en-de ready in $OUT; export NMT_DATA=$(cd "$DEST" && pwd)"
