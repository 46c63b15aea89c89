"""The CTranslate2 engine: an exported model directory decodes ids into hypotheses like a checkpoint.

An export (`nmt export`, `nmt.export.ct2`) is a directory holding CTranslate2's files
(`model.bin`, `config.json`, the vocabularies), the SentencePiece model(s) (`spm.model`,
or `spm.src.model` and `spm.tgt.model`) and `nmt.json`: the checkpoint's decode settings,
languages, `model.*` section, step and source. Like a checkpoint, it translates anywhere.

`CT2Engine.search` is `nmt.decode.search.search` for such a model: source id sequences
(each ending in eos) in, up to nbest `Hypothesis` per sentence out, in input order. It
runs CTranslate2's `translate_batch` on the SentencePiece pieces (the export adds the
source eos itself) with nmt's settings mapped exactly where CTranslate2 can express them:

- length penalty: nmt's `average` divides the summed log-probs by |y|**alpha with |y|
  counting the EOS; CTranslate2 divides by len**length_penalty, where len counts the EOS
  when `return_end_token=True`, which the engine sets. So average/alpha maps to
  `length_penalty=alpha` and `none` to `length_penalty=0`. `gnmt` has no counterpart and is
  refused, as is sampling.
- output length: CTranslate2 has one `max_decoding_length` per call, nmt a limit per
  sentence, min(floor(max_len_a * |x| + max_len_b), model.max_len - 1) tokens before the
  EOS (|x| counts the source eos). The engine sorts the sentences by length and decodes them
  in calls of about `CALL_BATCHES` batches of `decode.batch_tokens`, each with the limit of
  its longest sentence, and keeps every sentence's own limit: greedy search does not depend
  on the limit, so a greedy output that runs past its sentence's limit is cut there; with
  beam search, a sentence any of whose hypotheses runs past its own limit is decoded again
  in a call with exactly that limit (a few degenerate, repeating outputs: 6 of 1,000 lines
  on test_2016_flickr). At the limit nmt allows only EOS; CTranslate2 takes any token
  there, so a hypothesis cut at the limit is scored again with `score_batch` (which adds
  the EOS), exactly as nmt scores it. (One call per distinct limit instead made small
  batches: 0.82x the speed at beam 5.)
- pad and bos are never generated (`suppress_sequences`), EOS not before `decode.min_len`
  tokens (`min_decoding_length`), `no_repeat_ngram` is `no_repeat_ngram_size` (what these two
  change against nmt's outputs, measured: docs/export-and-serving.md).

Where CTranslate2's search differs from nmt's, by design (tests/unit/test_export.py
measures both on tiny random models):
- it renormalises the log-probs over the tokens it allows (pad, bos, an EOS before
  min_len, a repeated n-gram); nmt masks them without renormalising. A trained model gives
  pad and bos almost no mass, so its scores differ by about the mass of an early EOS;
- its beam search finishes a hypothesis only when EOS is among the K best candidates of a
  step (nmt looks at the best 2K), and it stops once `patience` x K hypotheses are finished
  (nmt stops only when no open hypothesis can still win). The engine asks for patience 2
  (Kasai et al. 2022): on a Multi30k model trained 600 updates, beam 5, the best outputs
  were identical to nmt's on 93.3% of 300 test lines with patience 1, 99.7% with 2 and 100%
  with 4, at about 1.1x and 1.4x the decoding time of patience 1. So it may return a
  lower-scoring output than nmt's search, never, on the tested models, a higher-scoring one
  (without n-gram blocking: with it, renormalising, its search can also find a better one).
  Patience counts finished hypotheses; it does not ask whether an open one can still win. On a
  degenerate line, such as a phrase repeated many times, short hypotheses keep finishing while
  the best output goes on, often to the length limit: patience 2 stopped at 17 tokens (score
  -0.2586) where nmt's search gives 119 (-0.1667) (audit at 27dff17). So such a line is decoded
  again with a patience that never stops the search (it runs to the sentence's limit): one whose
  source repeats itself (at least `REPEATED_BIGRAMS` of its piece bigrams occur earlier in it) or
  whose best output has fewer than `SHORT_RATIO` tokens per source piece (`degenerate`). Step by
  step that search is the first one continued, so its finished hypotheses include the first's
  and its best output is never worse. No Multi30k line (train, val, both tests: at most 27% of
  bigrams repeat; outputs of the 600-update model have at least 0.35 tokens per source piece on
  val and both tests) is decoded again; of 12 repeating lines (scripts/bench_ct2_patience.py)
  the best output equalled nmt's on 5 without the second search and on 11 with it (10 tokens
  against nmt's 155, 17 against 107, ...). Without a length penalty (`none`, or alpha 0)
  CTranslate2 ignores patience and stops when its best beam finishes, when no open hypothesis
  can still beat it, so nothing is decoded again.
A multilingual model's export (`nmt.export_format.prefix_start`) has no start token of its own:
every call passes the target language token as `target_prefix`. With no start token, CTranslate2
feeds the prefix's first token as the decoder's first input, as nmt feeds `start_id`: it is not
scored, not counted in `max_decoding_length` and not returned (measured: the log-probs of
`score_batch([>>fr<<] + y)` equal nmt's teacher-forced ones given the token, tests/unit/test_export.py).
A source-side tag is part of the source ids, as in nmt.
The `Hypothesis.token_scores` of this engine are empty: CTranslate2's search returns only
the sequence score.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Callable
from typing import Any

import torch

from nmt.config import DecodeConfig
from nmt.data.vocab import Vocab
from nmt.decode import lengths
from nmt.decode.beam import Hypothesis
from nmt.decode.load import LoadedModel
from nmt.errors import CheckpointError, ConfigError, NmtError
from nmt.export_format import ExportInfo, prefix_start, require_ctranslate2
from nmt.tokens import BOS_ID, EOS_ID, PAD_ID

CALL_BATCHES = 4  # a translate_batch call holds about this many batches of decode.batch_tokens (see `chunks`)
PATIENCE = 2.0  # beam search goes on until 2K hypotheses are finished (see the module docstring)
REPEATED_BIGRAMS = 0.5  # a source with this share of its piece bigrams repeated is degenerate (see `degenerate`)
SHORT_RATIO = 0.3  # as is a best output with fewer tokens per source piece than this


def check_decode(cfg: DecodeConfig, *, where: str) -> None:
    """ConfigError for decode settings the CTranslate2 engine cannot honour exactly."""
    if cfg.sampling:
        raise ConfigError(
            f"{where}: decode.sampling is not supported by the CTranslate2 engine",
            hint="sample with the checkpoint (.pt) instead, or --set decode.sampling=false",
        )
    if cfg.length_penalty == "gnmt":
        raise ConfigError(
            f"{where}: decode.length_penalty gnmt has no CTranslate2 counterpart",
            hint="use --length-penalty average (or none), or translate with the checkpoint (.pt)",
        )


def compute_type(precision: str, quantization: str) -> str:
    """CTranslate2 compute type: fp32 and auto keep the exported weights' type; bf16/fp16 ask for those
    activations."""
    if precision in ("fp32", "auto"):
        return "default"
    half = "bfloat16" if precision == "bf16" else "float16"
    return f"int8_{half}" if quantization.startswith("int8") else half


def threads(device: str) -> dict[str, int]:
    """CTranslate2's thread split: on CPU, one single-threaded decoder per core (batches run in
    parallel), not one decoder with intra-op threads; on CUDA, one decoder.

    Measured on test_2016_flickr (beam 5, 2 cores, this export): inter_threads=2 with
    intra_threads=1 decoded 2.3x faster than inter_threads=1 with intra_threads=2 (the small
    matrices of a decoding step do not split well across threads). The search sorts its input
    into length-sorted calls of several batches (`CALL_BATCHES`), so there is a batch per
    decoder.
    """
    if device != "cpu":
        return {"inter_threads": 1, "intra_threads": 1}
    return {"inter_threads": torch.get_num_threads() or os.cpu_count() or 1, "intra_threads": 1}


def load_export(info: ExportInfo, *, device: str, precision: str) -> LoadedModel:
    """The export behind a `CT2Engine`, as a `LoadedModel` (`model` is the engine).

    Args:
        device: "cpu" or "cuda".
        precision: decode.precision (see `compute_type`).
    """
    ctranslate2 = require_ctranslate2()
    if device == "cuda" and ctranslate2.get_cuda_device_count() == 0:
        raise NmtError(
            "device 'cuda' requested but this CTranslate2 build sees no CUDA device", hint="use --device cpu"
        )
    try:
        translator = ctranslate2.Translator(
            str(info.path),
            device=device,
            compute_type=compute_type(precision, info.quantization),
            **threads(device),
        )
    except (RuntimeError, ValueError) as exc:
        raise CheckpointError(f"{info.path}: CTranslate2 cannot load this export on {device} ({exc})") from None
    try:
        vocab = Vocab(*info.vocab_models, *(info.pieces or (None, None)))
    except RuntimeError as exc:
        raise CheckpointError(
            f"{info.path}: not a readable nmt export (SentencePiece: {str(exc).splitlines()[0][:200]})",
            hint="export the checkpoint again with `nmt export`",
        ) from None
    engine = CT2Engine(
        translator,
        max_len=info.cfg.model.max_len,
        src_pieces=vocab.src_piece_list(list(range(vocab.src_size))),
        tgt_pieces=vocab.tgt_piece_list(list(range(vocab.tgt_size))),
        prefix_start=prefix_start(info.cfg),
    )
    return LoadedModel(model=engine, vocab=vocab, cfg=info.cfg, step=info.step, path=info.path)  # type: ignore[arg-type]


# ---------------------------------------------------------------- the engine


def output_limit(src_len: int, cfg: DecodeConfig, *, max_len: int) -> int:
    """Most tokens (EOS excluded) a sentence of `src_len` source tokens (eos included) may get."""
    return lengths.output_limit(src_len, max_len_a=cfg.max_len_a, max_len_b=cfg.max_len_b, model_max_len=max_len)


def length_divisor(length: int, cfg: DecodeConfig) -> float:
    """nmt's lp(|y|), |y| counting the EOS (gnmt is refused by `check_decode`)."""
    return float(lengths.length_penalty(torch.tensor(length), mode=cfg.length_penalty, alpha=cfg.alpha))


def degenerate(src: list[int], output_len: int) -> bool:
    """Whether a sentence (source ids ending in eos) and the length of its best patience-2 output call
    for a search without the patience bound: its source repeats itself (`REPEATED_BIGRAMS`), or the
    output is much shorter than it (`SHORT_RATIO`). See the module docstring."""
    pieces = src[:-1]
    bigrams = len(pieces) - 1
    repeated = bigrams > 0 and len(set(zip(pieces, pieces[1:], strict=False))) <= (1 - REPEATED_BIGRAMS) * bigrams
    return repeated or output_len < SHORT_RATIO * len(pieces)


def ct2_length_penalty(cfg: DecodeConfig) -> float:
    """CTranslate2's `length_penalty` for nmt's average/alpha (none: 0; gnmt is refused)."""
    return cfg.alpha if cfg.length_penalty == "average" else 0.0


def by_limit(index: list[int], limits: dict[int, int]) -> list[tuple[int, list[int]]]:
    """The sentences `index` grouped by their output limit: (limit, sentences), shortest limit first."""
    pairs = sorted((limits[i], i) for i in index)
    return [(limit, [i for _, i in group]) for limit, group in itertools.groupby(pairs, key=lambda item: item[0])]


def chunks(items: list[int], lengths: list[int], *, budget: int) -> list[list[int]]:
    """Consecutive runs of `items` whose `lengths` sum to at most `budget` (at least one item each)."""
    out: list[list[int]] = []
    total = budget + 1
    for item, length in zip(items, lengths, strict=True):
        if total + length > budget:
            out.append([])
            total = 0
        out[-1].append(item)
        total += length
    return out


class CT2Engine:
    """Source ids in, hypotheses out, on a CTranslate2 `Translator` (see the module docstring)."""

    def __init__(
        self,
        translator: Any,
        *,
        max_len: int,
        src_pieces: list[str],
        tgt_pieces: list[str],
        prefix_start: bool = False,
    ) -> None:
        self.translator = translator
        self.prefix_start = prefix_start  # the decoder starts with target_prefix (the language token), not bos
        self.max_len = max_len  # longest source/target in tokens (incl. eos), as the checkpoint's model
        self.src_pieces = src_pieces
        self.tgt_pieces = tgt_pieces
        self.tgt_ids = {piece: i for i, piece in enumerate(tgt_pieces)}
        self.eos = tgt_pieces[EOS_ID]
        self.suppress = [[tgt_pieces[PAD_ID]], [tgt_pieces[BOS_ID]]]  # never generated, as in nmt

    def pieces(self, src: list[int]) -> list[str]:
        """Source pieces without the trailing eos (the export's `add_source_eos` puts it back)."""
        return [self.src_pieces[i] for i in (src[:-1] if src and src[-1] == EOS_ID else src)]

    def search(
        self,
        src_seqs: list[list[int]],
        cfg: DecodeConfig,
        *,
        on_batch: Callable[[int], object] | None = None,
        start_id: int = BOS_ID,
    ) -> list[list[Hypothesis]]:
        """Up to `cfg.nbest` hypotheses per source id sequence (each ending in eos), best first, in
        input order; an empty sequence gets none. `on_batch(n)` follows each call of n sentences."""
        check_decode(cfg, where="CTranslate2 engine")
        if self.prefix_start:
            prefix: list[str] = [self.tgt_pieces[start_id]]
        elif start_id != BOS_ID:
            raise ConfigError(
                "this CTranslate2 export starts its decoder with <s> only: it holds no target-side language tokens"
            )
        else:
            prefix = []
        out: list[list[Hypothesis]] = [[] for _ in src_seqs]
        limits = {i: output_limit(len(s), cfg, max_len=self.max_len) for i, s in enumerate(src_seqs) if s}
        order = sorted(limits, key=lambda i: len(src_seqs[i]))
        again: list[int] = []  # beam search past a sentence's own limit: decoded again with it
        for index in chunks(order, [len(src_seqs[i]) for i in order], budget=CALL_BATCHES * cfg.batch_tokens):
            sources = [self.pieces(src_seqs[i]) for i in index]
            results = self._translate(
                sources, cfg, limit=max(limits[i] for i in index), patience=PATIENCE, prefix=prefix
            )
            for i, source, result in zip(index, sources, results, strict=True):
                if cfg.beam > 1 and any(self._generated(pieces) > limits[i] for pieces in result.hypotheses):
                    again.append(i)
                else:
                    out[i] = self._hypotheses(source, result, cfg, limit=limits[i], prefix=prefix)
            if on_batch is not None:
                on_batch(len(index) - sum(i in again for i in index))
        for limit, index in by_limit(again, limits):
            self._decode_again(index, src_seqs, cfg, out, limit=limit, patience=PATIENCE, prefix=prefix)
            if on_batch is not None:
                on_batch(len(index))
        if cfg.beam > 1 and ct2_length_penalty(cfg) != 0.0:  # with 0, CTranslate2 ignores patience
            # a degenerate line, where patience 2 can stop far too early: to the limit this time
            full = [i for i in limits if out[i] and degenerate(src_seqs[i], len(out[i][0].tokens))]
            for limit, index in by_limit(full, limits):  # (on_batch counted these sentences already)
                # at most K hypotheses finish in each of limit + 1 steps: fewer than (limit + 2) x K
                self._decode_again(index, src_seqs, cfg, out, limit=limit, patience=float(limit + 2), prefix=prefix)
        return out

    def attention(self, src_seqs: list[list[int]], tgt_seqs: list[list[int]], *, start_id: int) -> list[Any]:
        """Cross-attention (len(tgt), len(src)) of each (source ids with eos, target ids) pair, the target
        forced as a `target_prefix` (`return_attention`: the export's alignment layer and heads; nmt's exports
        average the heads of `nmt.model.transformer.alignment_layer`, as the checkpoint's alignments do)."""
        import numpy as np

        start = [self.tgt_pieces[start_id]] if self.prefix_start else []
        results = self.translator.translate_batch(
            [self.pieces(s) for s in src_seqs],
            target_prefix=[start + [self.tgt_pieces[i] for i in t] for t in tgt_seqs],
            beam_size=1,
            max_input_length=0,
            max_decoding_length=len(start) + max((len(t) for t in tgt_seqs), default=0) + 1,
            return_attention=True,
        )
        out = []
        for r, s, t in zip(results, src_seqs, tgt_seqs, strict=True):
            rows = np.asarray(r.attention[0], dtype=np.float32)[: len(t)]  # the outputs hold no start token
            # CTranslate2 leaves out the source's eos (added by the export's config): a zero column for it
            out.append(np.pad(rows, ((0, 0), (0, max(len(s) - rows.shape[1], 0))))[:, : len(s)])
        return out

    def token_logprobs(self, src_seqs: list[list[int]], tgt_seqs: list[list[int]], *, start_id: int) -> list[Any]:
        """Log-prob of each target token and its </s> (`score_batch`; a prefix-start export scores after its
        start token)."""
        import numpy as np

        start = [self.tgt_pieces[start_id]] if self.prefix_start else []
        results = self.translator.score_batch(
            [self.pieces(s) for s in src_seqs],
            [start + [self.tgt_pieces[i] for i in t] for t in tgt_seqs],
            max_input_length=0,
            offset=len(start),
        )
        return [np.asarray(r.log_probs, dtype=np.float32) for r in results]

    def _decode_again(
        self,
        index: list[int],
        src_seqs: list[list[int]],
        cfg: DecodeConfig,
        out: list[list[Hypothesis]],
        *,
        limit: int,
        patience: float,
        prefix: list[str],
    ) -> None:
        """Decode the sentences `index` (all with output limit `limit`) in one call into `out`."""
        sources = [self.pieces(src_seqs[i]) for i in index]
        results = self._translate(sources, cfg, limit=limit, patience=patience, prefix=prefix)
        for i, source, result in zip(index, sources, results, strict=True):
            out[i] = self._hypotheses(source, result, cfg, limit=limit, prefix=prefix)

    def _generated(self, pieces: list[str]) -> int:
        """Tokens of a hypothesis before its EOS (all of them when it has none: it was cut)."""
        return len(pieces) - 1 if pieces and pieces[-1] == self.eos else len(pieces)

    def _translate(
        self, sources: list[list[str]], cfg: DecodeConfig, *, limit: int, patience: float, prefix: list[str]
    ) -> list[Any]:
        """One `translate_batch` call with output limit `limit` (tokens before the EOS), the decoder
        started by `prefix` when the export has no start token (the outputs do not hold it)."""
        return self.translator.translate_batch(
            sources,
            target_prefix=[prefix] * len(sources) if prefix else None,
            max_batch_size=cfg.batch_tokens,
            batch_type="tokens",
            beam_size=cfg.beam,
            patience=patience,
            num_hypotheses=cfg.beam,  # all beams: cut hypotheses may merge, then nbest are kept
            length_penalty=ct2_length_penalty(cfg),
            no_repeat_ngram_size=cfg.no_repeat_ngram,
            suppress_sequences=self.suppress,
            return_end_token=True,  # the length then counts the EOS, as nmt's does
            max_input_length=0,  # sources are already cut to the model's maximum
            max_decoding_length=limit + 1,  # tokens incl. the EOS
            min_decoding_length=cfg.min_len,
            return_scores=True,
        )

    def _hypotheses(
        self, source: list[str], result: Any, cfg: DecodeConfig, *, limit: int, prefix: list[str]
    ) -> list[Hypothesis]:
        """nbest distinct hypotheses of one result; those that ran past the limit are cut and rescored."""
        found: dict[tuple[int, ...], float] = {}
        cut: list[tuple[int, ...]] = []
        for pieces, score in zip(result.hypotheses, result.scores, strict=True):
            if pieces and pieces[-1] == self.eos and len(pieces) - 1 <= limit:
                tokens = tuple(self.tgt_ids[p] for p in pieces[:-1])
                found[tokens] = max(score, found.get(tokens, -math.inf))
            else:  # ran past this sentence's limit (the call's is longer), or reached it without EOS
                cut.append(tuple(self.tgt_ids[p] for p in pieces[:limit]))
        cut = [c for c in dict.fromkeys(cut) if c not in found]
        if cut:  # rare: scored as nmt scores them, with the EOS it forces at the limit
            tgt_pieces = [[self.tgt_pieces[t] for t in tokens] for tokens in cut]
            scored = self.translator.score_batch(
                [source] * len(cut), [prefix + pieces for pieces in tgt_pieces], max_input_length=0
            )
            for tokens, res in zip(cut, scored, strict=True):
                found[tokens] = math.fsum(res.log_probs) / length_divisor(len(tokens) + 1, cfg)
        best = sorted(found.items(), key=lambda item: -item[1])[: cfg.nbest]
        return [Hypothesis(list(tokens), float(score), []) for tokens, score in best]
