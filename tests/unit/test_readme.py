from __future__ import annotations

from pathlib import Path

from nmt.config import reference_markdown

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_config_reference_matches_the_dataclasses() -> None:
    text = README.read_text()
    start = text.index("\n", text.index("<!-- config-reference:start")) + 1
    end = text.index("<!-- config-reference:end")
    assert text[start:end].strip() == reference_markdown().strip(), (
        "README config reference is stale: regenerate it from nmt.config.reference_markdown()"
    )


def test_readme_has_exactly_the_two_setup_commands() -> None:
    text = README.read_text()
    assert "make demo    #" in text and "make test    #" in text
