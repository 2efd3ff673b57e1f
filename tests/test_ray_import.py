"""``import hangguard.ray`` refuses a folder named ``ray`` that hides the real package."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_a_folder_named_ray_in_the_working_directory_is_named_with_the_fix(
    tmp_path: Path,
) -> None:
    # A package of the user's named ray: the working directory comes first on sys.path.
    (tmp_path / "ray").mkdir()
    (tmp_path / "ray" / "__init__.py").write_text("")
    proc = subprocess.run(
        [sys.executable, "-c", "import hangguard.ray"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert "ImportError: hangguard.ray found a 'ray' that is not Ray" in last
    assert str(tmp_path / "ray") in last
    assert "pip install 'hangguard[ray]'" in last
