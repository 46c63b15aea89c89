"""The README stays a newcomer's five minutes, and it and the manual in docs/ stay true."""

from __future__ import annotations

import re
from pathlib import Path

from nmt.config import reference_markdown

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
CONFIG_DOC = DOCS / "configuration.md"
LINK = re.compile(r"\]\(([^)\s#]+)(?:#[^)\s]*)?\)")


def test_config_reference_matches_the_dataclasses() -> None:
    text = CONFIG_DOC.read_text()
    start = text.index("\n", text.index("<!-- config-reference:start")) + 1
    end = text.index("<!-- config-reference:end")
    assert text[start:end].strip() == reference_markdown().strip(), (
        "docs/configuration.md's config reference is stale: regenerate it from nmt.config.reference_markdown()"
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


def test_readme_stays_short() -> None:
    lines = len(README.read_text().splitlines())
    assert lines < 250, f"README.md has {lines} lines; move detail to a page under docs/"


def test_readme_names_every_command_on_its_first_screen() -> None:
    from nmt.cli import app

    commands = [c.name or c.callback.__name__ for c in app.registered_commands if c.callback is not None]
    first_screen = README.read_text().split("\n## ", 1)[0]
    assert re.search(rf"\b{len(commands)}\b|\b{_NUMBER_WORDS[len(commands)]}\b", first_screen), (
        f"the README's opening does not say how many commands there are ({len(commands)})"
    )
    missing = [c for c in commands if f"`{c}`" not in first_screen]
    assert not missing, f"the README's opening does not name {missing}"


_NUMBER_WORDS = dict(enumerate("zero one two three four five six seven eight nine ten eleven twelve".split()))


def _relative_links(path: Path) -> list[str]:
    return [m.group(1) for m in LINK.finditer(path.read_text()) if not re.match(r"[a-z]+:", m.group(1))]


def test_every_docs_page_linked_from_the_readme_exists_and_every_page_is_linked() -> None:
    linked = {link for link in _relative_links(README) if link.startswith("docs/")}
    assert linked, "the README links no page under docs/"
    missing = sorted(link for link in linked if not (ROOT / link).is_file())
    assert not missing, f"README links pages that do not exist: {missing}"
    pages = {f"docs/{p.name}" for p in DOCS.glob("*.md")}
    assert not pages - linked, f"pages under docs/ the README does not link: {sorted(pages - linked)}"


def test_relative_links_in_the_readme_and_docs_resolve() -> None:
    broken = []
    for path in [README, *sorted(DOCS.glob("*.md"))]:
        for link in _relative_links(path):
            if not (path.parent / link).exists():
                broken.append(f"{path.relative_to(ROOT)}: {link}")
    assert not broken, broken
