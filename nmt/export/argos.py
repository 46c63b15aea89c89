"""`export --argos`: a checkpoint -> an Argos Translate package (.argosmodel) for Argos Translate and LibreTranslate.

A package is a zip archive holding one directory, laid out as the Argos Translate clients read it
and as argos-train (`argostrain/train.py`) writes the packages of Argos's own index:

    translate-<src>_<tgt>-nmt-1_0/
        metadata.json        package_version, argos_version, from/to code and name, type, links
        model/               the CTranslate2 model: a whole `nmt export` directory (`nmt translate .../model` works)
        sentencepiece.model  the joint SentencePiece model, for both sides
        README.md
        minisbd/<name>.onnx  the sentence splitter: paragraph.onnx (each line one sentence), or `sbd_model`
        stanza/              with `stanza_model` only: Stanza's sentence splitter for the source language

The clients (`package.py`: `install_from_path` unzips into the packages directory, `Package.__init__`
reads `metadata.json` and `sentencepiece.model`; `translate.py`: `PackageTranslation.hypotheses` opens
`ctranslate2.Translator(package / "model")` and splits the text at line breaks, then
`apply_packaged_translation` splits each line into sentences):
- argos-translate-lt 1.12 (LibreTranslate's fork; `pip install libretranslate` installs it) and
  argostranslate >= 1.11 split with MiniSBD (`sbd.py`, `MiniSBDSentencizer`): the first
  `minisbd/*.onnx` of the package, else a model downloaded for the source language on first use,
  which fails offline (URLError, and LibreTranslate answers 500). Every package therefore carries
  `paragraph.onnx` (package data built by scripts/build_minisbd_model.py), which keeps each line as
  one sentence, as `nmt translate` translates it; Stanza is used only with ARGOS_CHUNK_TYPE=STANZA.
- argostranslate <= 1.10 reads no MiniSBD model: it splits with Stanza (`stanza.Pipeline(lang=from_code,
  dir=package / "stanza")`, downloading the model into the package on first use unless it carries one;
  1.10 uses spaCy instead when the package has no `stanza/`).

Argos encodes each sentence into pieces with `sentencepiece.model` (`encode(out_type=str)`),
translates them with `translate_batch` and decodes the output pieces (argos-translate-lt: SentencePiece's
`decode_pieces`, then "_" -> " "). The export's CTranslate2 config adds the source eos itself and starts
the decoder with bos (`nmt.export.spec`), so the model sees exactly the ids `nmt translate` feeds it, and
with the same search settings the output is `nmt translate DIR`'s. Argos searches with its own settings,
though: beam 4 (ARGOS_BEAM_SIZE), CTranslate2's length penalty 0.2, at most 256 output tokens, pad and bos
not suppressed, and an unknown output piece replaced by a source piece (nmt writes " ⁇ ").

A multilingual model (`data.directions`) becomes one package per direction,
`<dir>/<src>_<tgt>.argosmodel` (`directions` picks some), each holding the same CTranslate2 model:
the export starts its decoder with a `target_prefix` (`nmt.export_format.prefix_start`), and
each package's metadata.json names its target language token as `target_prefix`, which the
clients pass to `translate_batch` (and strip from the output text if it shows there). Argos has
no source prefix, so a model with source-side tags (`data.lang_token: source`) is refused.
Language names come from `nmt.iso639` unless the user names them.

argos-train names the directory translate-<src>_<tgt>-<version>; "nmt" in ours keeps an install
from unpacking over (and mixing files with) a package of Argos's index for the same pair. The
package is built in a temp directory next to its place and renamed into place in whole, so the
target file is never half-written.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import time
import zipfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from nmt import __version__
from nmt.checkpoint import checkpoint_config, read_checkpoint
from nmt.config import ExperimentConfig
from nmt.console import warn
from nmt.errors import NmtError
from nmt.export.ct2 import check_quantization, export_checkpoint
from nmt.export_format import joint_spm, require_ctranslate2
from nmt.fileio import atomic_open
from nmt.iso639 import name_of
from nmt.tokens import lang_piece

SUFFIX = ".argosmodel"
PACKAGE_VERSION = "1.0"  # Argos compares it with its index's when asked to update a package
ARGOS_VERSION = "1.9"  # the oldest argostranslate that reads this layout (<= 1.10 read stanza/, later minisbd/)
ARGOS_MAX_OUTPUT = 256  # tokens: CTranslate2's default max_decoding_length, which Argos keeps
METADATA, SPM, MODEL_DIR, README = "metadata.json", "sentencepiece.model", "model", "README.md"
SBD_DIR, STANZA_DIR = "minisbd", "stanza"  # sentence splitters: MiniSBD's model file, Stanza's directory
PARAGRAPH_SBD = "paragraph.onnx"  # package data of nmt.export: the MiniSBD model that keeps a line whole
_CODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")  # part of the package's directory name


@dataclass(frozen=True)
class ArgosResult:
    """Summary of `export_argos`."""

    package: Path
    root: str  # the one directory inside the archive
    checkpoint: Path
    step: int
    from_code: str
    to_code: str
    quantization: str
    size_bytes: int  # the .argosmodel file
    elapsed_s: float
    target_prefix: str = ""  # a multilingual model's target language token ("" for a bilingual one)


def _check_package(package: Path, *, force: bool) -> None:
    """Refuse a name without the .argosmodel suffix, a directory, and an existing file without force."""
    if package.suffix != SUFFIX:
        raise NmtError(
            f"{package}: an Argos Translate package is a file ending in {SUFFIX}",
            hint=f"e.g. --argos {package.with_suffix(SUFFIX).name}",
        )
    if package.is_dir():
        raise NmtError(f"{package}: is a directory", hint=f"give a file name, e.g. {package / 'x.argosmodel'}")
    if not package.exists():
        return
    if not force:
        raise NmtError(f"{package}: file exists", hint="use --force to replace it")
    if not zipfile.is_zipfile(package):
        raise NmtError(
            f"{package}: not an Argos Translate package (not a zip archive); --force only replaces an earlier package",
            hint="choose another file name",
        )


def _check_name(name: str, option: str) -> str:
    if not name.strip() or any(c in name for c in "\r\n"):
        raise NmtError(f"{option} {name!r}: give the language's name on one line", hint=f"e.g. {option} German")
    return name.strip()


def _check_sbd(sbd_model: Path) -> Path:
    """A MiniSBD model file (.onnx), or NmtError; a directory gets the paragraph on which client reads what."""
    if sbd_model.is_dir():
        raise NmtError(
            f"--sbd-model {sbd_model}: is a directory, but --sbd-model takes a MiniSBD model file (.onnx), the "
            f"sentence splitter that argos-translate-lt (the Argos Translate client LibreTranslate installs) and "
            f"argostranslate 1.11 or later read from a package's {SBD_DIR}/; a Stanza directory is read by "
            "argostranslate 1.10 and earlier, and by the newer clients only with ARGOS_CHUNK_TYPE=STANZA",
            hint=f"for a Stanza directory use --stanza-model {sbd_model}; without --sbd-model the package "
            f"carries {PARAGRAPH_SBD}, which keeps each line as one sentence as nmt translate does",
        )
    if sbd_model.suffix != ".onnx" or not sbd_model.is_file():
        raise NmtError(
            f"--sbd-model {sbd_model}: not a MiniSBD model file (a .onnx file that exists)",
            hint="e.g. one of the models of https://github.com/LibreTranslate/MiniSBD/releases",
        )
    return sbd_model


def _check_stanza(stanza_model: Path, lang: str) -> Path:
    """A directory as `stanza.download(lang, dir=DIR, processors="tokenize")` writes it, or NmtError."""
    tokenize = stanza_model / lang / "tokenize"
    if not (stanza_model / "resources.json").is_file() or not any(tokenize.glob("*.pt")):
        raise NmtError(
            f"{stanza_model}: not a Stanza sentence-splitting model for {lang!r} "
            f"(argostranslate <= 1.10 reads resources.json and {lang}/tokenize/*.pt from the package's {STANZA_DIR}/)",
            hint=f"python -c \"import stanza; stanza.download('{lang}', dir='{stanza_model}', processors='tokenize')\"",
        )
    return stanza_model


def _checkpoint_config(checkpoint: Path) -> ExperimentConfig:
    """The config of a Transformer checkpoint with a joint vocabulary and usable language codes, or NmtError.

    A recurrent checkpoint passes here and is refused by `export_checkpoint`."""
    ckpt = read_checkpoint(checkpoint)
    cfg = checkpoint_config(ckpt, checkpoint)
    joint = ckpt["vocab"]["src"] == ckpt["vocab"]["tgt"]
    del ckpt
    if cfg.model.arch == "transformer" and not joint:
        raise NmtError(
            f"{checkpoint}: trained with separate source and target vocabularies (vocab.joint: false), but an "
            f"Argos Translate package carries one SentencePiece model ({SPM}) for both sides: the source is split "
            "into its pieces and the output is read back as its pieces",
            hint="retrain with vocab.joint: true for Argos Translate; this checkpoint exports for nmt with "
            f"nmt export {checkpoint} -o DIR",
        )
    if cfg.data.multilingual and cfg.data.lang_token == "source":
        raise NmtError(
            f"{checkpoint}: a multilingual model that asks for its output language with a source-side tag "
            "(data.lang_token: source) cannot be an Argos Translate package: Argos passes a package's language "
            "token only as the decoder's first token (target_prefix), never before the source, so every output "
            "would be in whichever language the model guesses",
            hint=f"serve it with nmt (nmt serve {checkpoint}), or train with data.lang_token: target for Argos",
        )
    for code in cfg.data.languages:
        if not _CODE.fullmatch(code):
            raise NmtError(
                f"{checkpoint}: language code {code!r} is not a language code Argos Translate can use",
                hint="Argos Translate and LibreTranslate name languages by ISO 639 code (de, en, ...)",
            )
    return cfg


def parse_lang_names(items: list[str]) -> dict[str, str]:
    """`--lang-name CODE=NAME` values -> {code: name}; NmtError for one without `=` or with an empty side."""
    names: dict[str, str] = {}
    for item in items:
        code, sep, name = item.partition("=")
        if not sep or not code.strip() or not name.strip():
            raise NmtError(f"--lang-name {item!r}: write CODE=NAME", hint="e.g. --lang-name de=German")
        names[code.strip()] = _check_name(name, "--lang-name")
    return names


def _language_name(code: str, names: dict[str, str], option: str) -> str:
    """The name Argos shows for `code`: the user's, else ISO 639-1's; NmtError when neither has it."""
    name = name_of(code, names)
    if name is None:
        raise NmtError(
            f"no name for language code {code!r} (it is not an ISO 639-1 code): Argos Translate and LibreTranslate "
            "show each language by name",
            hint=f"name it: {option}",
        )
    return name


def _readme(
    from_name: str, to_name: str, checkpoint: Path, step: int, quantization: str, sbd_name: str, target_prefix: str
) -> str:
    splitter = (
        "keeps each line as one sentence, as `nmt translate` does"
        if sbd_name == PARAGRAPH_SBD
        else "was given to `nmt export --sbd-model`"
    )
    model = f"`nmt translate {MODEL_DIR}` decodes with nmt's search settings"
    if target_prefix:
        model = (
            f"it holds a multilingual model: `nmt translate {MODEL_DIR} --tgt-lang LANG` decodes with nmt's search "
            f"settings; this package asks it for its target language with `{target_prefix}` (target_prefix)"
        )
    return (
        f"# {from_name} -> {to_name}\n\n"
        f"Exported by nmt {__version__} (`nmt export --argos`) from `{checkpoint.name}` at step {step:,}, "
        f"CTranslate2 weights {quantization}.\n\n"
        f"`{MODEL_DIR}/` is also an nmt export: {model}.\n\n"
        f"`{SBD_DIR}/{sbd_name}`, the sentence splitter of argos-translate-lt (LibreTranslate's client), {splitter}.\n"
    )


def _root_name(from_code: str, to_code: str) -> str:
    """The package's one directory (see the module docstring for the "nmt" in it)."""
    return f"translate-{from_code}_{to_code}-nmt-{PACKAGE_VERSION.replace('.', '_')}"


@dataclass(frozen=True)
class _Languages:
    """One package's direction: codes, the names Argos shows, and the target language token if any."""

    from_code: str
    to_code: str
    from_name: str
    to_name: str
    target_prefix: str = ""


def _write_package(
    package: Path,
    model_dir: Path,
    langs: _Languages,
    *,
    checkpoint: Path,
    step: int,
    quantization: str,
    sbd: Path | None,
    stanza: Path | None,
) -> None:
    """Build the package's directory (a copy of the export `model_dir` as its model) in a temp directory
    beside `package`, then zip it into `package` (atomically, `_write_zip`)."""
    sbd_name = sbd.name if sbd is not None else PARAGRAPH_SBD
    metadata = _metadata(langs)
    package.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{package.name}.", suffix=".tmp", dir=package.parent) as scratch:
        root = Path(scratch) / _root_name(langs.from_code, langs.to_code)
        root.mkdir()
        shutil.copytree(model_dir, root / MODEL_DIR)
        shutil.copyfile(joint_spm(root / MODEL_DIR), root / SPM)
        _write_splitters(root, sbd, sbd_name, stanza)
        (root / METADATA).write_text(json.dumps(metadata, indent=4, ensure_ascii=False) + "\n", encoding="utf-8")
        readme = _readme(langs.from_name, langs.to_name, checkpoint, step, quantization, sbd_name, langs.target_prefix)
        (root / README).write_text(readme, encoding="utf-8")
        _write_zip(root, package)


def _write_zip(root: Path, out: Path) -> None:
    """`root` and everything under it into the zip `out`, paths relative to root's parent, written
    atomically (`fileio.atomic_open`: a temp file beside `out`, fsynced, renamed over it)."""
    with atomic_open(out, "wb") as fh:
        with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            zf.write(root, root.name)
            for path in sorted(root.rglob("*")):
                zf.write(path, path.relative_to(root.parent).as_posix())


def _metadata(langs: _Languages) -> dict[str, object]:
    """The package's metadata.json, as argos-train writes it (with `target_prefix` as Argos's own
    multilingual packages carry it)."""
    return {
        "package_version": PACKAGE_VERSION,
        "argos_version": ARGOS_VERSION,
        "from_code": langs.from_code,
        "from_name": langs.from_name,
        "to_code": langs.to_code,
        "to_name": langs.to_name,
        **({"target_prefix": langs.target_prefix} if langs.target_prefix else {}),
        "type": "translate",
        "links": [],
    }


def _write_splitters(root: Path, sbd: Path | None, sbd_name: str, stanza: Path | None) -> None:
    """The sentence splitters into the package directory `root`: the MiniSBD model `sbd` (else
    paragraph.onnx) as minisbd/`sbd_name`, and the Stanza directory `stanza` when given."""
    (root / SBD_DIR).mkdir()
    if sbd is not None:
        shutil.copyfile(sbd, root / SBD_DIR / sbd_name)
    else:
        (root / SBD_DIR / sbd_name).write_bytes(resources.files(__package__).joinpath(PARAGRAPH_SBD).read_bytes())
    if stanza is not None:
        shutil.copytree(stanza, root / STANZA_DIR)


def _warn_max_len(max_len: int) -> None:
    """Warn when the model's positions end before Argos's longest output."""
    if max_len < ARGOS_MAX_OUTPUT:
        warn(
            f"model.max_len is {max_len}, but Argos Translate lets an output run to {ARGOS_MAX_OUTPUT} "
            f"tokens: an output longer than {max_len - 1} tokens fails there (CTranslate2 has no "
            "position encodings past the model's)"
        )


def _directions(cfg: ExperimentConfig, checkpoint: Path, chosen: list[str] | None) -> list[tuple[str, str]]:
    """The (source, target) pairs to package: `chosen` (each a trained direction), else all of them."""
    pairs = cfg.data.pairs
    if not chosen:
        return pairs
    out = []
    for direction in chosen:
        src, sep, tgt = direction.partition("-")
        if not sep or (src, tgt) not in pairs:
            trained = ", ".join(f"{a}-{b}" for a, b in pairs)
            raise NmtError(
                f"--direction {direction}: {checkpoint} was not trained on it; its directions are {trained}",
                hint="give trained directions as SRC-TGT, or leave --direction out for all of them",
            )
        if (src, tgt) not in out:
            out.append((src, tgt))
    return out


def export_argos(checkpoint: Path, package: Path, **options: Any) -> ArgosResult:
    """`export_argos_packages` for a bilingual model: its one package, the file `package`."""
    return export_argos_packages(checkpoint, package, **options)[0]


def export_argos_packages(
    checkpoint: Path,
    package: Path,
    *,
    from_name: str | None = None,
    to_name: str | None = None,
    lang_names: dict[str, str] | None = None,
    directions: list[str] | None = None,
    quantization: str = "none",
    sbd_model: Path | None = None,
    stanza_model: Path | None = None,
    force: bool = False,
) -> list[ArgosResult]:
    """Write `checkpoint` as Argos Translate package(s) (see the module docstring): the file `package`
    for a bilingual model, or `package`/<src>_<tgt>.argosmodel per direction for a multilingual one.

    Args:
        from_name, to_name: a bilingual model's language names as Argos Translate and LibreTranslate show
            them (the codes are the checkpoint's); default: `lang_names`, else ISO 639-1's English name.
        lang_names: {code: name} for any language (`--lang-name de=German`).
        directions: a multilingual model's directions to package (SRC-TGT); default all.
        quantization: as `export_checkpoint`'s (Argos's own packages are int8).
        sbd_model: a MiniSBD model file (.onnx) shipped as the package's sentence splitter instead of
            paragraph.onnx (which keeps each line as one sentence).
        stanza_model: a Stanza model directory (resources.json, <src_lang>/tokenize/*.pt) for
            argostranslate <= 1.10 (without it, those clients download one on first use).
        force: replace existing package files.

    Raises:
        ConfigError: unknown quantization. CheckpointError: corrupt or recurrent checkpoint.
        NmtError: ctranslate2 missing; separate vocabularies; source-side language tags; a bad name, file
            name, direction, sbd_model or stanza_model; a package exists (without force) or is not a package.
    """
    start = time.perf_counter()
    checkpoint, package = Path(checkpoint), Path(package)
    names = dict(lang_names or {})
    check_quantization(quantization)
    require_ctranslate2()
    cfg = _checkpoint_config(checkpoint)
    if cfg.data.multilingual:
        if from_name is not None or to_name is not None:
            raise NmtError(
                "--from-name and --to-name name a bilingual model's two languages; a multilingual model's "
                "languages are named by ISO 639-1 code, or with --lang-name CODE=NAME",
                hint="e.g. --lang-name de=Deutsch",
            )
        if package.suffix == SUFFIX or package.is_file():
            raise NmtError(
                f"--argos {package}: a multilingual model becomes one package per direction, so --argos names a "
                "directory for them (<src>_<tgt>.argosmodel each)",
                hint=f"e.g. --argos {package.with_suffix('')}",
            )
        pairs = _directions(cfg, checkpoint, directions)
        targets = [(package / f"{src}_{tgt}{SUFFIX}", src, tgt) for src, tgt in pairs]
        langs = [
            _Languages(
                src, tgt, _language_name(src, names, f"--lang-name {src}=NAME"),
                _language_name(tgt, names, f"--lang-name {tgt}=NAME"), lang_piece(tgt),
            )
            for _, src, tgt in targets
        ]  # fmt: skip
    else:
        if directions:
            raise NmtError("--direction picks directions of a multilingual model; this one is bilingual")
        src, tgt = str(cfg.data.src_lang), str(cfg.data.tgt_lang)
        from_name = _check_name(from_name, "--from-name") if from_name is not None else None
        to_name = _check_name(to_name, "--to-name") if to_name is not None else None
        targets = [(package, src, tgt)]
        langs = [
            _Languages(
                src, tgt, from_name or _language_name(src, names, "--from-name NAME"),
                to_name or _language_name(tgt, names, "--to-name NAME"),
            )
        ]  # fmt: skip
    for path, _, _ in targets:
        _check_package(path, force=force)
    sbd = _check_sbd(Path(sbd_model)) if sbd_model is not None else None
    stanza = None
    if stanza_model is not None:
        for src in dict.fromkeys(lang.from_code for lang in langs):
            stanza = _check_stanza(Path(stanza_model), src)
    out_parent = targets[0][0].parent
    out_parent.mkdir(parents=True, exist_ok=True)
    results = []
    with tempfile.TemporaryDirectory(prefix=".nmt-export.", suffix=".tmp", dir=out_parent) as scratch:
        exported = export_checkpoint(checkpoint, Path(scratch) / MODEL_DIR, quantization=quantization)
        for (path, _, _), lang in zip(targets, langs, strict=True):
            _write_package(
                path, exported.out_dir, lang, checkpoint=checkpoint, step=exported.step,
                quantization=quantization, sbd=sbd, stanza=stanza,
            )  # fmt: skip
            results.append(
                ArgosResult(
                    package=path,
                    root=_root_name(lang.from_code, lang.to_code),
                    checkpoint=checkpoint,
                    step=exported.step,
                    from_code=lang.from_code,
                    to_code=lang.to_code,
                    quantization=quantization,
                    size_bytes=path.stat().st_size,
                    elapsed_s=time.perf_counter() - start,
                    target_prefix=lang.target_prefix,
                )
            )
    _warn_max_len(cfg.model.max_len)
    return results
