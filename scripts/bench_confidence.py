"""Which per-sentence confidence tracks translation quality: candidates against sentence-level chrF.

    python scripts/bench_confidence.py CKPT SRC REF [--json]

Translates SRC with the checkpoint's decode settings, then scores every output by each candidate,
each from teacher-forced passes over (source, output) in fp32:
  search_score   the search's length-normalised score (what `--scores` prints today)
  mean_logprob   mean token log-probability of the output and its </s>
  mean_prob      mean token probability (what `nmt translate --confidence` prints)
  min_logprob    the least likely token's log-probability
  mean_entropy   minus the mean entropy of the model's distribution at each output position
  mc_dropout     mean_logprob averaged over N passes with dropout on (Fomicheva et al. 2020, D-TP)
and reports each one's Spearman correlation with sentence chrF (sacreBLEU) and the corpus BLEU of the
90% most confident lines against all lines.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import sacrebleu
import torch

from nmt.decode.translate import load_for_decoding, source_ids, translate_lines
from nmt.tokens import BOS_ID, EOS_ID, PAD_ID


def ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="stable")
    r = np.empty(len(x))
    r[order] = np.arange(len(x))
    for value in np.unique(x):  # ties share their mean rank
        tie = x == value
        r[tie] = r[tie].mean()
    return r


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(ranks(a), ranks(b))[0, 1])


@torch.no_grad()
def token_logprobs(model: torch.nn.Module, src: list[list[int]], tgt: list[list[int]], *, train: bool = False):
    """Per pair: (log-probs of output tokens + </s>, entropies at those positions), fp32, batches of 64."""
    model.train(train)
    out = []
    for i in range(0, len(src), 64):
        s, t = src[i : i + 64], tgt[i : i + 64]
        ws, wt = max(map(len, s)), max(map(len, t)) + 1
        src_ids = torch.tensor([[*x] + [PAD_ID] * (ws - len(x)) for x in s])
        tgt_in = torch.tensor([[BOS_ID, *y] + [PAD_ID] * (wt - 1 - len(y)) for y in t])
        tgt_out = torch.tensor([[*y, EOS_ID] + [PAD_ID] * (wt - 1 - len(y)) for y in t])
        logp = model(src_ids, src_ids == PAD_ID, tgt_in).float().log_softmax(-1)
        tok = logp.gather(-1, tgt_out.unsqueeze(-1)).squeeze(-1)
        ent = -(logp.exp() * logp).sum(-1)
        for k, y in enumerate(t):
            out.append((tok[k, : len(y) + 1].numpy(), ent[k, : len(y) + 1].numpy()))
    model.eval()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("src", type=Path)
    parser.add_argument("ref", type=Path)
    parser.add_argument("--passes", type=int, default=10, help="MC-dropout passes")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(1)
    loaded, cfg, device = load_for_decoding(args.checkpoint, overrides=["decode.precision=fp32"])
    lines = args.src.read_text(encoding="utf-8").split("\n")[:-1]
    refs = args.ref.read_text(encoding="utf-8").split("\n")[: len(lines)]
    translations = [t[0] for t in translate_lines(loaded, lines, cfg, device=device)]
    hyps = [t.text for t in translations]
    keep = [k for k, t in enumerate(translations) if t.ids]
    src, _ = source_ids(loaded, [lines[k] for k in keep])
    tgt = [list(translations[k].ids) for k in keep]
    model = loaded.model
    stats = token_logprobs(model, src, tgt)
    mc = np.mean([[lp.mean() for lp, _ in token_logprobs(model, src, tgt, train=True)] for _ in range(args.passes)], 0)
    features = {
        "search_score": np.array([translations[k].score for k in keep]),
        "mean_logprob": np.array([lp.mean() for lp, _ in stats]),
        "mean_prob": np.array([np.exp(lp).mean() for lp, _ in stats]),
        "min_logprob": np.array([lp.min() for lp, _ in stats]),
        "mean_entropy": -np.array([e.mean() for _, e in stats]),
        "mc_dropout": mc,
    }
    chrf = np.array([sacrebleu.sentence_chrf(hyps[k], [refs[k]]).score for k in keep])
    all_bleu = sacrebleu.corpus_bleu(hyps, [refs]).score
    report = {"lines": len(lines), "scored": len(keep), "bleu_all": all_bleu, "features": {}}
    for name, values in features.items():
        top = [keep[k] for k in np.argsort(-values, kind="stable")[: int(round(0.9 * len(keep)))]]
        top_bleu = sacrebleu.corpus_bleu([hyps[k] for k in top], [[refs[k] for k in top]]).score
        report["features"][name] = {"spearman_chrf": spearman(values, chrf), "bleu_top90": top_bleu}
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        print()
        return
    print(f"{report['scored']} lines, BLEU of all {all_bleu:.2f}")
    for name, r in report["features"].items():
        print(f"{name:14s} Spearman(chrF) {r['spearman_chrf']:+.3f}  BLEU of top 90% {r['bleu_top90']:.2f}")


if __name__ == "__main__":
    main()
