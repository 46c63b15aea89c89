"""tests/conftest.py's xdist grouping: a test file stays whole, and files sharing a trained session fixture
end in one group (else each pytest-xdist worker would train its own copy)."""

from __future__ import annotations

from types import SimpleNamespace

from tests.conftest import ROOT, xdist_groups


def item(path: str, *fixtures: str) -> SimpleNamespace:
    return SimpleNamespace(path=ROOT / path, fixturenames=list(fixtures))


def test_files_sharing_a_session_fixture_go_to_one_group_and_others_stay_apart() -> None:
    groups = xdist_groups(
        [
            item("tests/unit/test_a.py", "tmp_path"),
            item("tests/unit/test_a.py", "multilingual_model"),  # one test of the file uses the model
            item("tests/e2e/test_b.py", "multilingual_model"),
            item("tests/e2e/test_c.py", "lt_server"),
            item("tests/unit/test_d.py", "argos_package", "lt_server"),  # joins c's group through lt_server
            item("tests/unit/test_e.py", "tmp_path"),
            item("tests/e2e/test_e.py"),  # same file name, another folder: its own group
        ]
    )
    assert groups["tests/unit/test_a.py"] == groups["tests/e2e/test_b.py"]
    assert groups["tests/e2e/test_c.py"] == groups["tests/unit/test_d.py"]
    assert groups["tests/unit/test_a.py"] != groups["tests/e2e/test_c.py"]
    assert len({groups["tests/unit/test_e.py"], groups["tests/e2e/test_e.py"], groups["tests/unit/test_a.py"]}) == 3
