"""Glossaries: the file format, how source terms are matched, and translations that hold their terms."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nmt.decode.constrained import word_continuations
from nmt.decode.glossary import Glossary, inline_terms, parse_pairs, read_glossary
from nmt.decode.translate import TranslateStats, load_for_decoding, translate, translate_lines
from nmt.errors import DataError, NmtError
from tests.conftest import TinyCheckpoint

CPU = torch.device("cpu")


def glossary(*pairs: tuple[str, str]) -> Glossary:
    return Glossary.of(pairs, where="test")


# ---------------------------------------------------------------- matching


def test_terms_match_any_case_as_whole_words_once_per_occurrence() -> None:
    g = glossary(("Hund", "dog"), ("Katze", "cat"))
    assert g.terms("Der hund und die KATZE") == ["dog", "cat"]
    assert g.terms("Hunde und Hundehütte, Seehund") == []  # not inside longer words
    assert g.terms("Hund, Hund!") == ["dog", "dog"]  # each occurrence requires the term again
    assert g.terms("(Hund)") == ["dog"]  # punctuation is a boundary
    assert g.terms("") == []


def test_the_longest_source_term_wins_and_matches_do_not_overlap() -> None:
    g = glossary(("York", "Y"), ("New York", "NYC"), ("New", "N"))
    assert g.terms("new york and York and New") == ["NYC", "Y", "N"]


def test_unicode_terms_and_word_characters() -> None:
    g = glossary(("Straße", "street"), ("Ölfeld", "oil field"), ("é", "E"))
    assert g.terms("die straße am ölfeld") == ["street", "oil field"]
    assert g.terms("café") == []  # é is a word character's tail here, not a word
    assert g.terms("à é") == ["E"]


def test_regex_characters_in_terms_are_literal() -> None:
    g = glossary(("C++", "C plus plus"), ("a.b", "AB"))
    assert g.terms("C++ and axb and a.b") == ["C plus plus", "AB"]


def test_the_same_pair_twice_is_one_entry_and_a_conflict_is_an_error() -> None:
    assert len(glossary(("Hund", "dog"), ("hund", "dog"))) == 1
    with pytest.raises(ValueError, match="already given the target term 'dog'"):
        glossary(("Hund", "dog"), ("HUND", "hound"))


def test_inline_terms_split_fairseq_constraint_lines() -> None:
    assert inline_terms("ein Hund\tdog\t\tsmall cat") == ("ein Hund", ["dog", "small cat"])
    assert inline_terms("no terms") == ("no terms", [])


def test_word_continuations_are_pieces_that_attach_to_the_one_before() -> None:
    pieces = ["<unk>", "\u2581dog", "s", ",", "\u2581", "", "ing", "7", "<tag:bt>"]
    assert word_continuations(pieces) == [False, False, True, False, False, False, True, True, False]


# ---------------------------------------------------------------- the file format


def test_read_glossary_skips_comments_blank_lines_and_a_bom(tmp_path: Path) -> None:
    path = tmp_path / "g.tsv"
    path.write_bytes("\ufeff# de\ten\nHund\tdog\n\n  # indented comment\nKatze\tcat\r\n".encode())
    assert read_glossary(path).entries == (("Hund", "dog"), ("Katze", "cat"))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"Hund\tdog\nKatze\n", r"g.tsv:2: expected 'source term<TAB>target term', found 1 tab-separated field(?!s)"),
        (b"Hund\tdog\textra\n", r"g.tsv:1: .*found 3 tab-separated fields"),
        (b"Hund\tdog\n\t cat\n", r"g.tsv:2: has an empty source term"),
        (b"# c\nHund\t \n", r"g.tsv:2: has an empty target term"),
        (b"Hund\tdog\nHund\thound\n", r"g.tsv:2: source term 'Hund' is already given"),
        (b"Hund\tdog\nK\xe4tze\tcat\n", r"g.tsv:2: not valid UTF-8"),
    ],
)
def test_bad_glossary_files_are_errors_naming_file_and_line(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "g.tsv"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message) as err:
        read_glossary(path)
    assert "\n" not in err.value.message


def test_a_missing_glossary_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="glossary file not found"):
        read_glossary(tmp_path / "none.tsv")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"Hund": "dog"}, "must be a list"),
        ([["Hund"]], "entry 1 is not a"),
        ([["Hund", "dog"], ["Katze", 3]], "entry 2 is not a"),
        ([["", "dog"]], "entry 1 has an empty source term"),
    ],
)
def test_bad_json_glossaries(value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_pairs(value, where="glossary")


# ---------------------------------------------------------------- translations that hold their terms


def test_translations_hold_the_glossary_terms_where_the_source_term_occurs(
    tiny_checkpoint: TinyCheckpoint, tmp_path: Path
) -> None:
    loaded, cfg, _ = load_for_decoding(tiny_checkpoint.path, overrides=["decode.max_len_a=0", "decode.max_len_b=24"])
    g = glossary(("alpha", "BRAVO"), ("echo", "GOLF HOTEL"))
    lines = ["alpha charlie delta", "", "foxtrot golf", "echo india alpha", "Alpha"]
    stats = TranslateStats()
    out = [t[0] for t in translate_lines(loaded, lines, cfg, device=CPU, stats=stats, terms_from=g)]
    plain = [t[0] for t in translate_lines(loaded, lines, cfg, device=CPU)]
    assert len(out) == len(lines) and out[1].text == ""
    assert "BRAVO" in out[0].text.split() and "BRAVO" in out[4].text.split()
    assert "BRAVO" in out[3].text.split() and "GOLF HOTEL" in out[3].text
    assert out[2] == plain[2]  # no term: the search of a batch without terms
    assert (stats.term_lines, stats.terms, stats.terms_missed_lines) == (3, 4, 0)


def test_a_term_that_cannot_fit_still_gives_one_line_and_is_counted(
    tiny_checkpoint: TinyCheckpoint, tmp_path: Path
) -> None:
    (tmp_path / "in.txt").write_text("alpha bravo\ncharlie\n")
    (tmp_path / "g.tsv").write_text("alpha\t" + " ".join(["JULIET"] * 12) + "\n")
    result = translate(
        tiny_checkpoint.path, input=tmp_path / "in.txt", output=tmp_path / "out.txt", glossary=tmp_path / "g.tsv",
        overrides=["decode.max_len_a=0", "decode.max_len_b=4"],
    )  # fmt: skip
    assert len((tmp_path / "out.txt").read_text().splitlines()) == 2
    assert (result.stats.term_lines, result.stats.terms_missed_lines) == (1, 1)


def test_inline_constraints_are_held_and_not_translated(tiny_checkpoint: TinyCheckpoint, tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("alpha bravo\tDELTA\ncharlie\n")
    translate(tiny_checkpoint.path, input=tmp_path / "in.txt", output=tmp_path / "out.txt", constraints=True)
    first, second = (tmp_path / "out.txt").read_text().splitlines()
    assert "DELTA" in first.split() and "\t" not in first


def test_a_term_the_vocabulary_cannot_spell_is_dropped_and_counted(tiny_checkpoint: TinyCheckpoint) -> None:
    loaded, cfg, _ = load_for_decoding(tiny_checkpoint.path)
    stats = TranslateStats()
    g = glossary(("alpha", "BRAVO"), ("charlie", "QUEBEC"))  # no Q in the toy target vocabulary
    out = [t[0] for t in translate_lines(loaded, ["alpha charlie"], cfg, device=CPU, stats=stats, terms_from=g)]
    assert "BRAVO" in out[0].text.split() and "UEBEC" not in out[0].text
    assert (stats.terms, stats.terms_unwritable) == (1, 1)


def test_glossary_refusals(tiny_checkpoint: TinyCheckpoint, tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("alpha\n")
    (tmp_path / "g.tsv").write_text("alpha\tBRAVO\n")
    common = dict(input=tmp_path / "in.txt", output=tmp_path / "out.txt")
    with pytest.raises(NmtError, match="use one"):
        translate(tiny_checkpoint.path, **common, glossary=tmp_path / "g.tsv", constraints=True)  # type: ignore[arg-type]
    with pytest.raises(NmtError, match="not sampling"):
        translate(tiny_checkpoint.path, **common, glossary=tmp_path / "g.tsv",  # type: ignore[arg-type]
                  overrides=["decode.sampling=true"])  # fmt: skip
    assert not (tmp_path / "out.txt").exists()


def test_term_options_that_cannot_go_together_are_errors(tmp_path: Path) -> None:
    from nmt.decode.glossary import term_source
    from nmt.evaluate.report import evaluate

    (tmp_path / "g.tsv").write_text("alpha\tBRAVO\n")
    with pytest.raises(NmtError, match="not HTML"):
        term_source(None, constraints=True, markup="html")
    (tmp_path / "hyp.txt").write_text("x\n")
    with pytest.raises(NmtError, match="cannot be used with --hyp"):
        evaluate(None, hyps=[tmp_path / "hyp.txt"], refs=[tmp_path / "hyp.txt"], glossary=tmp_path / "g.tsv")
