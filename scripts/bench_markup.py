"""The tagged test set of BENCHMARKS.md "Markup kept" and its scores (tag placement F1, well-formedness,
BLEU with the tags stripped).

    # 1. the set: tags placed on source spans of test_2016_flickr de->en, projected onto the reference by
    #    eflomal alignments (run on train + test, both directions, symmetrised by intersection)
    python scripts/bench_markup.py make OUT_DIR          # needs `pip install eflomal`; reads $NMT_DATA
    # 2. translate OUT_DIR/tagged.de with each system (nmt translate --format html, LibreTranslate's method)
    # 3. score each system's output
    python scripts/bench_markup.py score OUT_DIR HYP.html [--plain PLAIN_HYP]
    # which decoder layer aligns best: eflomal's links between the source and a system's plain output,
    # then scripts/bench_alignment_layers.py against them
    python scripts/bench_markup.py links OUT_DIR PLAIN_HYP          # -> OUT_DIR/hyp_links.json (eflomal)

A tag is an element with an `id` (b, i, a, span): one to three per sentence, over one to three words,
some nested inside another, some beside it. A tag whose source words have no intersection link, or
whose projection would cross another's, is left out of both sides. Tag placement F1: for each tag, the
words it encloses in the output against those it encloses in the reference (lowercased, punctuation
stripped, as multisets), micro-averaged over all tags (a tag missing from the output encloses nothing).
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import os
import random
import re
import sys
from html.parser import HTMLParser
from pathlib import Path

TAGS = [("b", ""), ("i", ""), ("a", ' href="#"'), ("span", ' class="x"')]
VOID = {"br", "img", "hr", "input", "meta", "link", "wbr", "area", "base", "col", "embed", "source", "track"}


def read(path: Path) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [line.rstrip("\n") for line in fh]


def intersection_links(src: list[str], tgt: list[str]) -> list[set[tuple[int, int]]]:
    """eflomal links src->tgt and tgt->src, intersected, per line."""
    import tempfile

    from eflomal import Aligner

    with tempfile.TemporaryDirectory() as tmp:
        s, t = Path(tmp, "s"), Path(tmp, "t")
        s.write_text("".join(f"{line}\n" for line in src), encoding="utf-8")
        t.write_text("".join(f"{line}\n" for line in tgt), encoding="utf-8")
        fwd, rev = Path(tmp, "fwd"), Path(tmp, "rev")
        with open(s, encoding="utf-8") as sf, open(t, encoding="utf-8") as tf:
            Aligner().align(sf, tf, links_filename_fwd=str(fwd), links_filename_rev=str(rev), quiet=True)
        pairs = lambda line: {tuple(map(int, p.split("-"))) for p in line.split()}  # noqa: E731
        return [
            pairs(f) & pairs(r) for f, r in zip(fwd.read_text().splitlines(), rev.read_text().splitlines(), strict=True)
        ]


def render(words: list[str], spans: list[dict]) -> str:
    """Words with each span's tags around its words (spans nest or are disjoint)."""
    opens: dict[int, list[dict]] = collections.defaultdict(list)
    closes: dict[int, list[dict]] = collections.defaultdict(list)
    for s in spans:
        opens[s["at"][0]].append(s)
        closes[s["at"][1]].append(s)
    out = []
    for k, word in enumerate(words):
        head = "".join(
            f'<{s["tag"]} id="{s["id"]}"{s["attrs"]}>'
            for s in sorted(opens[k], key=lambda s: -(s["at"][1] - s["at"][0]))  # outer first
        )
        tail = "".join(f"</{s['tag']}>" for s in sorted(closes[k], key=lambda s: s["at"][1] - s["at"][0]))
        out.append(head + html_escape(word) + tail)
    return " ".join(out)


def html_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def proper(spans: list[tuple[int, int]]) -> bool:
    """Whether inclusive spans pairwise nest or are disjoint."""
    for a, b in spans:
        for c, d in spans:
            if (a, b) != (c, d) and not (b < c or d < a or (a <= c and d <= b) or (c <= a and b <= d)):
                return False
    return len(set(spans)) == len(spans)


def make(out: Path) -> None:
    data = Path(os.environ["NMT_DATA"]) / "multi30k"
    train_de, train_en = read(data / "train.de.gz"), read(data / "train.en.gz")
    test_de, test_en = read(data / "test_2016_flickr.de.gz"), read(data / "test_2016_flickr.en.gz")
    links = intersection_links(train_de + test_de, train_en + test_en)[len(train_de) :]
    rng = random.Random(1)
    out.mkdir(parents=True, exist_ok=True)
    tagged_de, tagged_en, records = [], [], []
    for n, (de, en, pairs) in enumerate(zip(test_de, test_en, links, strict=True)):
        src, ref = de.split(), en.split()
        wanted: list[tuple[int, int]] = []
        a = rng.randrange(len(src))
        b = min(len(src) - 1, a + rng.randrange(3))
        wanted.append((a, b))
        if b > a and rng.random() < 0.4:  # a tag nested inside
            c = rng.randint(a, b)
            wanted.append((c, c))
        if rng.random() < 0.5:  # a second tag beside it
            c = rng.randrange(len(src))
            d = min(len(src) - 1, c + rng.randrange(2))
            if d < a or c > b:
                wanted.append((c, d))
        spans_src, spans_ref = [], []
        for s, e in wanted:
            target = [j for i, j in pairs if s <= i <= e]
            if not target:
                continue
            t = (min(target), max(target))
            if not proper([*spans_src, (s, e)]) or not proper([*spans_ref, t]):
                continue
            spans_src.append((s, e))
            spans_ref.append(t)
        spec = []
        for k, (s, t) in enumerate(zip(spans_src, spans_ref, strict=True)):
            tag, attrs = TAGS[rng.randrange(len(TAGS))]
            spec.append({"id": f"t{n}_{k}", "tag": tag, "attrs": attrs, "src": s, "ref": t})
        tagged_de.append(render(src, [{**s, "at": s["src"]} for s in spec]))
        tagged_en.append(render(ref, [{**s, "at": s["ref"]} for s in spec]))
        records.append({"line": n, "tags": spec})
    (out / "tagged.de").write_text("".join(f"{line}\n" for line in tagged_de), encoding="utf-8")
    (out / "tagged.en").write_text("".join(f"{line}\n" for line in tagged_en), encoding="utf-8")
    (out / "plain.de").write_text("".join(f"{line}\n" for line in test_de), encoding="utf-8")
    (out / "plain.en").write_text("".join(f"{line}\n" for line in test_en), encoding="utf-8")
    (out / "tags.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    counts = collections.Counter(len(r["tags"]) for r in records)
    nested = sum(1 for r in records for x in r["tags"] for y in r["tags"]
                 if x is not y and x["src"][0] <= y["src"][0] and y["src"][1] <= x["src"][1])  # fmt: skip
    print(f"{len(records)} lines, {sum(len(r['tags']) for r in records)} tags ({nested} nested), "
          f"tags per line: {dict(sorted(counts.items()))} -> {out}")  # fmt: skip


class Reader(HTMLParser):
    """The text of a fragment and, per element id, the words it encloses; whether it is well-formed."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[tuple[str, str | None]] = []
        self.words: dict[str, list[str]] = collections.defaultdict(list)
        self.text: list[str] = []
        self.well_formed = True

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in VOID:
            self.stack.append((tag, dict(attrs).get("id")))

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1][0] != tag:
            self.well_formed = False
            return
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        for _, ident in self.stack:
            if ident:
                self.words[ident] += data.split()


def read_fragment(line: str) -> Reader:
    reader = Reader()
    reader.feed(line)
    reader.close()
    reader.well_formed = reader.well_formed and not reader.stack
    return reader


def norm(words: list[str]) -> collections.Counter:
    return collections.Counter(w for w in (re.sub(r"[^\w]", "", x.lower()) for x in words) if w)


def score(out: Path, hyp_path: Path, plain: Path | None) -> dict:
    import sacrebleu

    records = [json.loads(line) for line in (out / "tags.jsonl").read_text(encoding="utf-8").splitlines()]
    refs = (out / "tagged.en").read_text(encoding="utf-8").splitlines()
    hyps = hyp_path.read_text(encoding="utf-8").split("\n")[: len(refs)]
    assert len(hyps) == len(refs), f"{hyp_path}: {len(hyps)} lines for {len(refs)}"
    matched = hyp_total = ref_total = kept = tags = well = 0
    texts = []
    for record, hyp, ref in zip(records, hyps, refs, strict=True):
        h, r = read_fragment(hyp), read_fragment(ref)
        well += h.well_formed
        texts.append(" ".join("".join(h.text).split()))
        for tag in record["tags"]:
            tags += 1
            kept += tag["id"] in h.words or f'id="{tag["id"]}"' in hyp
            hw, rw = norm(h.words.get(tag["id"], [])), norm(r.words[tag["id"]])
            matched += sum((hw & rw).values())
            hyp_total += sum(hw.values())
            ref_total += sum(rw.values())
    p = matched / max(hyp_total, 1)
    rec = matched / max(ref_total, 1)
    plain_refs = (out / "plain.en").read_text(encoding="utf-8").splitlines()
    result = {
        "lines": len(refs),
        "well_formed": well / len(refs),
        "tags": tags,
        "tags_kept": kept / max(tags, 1),
        "tag_precision": p,
        "tag_recall": rec,
        "tag_f1": 2 * p * rec / max(p + rec, 1e-9),
        "bleu_tags_stripped": sacrebleu.corpus_bleu(texts, [plain_refs]).score,
    }
    if plain is not None:
        plain_hyps = plain.read_text(encoding="utf-8").split("\n")[: len(refs)]
        result["bleu_untagged_input"] = sacrebleu.corpus_bleu(plain_hyps, [plain_refs]).score
    return result


def links(out: Path, hyp: Path) -> None:
    """eflomal's intersection links between plain.de and `hyp` (trained with train), as OUT/hyp_links.json."""
    data = Path(os.environ["NMT_DATA"]) / "multi30k"
    src = (out / "plain.de").read_text(encoding="utf-8").split("\n")[:-1]
    out_lines = hyp.read_text(encoding="utf-8").split("\n")[: len(src)]
    found = intersection_links(read(data / "train.de.gz") + src, read(data / "train.en.gz") + out_lines)
    found = found[-len(src) :]
    (out / "hyp_links.json").write_text(json.dumps([sorted(x) for x in found]), encoding="utf-8")
    print(f"{len(found)} lines, {sum(map(len, found))} links -> {out / 'hyp_links.json'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make")
    m.add_argument("out", type=Path)
    s = sub.add_parser("score")
    s.add_argument("out", type=Path)
    s.add_argument("hyp", type=Path)
    s.add_argument("--plain", type=Path, help="the same system's translation of plain.de (untagged input)")
    k = sub.add_parser("links")
    k.add_argument("out", type=Path)
    k.add_argument("hyp", type=Path)
    args = parser.parse_args()
    if args.cmd == "make":
        make(args.out)
    elif args.cmd == "links":
        links(args.out, args.hyp)
    else:
        json.dump(score(args.out, args.hyp, args.plain), sys.stdout, indent=2)
        print()


if __name__ == "__main__":
    main()
