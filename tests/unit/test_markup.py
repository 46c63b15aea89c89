"""HTML fragments translated with their markup kept (`--format html`): the markup logic with a stand-in
model whose word alignment is known (identity or reversal), the repairs, the sentence cuts, and the real
model through `nmt translate --format html` (one well-formed line out per line in)."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import pytest

from nmt.decode.markup import VOID, MarkupStats, translate_fragments
from nmt.decode.translate import translate
from nmt.errors import NmtError
from tests.conftest import TinyCheckpoint


def upper(texts: list[str]) -> list[tuple[str, str]]:
    """A stand-in model: the words upper-cased, word i aligned to word i."""
    return [(t.upper(), " ".join(f"{i}-{i}" for i in range(len(t.split())))) for t in texts]


def reverse(texts: list[str]) -> list[tuple[str, str]]:
    """A stand-in model: the words upper-cased in reverse order, word i aligned to word n-1-i."""
    out = []
    for t in texts:
        words = t.split()
        n = len(words)
        out.append((" ".join(reversed(words)).upper(), " ".join(f"{i}-{n - 1 - i}" for i in range(n))))
    return out


class Checker(HTMLParser):
    """Every start tag's text, and whether every element is closed in order (an independent check)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.starts: list[str] = []
        self.stack: list[str] = []
        self.well_formed = True

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.starts.append(self.get_starttag_text() or "")
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack.pop() != tag:
            self.well_formed = False


def check(fragment: str) -> Checker:
    checker = Checker()
    checker.feed(fragment)
    checker.close()
    checker.well_formed = checker.well_formed and not checker.stack
    return checker


def run(lines: list[str], model=upper, fits=lambda words: True) -> tuple[list[str], MarkupStats]:  # noqa: ANN001
    stats = MarkupStats()
    return translate_fragments(lines, model, fits=fits, stats=stats), stats


CASES = [
    ("Ein <b>kleiner <i>Hund</i></b> läuft &amp; springt.", "EIN <b>KLEINER <i>HUND</i></b> LÄUFT &amp; SPRINGT."),
    ('<p>Hallo <a href="x?a=1&amp;b=2" title="&quot;T&quot;">Welt</a></p><p>Zweiter<br>Absatz <!-- c --></p>',
     '<p>HALLO <a href="x?a=1&amp;b=2" title="&quot;T&quot;">WELT</a></p><p>ZWEITER<br> ABSATZ<!-- c --></p>'),
    ('Text <script>if (a < b) { x = "<b>"; }</script> mehr <span translate="no">Nicht &amp; hier</span> Ende',
     'TEXT<script>if (a < b) { x = "<b>"; }</script> MEHR<span translate="no">Nicht &amp; hier</span> ENDE'),
    ('<style>p > b { color: red }</style><div class="x notranslate">kein <b>Text</b></div><p>ja</p>',
     '<style>p > b { color: red }</style><div class="x notranslate">kein <b>Text</b></div><p>JA</p>'),
    ("Haus<b>tür</b> offen", "<b>HAUSTÜR</b> OFFEN"),  # a tag inside a word covers the word
    ('<div><span></span>leer <img src="a.png" alt="x"> Bild</div>',
     '<div><span></span>LEER<img src="a.png" alt="x"> BILD</div>'),
    ("", ""),
    ("plain text, no markup", "PLAIN TEXT, NO MARKUP"),
]  # fmt: skip


@pytest.mark.parametrize(("fragment", "expected"), CASES)
def test_markup_round_trips_with_every_tag_and_attribute_kept(fragment: str, expected: str) -> None:
    (out,), stats = run([fragment])
    assert out == expected
    assert check(out).well_formed and check(out).starts == check(fragment).starts
    assert stats.repairs == 0


def test_inline_tags_follow_their_words_when_the_order_changes() -> None:
    (out,), _ = run(["Ein <b>kleiner <i>Hund</i></b> läuft <a href='#'>schnell</a>."], model=reverse)
    assert out == "<a href='#'>SCHNELL.</a> LÄUFT <b><i>HUND</i> KLEINER</b> EIN"
    assert check(out).well_formed


def test_malformed_fragments_are_repaired_and_counted() -> None:
    lines = ["<b>offen <i>verschachtelt</b> streunend</u> Ende", "<p>nie geschlossen", "gut <b>so</b>"]
    out, stats = run(lines)
    assert out == ["<b>OFFEN <i>VERSCHACHTELT</i></b> STREUNEND ENDE", "<p>NIE GESCHLOSSEN</p>", "GUT <b>SO</b>"]
    assert all(check(o).well_formed for o in out)
    assert (stats.repaired_lines, stats.repairs) == (2, 3)  # </b> closes <i>; </u> closes nothing; <p> left open


def test_a_block_too_long_for_the_model_is_cut_at_sentence_ends() -> None:
    seen: list[str] = []

    def model(texts: list[str]) -> list[tuple[str, str]]:
        seen.extend(texts)
        return upper(texts)

    (out,), _ = run(["<p>Eins zwei drei. Vier <b>fünf</b>! Sechs sieben acht neun zehn.</p>"], model=model,
                    fits=lambda words: len(words) <= 4)  # fmt: skip
    assert seen == ["Eins zwei drei.", "Vier fünf!", "Sechs sieben acht neun zehn."]
    assert out == "<p>EINS ZWEI DREI. VIER <b>FÜNF!</b> SECHS SIEBEN ACHT NEUN ZEHN.</p>"


def test_translate_format_html_gives_one_well_formed_line_per_line(
    tiny_checkpoint: TinyCheckpoint, tmp_path: Path
) -> None:
    words = (tiny_checkpoint.corpus / "test.src").read_text().split()
    lines = [
        f"<p>{words[0]} <b>{words[1]} <i>{words[2]}</i></b> {words[3]}</p>",
        f'{words[4]} <a href="?a=1&amp;b=2">{words[5]}</a> <!-- note --> {words[6]}<br>{words[7]}',
        f"<b>{words[8]} <i>{words[9]}</b> {words[10]}",  # malformed
        "",
        f"<script>var x = '<p>';</script>{words[11]} <span class='notranslate'>{words[12]}</span>",
        f"{words[13]} {words[14]}",
    ]
    src = tmp_path / "in.html"
    src.write_text("".join(f"{line}\n" for line in lines))
    out = tmp_path / "out.html"
    result = translate(tiny_checkpoint.path, input=src, output=out, markup="html")
    rows = out.read_text().split("\n")[:-1]
    assert len(rows) == len(lines) and result.stats.lines == len(lines)
    for line, row in zip(lines, rows, strict=True):
        assert check(row).well_formed, row
        assert sorted(check(row).starts) == sorted(check(line).starts)
    assert "<script>var x = '<p>';</script>" in rows[4] and f"<span class='notranslate'>{words[12]}</span>" in rows[4]
    assert result.stats.html_repaired == 1
    with pytest.raises(NmtError, match="--format html writes one HTML fragment per input line; --scores"):
        translate(tiny_checkpoint.path, input=src, output=tmp_path / "x", markup="html", scores=True)


def test_a_tag_without_aligned_words_is_kept_even_where_a_later_sibling_takes_its_place() -> None:
    """`s` covers a word with no link; the output word after which it goes is inside `i`'s projected span:
    it goes after that span, not into it (nor is it lost)."""

    def model(texts: list[str]) -> list[tuple[str, str]]:
        assert texts == ["a b c d"]
        return [("X Y Z", "0-1 2-0 3-1 3-2")]

    (out,), _ = run(["a <s>b</s> c <i>d</i>"], model=model)
    assert out == "X <i>Y Z</i><s></s>"
