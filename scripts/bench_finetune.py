"""Fine-tuning speed of an OPUS-MT-shaped model: nmt against Hugging Face's Seq2SeqTrainer, same batches.

    pip install -e '.[dev]' accelerate          # transformers (dev) and Seq2SeqTrainer's accelerate
    python scripts/bench_finetune.py --precision fp32 --steps 20 [--shape opus|tiny] [--batch-tokens 2048]

A randomly initialised MarianMTModel (opus: 6+6 layers, d512, 8 heads, FFN 2048, swish, 58,101-piece
vocabulary, as Helsinki-NLP/opus-mt-de-en; tiny: for a smoke run) is built with transformers and saved,
with SentencePiece models trained on Multi30k ($NMT_DATA) and a vocab.json padded to the model's size,
then imported with `nmt import`. The first training pairs of Multi30k de-en are tokenized by
MarianTokenizer, sorted by length and cut into batches of at most --batch-tokens padded tokens; both
sides train on exactly these batches, in this order, for --steps updates, dropout 0, no label
smoothing, AdamW at a constant learning rate, no clipping:

- Hugging Face: `Seq2SeqTrainer` (use_cpu, bf16 autocast with --precision bf16), one batch per step;
- nmt: its training step (the decoder states of the non-pad target positions only, projected and scored in
  one by `nmt.train.loss.projected_nll` in a reused logits workspace, fused AdamW from `nmt.train.optim`,
  `nmt.precision` autocast)
  on the imported model, the same ids mapped through the import's id table.

Reports one JSON line: target tokens/s of each (the median of per-step rates after the first 3
steps), their ratio, and each side's mean loss over the last 5 steps (their relative difference).
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import sentencepiece as spm
import torch

from nmt.fileio import read_lines

SHAPES = {
    "opus": dict(d_model=512, layers=6, heads=8, ffn=2048, vocab=58101),
    "tiny": dict(d_model=64, layers=1, heads=2, ffn=128, vocab=1200),
}


def marian_dir(out: Path, shape: dict[str, int], src: list[str], tgt: list[str]) -> Path:
    """A random MarianMTModel of `shape` with its tokenizer files, saved by transformers."""
    import transformers

    def train(lines: list[str], size: int) -> bytes:
        buf = io.BytesIO()
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(lines), model_writer=buf, vocab_size=size, minloglevel=2, character_coverage=1.0
        )
        return buf.getvalue()

    size = min(6000, shape["vocab"] // 3)
    (out / "spm").mkdir(parents=True)
    src_spm, tgt_spm = train(src, size), train(tgt, size)
    (out / "spm" / "source.spm").write_bytes(src_spm)
    (out / "spm" / "target.spm").write_bytes(tgt_spm)
    pieces: dict[str, None] = {}
    for model in (src_spm, tgt_spm):
        sp = spm.SentencePieceProcessor(model_proto=model)
        for i in range(sp.get_piece_size()):
            if not sp.is_control(i) and not sp.is_unknown(i):
                pieces[sp.id_to_piece(i)] = None
    names = ["</s>", "<unk>", *pieces]
    names += [f"▁unused{i}" for i in range(shape["vocab"] - 1 - len(names))]
    vocab = {p: i for i, p in enumerate([*names, "<pad>"])}
    (out / "spm" / "vocab.json").write_text(json.dumps(vocab))
    tokenizer = transformers.MarianTokenizer(
        str(out / "spm" / "source.spm"), str(out / "spm" / "target.spm"), str(out / "spm" / "vocab.json"),
        source_lang="de", target_lang="en",
    )  # fmt: skip
    pad = len(vocab) - 1
    config = transformers.MarianConfig(
        vocab_size=len(vocab), d_model=shape["d_model"], encoder_layers=shape["layers"],
        decoder_layers=shape["layers"], encoder_attention_heads=shape["heads"], decoder_attention_heads=shape["heads"],
        encoder_ffn_dim=shape["ffn"], decoder_ffn_dim=shape["ffn"], activation_function="swish",
        max_position_embeddings=512, pad_token_id=pad, decoder_start_token_id=pad, eos_token_id=0,
        forced_eos_token_id=0, scale_embedding=True, dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
    )  # fmt: skip
    torch.manual_seed(0)
    transformers.MarianMTModel(config).save_pretrained(out / "marian")
    tokenizer.save_pretrained(out / "marian")
    return out / "marian"


def batches(tokenizer, src: list[str], tgt: list[str], budget: int) -> list[tuple[list[list[int]], list[list[int]]]]:
    """(sources, labels) in Marian ids, length-sorted, at most `budget` padded tokens a batch."""
    enc = tokenizer(src, text_target=tgt)
    pairs = sorted(zip(enc["input_ids"], enc["labels"], strict=True), key=lambda p: (len(p[0]), len(p[1])))
    out, cur, longest = [], [], 0
    for s, t in pairs:
        longest_new = max(longest, len(s), len(t))
        if cur and longest_new * (len(cur) + 1) > budget:
            out.append(([c[0] for c in cur], [c[1] for c in cur]))
            cur, longest_new = [], max(len(s), len(t))
        cur.append((s, t))
        longest = longest_new
    if cur:
        out.append(([c[0] for c in cur], [c[1] for c in cur]))
    return out


def pad(rows: list[list[int]], value: int) -> torch.Tensor:
    width = max(len(r) for r in rows)
    return torch.tensor([r + [value] * (width - len(r)) for r in rows])


def run_hf(
    directory: Path, data: list, *, steps: int, lr: float, bf16: bool, work: Path
) -> tuple[list[float], list[float], list[int]]:
    """Seq2SeqTrainer on `data` (one batch per step): per-step seconds, losses, target tokens."""
    import transformers

    model = transformers.MarianMTModel.from_pretrained(directory)
    pad_id = model.config.pad_token_id

    class Batches(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return steps

        def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
            src, labels = data[i % len(data)]
            ids = pad(src, pad_id)
            return {"input_ids": ids, "attention_mask": ids.ne(pad_id).long(), "labels": pad(labels, -100)}

    times: list[float] = []
    tokens = [sum(len(t) for t in data[i % len(data)][1]) for i in range(steps)]

    class Clock(transformers.TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):  # noqa: ANN001, ANN003
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):  # noqa: ANN001, ANN003
            times.append(time.perf_counter() - self.t0)

    args = transformers.Seq2SeqTrainingArguments(
        output_dir=str(work / "hf"), max_steps=steps, per_device_train_batch_size=1, learning_rate=lr,
        lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, optim="adamw_torch", max_grad_norm=0.0,
        bf16=bf16, use_cpu=True, dataloader_num_workers=0, report_to=[], save_strategy="no", logging_steps=1,
        label_smoothing_factor=0.0, disable_tqdm=True, seed=1,
    )  # fmt: skip

    class InOrder(transformers.Seq2SeqTrainer):  # the batches in order, as nmt gets them (the default shuffles)
        def _get_train_sampler(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            return torch.utils.data.SequentialSampler(self.train_dataset)

    trainer = InOrder(
        model=model, args=args, train_dataset=Batches(), data_collator=lambda items: items[0], callbacks=[Clock()]
    )
    trainer.train()
    losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    return times, losses, tokens


def run_nmt(
    ckpt: Path, data: list, to_nmt: torch.Tensor, *, steps: int, lr: float, bf16: bool
) -> tuple[list[float], list[float], list[int]]:
    """nmt's training step on the same batches: per-step seconds, losses (mean NLL per token), target tokens."""
    from nmt.config import TrainConfig
    from nmt.decode.load import load_model
    from nmt.precision import Precision
    from nmt.tokens import BOS_ID, PAD_ID
    from nmt.train.loss import LogitsWorkspace, projected_nll
    from nmt.train.optim import build_optimizer

    loaded = load_model(ckpt)
    model = loaded.model
    model.train()  # type: ignore[union-attr]
    device = torch.device("cpu")
    optimizer = build_optimizer(list(model.parameters()), TrainConfig(lr=lr), device=device)  # type: ignore[union-attr]
    for group in optimizer.param_groups:
        group["lr"] = lr
    precision = Precision("bf16" if bf16 else "fp32", device)
    times, losses, tokens = [], [], []
    workspace = LogitsWorkspace()
    for step in range(steps):
        src_rows, label_rows = data[step % len(data)]
        src = pad([to_nmt[torch.tensor(r)].tolist() for r in src_rows], PAD_ID)
        labels = [to_nmt[torch.tensor(r)].tolist() for r in label_rows]
        tgt_out = pad(labels, PAD_ID)
        tgt_in = pad([[BOS_ID, *r[:-1]] for r in labels], PAD_ID)
        keep = tgt_out.flatten().ne(PAD_ID).nonzero().squeeze(1)  # as nmt.data.batching.collate: on the host
        gold = tgt_out.flatten()[keep]
        n = sum(len(r) for r in labels)
        t0 = time.perf_counter()
        with precision.autocast():  # as nmt.train.loop: states, then projection and loss in one
            states = model(src, src.eq(PAD_ID), tgt_in, keep=keep, project=False)  # type: ignore[operator]
            proj = model.out_proj  # type: ignore[union-attr]
            loss, nll = projected_nll(states, proj, gold, smoothing=0.0, pad_id=PAD_ID, workspace=workspace)
        del states
        (loss / n).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
        losses.append(float(nll) / n)
        tokens.append(n)
    return times, losses, tokens


def rate(times: list[float], tokens: list[int]) -> float:
    return statistics.median(t / s for t, s in zip(tokens[3:], times[3:], strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=list(SHAPES), default="opus")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-tokens", type=int, default=2048)
    parser.add_argument("--lines", type=int, default=4000)
    parser.add_argument("--lr", type=float, default=5e-5)
    args = parser.parse_args()
    os.environ["HF_HUB_OFFLINE"] = "1"
    threads = int(os.environ.get("OMP_NUM_THREADS", "2"))
    torch.set_num_threads(threads)
    import transformers

    from nmt.interop.marian import import_marian

    data_dir = Path(os.environ["NMT_DATA"]) / "multi30k"
    all_src = list(read_lines(data_dir / "train.de.gz"))
    all_tgt = list(read_lines(data_dir / "train.en.gz"))
    src, tgt = all_src[: args.lines], all_tgt[: args.lines]
    with tempfile.TemporaryDirectory(prefix="nmt-bench-finetune.") as tmp:
        work = Path(tmp)
        directory = marian_dir(work / "model", SHAPES[args.shape], all_src, all_tgt)  # SentencePiece on all of train
        result = import_marian(directory, work / "model.pt")
        tokenizer = transformers.MarianTokenizer.from_pretrained(directory)
        data = batches(tokenizer, src, tgt, args.batch_tokens)
        from nmt.decode.load import load_model

        table = load_model(work / "model.pt").vocab.src_pieces
        assert table is not None
        to_nmt = torch.zeros(len(tokenizer.encoder), dtype=torch.long)
        for i, piece in enumerate(table):
            if piece in tokenizer.encoder:
                to_nmt[tokenizer.encoder[piece]] = i
        bf16 = args.precision == "bf16"
        hf_t, hf_loss, hf_tok = run_hf(directory, data, steps=args.steps, lr=args.lr, bf16=bf16, work=work)
        nmt_t, nmt_loss, nmt_tok = run_nmt(work / "model.pt", data, to_nmt, steps=args.steps, lr=args.lr, bf16=bf16)
    hf_rate, nmt_rate = rate(hf_t, hf_tok), rate(nmt_t, nmt_tok)
    hf_end, nmt_end = statistics.mean(hf_loss[-5:]), statistics.mean(nmt_loss[-5:])
    print(json.dumps({
        "shape": args.shape, "params": result.params, "precision": args.precision, "steps": args.steps,
        "batch_tokens": args.batch_tokens, "threads": threads,
        "hf_tgt_tokens_per_s": round(hf_rate), "nmt_tgt_tokens_per_s": round(nmt_rate),
        "speedup": round(nmt_rate / hf_rate, 3),
        "hf_loss_last5": round(hf_end, 5), "nmt_loss_last5": round(nmt_end, 5),
        "loss_rel_diff": round(abs(nmt_end - hf_end) / hf_end, 5),
        "hf_first_loss": round(hf_loss[0], 5), "nmt_first_loss": round(nmt_loss[0], 5),
        "transformers": transformers.__version__, "torch": torch.__version__,
        "date": datetime.date.today().isoformat(),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
