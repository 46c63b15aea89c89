"""The LibreTranslate test venv (`make lt-venv`) and what runs in it: Argos Translate's client, LibreTranslate's server.

`make lt-venv` (a prerequisite of `make test`, so CI always has it) builds `.venv-lt/` with
`pip install libretranslate==1.9.6` and nothing else: the real server and the Argos Translate
client it installs (argos-translate-lt, MiniSBD, CTranslate2, onnxruntime). NMT_LT_VENV names
another one. Tests skip with the reason when it is missing, except under CI (CI set), where they fail.

Everything runs as a subprocess of that venv's python with Argos Translate's directories
(XDG_DATA_HOME, XDG_CONFIG_HOME, XDG_CACHE_HOME, ARGOS_PACKAGES_DIR, HOME, TMPDIR) in a temp dir, so
nothing reads or writes the user's. The fixtures in tests/conftest.py build one package, install
it once, and start one server per session; `trained_package` makes the package they use.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LT_VENV = Path(os.environ.get("NMT_LT_VENV", ROOT / ".venv-lt"))
FROM, TO = ("de", "German"), ("en", "English")  # the pair of the session's package

# Prepended to client scripts: any name lookup fails, as on a machine without network (a model
# download then raises URLError, as it does offline), while loopback by address still works.
OFFLINE = """
import socket
def _offline(host, *args, **kwargs):
    if host in ("127.0.0.1", "localhost"):
        return _getaddrinfo(host, *args, **kwargs)
    raise socket.gaierror(socket.EAI_NONAME, f"no network in this test ({host})")
_getaddrinfo, socket.getaddrinfo = socket.getaddrinfo, _offline
"""


# Every HTTP(S) request of the client and the server goes to a closed port and fails at once, so they
# run as offline on a machine with network too (where LibreTranslate would otherwise download Argos's
# package for the pair at start-up, and an old package's client a MiniSBD model).
DEAD_PROXY = "http://127.0.0.1:9"


def lt_python() -> Path:
    """The LibreTranslate test venv's python; skips (fails under CI) when the venv is not built."""
    python = LT_VENV / "bin" / "python"
    if (LT_VENV / ".installed").is_file() and python.is_file():
        return python
    reason = f"the LibreTranslate test venv {LT_VENV} is not built: run `make lt-venv` (`make test` builds it)"
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


@dataclass(frozen=True)
class ArgosHome:
    """Argos Translate's directories in a temp dir, for the client and the server."""

    root: Path
    env: dict[str, str]  # os.environ plus the directories, for subprocesses
    packages: Path  # ARGOS_PACKAGES_DIR


def make_argos_home(root: Path) -> ArgosHome:
    names = ("XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME", "HOME", "TMPDIR")  # TMPDIR: the server's uploads
    dirs = {name: root / name.lower() for name in names}
    packages = dirs["XDG_DATA_HOME"] / "argos-translate" / "packages"
    for path in (*dirs.values(), packages):
        path.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **{k: str(v) for k, v in dirs.items()}, "ARGOS_PACKAGES_DIR": str(packages)}
    env.update(OMP_NUM_THREADS="1", ARGOS_INTRA_THREADS="1", PYTHONWARNINGS="ignore")
    env.update({name: DEAD_PROXY for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY")})
    env.update(no_proxy="127.0.0.1,localhost", NO_PROXY="127.0.0.1,localhost")
    return ArgosHome(root, env, packages)


def run_lt(code: str, home: ArgosHome, *, stdin: str = "", env: dict[str, str] | None = None) -> str:
    """Run python `code` in the LibreTranslate test venv, offline; its stdout, or an AssertionError with stderr."""
    done = subprocess.run(
        [str(lt_python()), "-c", OFFLINE + code],
        input=stdin,
        capture_output=True,
        text=True,
        env={**home.env, **(env or {})},
        cwd=home.root,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def install_package(home: ArgosHome, package: Path) -> None:
    """What docs/export-and-serving.md tells users: the client's own install_from_path."""
    run_lt(f"import argostranslate.package as p; p.install_from_path({str(package)!r})", home)


def client_translate(
    home: ArgosHome, lines: list[str], *, beam_size: int = 1, codes: tuple[str, str] = (FROM[0], TO[0])
) -> dict:
    """The client's `translate()` from codes[0] into codes[1] on each line and on all lines as one text, with
    its splitter's name and model."""
    src, tgt = codes
    code = f"""
import json, sys
from argostranslate import translate
lines = json.load(sys.stdin)
translation = translate.get_translation_from_codes({src!r}, {tgt!r})
sentencizer = translation.underlying.sentencizer  # a CachedTranslation around the PackageTranslation
out = {{
    "lines": [translate.translate(line, {src!r}, {tgt!r}) for line in lines],
    "text": translate.translate("\\n".join(lines), {src!r}, {tgt!r}),
    "splitter": [type(sentencizer).__name__, str(getattr(sentencizer, "lang", ""))],
}}
print(json.dumps(out))
"""
    return json.loads(run_lt(code, home, stdin=json.dumps(lines), env={"ARGOS_BEAM_SIZE": str(beam_size)}))


# ---------------------------------------------------------------- the session's package


def number_pairs(n: int, *, seed: int) -> list[tuple[str, str]]:
    """German -> English number words, word by word ("zwei elf" -> "two eleven"), 2 to 6 per line."""
    from nmt.demo import DE_ONES, EN_ONES

    rng = random.Random(seed)
    numbers = [[rng.randint(1, 12) for _ in range(rng.randint(2, 6))] for _ in range(n)]
    return [(" ".join(DE_ONES[i] for i in line), " ".join(EN_ONES[i] for i in line)) for line in numbers]


LINES = [src for src, _ in number_pairs(60, seed=3)]  # the test input: every line is compared


@dataclass(frozen=True)
class ArgosPackage:
    checkpoint: Path  # a trained de->en checkpoint
    package: Path  # its `nmt export --argos` package (float32 weights, as the checkpoint's)
    root: str  # the package's directory name


def trained_package(tmp: Path, *, steps: int = 300) -> ArgosPackage:
    """Train a d32 1+1-layer Transformer on number words for `steps` (about 10 s on one core), export it.

    Trained, its outputs end by EOS well inside nmt's length limit, as a real model's do (Argos lets an
    output run on to 256 tokens), and its decisions are not near-ties (CTranslate2 and torch agree)."""
    from nmt.config import load_config
    from nmt.data.prepare import prepare
    from nmt.export.argos import export_argos
    from nmt.train.loop import train
    from tests.corpora import write_split

    write_split(tmp / "corpus", "train", number_pairs(2000, seed=1), src=FROM[0], tgt=TO[0])
    write_split(tmp / "corpus", "valid", number_pairs(40, seed=2), src=FROM[0], tgt=TO[0])
    config = tmp / "numbers.yaml"
    config.write_text(f"""name: numbers
workdir: {tmp / "exp"}
data:
  src_lang: {FROM[0]}
  tgt_lang: {TO[0]}
  splits: {{train: {tmp / "corpus" / "train"}, valid: {tmp / "corpus" / "valid"}}}
vocab: {{size: 60}}
model: {{preset: tiny, d_model: 32, ffn_dim: 64, n_heads: 2, enc_layers: 1, dec_layers: 1, dropout: 0.0, max_len: 256}}
train: {{device: cpu, precision: fp32, compile: false, batch_tokens: 512, lr: 5e-3, warmup_steps: 30,
        max_steps: {steps}, log_every: 100, valid_every: {steps}}}
""")
    cfg = load_config(config)
    prepare(cfg)
    train(cfg)
    checkpoint = tmp / "exp" / "checkpoints" / "best.pt"
    exported = export_argos(checkpoint, tmp / "de_en.argosmodel", from_name=FROM[1], to_name=TO[1])
    return ArgosPackage(checkpoint, exported.package, exported.root)


# ---------------------------------------------------------------- the client and the server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LibreTranslateServer:
    """The real `libretranslate` on 127.0.0.1, started offline: `[]` as the package index and
    `--load-only` the package's pair (see docs/export-and-serving.md, "Argos Translate packages")."""

    def __init__(
        self,
        home: ArgosHome,
        *,
        env: dict[str, str] | None = None,
        start_timeout_s: float = 120,
        load_only: str = f"{FROM[0]},{TO[0]}",
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = home.root / "libretranslate.log"
        (home.packages.parent / "index.json").write_text("[]\n")  # $XDG_DATA_HOME/argos-translate/index.json
        executable = lt_python().parent / "libretranslate"
        cmd = [str(executable), "--host", "127.0.0.1", "--port", str(self.port)]
        cmd += ["--load-only", load_only, "--disable-web-ui"]
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, env={**home.env, **(env or {})}, cwd=home.root
            )
        deadline = time.monotonic() + start_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"libretranslate exited {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                self.get("/languages")
                return
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.2)
        self.stop()
        raise AssertionError(f"libretranslate did not answer in {start_timeout_s} s:\n{self.log.read_text()[-3000:]}")

    def get(self, path: str) -> object:
        with urllib.request.urlopen(self.url + path, timeout=30) as response:
            return json.load(response)

    def post(self, path: str, data: bytes, content_type: str) -> tuple[int, object]:
        request = urllib.request.Request(self.url + path, data=data, headers={"Content-Type": content_type})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, json.load(response)
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
