"""Word alignments of finished translations (`nmt translate --alignments`), in Pharaoh format.

A link `i-j` says that output word j came from source word i (0-based). A word is a whitespace
token: of the source line, and of the detokenised output line. The links are read from the
model's cross-attention, independently of the search (as fairseq's `--print-alignment` and the
attention heatmaps do): the model is run teacher-forced on (source ids, [start] + hypothesis),
batched, and returns the cross-attention of its penultimate decoder layer (`alignment_layer`, the
layer whose links agree best with eflomal's in BENCHMARKS.md, as Garg et al. 2019 found), averaged
over its heads (a recurrent model: its one attention). Each output piece is linked to the source
piece it attends to most (the source's eos and tags excluded); a piece belongs to the last word of
the text its ids decode to up to and including it (so an unknown piece, decoded as a word of its
own, and byte pieces count as the text shows them), and the links are the distinct word pairs,
sorted by source then output word. Every output word gets at least one link (the piece that starts
it); a source word may get none. Attention is a rough aligner (Garg et al. 2019 report a 30-50%
alignment error rate for it on German-English).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import numpy as np
import torch

from nmt.errors import NmtError
from nmt.model.transformer import alignment_layer
from nmt.tokens import PAD_ID

NO_ATTENTION = (
    "this model has no attention (e.g. a recurrent model with model.attention: none), so it cannot give word alignments"
)


def prefix_words(prefixes: Sequence[str], *, count: int) -> list[int]:
    """The word (0-based, at most `count` - 1) of each piece, given the text of each prefix of the pieces
    (`prefixes[t]` = the pieces up to t decoded): the last word of that text; -1 before any word."""
    return [min(len(text.split()), count) - 1 for text in prefixes]


def word_links(weights: np.ndarray, src_words: Sequence[int], tgt_words: Sequence[int]) -> list[tuple[int, int]]:
    """Distinct (source word, output word) links, sorted: each output piece t (a row of `weights` (T, S))
    linked to its most attended source piece among those that are words (`src_words` >= 0)."""
    columns = np.flatnonzero(np.asarray(src_words) >= 0)
    if len(columns) == 0:
        return []
    links = set()
    for t, j in enumerate(tgt_words):
        if j < 0 or t >= len(weights):
            continue
        s = int(columns[int(np.argmax(weights[t, columns]))])
        links.add((src_words[s], j))
    return sorted(links)


def pharaoh(links: Sequence[tuple[int, int]]) -> str:
    """`i-j i-j ...` (an empty string for no links)."""
    return " ".join(f"{i}-{j}" for i, j in links)


@torch.inference_mode()
def attention_rows(
    model: torch.nn.Module,
    src_seqs: Sequence[Sequence[int]],
    tgt_seqs: Sequence[Sequence[int]],
    *,
    start_id: int,
    device: torch.device,
    batch_tokens: int = 4096,
) -> list[np.ndarray]:
    """Cross-attention (len(tgt), len(src)) of each (source ids with eos, target ids without bos/eos) pair,
    teacher-forced from `start_id`, in batches of about `batch_tokens` padded tokens. A CTranslate2 export
    (`nmt.decode.ct2.CT2Engine`) gives its own (`attention`: the target forced as a prefix)."""
    if not isinstance(model, torch.nn.Module):
        return model.attention([list(s) for s in src_seqs], [list(t) for t in tgt_seqs], start_id=start_id)
    layer = {}  # a Transformer: its `alignment_layer`; a recurrent model has one attention
    if "attention_layer" in inspect.signature(model.forward).parameters:
        layer = {"attention_layer": alignment_layer(len(model.decoder))}  # type: ignore[arg-type]
    order = sorted(range(len(src_seqs)), key=lambda k: (len(src_seqs[k]), len(tgt_seqs[k])))
    out: list[np.ndarray] = [np.zeros((0, 0), dtype=np.float32)] * len(src_seqs)
    k = 0
    while k < len(order):
        batch = [order[k]]
        while k + len(batch) < len(order):
            nxt = order[k + len(batch)]
            width = max(max(len(src_seqs[b]), len(tgt_seqs[b]) + 1) for b in [*batch, nxt])
            if width * (len(batch) + 1) > batch_tokens:
                break
            batch.append(nxt)
        k += len(batch)
        s_len = max(len(src_seqs[b]) for b in batch)
        t_len = max(len(tgt_seqs[b]) for b in batch) + 1
        src = torch.full((len(batch), s_len), PAD_ID, dtype=torch.long)
        tgt = torch.full((len(batch), t_len), PAD_ID, dtype=torch.long)
        for row, b in enumerate(batch):
            src[row, : len(src_seqs[b])] = torch.tensor(list(src_seqs[b]), dtype=torch.long)
            tgt[row, 0] = start_id
            tgt[row, 1 : len(tgt_seqs[b]) + 1] = torch.tensor(list(tgt_seqs[b]), dtype=torch.long)
        src, tgt = src.to(device), tgt.to(device)
        try:
            _, weights = model(src, src == PAD_ID, tgt, return_attention=True, **layer)
        except (TypeError, ValueError):  # a model family without attention weights says so
            raise NmtError(NO_ATTENTION, hint="translate without --alignments") from None
        weights = weights.float().cpu().numpy()
        for row, b in enumerate(batch):
            out[b] = weights[row, : len(tgt_seqs[b]), : len(src_seqs[b])]
    return out
