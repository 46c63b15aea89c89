#!/usr/bin/env bash
# Multi30k task 1 (raw, gzipped) into DEST/multi30k, from the dataset's public repository,
# with line counts verified. Nothing is downloaded for files already present and complete,
# so with NMT_DATA pointing at a complete copy this is a no-op.
#   bash scripts/get_multi30k.sh DEST       (then: export NMT_DATA=$(realpath DEST))
set -euo pipefail
DEST="${1:-${NMT_DATA:-data/multi30k-root}}"
BASE="${MULTI30K_URL:-https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/raw}"
mkdir -p "$DEST/multi30k"
declare -A LINES=([train]=29000 [val]=1014 [test_2016_flickr]=1000 [test_2017_flickr]=1000)
status=0
for split in train val test_2016_flickr test_2017_flickr; do
  for lang in de en fr cs; do
    [ "$split" = test_2017_flickr ] && [ "$lang" = cs ] && continue   # not released
    f="$DEST/multi30k/$split.$lang.gz"
    if [ -f "$f" ] && [ "$(gzip -dc "$f" | wc -l)" = "${LINES[$split]}" ]; then
      continue
    fi
    echo "downloading $split.$lang.gz"
    curl -fsSL --retry 3 -o "$f.part" "$BASE/$split.$lang.gz" && mv "$f.part" "$f"
    n=$(gzip -dc "$f" | wc -l)
    if [ "$n" != "${LINES[$split]}" ]; then
      echo "error: $f has $n lines, expected ${LINES[$split]}" >&2
      status=1
    fi
  done
done
[ $status = 0 ] && echo "Multi30k ready in $DEST/multi30k; export NMT_DATA=$(cd "$DEST" && pwd)"
exit $status
