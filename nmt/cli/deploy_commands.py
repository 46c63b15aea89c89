"""`nmt import`, `nmt export` and `nmt serve`: each parses its options, calls one stage function and renders."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from nmt.cli.app import app
from nmt.cli.options import SEARCH_FLAGS, DecodeSetOption, guarded, with_decode_flags
from nmt.console import console
from nmt.errors import NmtError

ExportFrom = Annotated[Path, typer.Argument(help="Checkpoint (.pt) of a Transformer.", show_default=False)]
ExportTo = Annotated[
    Path | None, typer.Option("-o", "--output", help="The CTranslate2 model directory to write.", show_default=False)
]
Quantization = Annotated[
    str,
    typer.Option(
        "--quantization", "-q", help="none | int8 | int8_float32 | int8_bfloat16 | bfloat16 | float16 (weights)."
    ),
]
Force = Annotated[bool, typer.Option("--force", help="Replace an earlier export or package.")]
Argos = Annotated[
    Path | None,
    typer.Option(
        "--argos",
        help="Write an Argos Translate package FILE.argosmodel instead of -o; a multilingual model: a DIR "
        "of <src>_<tgt>.argosmodel, one per direction.",
        show_default=False,
    ),
]
FromName = Annotated[
    str | None,
    typer.Option("--from-name", help="With --argos, a bilingual model: source language name (default: ISO 639-1's)."),
]
ToName = Annotated[
    str | None,
    typer.Option("--to-name", help="With --argos, a bilingual model: target language name (default: ISO's)."),
]
HF = Annotated[
    Path | None,
    typer.Option(
        "--hf",
        help="Write a Hugging Face MarianMT directory (transformers, ct2-transformers-converter).",
        show_default=False,
    ),
]
LangName = Annotated[
    list[str] | None,
    typer.Option(
        "--lang-name", help="With --argos: CODE=NAME, the name shown for a language (repeatable).", show_default=False
    ),
]
Direction = Annotated[
    list[str] | None,
    typer.Option(
        "--direction",
        help="With --argos, a multilingual model: package this direction SRC-TGT only (repeatable).",
        show_default=False,
    ),
]
SbdModel = Annotated[
    Path | None,
    typer.Option(
        "--sbd-model",
        help="With --argos: a MiniSBD model FILE.onnx to split sentences (default: each line one sentence).",
        show_default=False,
    ),
]
StanzaModel = Annotated[
    Path | None,
    typer.Option(
        "--stanza-model", help="With --argos: a Stanza directory, for argostranslate <= 1.10.", show_default=False
    ),
]
Models = Annotated[
    list[Path],
    typer.Argument(help="Checkpoints (.pt) or `nmt export` directories, one per language pair.", show_default=False),
]
Host = Annotated[str, typer.Option("--host", help="Address to listen on.")]
Port = Annotated[int, typer.Option("--port", help="Port to listen on.")]
CharLimit = Annotated[int, typer.Option("--char-limit", help="Most characters per request (all of q); -1 = no limit.")]
BatchLimit = Annotated[int, typer.Option("--batch-limit", help="Most strings in a q list; -1 = no limit.")]
LineLimit = Annotated[
    int, typer.Option("--line-limit", help="Most lines per request (all of q, split at line breaks); -1 = none.")
]
MaxWaitMs = Annotated[
    float, typer.Option("--max-wait-ms", min=0.0, help="How long a batch waits for more requests to join it.")
]
QueueSize = Annotated[
    int, typer.Option("--queue-size", min=1, help="Requests that may wait for the decoder; more get 429.")
]
ApiKeysFile = Annotated[
    Path | None,
    typer.Option(
        "--api-keys-file", help="Keys a request must carry as api_key, one a line (# comments).", show_default=False
    ),
]
ReqLimit = Annotated[
    int, typer.Option("--req-limit", help="Translate requests per minute per key (or client address); -1 = any.")
]
ForwardedAllowIps = Annotated[
    str | None,
    typer.Option(
        "--forwarded-allow-ips", help="Proxies whose X-Forwarded-For names the client (IPs, or *).", show_default=False
    ),
]
MaxConnections = Annotated[
    int | None,
    typer.Option(
        "--max-connections",
        min=1,
        help="Open connections; more get 503. Default: 1000, or what ulimit -n allows.",
        show_default=False,
    ),
]
ReadTimeout = Annotated[
    float, typer.Option("--read-timeout", min=0.01, help="Seconds a client has to send a request's head, and its body.")
]
ShutdownTimeout = Annotated[
    float, typer.Option("--shutdown-timeout", min=0.0, help="Seconds SIGTERM waits for requests in flight.")
]


ImportFrom = Annotated[
    Path,
    typer.Argument(
        help="A Hugging Face MarianMT directory (an OPUS-MT model), or a fairseq Transformer checkpoint (.pt).",
        show_default=False,
    ),
]
ImportSpm = Annotated[
    list[Path] | None,
    typer.Option(
        "--spm",
        help="fairseq: the SentencePiece model that split the text (twice: source, then target).",
        show_default=False,
    ),
]
ImportDictDir = Annotated[
    Path | None,
    typer.Option(
        "--dict-dir",
        help="fairseq: the directory with dict.<src>.txt and dict.<tgt>.txt (default: the checkpoint's recorded "
        "data directory, else the checkpoint's own).",
        show_default=False,
    ),
]
ImportTo = Annotated[
    Path, typer.Option("-o", "--output", help="The nmt checkpoint (.pt) to write.", show_default=False)
]
SrcLang = Annotated[
    str | None, typer.Option("--src-lang", help="Source language code, when the model does not name it.")
]
TgtLang = Annotated[
    str | None, typer.Option("--tgt-lang", help="Target language code, when the model does not name it.")
]


@app.command("import")
@guarded
def import_(
    directory: ImportFrom,
    output: ImportTo,
    src_lang: SrcLang = None,
    tgt_lang: TgtLang = None,
    force: Force = False,
    spm: ImportSpm = None,
    dict_dir: ImportDictDir = None,
) -> None:
    """Import a Hugging Face MarianMT model (OPUS-MT) or a fairseq Transformer as a self-contained nmt checkpoint.

    A directory is read as MarianMT: config.json, model.safetensors (or pytorch_model.bin), source.spm,
    target.spm and vocab.json; needs no transformers. A file is read as a fairseq checkpoint
    ([bold]--spm SPM.model[/bold], dictionaries from [bold]--dict-dir[/bold] or the recorded data directory),
    unpickled without running anything it names; needs no fairseq. The checkpoint then works with
    translate, evaluate, export, serve and train --init.
    """
    if directory.is_file() or spm:
        from nmt.interop.fairseq import import_fairseq

        if not spm:
            raise NmtError(
                f"{directory}: a fairseq checkpoint needs the SentencePiece model its text was split with",
                hint=f"nmt import {directory} --spm SPM.model -o OUT.pt",
            )
        r = import_fairseq(
            directory, output, spm=spm, dict_dir=dict_dir, src_lang=src_lang, tgt_lang=tgt_lang, force=force
        )
    else:
        from nmt.interop.marian import import_marian

        r = import_marian(directory, output, src_lang=src_lang, tgt_lang=tgt_lang, force=force)
    note = f", {r.source_note}" if r.source_note else ""
    console.print(
        f"imported {directory} -> {r.output} ({r.src_lang} -> {r.tgt_lang}, {r.params / 1e6:.1f}M parameters, "
        f"vocabulary {r.vocab_size:,}, share_embeddings {r.share_embeddings}{note})"
    )


@app.command()
@guarded
def export(
    checkpoint: ExportFrom,
    output: ExportTo = None,
    quantization: Quantization = "none",
    force: Force = False,
    argos: Argos = None,
    from_name: FromName = None,
    to_name: ToName = None,
    sbd_model: SbdModel = None,
    stanza_model: StanzaModel = None,
    lang_name: LangName = None,
    direction: Direction = None,
    hf: HF = None,
) -> None:
    """Export a checkpoint for CTranslate2 (needs [bold]pip install 'nmt\\[ct2]'[/bold]).

    The directory is self-contained like a checkpoint (weights, SentencePiece models, decode settings):
    [bold]nmt translate DIR[/bold] and [bold]nmt evaluate DIR --src F --ref F[/bold] then run on CTranslate2.
    [bold]--argos FILE.argosmodel[/bold] writes an Argos Translate package (for LibreTranslate) holding that
    directory instead; the language codes are the checkpoint's, their names ISO 639-1's unless given. A
    multilingual model: [bold]--argos DIR[/bold] writes DIR/<src>_<tgt>.argosmodel for each direction.
    """
    from nmt.export import export_command

    written = export_command(
        checkpoint,
        output=output,
        argos=argos,
        quantization=quantization,
        force=force,
        from_name=from_name,
        to_name=to_name,
        sbd_model=sbd_model,
        stanza_model=stanza_model,
        lang_names=lang_name,
        directions=direction,
        hf=hf,
    )
    console.print(written)


@app.command()
@guarded
@with_decode_flags(*SEARCH_FLAGS)
def serve(
    models: Models,
    host: Host = "127.0.0.1",
    port: Port = 5000,
    char_limit: CharLimit = 5000,
    batch_limit: BatchLimit = 128,
    line_limit: LineLimit = 500,
    max_wait_ms: MaxWaitMs = 5.0,
    queue_size: QueueSize = 256,
    api_keys_file: ApiKeysFile = None,
    req_limit: ReqLimit = -1,
    forwarded_allow_ips: ForwardedAllowIps = None,
    max_connections: MaxConnections = None,
    read_timeout: ReadTimeout = 30.0,
    shutdown_timeout: ShutdownTimeout = 20.0,
    set_: DecodeSetOption = None,
    *,
    decode_set: list[str],
) -> None:
    """Serve models over LibreTranslate's HTTP API (needs [bold]pip install 'nmt\\[serve]'[/bold]).

    [bold]POST /translate[/bold] (q, source, target, format, alternatives, api_key), [bold]GET /languages[/bold],
    [bold]GET /health[/bold], [bold]GET /metrics[/bold]. Requests are decoded together in batches of up to
    --batch-tokens source tokens, long ones in slices; SIGTERM answers what was received (up to
    --shutdown-timeout), then exits 0; a second SIGTERM or Ctrl-C exits at once.
    """
    from nmt.serve import serve as run_serve

    run_serve(
        models,
        host=host,
        port=port,
        overrides=decode_set,
        char_limit=char_limit,
        batch_limit=batch_limit,
        line_limit=line_limit,
        max_queue=queue_size,
        max_wait_ms=max_wait_ms,
        batch_tokens=None,  # decode.batch_tokens of the models (--batch-tokens sets it for all)
        api_keys_file=api_keys_file,
        req_limit=req_limit,
        forwarded_allow_ips=forwarded_allow_ips,
        max_connections=max_connections,
        read_timeout_s=read_timeout,
        shutdown_timeout_s=shutdown_timeout,
    )
