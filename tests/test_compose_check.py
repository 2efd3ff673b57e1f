"""docker-compose.yml, checked by the Compose loader itself (tools/compose-check/).

The checker loads the file with compose-go, the library `docker compose` is built on, for
the default services and the two-tier profile. It must pass on the real file and fail, naming
the fault, on broken copies: a missing bind-mount source, a variable no config reads, a YAML
error, a profile service that depends on a disabled one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUILD = "bash scripts/check-compose.sh"


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def _checker() -> Path:
    explicit = os.environ.get("HANGGUARD_COMPOSE_CHECK_BIN", "").strip()
    if explicit:
        path = Path(explicit)
        if not os.access(path, os.X_OK):
            pytest.fail(f"HANGGUARD_COMPOSE_CHECK_BIN={explicit} is not an executable file")
        return path
    cache = Path(os.environ.get("HANGGUARD_CACHE_DIR", Path.home() / ".cache/hangguard"))
    builds = sorted(
        (cache / "compose-check").glob("compose-check-*"), key=lambda p: p.stat().st_mtime
    )
    if builds:
        return builds[-1]
    message = f"no compose checker: build it with `{BUILD}` or set HANGGUARD_COMPOSE_CHECK_BIN"
    if _in_ci():
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def checker() -> Path:
    return _checker()


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    """A copy of the compose file and the collector files it mounts."""
    shutil.copy(ROOT / "docker-compose.yml", tmp_path / "docker-compose.yml")
    shutil.copytree(
        ROOT / "collector", tmp_path / "collector", ignore=shutil.ignore_patterns("gateway")
    )
    return tmp_path


def run(checker: Path, directory: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "COMPOSE_PROFILES"}
    return subprocess.run(
        [str(checker), "-f", "docker-compose.yml"],
        cwd=directory,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} is not once in {path}"
    path.write_text(text.replace(old, new))


def test_the_real_compose_file_passes(checker: Path) -> None:
    result = run(checker, ROOT)
    assert result.returncode == 0, result.stderr
    assert "compose-check: ok" in result.stdout


def test_the_copy_passes(checker: Path, copy: Path) -> None:
    # The broken copies below fail for their fault, not for being copies.
    result = run(checker, copy)
    assert result.returncode == 0, result.stderr


def test_a_missing_bind_mount_source_fails(checker: Path, copy: Path) -> None:
    (copy / "collector" / "gateway.yaml").unlink()
    result = run(checker, copy)
    assert result.returncode == 1
    # Only the two-tier profile mounts it.
    for service in ("gateway-1", "gateway-2"):
        assert (
            f"profile two-tier: service {service}: bind mount collector/gateway.yaml"
            " -> /etc/otelcol-contrib/config.yaml: source is missing"
        ) in result.stderr
    assert "default services" not in result.stderr


def test_a_variable_its_config_never_reads_fails(checker: Path, copy: Path) -> None:
    edit(
        copy / "docker-compose.yml",
        "      COLLECTOR_TELEMETRY_HOST: 0.0.0.0\n",
        "      COLLECTOR_TELEMETRY_HOST: 0.0.0.0\n      COLLECTOR_TYPO_ENDPOINT: 0.0.0.0:1\n",
    )
    result = run(checker, copy)
    assert result.returncode == 1
    assert (
        "default services: service otel-collector: sets COLLECTOR_TYPO_ENDPOINT, which its"
        " config (collector/otel-collector.yaml) never reads as ${env:COLLECTOR_TYPO_ENDPOINT}"
    ) in result.stderr


def test_a_variable_only_a_comment_names_fails(checker: Path, copy: Path) -> None:
    # The sampler reads TAIL_SAMPLING_ROOT_WAIT; once that line is only a comment, it does not.
    config = copy / "collector" / "sampler.yaml"
    lines = config.read_text().splitlines(keepends=True)
    hits = [i for i, line in enumerate(lines) if "${env:TAIL_SAMPLING_ROOT_WAIT" in line]
    assert len(hits) == 1
    lines[hits[0]] = "# " + lines[hits[0]]
    config.write_text("".join(lines))
    result = run(checker, copy)
    assert result.returncode == 1
    assert "service sampler-1: sets TAIL_SAMPLING_ROOT_WAIT, which its config" in result.stderr


def test_a_config_path_nothing_is_mounted_on_fails(checker: Path, copy: Path) -> None:
    edit(
        copy / "docker-compose.yml",
        "./collector/otel-collector.yaml:/etc/otelcol-contrib/config.yaml:ro",
        "./collector/otel-collector.yaml:/etc/otelcol-contrib/other.yaml:ro",
    )
    result = run(checker, copy)
    assert result.returncode == 1
    assert (
        "service otel-collector: command runs --config /etc/otelcol-contrib/config.yaml,"
        " but no bind mount or config provides that path"
    ) in result.stderr


def test_a_yaml_error_fails(checker: Path, copy: Path) -> None:
    edit(copy / "docker-compose.yml", "\n  jaeger:\n", "\n  jaeger: [\n")
    result = run(checker, copy)
    assert result.returncode == 1
    assert "docker-compose.yml: load: yaml:" in result.stderr


def test_a_profile_that_does_not_load_fails(checker: Path, copy: Path) -> None:
    # A default service that depends on a two-tier one: the default services do not load.
    edit(
        copy / "docker-compose.yml",
        "    depends_on:\n      - otel-collector\n",
        "    depends_on:\n      - otel-collector\n      - gateway-1\n",
    )
    result = run(checker, copy)
    assert result.returncode == 1
    assert "default services: does not load:" in result.stderr
    assert "gateway-1" in result.stderr
