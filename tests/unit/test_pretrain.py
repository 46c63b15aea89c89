"""`nmt pretrain`: monolingual text in prepare, denoising examples, resume, errors, and a toy
pretrain -> fine-tune run against training from scratch for as many steps."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from nmt.checkpoint import read_checkpoint
from nmt.config import load_config
from nmt.data.prepare import prepare
from nmt.data.prepared import load_vocab, open_for_pretraining
from nmt.errors import ConfigError, DataError
from nmt.experiment import Experiment
from nmt.tokens import lang_piece
from nmt.train.loop import pretrain, train
from tests.corpora import FAST, TOY_SETTINGS, write_split

SYLLABLES = ["ka", "lo", "mi", "ne", "pu", "ri", "so", "ta", "ve", "zu"]


def lexicon(n: int, *, seed: int) -> list[str]:
    """`n` distinct pseudo-words of two or three syllables."""
    rng, words = random.Random(seed), []
    while len(words) < n:
        word = "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 3)))
        if word not in words:
            words.append(word)
    return words


def sentences(n: int, *, seed: int, words: list[str], avoid: set[str] = frozenset()) -> list[str]:
    """`n` distinct random sentences of 3-7 `words`, none in `avoid`."""
    rng, out = random.Random(seed), []
    while len(out) < n:
        line = " ".join(rng.choice(words) for _ in range(rng.randint(3, 7)))
        if line not in avoid and line not in out:
            out.append(line)
    return out


def pretraining_config(tmp: Path, *, parallel: int = 40, mono: int = 600, extra: str = "") -> Path:
    """A toy task over 80 pseudo-words (target: the source's words in reverse order) with `parallel`
    training pairs, too few to hold every word, and `mono` lines of each language's text (every word
    in it) that are not the text of any pair; both languages share the words, as cognates do."""
    data = tmp / "corpus"
    words = lexicon(80, seed=0)
    src = sentences(parallel + 80, seed=1, words=words)
    pairs = [(s, " ".join(reversed(s.split()))) for s in src]
    write_split(data, "train", pairs[:parallel])
    write_split(data, "valid", pairs[parallel : parallel + 40])
    write_split(data, "test", pairs[parallel + 40 :])
    taken = set(src) | {t for _, t in pairs}
    (data / "mono.src").write_text("".join(f"{s}\n" for s in sentences(mono, seed=2, words=words, avoid=taken)))
    (data / "mono.tgt").write_text("".join(f"{s}\n" for s in sentences(mono, seed=3, words=words, avoid=taken)))
    cfg = tmp / "toy.yaml"
    cfg.write_text(f"""name: toy
workdir: {tmp / "exp"}
data:
  src_lang: src
  tgt_lang: tgt
  splits:
    train: {data / "train"}
    valid: {data / "valid"}
    test: {data / "test"}
  monolingual:
    src: {data / "mono.src"}
    tgt: {data / "mono.tgt"}
pretrain:
  valid_lines: 40
{TOY_SETTINGS.format(vocab_size=120)}
{extra}""")
    return cfg


def test_prepare_encodes_the_monolingual_text_with_mask_and_language_tokens(tmp_path: Path) -> None:
    cfg = load_config(pretraining_config(tmp_path), FAST)
    result = prepare(cfg)
    splits = result.manifest["splits"]
    assert splits["mono.src"]["sentences"] == 560 and splits["mono.valid.src"]["sentences"] == 40
    assert splits["mono.tgt"]["sentences"] == 560 and splits["mono.valid.tgt"]["sentences"] == 40
    vocab = load_vocab(Experiment.from_config(cfg).data_dir)
    # mBART: two pretrained languages get language tokens; the mask is a control symbol after them
    assert [vocab.src.id_to_piece(i) for i in (4, 5, 6)] == [lang_piece("src"), lang_piece("tgt"), "<mask>"]
    assert vocab.mask_id == 6
    # no text encodes to the mask or a language token: a user's literal "<mask>" is characters
    ids = vocab.encode_src(["kalo <mask> >>tgt<< mine", "<mask>"])
    assert all(i > 6 or i == 1 for line in ids for i in line), ids
    # the held-out lines are the files' last 40, never trained on
    data = open_for_pretraining(cfg, Experiment.from_config(cfg).data_dir, tmp_path / "toy.yaml")
    last = (tmp_path / "corpus" / "mono.tgt").read_text().splitlines()[-40:]
    valid_tgt = data.valid[1].data
    assert vocab.decode_tgt([valid_tgt[i][1].tolist() for i in range(40)]) == last


def test_denoising_examples_are_noised_per_epoch_and_reproducible(tmp_path: Path) -> None:
    cfg = load_config(pretraining_config(tmp_path), FAST)
    prepare(cfg)
    data = open_for_pretraining(cfg, Experiment.from_config(cfg).data_dir, tmp_path / "toy.yaml")
    train_ds = data.train
    mask, src_token, tgt_token = 6, 4, 5
    e0, e1 = train_ds.at_epoch(0), train_ds.at_epoch(1)
    masked = total = 0
    for i in range(0, len(train_ds), 7):
        src, tgt = e0[i]
        part_lang = src_token if i < 560 else tgt_token
        assert src[0] == part_lang  # the language token leads, untouched
        assert mask not in tgt.tolist() and part_lang not in tgt.tolist()  # the target is the sentence itself
        again, _ = train_ds.at_epoch(0)[i]
        assert np.array_equal(src, again)  # same (seed, epoch, index): same noise
        masked += int((src == mask).sum())
        total += len(tgt)
    assert 0.05 < masked / total < 0.3  # one mask per span of ~3 tokens, ~35% of tokens
    differs = sum(not np.array_equal(e0[i][0], e1[i][0]) for i in range(0, len(train_ds), 7))
    assert differs > 0.8 * len(range(0, len(train_ds), 7))
    start = data.train.start_ids(np.array([0, 560]))
    assert start.tolist() == [src_token, tgt_token]  # mBART: the decoder starts with the language token


@pytest.mark.parametrize(
    ("override", "error", "message"),
    [
        ("data.monolingual.fr=x.fr", ConfigError, r"data.monolingual: 'fr' is not a language of this model \(src, tgt"),
        ("vocab.joint=false", ConfigError, "data.monolingual needs vocab.joint: true"),
        ("data.monolingual.src=/nonexistent/m.src", DataError, "data.monolingual.src: /nonexistent/m.src: file not"),
        ("data.monolingual.src=EMPTY", DataError, r"data.monolingual.src: .*empty is empty"),
        ("data.monolingual.src=SHORT", DataError, r"has 5 line\(s\): nmt pretrain holds out a tenth"),
    ],
)
def test_bad_monolingual_entries_are_config_or_data_errors(
    tmp_path: Path, override: str, error: type, message: str
) -> None:
    (tmp_path / "empty").write_text("")
    (tmp_path / "short").write_text("alpha bravo\n" * 5)
    override = override.replace("EMPTY", str(tmp_path / "empty")).replace("SHORT", str(tmp_path / "short"))
    with pytest.raises(error, match=message):
        prepare(load_config(pretraining_config(tmp_path), [*FAST, override]))


def test_pretrain_without_monolingual_text_or_with_init_from_is_refused(tmp_path: Path) -> None:
    cfg = load_config(pretraining_config(tmp_path), [*FAST, "data.monolingual={}"])
    prepare(cfg)
    with pytest.raises(ConfigError, match="nmt pretrain reads data.monolingual"):
        pretrain(cfg)
    with pytest.raises(ConfigError, match="nmt pretrain starts from random weights"):
        pretrain(load_config(pretraining_config(tmp_path), [*FAST, "train.init_from=x.pt"]))


def test_pretrain_resume_equals_uninterrupted(tmp_path: Path) -> None:
    common = [*FAST, "train.log_every=5", "train.valid_every=100", "train.precision=fp32", "model.dropout=0.1"]
    runs = {}
    for name, steps in (("straight", [16]), ("resumed", [6, 16])):
        path = pretraining_config(tmp_path / name, mono=200)
        for i, n in enumerate(steps):
            cfg = load_config(path, [*common, f"train.max_steps={n}"])
            if i == 0:
                prepare(cfg)
            assert pretrain(cfg).state.step == n
        exp = Experiment.from_config(cfg).pretraining()
        runs[name] = read_checkpoint(exp.last_checkpoint)["model"]
        records = [json.loads(line) for line in exp.metrics_path.read_text().splitlines()]
        valid = [r for r in records if r["event"] == "valid"]
        assert valid and all("bleu" not in r and set(r["directions"]) == {"src", "tgt"} for r in valid)
        assert exp.curves_path.is_file() and not (Experiment.from_config(cfg).checkpoint_dir).exists()
    for key, value in runs["straight"].items():
        assert torch.equal(value, runs["resumed"][key]), key


def best_valid_nll(cfg_path: Path, overrides: list[str]) -> float:
    """Prepare and train the toy experiment; the lowest validation NLL on the parallel valid split."""
    cfg = load_config(cfg_path, overrides)
    prepare(cfg)
    train(cfg)
    records = [json.loads(line) for line in Experiment.from_config(cfg).metrics_path.read_text().splitlines()]
    return min(r["nll"] for r in records if r["event"] == "valid")


def test_pretraining_then_fine_tuning_beats_scratch_at_equal_total_steps(tmp_path: Path) -> None:
    """40 pairs over 80 pseudo-words (most words never in a pair); 600 lines of each language that no pair
    holds. 200 steps of pretraining then 150 of fine-tuning end with a lower validation NLL than the best
    of 350 steps from scratch (validated every 50), with the same vocabulary and settings."""
    common = [*FAST, "train.precision=fp32", "train.log_every=50", "train.lr=3e-3", "train.warmup_steps=30",
              "model.d_model=64", "model.ffn_dim=128", "model.enc_layers=2", "model.dec_layers=2",
              "train.batch_tokens=512"]  # fmt: skip
    path = pretraining_config(tmp_path)
    cfg = load_config(path, [*common, "train.max_steps=200", "train.valid_every=200"])
    prepare(cfg)
    pretrain(cfg)
    ckpt = Experiment.from_config(cfg).pretraining().best_checkpoint
    tuned = best_valid_nll(path, [*common, "train.max_steps=150", "train.valid_every=150", f"train.init_from={ckpt}",
                                  f"workdir={tmp_path / 'tuned'}"])  # fmt: skip
    scratch = best_valid_nll(path, [*common, "train.max_steps=350", "train.valid_every=50",
                                    f"workdir={tmp_path / 'scratch'}"])  # fmt: skip
    assert tuned < 0.85 * scratch, (tuned, scratch)


def test_the_pretrain_command_runs_and_refuses_a_config_without_monolingual_text(tmp_path: Path) -> None:
    from tests.conftest import run_nmt

    config = pretraining_config(tmp_path, mono=200)
    fast = [arg for setting in [*FAST, "train.max_steps=4", "train.valid_every=4"] for arg in ("--set", setting)]
    assert run_nmt("prepare", str(config), *fast).returncode == 0
    done = run_nmt("pretrain", str(config), *fast)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "exp" / "pretrain" / "checkpoints" / "best.pt").is_file()
    assert "valid loss" in done.stderr and "BLEU" not in done.stderr
    refused = run_nmt("pretrain", str(config), *fast, "--set", "data.monolingual=null")
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert "data.monolingual" in refused.stderr
