"""HTML fragments translated with their markup kept (`nmt translate --format html`).

Each input line is one HTML fragment and gives one output line. The fragment is read by the
standard library's HTML parser (`html.parser`, not regular expressions) into a tree, repaired
as a browser's parser would: an end tag closes the open elements inside its element (each
counted), an end tag that closes nothing is dropped (counted), elements still open at the end
of the line are closed (counted). Then:

- **blocks**: the text between block-level boundaries (`p`, `div`, `li`, `td`, headings, ...)
  is one unit; each unit is translated as plain text, with its inline elements (`b`, `a`,
  `span`, ...) taken out. A unit longer than the model's `max_len` is cut at sentence ends (a
  word ending in `.`, `!`, `?`, `:` or `;`, closing quotes and brackets allowed after it) into
  pieces that fit, each translated on its own (a sentence that alone is too long is truncated
  and counted, as plain text is);
- **inline elements** are put back on the output words their source words are aligned to
  (`nmt.decode.alignment`): the span from the first to the last aligned output word, clipped
  into the parent element and out of earlier siblings so that the output always nests; an
  element with no aligned word (or only whitespace inside) is kept empty, after the output
  word aligned to the source word before it;
- **kept as they were** (their source text, byte for byte): start tags with their attributes,
  end tags, comments, doctype/processing instructions, and the whole of `script`, `style`,
  `template`, `textarea`, and any element with `translate="no"` or class `notranslate`, which
  stay where they were relative to the aligned words. Void elements (`br`, `img`, ...) are kept
  at their place and separate words, as they do on a page.

Translated text is written with `&`, `<` and `>` escaped; the source's entities are decoded
before translating (the model reads text). The output is always well-formed: every element
opened is closed, in order.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from html.parser import HTMLParser

BLOCK = frozenset(
    "address article aside blockquote body caption dd details dialog div dl dt fieldset figcaption figure footer "
    "form h1 h2 h3 h4 h5 h6 head header hgroup hr html legend li main nav ol option p pre section summary table "
    "tbody td tfoot th thead title tr ul".split()
)
VOID = frozenset("area base br col embed hr img input link meta param source track wbr".split())
OPAQUE = frozenset("script style template textarea".split())
SENTENCE_END = re.compile(r"[.!?:;][\"'»”’)\]]*$")


@dataclass
class Element:
    """An element of the fragment: its source start tag and end tag as written (end "" when repaired)."""

    tag: str
    start: str
    end: str = ""
    children: list[Element | Text | Raw] = field(default_factory=list)
    opaque: bool = False  # kept as written: `raw` is its whole source text
    raw: str = ""


@dataclass
class Text:
    text: str  # entities decoded


@dataclass
class Raw:
    text: str  # kept byte for byte (a comment, a declaration, a repaired stray end tag's neighbour)


class _Builder(HTMLParser):
    def __init__(self, line: str) -> None:
        super().__init__(convert_charrefs=True)
        self.line, self.root = line, Element("", "")
        self.stack: list[tuple[Element, int]] = [(self.root, 0)]
        self.repairs = 0
        self._starts = [0] + [m.end() for m in re.finditer("\n", line)]  # a document of several lines (serve)

    def _offset(self) -> int:
        row, column = self.getpos()
        return self._starts[row - 1] + column

    def _is_opaque(self, tag: str, attrs: list[tuple[str, str | None]]) -> bool:
        values = dict(attrs)
        return (
            tag in OPAQUE
            or (values.get("translate") or "").lower() == "no"
            or "notranslate" in (values.get("class") or "").split()
        )

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        start = self.get_starttag_text() or f"<{tag}>"
        element = Element(tag, start, opaque=self._is_opaque(tag, attrs) or any(e.opaque for e, _ in self.stack))
        self.stack[-1][0].children.append(element)
        if tag not in VOID:
            self.stack.append((element, self._offset()))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        start = self.get_starttag_text() or f"<{tag}/>"
        self.stack[-1][0].children.append(Element(tag, start, opaque=any(e.opaque for e, _ in self.stack)))

    def handle_endtag(self, tag: str) -> None:
        at = self._offset()
        close = self.line.find(">", at)
        end = self.line[at : close + 1] if close >= 0 else f"</{tag}>"
        open_tags = [e.tag for e, _ in self.stack[1:]]
        if tag not in open_tags:
            self.repairs += 1  # closes nothing: dropped
            return
        while True:
            element, began = self.stack.pop()
            if element.tag == tag:
                element.end = end
                if element.opaque and not any(e.opaque for e, _ in self.stack):
                    element.raw = self.line[began : at + len(end)] if close >= 0 else ""
                return
            self.repairs += 1  # an element left open inside the one this tag closes

    def handle_data(self, data: str) -> None:
        self.stack[-1][0].children.append(Text(data))

    def handle_comment(self, data: str) -> None:
        self.stack[-1][0].children.append(Raw(f"<!--{data}-->"))

    def handle_decl(self, decl: str) -> None:
        self.stack[-1][0].children.append(Raw(f"<!{decl}>"))

    def handle_pi(self, data: str) -> None:
        self.stack[-1][0].children.append(Raw(f"<?{data}>"))

    def unknown_decl(self, data: str) -> None:
        self.stack[-1][0].children.append(Raw(f"<![{data}]>"))


def parse_fragment(line: str) -> tuple[Element, int]:
    """The tree of one fragment (a root element without tags) and the number of repairs made."""
    builder = _Builder(line)
    builder.feed(line)
    builder.close()
    builder.repairs += len(builder.stack) - 1  # still open at the end of the line: closed
    return builder.root, builder.repairs


def serialize(node: Element | Text | Raw) -> str:
    """A node as markup: kept parts as written, text escaped, repaired elements closed."""
    if isinstance(node, Text):
        return html.escape(node.text, quote=False)
    if isinstance(node, Raw):
        return node.text
    if node.raw:
        return node.raw
    if node.tag in VOID:
        return node.start
    inner = "".join(serialize(c) for c in node.children)
    if node.opaque and node.tag in OPAQUE:  # script/style content is not text to escape
        inner = "".join(c.text if isinstance(c, Text) else serialize(c) for c in node.children)
    return f"{node.start}{inner}{node.end or f'</{node.tag}>'}"


# ---------------------------------------------------------------- units: the text translated at once


@dataclass
class Unit:
    """One run of inline content: its words, and where its inline elements and kept atoms go."""

    words: list[str] = field(default_factory=list)
    # (element, first word, last word) in source pre-order; an element without words has first > last
    spans: list[tuple[Element, int, int, Element | None]] = field(default_factory=list)
    # (atom, index of the word before it or -1, parent element or None for the unit itself)
    atoms: list[tuple[Element | Raw, int, Element | None]] = field(default_factory=list)
    glue: bool = False  # the text so far ends inside a word (the next text continues it)


@dataclass
class Placed:
    """Where the output of one unit goes: a unit, or markup kept as it is, in document order."""

    unit: Unit | None = None
    markup: str = ""


def _flatten(node: Element, out: list[Placed], unit: list[Unit | None]) -> None:
    """Document order: block tags and kept markup as `Placed.markup`, runs of inline content as units."""
    for child in node.children:
        if isinstance(child, Element) and not child.opaque and child.tag in BLOCK:
            unit[0] = None
            out.append(Placed(markup=child.start))
            if child.tag not in VOID:
                _flatten(child, out, unit)
                out.append(Placed(markup=child.end or f"</{child.tag}>"))
            unit[0] = None
            continue
        if unit[0] is None:
            unit[0] = Unit()
            out.append(Placed(unit=unit[0]))
        _add_inline(child, unit[0], None)


def _add_inline(node: Element | Text | Raw, unit: Unit, parent: Element | None) -> None:
    """Add an inline node to `unit`: text split into words (a word may run across tags), elements as
    spans, kept markup as atoms after the current last word."""
    if isinstance(node, Text):
        for part in re.split(r"(\s+)", node.text):
            if not part:
                continue
            if part.isspace():
                unit.glue = False
            elif unit.glue and unit.words:
                unit.words[-1] += part
            else:
                unit.words.append(part)
                unit.glue = True
        return
    if isinstance(node, Raw) or node.opaque or node.tag in VOID:
        unit.atoms.append((node, len(unit.words) - 1, parent))
        if isinstance(node, Element):
            unit.glue = False  # <br>, <img>, kept code: the words around are separate
        return
    index = len(unit.spans)
    before = len(unit.words)
    last_word = unit.words[-1] if unit.words else ""
    unit.spans.append((node, before, before - 1, parent))
    for child in node.children:
        _add_inline(child, unit, node)
    if _has_text(node):  # a tag inside a word (<b>Haus</b>tür, Haus<b>tür</b>) covers that whole word
        grew = before > 0 and unit.words[before - 1] != last_word
        unit.spans[index] = (node, before - 1 if grew else before, len(unit.words) - 1, parent)


def _has_text(node: Element) -> bool:
    """Whether an inline element holds any non-whitespace text (kept markup aside)."""
    return any(
        (isinstance(c, Text) and c.text.strip()) or (isinstance(c, Element) and not c.opaque and _has_text(c))
        for c in node.children
    )


def _cut(words: list[str], fits: Callable[[list[str]], bool]) -> list[tuple[int, int]]:
    """[start, end) word ranges of a unit: the whole, or cut after sentence-final words so each piece fits."""
    if fits(words):
        return [(0, len(words))]
    sentences, start = [], 0
    for k, word in enumerate(words):
        if SENTENCE_END.search(word) or k == len(words) - 1:
            sentences.append((start, k + 1))
            start = k + 1
    pieces: list[tuple[int, int]] = []
    for a, b in sentences:
        if pieces and fits(words[pieces[-1][0] : b]):
            pieces[-1] = (pieces[-1][0], b)
        else:
            pieces.append((a, b))
    return pieces


# ---------------------------------------------------------------- putting the markup back


def _render_unit(unit: Unit, out_words: list[str], links: Sequence[tuple[int, int]]) -> str:
    """The unit's translation (`out_words`, word-aligned to its source words by `links`) with its inline
    elements around the output words they cover and its atoms after the word aligned to the one before."""
    m = len(out_words)
    targets: dict[int, list[int]] = {}
    for i, j in links:
        targets.setdefault(i, []).append(j)
    span_of: dict[int, tuple[int, int]] = {id(None): (0, m - 1)}  # element id -> output span (inclusive)
    point_of: dict[int, int] = {}  # element/atom id -> output word it follows (-1: before the first)
    kids: dict[int, list[Element | Raw]] = {}

    def after(source_word: int) -> int:
        """The last output word aligned to source words up to `source_word` (-1 when none)."""
        best = -1
        for i in range(source_word + 1):
            best = max([best, *targets.get(i, [])])
        return best

    def place(point: int, parent: Element | None) -> int:
        lo, hi = span_of[id(parent)]
        point = min(max(point, lo - 1), hi)
        for sib in kids.get(id(parent), []):
            if id(sib) in span_of:
                s, e = span_of[id(sib)]
                if s <= point < e:
                    point = e
        return point

    empty: list[tuple[Element | Raw, int, Element | None]] = []  # placed once every span is known
    for element, first, last, parent in unit.spans:
        if id(parent) not in span_of:  # inside an element without output words: written by `_atom`
            continue
        kids.setdefault(id(parent), []).append(element)
        aligned = _densest_run([j for i in range(first, last + 1) for j in targets.get(i, [])])
        lo, hi = span_of[id(parent)]
        s, e = (max(min(aligned), lo), min(max(aligned), hi)) if aligned else (1, 0)
        for sib in kids[id(parent)][:-1]:
            if s <= e and id(sib) in span_of:
                ys, ye = span_of[id(sib)]
                if not (e < ys or s > ye):
                    s, e = (s, min(e, ys - 1)) if s < ys else (max(s, ye + 1), e)
        if s <= e:
            span_of[id(element)] = (s, e)
        else:
            empty.append((element, first - 1, parent))
    for atom, before, parent in unit.atoms:
        if id(parent) in span_of:
            kids.setdefault(id(parent), []).append(atom)
            empty.append((atom, before, parent))
    for node, before, parent in empty:
        point_of[id(node)] = place(after(before), parent)

    def render(parent: Element | None, lo: int, hi: int) -> str:
        """Output words lo..hi with the children of `parent`: kept markup and empty elements right after
        the word they follow (before the space), elements around their words."""
        children = kids.get(id(parent), [])
        points = lambda k: "".join(_atom(c) for c in children if point_of.get(id(c)) == k)  # noqa: E731
        pieces = [points(lo - 1)]
        k = lo
        while k <= hi:
            inner = next((c for c in children if id(c) in span_of and span_of[id(c)][0] == k), None)
            if isinstance(inner, Element):
                s, e = span_of[id(inner)]
                pieces.append(f"{inner.start}{render(inner, s, e)}{inner.end or f'</{inner.tag}>'}")
                k = e + 1
            else:
                pieces.append(html.escape(out_words[k], quote=False))
                k += 1
            pieces.append(points(k - 1) + (" " if k <= hi else ""))
        return "".join(pieces)

    return render(None, 0, m - 1)


def _densest_run(words: list[int]) -> list[int]:
    """The output words a tag goes around: of the words its source words are linked to, the run of adjacent
    ones (gaps of one word allowed) that holds the most links (the first of equals), so that one stray link
    far away does not stretch the tag over the words between."""
    if not words:
        return []
    runs: list[list[int]] = []
    for j in sorted(words):
        if runs and j - runs[-1][-1] <= 2:
            runs[-1].append(j)
        else:
            runs.append([j])
    return max(runs, key=len)


def _atom(node: Element | Raw) -> str:
    """Kept markup as written; an inline element without output words with its tags and kept markup only
    (its text, if any, was translated with the rest of the unit)."""
    if isinstance(node, Raw) or node.raw or node.tag in VOID or node.opaque:
        return serialize(node)
    inner = "".join(_atom(c) for c in node.children if not isinstance(c, Text))
    return f"{node.start}{inner}{node.end or f'</{node.tag}>'}"


@dataclass
class MarkupStats:
    """What `translate_fragments` repaired."""

    repaired_lines: int = 0
    repairs: int = 0


@dataclass
class Fragments:
    """Parsed fragments waiting for their text's translations (`prepare_fragments`)."""

    layouts: list[list[Placed]]
    jobs: list[tuple[Unit, int, int]]  # (unit, first word, end word) per text to translate

    @property
    def texts(self) -> list[str]:
        """The plain texts to translate, in order."""
        return [" ".join(unit.words[a:b]) for unit, a, b in self.jobs]


def prepare_fragments(lines: Sequence[str], *, fits: Callable[[list[str]], bool], stats: MarkupStats) -> Fragments:
    """Parse (and repair, counted in `stats`) each fragment; its text in pieces the model takes (`fits`)."""
    layouts: list[list[Placed]] = []
    jobs: list[tuple[Unit, int, int]] = []
    for line in lines:
        root, repairs = parse_fragment(line)
        if repairs:
            stats.repaired_lines += 1
            stats.repairs += repairs
        placed: list[Placed] = []
        _flatten(root, placed, [None])
        layouts.append(placed)
        for p in placed:
            if p.unit is not None and p.unit.words:
                jobs += [(p.unit, a, b) for a, b in _cut(p.unit.words, fits)]
    return Fragments(layouts, jobs)


def render_fragments(fragments: Fragments, done: Sequence[tuple[str, str]]) -> list[str]:
    """Each fragment with its text replaced by the translations `done` of `fragments.texts` (each a
    (translation, Pharaoh links between their whitespace words) pair) and its markup put back."""
    outputs: dict[int, tuple[list[str], list[tuple[int, int]]]] = {}
    for (unit, a, _), (text, links) in zip(fragments.jobs, done, strict=True):
        words, all_links = outputs.setdefault(id(unit), ([], []))
        offset = len(words)
        pairs = [tuple(map(int, link.split("-"))) for link in links.split()]
        all_links += [(a + i, offset + j) for i, j in pairs]
        words += text.split()
    result = []
    for placed in fragments.layouts:
        pieces = []
        for p in placed:
            if p.unit is None:
                pieces.append(p.markup)
            else:
                words, links = outputs.get(id(p.unit), ([], []))
                pieces.append(_render_unit(p.unit, words, links))
        result.append("".join(pieces))
    return result


def translate_fragments(
    lines: Sequence[str],
    translate_texts: Callable[[list[str]], list[tuple[str, str]]],
    *,
    fits: Callable[[list[str]], bool],
    stats: MarkupStats,
) -> list[str]:
    """Each HTML fragment of `lines` translated with its markup kept (module docstring).

    `translate_texts(texts)` gives, per text, (translation, Pharaoh links between their whitespace words);
    `fits(words)`: whether a piece of text is short enough for the model.
    """
    fragments = prepare_fragments(lines, fits=fits, stats=stats)
    return render_fragments(fragments, translate_texts(fragments.texts))
