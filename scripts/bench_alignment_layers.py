"""Which decoder layer's attention aligns words best: each layer's links (heads averaged, as
`nmt translate --alignments` reads them) against eflomal's intersection links on the same pairs.

    python scripts/bench_markup.py links OUT_DIR PLAIN_HYP              # eflomal venv: OUT_DIR/hyp_links.json
    python scripts/bench_alignment_layers.py CKPT OUT_DIR PLAIN_HYP     # precision / recall / F1 per layer

PLAIN_HYP is the checkpoint's translation of OUT_DIR/plain.de (`nmt translate CKPT -i OUT_DIR/plain.de`); the
links are read teacher-forced on (source, that translation re-encoded).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from nmt.decode.alignment import prefix_words, word_links
from nmt.decode.translate import load_for_decoding, source_ids
from nmt.tokens import BOS_ID, EOS_ID, PAD_ID


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("hyp", type=Path)
    args = parser.parse_args()
    loaded, _, _ = load_for_decoding(args.checkpoint, overrides=["decode.precision=fp32"])
    vocab, model = loaded.vocab, loaded.model
    lines = (args.out / "plain.de").read_text(encoding="utf-8").split("\n")[:-1]
    hyps = args.hyp.read_text(encoding="utf-8").split("\n")[: len(lines)]
    reference = [set(map(tuple, x)) for x in json.loads((args.out / "hyp_links.json").read_text())]
    src, _ = source_ids(loaded, lines)
    tgt = vocab.encode_tgt(hyps)
    for layer in range(len(model.decoder)):
        found = expected = agreed = 0
        for n, (s, t) in enumerate(zip(src, tgt, strict=True)):
            expected += len(reference[n])
            if not s or not t:
                continue
            with torch.inference_mode():
                _, weights = model(torch.tensor([s]), torch.tensor([s]) == PAD_ID, torch.tensor([[BOS_ID, *t]]),
                                   return_attention=True, attention_layer=layer)  # fmt: skip
            text = [i for i in s if i != EOS_ID]
            src_words = prefix_words(
                vocab.decode_src([text[: m + 1] for m in range(len(text))]), count=len(lines[n].split())
            )
            tgt_words = prefix_words(vocab.decode_tgt([t[: m + 1] for m in range(len(t))]), count=len(hyps[n].split()))
            links = set(word_links(weights[0].float().numpy()[: len(t)], [*src_words, -1], tgt_words))
            found += len(links)
            agreed += len(links & reference[n])
        p, r = agreed / max(found, 1), agreed / max(expected, 1)
        print(json.dumps({"layer": layer, "precision": round(p, 4), "recall": round(r, 4),
                          "f1": round(2 * p * r / max(p + r, 1e-9), 4)}))  # fmt: skip


if __name__ == "__main__":
    main()
