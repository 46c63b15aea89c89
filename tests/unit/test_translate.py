"""translate_lines / translate_ids: line alignment, batching invariance, truncation, decode settings."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nmt.config import DecodeConfig
from nmt.decode.load import LoadedModel, load_model
from nmt.decode.search import search, translate_ids
from nmt.decode.translate import (
    TranslateStats,
    Translation,
    format_translations,
    read_input,
    source_ids,
    translate_lines,
)
from nmt.fileio import DecodeStats
from nmt.tokens import BOS_ID, EOS_ID, PAD_ID
from tests.conftest import TinyCheckpoint
from tests.corpora import WORDS

CPU = torch.device("cpu")
# Short outputs keep the property test fast; beam 2 exercises the beam path (1 would be greedy).
FAST = DecodeConfig(device="cpu", beam=2, nbest=1, max_len_a=0.5, max_len_b=4)


@pytest.fixture(scope="module")
def loaded(tiny_checkpoint: TinyCheckpoint) -> LoadedModel:
    return load_model(tiny_checkpoint.path)


def _texts(loaded: LoadedModel, lines: list[str], cfg: DecodeConfig, **kw: object) -> list[list[Translation]]:
    return list(translate_lines(loaded, lines, cfg, device=CPU, **kw))  # type: ignore[arg-type]


# Lines as raw bytes: empty, whitespace, toy words, very long, invalid UTF-8, unicode with
# combining marks and the characters str.splitlines() treats as line breaks (never b"\n").
_WORD_LINE = st.lists(st.sampled_from(WORDS), min_size=1, max_size=6).map(lambda ws: " ".join(ws).encode())
_UNICODE = st.lists(
    st.sampled_from(list("aé\u0301\u0308ß日本 \t\u2028\u2029\x0b\x0c\x85\x1c\r\u200b") + WORDS[:3]), max_size=12
).map(lambda parts: "".join(parts).encode("utf-8"))
_RAW_LINE = st.one_of(
    st.just(b""),
    st.sampled_from([b" ", b"\t", b"   \t  "]),
    _WORD_LINE,
    _UNICODE,
    st.binary(max_size=12).map(lambda b: b.replace(b"\n", b"")),
    st.sampled_from([b"\xff\xfe alpha", b"bravo \xc3", b"\x80\x81\x82"]),
    st.integers(70, 200).map(lambda n: b" ".join([b"alpha"] * n)),
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw_lines=st.lists(_RAW_LINE, max_size=8), nbest=st.sampled_from([1, 2]), final_newline=st.booleans())
def test_one_output_per_input_line_in_order(
    loaded: LoadedModel, tmp_path: Path, raw_lines: list[bytes], nbest: int, final_newline: bool
) -> None:
    path = tmp_path / "in.txt"
    data = b"".join(line + b"\n" for line in raw_lines)
    if not final_newline and raw_lines and raw_lines[-1]:
        data = data[:-1]  # a last line without newline still counts (an empty one would vanish)
    path.write_bytes(data)
    cfg = dataclasses.replace(FAST, nbest=nbest)
    read_stats = DecodeStats()
    lines = list(read_input(path, read_stats))
    assert len(lines) == len(raw_lines)

    out = _texts(loaded, lines, cfg, chunk_lines=3)
    assert [len(t) for t in out] == [nbest] * len(raw_lines)
    text = "".join(format_translations(t, scores=True) for t in out)
    assert len(text.splitlines()) == nbest * len(raw_lines)  # no translation spans two lines
    for raw, translations in zip(raw_lines, out):
        if not raw.strip(b" \t"):
            assert all(t.text == "" for t in translations)
    # in order: each line's translations are those it gets when translated on its own
    for line, translations in zip(lines, out):
        assert [t.text for t in translations] == [t.text for t in _texts(loaded, [line], cfg)[0]]


def test_invalid_utf8_replaced_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "in.txt"
    path.write_bytes(b"ok\n\xff\xfe bad\nfine\r\nbad \xc3\n")
    stats = DecodeStats()
    assert list(read_input(path, stats)) == ["ok", "\ufffd\ufffd bad", "fine", "bad \ufffd"]
    assert stats.invalid_utf8_lines == 2


def test_alone_equals_in_large_batch(loaded: LoadedModel, tiny_checkpoint: TinyCheckpoint) -> None:
    sources = (tiny_checkpoint.corpus / "valid.src").read_text().splitlines()
    cfg = DecodeConfig(device="cpu", beam=3, nbest=2, batch_tokens=100_000)
    batched = _texts(loaded, sources, cfg)
    for line in sources[:: len(sources) // 6]:
        alone = _texts(loaded, [line], cfg)[0]
        match = batched[sources.index(line)]
        assert [t.text for t in alone] == [t.text for t in match]
        assert [t.score for t in alone] == pytest.approx([t.score for t in match], abs=1e-5)


def test_translate_ids_matches_search_and_budget_does_not_matter(loaded: LoadedModel) -> None:
    vocab = loaded.vocab
    seqs = [s + [EOS_ID] for s in vocab.encode_src(["alpha bravo", "charlie delta echo foxtrot golf", "hotel"])]
    big = translate_ids(loaded.model, seqs, FAST, device=CPU)
    small_batches: list[int] = []
    small = search(
        loaded.model, seqs, dataclasses.replace(FAST, batch_tokens=8), device=CPU, on_batch=small_batches.append
    )
    assert big == [hyps[0].tokens for hyps in small]
    assert any(big) and not {PAD_ID, BOS_ID, EOS_ID} & {t for row in big for t in row}  # bare target ids
    lines = _texts(loaded, ["alpha bravo", "charlie delta echo foxtrot golf", "hotel"], FAST)
    assert vocab.decode_tgt(big) == [t[0].text for t in lines]  # validation decodes as translate does
    assert sum(small_batches) == 3 and len(small_batches) > 1  # the budget split the batch


def test_overlong_lines_truncated_and_counted(loaded: LoadedModel, tiny_checkpoint: TinyCheckpoint) -> None:
    max_len = tiny_checkpoint.max_len
    long_line = " ".join(["alpha"] * 3 * max_len)
    stats = TranslateStats()
    out = _texts(loaded, ["bravo", long_line, "", long_line], FAST, stats=stats)
    assert len(out) == 4
    assert stats.truncated == 2 and stats.empty == 1 and stats.lines == 4
    short = len(loaded.vocab.encode_src(["bravo"])[0]) + 1
    assert stats.src_tokens == short + 2 * max_len  # each long line fed as max_len tokens incl. eos
    cut = loaded.vocab.src.decode(loaded.vocab.encode_src([long_line])[0][: max_len - 1])
    assert out[1][0].text == _texts(loaded, [cut], FAST)[0][0].text


class _Untouchable:
    max_len = 64

    def __getattr__(self, name: str) -> object:
        raise AssertionError(f"the model was used ({name}) for empty input")


def test_empty_lines_never_reach_the_model(loaded: LoadedModel) -> None:
    blank = dataclasses.replace(loaded, model=_Untouchable())
    stats = TranslateStats()
    out = _texts(blank, ["", "  ", "\t"], dataclasses.replace(FAST, nbest=2), stats=stats)
    assert out == [[Translation("", 0.0, 0)] * 2] * 3
    assert stats.empty == 3


class _BreakingVocab:
    """A vocabulary whose detokeniser emits line breaks."""

    def __init__(self, inner: object) -> None:
        self.inner = inner

    def encode_src(self, lines: list[str]) -> list[list[int]]:
        return self.inner.encode_src(lines)  # type: ignore[attr-defined]

    def decode_tgt(self, ids: list[list[int]]) -> list[str]:
        return ["a\nb\r\nc\u2028d\x85e\x0bf" for _ in ids]


def test_line_breaks_in_output_become_spaces(loaded: LoadedModel) -> None:
    broken = dataclasses.replace(loaded, vocab=_BreakingVocab(loaded.vocab))
    out = _texts(broken, ["alpha bravo"], FAST)
    assert out[0][0].text == "a b  c d e f"
    assert format_translations(out[0], scores=False).count("\n") == 1


def test_sampling_gives_nbest_samples(loaded: LoadedModel) -> None:
    cfg = dataclasses.replace(FAST, sampling=True, nbest=2, top_k=5, temperature=0.7)
    torch.manual_seed(3)
    first = _texts(loaded, ["alpha bravo", "", "charlie"], cfg)
    torch.manual_seed(3)
    again = _texts(loaded, ["alpha bravo", "", "charlie"], cfg)
    assert [len(t) for t in first] == [2, 2, 2] and first == again
    assert first[0][0].score >= first[0][1].score


@torch.inference_mode()
def fp32_score(model: torch.nn.Module, src: list[int], ids: tuple[int, ...]) -> float:
    """Mean log-prob of `ids` + EOS under the teacher-forced fp32 forward (FAST's length penalty)."""
    src_ids = torch.tensor([src])
    logits = model(src_ids, src_ids == PAD_ID, torch.tensor([[BOS_ID, *ids]]))
    logp = torch.log_softmax(logits.float(), dim=-1)[0]
    return logp.gather(1, torch.tensor([[*ids, EOS_ID]]).T).mean().item()


def test_precision_bf16_agrees_with_fp32(loaded: LoadedModel, tiny_checkpoint: TinyCheckpoint) -> None:
    lines = (tiny_checkpoint.corpus / "valid.src").read_text().splitlines()[:40]
    fp32 = _texts(loaded, lines, FAST)
    from nmt.decode.search import decoding_form

    cast = dataclasses.replace(loaded, model=decoding_form(loaded.model, torch.device("cpu"), "bf16"))
    bf16 = _texts(cast, lines, dataclasses.replace(FAST, precision="bf16"))
    assert [t[0].score for t in bf16] != [t[0].score for t in fp32]  # bf16 really ran
    assert sum(a[0].ids == b[0].ids for a, b in zip(fp32, bf16, strict=True)) >= 0.9 * len(lines)
    # each bf16 hypothesis scored as fp32 scores it (measured: within 0.002 of -0.75..-1.0 scores)
    for src, (best,) in zip(source_ids(loaded, lines)[0], bf16, strict=True):
        assert best.score == pytest.approx(fp32_score(loaded.model, src, best.ids), abs=0.02)


def test_decoding_form_is_built_by_the_caller_and_caches_nothing() -> None:
    from nmt.decode.search import decoding_form
    from nmt.model.transformer import Transformer

    cpu = torch.device("cpu")
    model = Transformer(
        src_vocab_size=11, tgt_vocab_size=11, d_model=8, n_heads=2, ffn_dim=16, enc_layers=1, dec_layers=1, dropout=0.0
    )
    model.out_proj.weight.grad = torch.ones_like(model.out_proj.weight)
    fp32 = decoding_form(model, cpu, "fp32")
    assert fp32 is not model and fp32.out_proj.weight is model.out_proj.weight  # new modules, shared weights
    cast = decoding_form(model, cpu, "bf16")
    assert cast is not model and {p.dtype for p in cast.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in model.parameters()} == {torch.float32}  # the original is untouched
    assert model.out_proj.weight.grad is not None and cast.out_proj.weight.grad is None
    assert decoding_form(model, cpu, "bf16") is not cast  # nothing is kept between calls
    with torch.no_grad():
        model.out_proj.weight.add_(1.0)  # an optimizer step between two validations
    recast = decoding_form(model, cpu, "bf16")
    torch.testing.assert_close(recast.out_proj.weight.float(), model.out_proj.weight, atol=0.05, rtol=0.01)
    assert decoding_form(model, cpu, "bf16", in_place=True) is model  # a model loaded only to decode
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16} and not model.training


def test_decode_precision_auto_follows_the_cpu() -> None:
    from nmt.precision import resolve_decode_precision

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_decode_precision("auto", cpu, native_bf16=True) == "bf16"
    assert resolve_decode_precision("auto", cpu, native_bf16=False) == "fp32"
    assert resolve_decode_precision("auto", cuda, native_bf16=True) == "fp32"
    assert resolve_decode_precision("fp32", cpu, native_bf16=True) == "fp32"
    assert resolve_decode_precision("bf16", cpu, native_bf16=False) == "bf16"  # asked for: honoured
    assert DecodeConfig().precision == "auto"  # bf16 where the CPU has it: faster at beam 5 and 1 (BENCHMARKS.md)


def test_native_bf16_detection_reads_the_cpu_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    from pathlib import Path as P

    from nmt import device

    flags = {"avx512_bf16": True, "amx_bf16": True, "avx512f": False}
    for flag, expected in flags.items():
        device.cpu_has_native_bf16.cache_clear()
        monkeypatch.delenv("NMT_CPU_BF16", raising=False)
        monkeypatch.setattr(
            P, "read_text", lambda self, errors=None, f=flag: f"processor: 0\nflags\t\t: fpu sse2 {f}\n"
        )
        assert device.cpu_has_native_bf16() is expected, flag
    device.cpu_has_native_bf16.cache_clear()
    monkeypatch.setenv("NMT_CPU_BF16", "1")
    assert device.cpu_has_native_bf16() is True
    device.cpu_has_native_bf16.cache_clear()
