"""Mixed training sources (`data.splits.train: [{path, weight, tag}, ...]`): the config, the examples drawn
per epoch (against the rule computed here from the sizes), and the source tag (a control token that text
cannot produce, before the source of that source's pairs only)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nmt.config import config_to_dict, load_config
from nmt.errors import ConfigError
from nmt.tokens import tag_piece
from tests.corpora import reverse_pairs, toy_config, write_split


def mixed_config(tmp: Path, *, weight: float = 0.5, tag: str | None = "bt", extra: str = "") -> Path:
    """The toy experiment with a second train source: 120 other pairs, `weight`, `tag`."""
    write_split(tmp / "corpus", "bt", reverse_pairs(120, seed=9))
    source = f"{{path: {tmp / 'corpus' / 'bt'}, weight: {weight}" + (f", tag: {tag}}}" if tag else "}")
    config = toy_config(tmp, train=200, extra=extra)
    text = config.read_text().replace(
        f"    train: {tmp / 'corpus' / 'train'}\n", f"    train: [{tmp / 'corpus' / 'train'}, {source}]\n"
    )
    config.write_text(text)
    return config


def test_the_train_split_takes_a_list_of_sources(tmp_path: Path) -> None:
    cfg = load_config(mixed_config(tmp_path))
    first, second = cfg.data.sources("train")
    assert first.prefix == str(tmp_path / "corpus" / "train") and first.plain
    assert (second.prefix, second.weight, second.tag) == (str(tmp_path / "corpus" / "bt"), 0.5, "bt")
    assert cfg.data.tags == ["bt"] and cfg.data.sources("valid")[0].plain
    stored = config_to_dict(cfg.data)["splits"]["train"]
    assert stored == [str(tmp_path / "corpus" / "train"), {"path": str(tmp_path / "corpus" / "bt"), "weight": 0.5,
                                                           "tag": "bt"}]  # fmt: skip
    plain = load_config(toy_config(tmp_path / "p"))
    assert config_to_dict(plain.data)["splits"]["train"] == str(tmp_path / "p" / "corpus" / "train")  # unchanged


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.splits.valid=[a, b]", r"data\.splits\.valid: only the train split mixes sources"),
        ("data.splits.train=[{path: a, weight: 0}]", r"weight must be > 0"),
        ("data.splits.train=[a, {path: b, tag: Bad-Tag}]", r"tag 'Bad-Tag' is not a lowercase name"),
        ("data.splits.train=[{path: a, tag: bt}]", r"the first source is the real parallel data"),
        (
            "data.splits.train=[{path: a, wieght: 2}]",
            r"data\.splits\.train\[0\]\.wieght: unknown key; did you mean data\.splits\.train\[0\]\.weight",
        ),
    ],
)
def test_bad_sources_are_config_errors(tmp_path: Path, override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(toy_config(tmp_path), [override])


def test_epoch_draws_weight_times_size_per_source_and_temperature_per_direction() -> None:
    from nmt.data.directions import Marks, Mixture, Part

    class Sized:
        def __init__(self, n: int) -> None:
            self.src_lens = self.tgt_lens = np.ones(n, dtype=np.int32)
            self.vocab_sizes = (10, 10)

        def __len__(self) -> int:
            return len(self.src_lens)

    def mixture(specs: list[tuple[str, int, float]]) -> Mixture:
        return Mixture([Part.of(d, Sized(n), Marks(), "x", weight=w) for d, n, w in specs], "train")  # type: ignore[arg-type]

    def counts(mix: Mixture, temperature: float) -> list[int]:
        drawn = mix.epoch_examples(seed=1, epoch=3, temperature=temperature)
        return np.bincount(np.searchsorted(mix.offsets, drawn, side="right") - 1, minlength=len(mix.parts)).tolist()

    bilingual = mixture([("", 100, 1.0), ("", 60, 0.5), ("", 10, 2.0)])
    assert counts(bilingual, 5.0) == [100, 30, 20]  # weight x size each: 1 x 100, 0.5 x 60, 2 x 10
    drawn = bilingual.epoch_examples(seed=1, epoch=3, temperature=5.0)
    assert sorted(drawn[:100].tolist()) == list(range(100))  # weight 1: every example of the source once
    assert np.bincount(drawn[130:] - 160).tolist() == [2] * 10  # weight 2: each twice
    # two directions: de-en (400 + 0.5 x 200 = 500 weighted) and fr-en (100): p ~ n ** (1/T)
    multi = mixture([("de-en", 400, 1.0), ("de-en", 200, 0.5), ("fr-en", 100, 1.0)])
    p = np.array([500.0, 100.0]) ** (1 / 2.0)
    per_direction = 600 * p / p.sum()
    expected = [round(per_direction[0] * 400 / 500), round(per_direction[0] * 100 / 500), round(per_direction[1])]
    assert counts(multi, 2.0) == expected
    assert counts(mixture([("", 50, 1.0)]), 5.0) == [50]


def test_the_tag_leads_the_tagged_sources_pairs_only_and_text_cannot_produce_it(tmp_path: Path) -> None:
    from nmt.data.prepare import prepare
    from nmt.data.prepared import open_for_training
    from nmt.experiment import Experiment

    config = mixed_config(tmp_path)
    cfg = load_config(config)
    prepare(cfg)
    data = open_for_training(cfg, Experiment.from_config(cfg).data_dir, config)
    vocab = data.vocab
    tag = vocab.tag_id("bt")
    assert tag is not None and vocab.src.id_to_piece(tag) == tag_piece("bt") and vocab.src.is_control(tag)
    assert tag not in vocab.encode_src([f"{tag_piece('bt')} alpha {tag_piece('bt')}"])[0]  # typed text is text
    first, second = data.train.parts
    assert first.size + second.size == len(data.train)
    assert all(data.train[i][0][0] != tag for i in range(first.size))
    for i in range(first.size, len(data.train)):
        src, _ = data.train[i]
        assert src[0] == tag and tag not in src[1:].tolist()
        assert len(src) == data.train.src_lens[i]
    assert vocab.languages == []  # the tag is not a language token


def test_a_toy_model_trains_on_mixed_sources(tmp_path: Path) -> None:
    import json

    from nmt.data.prepare import prepare
    from nmt.train.loop import train

    config = mixed_config(tmp_path, extra="train:\n  max_steps: 6\n  valid_every: 6\n")
    cfg = load_config(config, ["model.d_model=32", "model.ffn_dim=64", "train.compile=false", "train.device=cpu"])
    prepare(cfg)
    train(cfg)
    records = [json.loads(line) for line in (tmp_path / "exp" / "metrics.jsonl").read_text().splitlines()]
    assert any(r["event"] == "valid" and r["step"] == 6 for r in records)
