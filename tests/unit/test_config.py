from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from nmt.config import (
    PRESETS,
    DataConfig,
    DecodeConfig,
    ModelConfig,
    PretrainConfig,
    TrainConfig,
    VocabConfig,
    config_from_dict,
    config_to_dict,
    diff_configs,
    dump_config,
    field_docs,
    load_config,
)
from nmt.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_defaults_are_the_small_preset() -> None:
    cfg = load_config(None)
    assert cfg.model.d_model == PRESETS["small"]["d_model"] == 256
    assert cfg.model.enc_layers == 3 and cfg.train.label_smoothing == 0.1
    assert cfg.decode.alpha == 1.0  # average length penalty default


def test_preset_fields_can_be_overridden(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "model:\n  preset: base\n  enc_layers: 2\n"))
    assert (cfg.model.d_model, cfg.model.enc_layers, cfg.model.dec_layers) == (512, 2, 6)


def test_set_overrides_are_typed_by_the_field(tmp_path: Path) -> None:
    cfg = load_config(
        write(tmp_path, "train:\n  lr: 5e-4\n"),
        [
            "train.lr=3e-4",
            "train.max_steps=7",
            "vocab.joint=false",
            "model.share_embeddings=decoder",
            "train.betas=[0.9, 0.99]",
            "train.max_epochs=null",
            "decode.length_penalty=gnmt",
        ],
    )
    assert cfg.train.lr == 3e-4 and isinstance(cfg.train.lr, float)
    assert cfg.train.max_steps == 7 and cfg.vocab.joint is False
    assert cfg.train.betas == (0.9, 0.99) and cfg.train.max_epochs is None
    assert cfg.decode.alpha == 0.6  # gnmt default


def test_yaml_float_written_as_string_is_converted(tmp_path: Path) -> None:
    # PyYAML reads 5e-4 (no dot) as a string; the field type decides.
    assert load_config(write(tmp_path, "train:\n  lr: 5e-4\n")).train.lr == 5e-4


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("train:\n  bach_tokens: 10\n", "train.bach_tokens: unknown key; did you mean train.batch_tokens?"),
        ("trian:\n  lr: 1\n", "trian: unknown key; did you mean train?"),
        (
            "model:\n  activation: rellu\n",
            "model.activation: invalid value 'rellu'; expected one of relu, gelu, swish; did you mean relu?",
        ),
        ("train:\n  max_steps: many\n", "train.max_steps: expected an integer, got 'many'"),
        ("vocab:\n  joint: maybe\n", "vocab.joint: expected true or false, got 'maybe'"),
        ("model:\n  d_model: 100\n  n_heads: 3\n", "model.d_model (100) must be divisible by model.n_heads (3)"),
        ("model:\n  preset: huge\n", "model.preset: invalid value 'huge'"),
        ("train:\n  lr: -1\n", "train.lr must be >= 0.0"),
    ],
)
def test_errors_name_file_key_and_nearest(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in info.value.message
    assert expected in info.value.message


def test_unknown_override_key_gets_a_suggestion(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="train.warmup: unknown key; did you mean train.warmup_steps"):
        load_config(write(tmp_path, ""), ["train.warmup=10"])


def test_yaml_syntax_error_has_line_and_column(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"line 3, column 7: YAML syntax error: mapping values are not allowed"):
        load_config(write(tmp_path, "train:\n  lr: 1\n  x: y: 2\n"))


def test_env_expansion_and_relative_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MYDATA", "/data/x")
    monkeypatch.delenv("UNSET_VAR", raising=False)
    monkeypatch.chdir(tmp_path)
    cfg = load_config(
        write(
            tmp_path,
            "workdir: exp/a\ndata:\n  splits:\n    train: ${MYDATA}/train\n"
            "    valid: {src: '${UNSET_VAR:-rel}/v.de', tgt: v.en}\n",
        )
    )
    assert cfg.workdir == str(tmp_path / "exp/a")
    assert cfg.data.splits["train"].prefix == "/data/x/train"
    assert cfg.data.splits["valid"].src == str(tmp_path / "rel/v.de")
    with pytest.raises(ConfigError, match="UNSET_VAR is not set"):
        load_config(write(tmp_path, "workdir: ${UNSET_VAR}/x\n"))


def test_round_trip_through_dict_and_yaml(tmp_path: Path) -> None:
    cfg = load_config(None, ["model.preset=tiny", "train.betas=[0.8,0.9]"])
    assert config_from_dict(config_to_dict(cfg)) == cfg
    assert load_config(write(tmp_path, dump_config(cfg))) == cfg
    other = load_config(None, ["model.preset=tiny", "train.lr=1e-3"])
    assert set(diff_configs(config_to_dict(cfg), config_to_dict(other))) == {"train.lr", "train.betas"}


def test_every_field_is_documented() -> None:
    sections = [DataConfig, VocabConfig, ModelConfig, TrainConfig, DecodeConfig, PretrainConfig]
    rows = field_docs()
    assert len(rows) == sum(len(dataclasses.fields(cls)) for cls in sections)
    undocumented = [key for key, _, _, comment in rows if not comment]
    assert not undocumented, f"fields without a comment: {undocumented}"


def test_share_all_needs_a_joint_vocabulary(tmp_path: Path) -> None:
    """Two vocabularies trained with one vocab.size have equal sizes, so only this check can catch it."""
    path = write(tmp_path, "vocab:\n  joint: false\nmodel:\n  share_embeddings: all\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(path) in err.value.message and "vocab.joint" in err.value.message
    assert "share_embeddings: decoder" in (err.value.hint or "")
    # the defaults (joint vocabulary) and share_embeddings: decoder with separate vocabularies are fine
    load_config(write(tmp_path, "model:\n  share_embeddings: all\n"))
    load_config(write(tmp_path, "vocab:\n  joint: false\nmodel:\n  share_embeddings: decoder\n"))


def test_sizes_and_alpha_are_resolved_to_plain_values_at_load(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "model:\n  preset: big\n  d_model: 512\n"))
    m = cfg.model
    assert (m.d_model, m.n_heads, m.ffn_dim, m.enc_layers, m.dec_layers) == (512, 16, 4096, 6, 6)
    assert (m.dropout, m.attention_dropout, m.activation_dropout) == (0.3, 0.1, 0.0)
    assert all(type(getattr(m, k)) is int for k in ("d_model", "n_heads", "ffn_dim", "enc_layers", "dec_layers"))
    assert type(cfg.decode.alpha) is float and m.input_feeding is False
    assert load_config(write(tmp_path, "model:\n  preset: small\n")).model.attention_dropout == 0.0


def test_sampling_may_ask_for_more_samples_than_the_beam(tmp_path: Path) -> None:
    assert load_config(None, ["decode.sampling=true", "decode.beam=1", "decode.nbest=3"]).decode.nbest == 3
    with pytest.raises(ConfigError, match="decode.nbest"):
        load_config(None, ["decode.beam=2", "decode.nbest=3"])


def test_apply_decode_overrides() -> None:
    from nmt.config import apply_decode_overrides

    base = DecodeConfig(beam=4, length_penalty="average")  # alpha defaulted to 1.0
    cfg = apply_decode_overrides(base, ["decode.beam=6", "decode.length_penalty=gnmt"], where="x")
    assert cfg.beam == 6 and cfg.length_penalty == "gnmt" and cfg.alpha == 0.6  # alpha follows the mode
    explicit = apply_decode_overrides(base, ["decode.length_penalty=gnmt", "decode.alpha=0.9"], where="x")
    assert explicit.alpha == 0.9
    kept = apply_decode_overrides(DecodeConfig(alpha=0.7), ["decode.length_penalty=gnmt"], where="x")
    assert kept.alpha == 0.7  # a stored non-default alpha is the user's choice
    assert apply_decode_overrides(base, [], where="x") == base
    with pytest.raises(ConfigError, match="did you mean decode.beam"):
        apply_decode_overrides(base, ["decode.bem=3"], where="x")
    with pytest.raises(ConfigError, match="only decode"):
        apply_decode_overrides(base, ["model.d_model=8"], where="x")
    with pytest.raises(ConfigError, match="expected key.path=value"):
        apply_decode_overrides(base, ["decode.beam"], where="x")
    with pytest.raises(ConfigError, match="decode.nbest"):
        apply_decode_overrides(base, ["decode.nbest=9"], where="x")
    with pytest.raises(ConfigError, match="decode.temperature must be > 0"):
        apply_decode_overrides(base, ["decode.temperature=0"], where="x")
    with pytest.raises(ConfigError, match="expected an integer"):
        apply_decode_overrides(base, ["decode.beam=wide"], where="x")
