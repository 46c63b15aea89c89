from __future__ import annotations

import re
from pathlib import Path

from nmt.config import reference_markdown

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"


def test_readme_config_reference_matches_the_dataclasses() -> None:
    text = README.read_text()
    start = text.index("\n", text.index("<!-- config-reference:start")) + 1
    end = text.index("<!-- config-reference:end")
    assert text[start:end].strip() == reference_markdown().strip(), (
        "README config reference is stale: regenerate it from nmt.config.reference_markdown()"
    )


def _setup_commands() -> list[str]:
    """The commands of the README's fresh-machine code block (comments stripped)."""
    text = README.read_text()
    section = text[text.index("## Two commands on a fresh machine") :]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block is not None, "the fresh-machine section has no bash block"
    return [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.split("#")[0].strip()]


def test_readme_has_exactly_the_two_setup_commands_and_they_exist() -> None:
    assert _setup_commands() == ["make demo", "make test"]
    makefile = (ROOT / "Makefile").read_text()
    for target in ("demo", "test"):
        rule = re.search(rf"^{target}: (.*)$", makefile, re.M)
        assert rule is not None, f"Makefile has no {target} target"
        # each creates the virtual environment when it is missing (through the install stamp)
        assert "$(VENV)/.installed" in rule.group(1) or "install" in rule.group(1).split()
    # CI runs the README's test command, not something else
    assert re.search(r"^make test\b", (ROOT / ".ci" / "run").read_text(), re.M)
