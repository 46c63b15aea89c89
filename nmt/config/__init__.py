"""Typed experiment config: frozen dataclasses, strict YAML loading, `--set` overrides.

`schema` holds the dataclasses, `loading` reads YAML and overrides, `reference` documents
the fields; this package re-exports what the rest of nmt uses.

Every value is converted by its dataclass field's type (not by YAML's scalar rules),
unknown keys are rejected with the nearest valid key, and cross-field rules live in
`__post_init__`. Paths may use `${VAR}` / `${VAR:-default}`; after expansion, a
relative path is resolved against the current working directory, and the loaded
config holds absolute paths only (so the copy written into the experiment directory
and into checkpoints means the same thing from anywhere).
"""

from nmt.config.loading import (
    apply_decode_overrides,
    check_new_experiment,
    config_from_dict,
    config_to_dict,
    diff_configs,
    dump_config,
    expand_path,
    load_config,
)
from nmt.config.reference import field_docs, reference_markdown
from nmt.config.schema import (
    PATH,
    PRESETS,
    RESOLVED,
    DataConfig,
    DecodeConfig,
    ExperimentConfig,
    ModelConfig,
    PretrainConfig,
    SplitSpec,
    TrainConfig,
    VocabConfig,
)

__all__ = [
    "PATH", "PRESETS", "RESOLVED", "DataConfig", "DecodeConfig", "ExperimentConfig", "ModelConfig", "PretrainConfig",
    "SplitSpec", "TrainConfig", "VocabConfig", "apply_decode_overrides", "check_new_experiment", "config_from_dict",
    "config_to_dict", "diff_configs", "dump_config", "expand_path", "field_docs", "load_config", "reference_markdown",
]  # fmt: skip
