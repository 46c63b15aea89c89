from __future__ import annotations

import os
import subprocess

from tests.conftest import ROOT


def test_download_script_is_a_noop_when_nmt_data_holds_the_files(multi30k) -> None:
    # an unreachable URL proves nothing is downloaded when the files are complete
    env = {**os.environ, "MULTI30K_URL": "http://127.0.0.1:9/none"}
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "get_multi30k.sh"), str(multi30k.parent)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "downloading" not in result.stdout and "Multi30k ready" in result.stdout
