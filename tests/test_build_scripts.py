"""scripts/build-jaeger.sh tells what it is doing: progress while a step runs, and why the
module proxy's 403 for the pinned commit is expected.

The build itself takes 10-15 minutes, so these run the script against a stand-in ``go`` on
PATH (a shell script that answers as the real one does: a 403 for ``go install``, a module
directory for ``go mod download -json``, package names on stderr for ``go build -v``),
with an empty cache directory and a 1 s progress interval.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "build-jaeger.sh"

FAKE_GO = """#!/usr/bin/env bash
case "$1" in
install)
  echo "go: reading https://proxy.golang.org/...: 403 Forbidden" >&2
  echo "	This module version is not available" >&2
  exit 1;;
mod) printf '{\\n\\t"Path": "m",\\n\\t"Dir": "%s",\\n}\\n' "$FAKE_MOD";;
build)
  # Package names, slowly, until the script has printed two progress lines.
  for i in $(seq 1 60); do
    echo "example.com/pkg$i" >&2
    [[ $(grep -c "so far" "$PROGRESS_LOG" 2>/dev/null) -ge 2 ]] && break
    sleep 0.2
  done
  out=""; while [[ $# -gt 0 ]]; do [[ $1 == -o ]] && out=$2; shift; done
  printf '#!/bin/sh\\nexit 0\\n' > "$out"; chmod +x "$out";;
esac
"""


def test_build_jaeger_prints_progress_and_explains_the_403(tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    go = bindir / "go"
    go.write_text(FAKE_GO)
    go.chmod(0o755)
    module = tmp_path / "module"
    (module / "cmd" / "jaeger").mkdir(parents=True)
    progress = tmp_path / "stderr.log"
    env = {
        **os.environ,
        "PATH": f"{bindir}:{os.environ['PATH']}",
        "HANGGUARD_CACHE_DIR": str(tmp_path / "cache"),
        "HANGGUARD_BUILD_PROGRESS_S": "1",
        "FAKE_MOD": str(module),
        "PROGRESS_LOG": str(progress),
    }
    with progress.open("w") as err:
        done = subprocess.run(
            ["bash", str(SCRIPT)], env=env, stdout=subprocess.PIPE, stderr=err, timeout=60
        )
    stderr = progress.read_text()
    assert done.returncode == 0, stderr
    binary = done.stdout.decode().strip().splitlines()[-1]
    assert binary == str(tmp_path / "cache" / "jaeger" / "jaeger-v1.76.0")
    assert "403 Forbidden" in stderr
    assert "(expected: the module proxy does not serve" in stderr
    ticks = [line for line in stderr.splitlines() if "go build ./cmd/jaeger:" in line]
    assert len(ticks) >= 2, stderr
    assert "last: example.com/pkg" in ticks[-1]
    assert "from module source in" in stderr


# --- scripts/other-pythons.sh ---------------------------------------------------------------

OTHER_PYTHONS = SCRIPT.parent / "other-pythons.sh"


def test_ci_runs_the_other_pythons_before_the_final_test_command() -> None:
    lines = [
        line.strip()
        for line in (SCRIPT.parents[1] / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.strip().startswith(("#", "echo "))
    ]
    other = [i for i, line in enumerate(lines) if line.startswith("bash scripts/other-pythons.sh")]
    assert len(other) == 1, lines
    assert lines[other[0] + 1 :] == ["python -m pytest"], lines


def test_other_pythons_runs_every_version_and_fails_if_one_has_no_interpreter() -> None:
    # 3.98 and 3.99 have no recipe: each is reported, the next still tried, the run fails.
    done = subprocess.run(
        ["bash", str(OTHER_PYTHONS), "3.98", "3.99", "--", "-x"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert "no recipe for Python 3.98" in done.stderr
    assert "no recipe for Python 3.99" in done.stderr
    assert "3.98: no interpreter" in done.stdout and "3.99: no interpreter" in done.stdout
