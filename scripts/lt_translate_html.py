"""LibreTranslate's HTML method on a file of HTML fragments, one per line: what its `/translate` does with
`format=html` (argostranslatefiles' `translate_html`: BeautifulSoup + argostranslate.tags), on an Argos
package made by `nmt export --argos`. Runs in the LibreTranslate venv (`make lt-venv`), with Argos's
directories in a temp dir (nothing of the user's is read or written) and no network:

    .venv-lt/bin/python scripts/lt_translate_html.py PACKAGE.argosmodel IN.html OUT.html [--from de --to en]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

home = tempfile.mkdtemp(prefix="lt-html-")
for name in ("XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME", "HOME"):
    os.environ[name] = home
os.environ["ARGOS_PACKAGES_DIR"] = str(Path(home) / "argos-translate" / "packages")
os.environ.setdefault("ARGOS_INTRA_THREADS", os.environ.get("OMP_NUM_THREADS", "2"))
os.environ["http_proxy"] = os.environ["https_proxy"] = "http://127.0.0.1:9"  # no downloads

from html import unescape  # noqa: E402

import argostranslate.package  # noqa: E402
import argostranslate.translate  # noqa: E402
from argostranslatefiles.translatehtml import translate_html  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("package", type=Path)
    parser.add_argument("input", type=Path)
    parser.add_argument("output", type=Path)
    parser.add_argument("--from", dest="src", default="de")
    parser.add_argument("--to", dest="tgt", default="en")
    args = parser.parse_args()
    argostranslate.package.install_from_path(args.package)
    translation = argostranslate.translate.get_translation_from_codes(args.src, args.tgt)
    lines = args.input.read_text(encoding="utf-8").split("\n")[:-1]
    start = time.perf_counter()
    out = [" ".join(unescape(str(translate_html(translation, line))).split("\n")) for line in lines]
    args.output.write_text("".join(f"{line}\n" for line in out), encoding="utf-8")
    print(f"{len(lines)} lines in {time.perf_counter() - start:.1f} s -> {args.output}")


if __name__ == "__main__":
    main()
