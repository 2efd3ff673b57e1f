"""The collector and Jaeger files in collector/ and docker-compose.yml agree with each other:
every variable a file reads is documented in its header, and every variable compose sets
for a service is one its file reads (a typo there would silently leave a default)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
COLLECTOR = REPO / "collector"
ENV_REF = re.compile(r"\$\{env:([A-Z0-9_]+)")


def read_vars(path: Path) -> set[str]:
    return set(ENV_REF.findall(path.read_text()))


def header(path: Path) -> str:
    lines = path.read_text().splitlines()
    text = "\n".join(line for line in lines if line.startswith("#"))
    # "X_HOST/PORT" documents X_HOST and X_PORT.
    return re.sub(r"([A-Z0-9_]+)_HOST/PORT", r"\1_HOST \1_PORT", text)


@pytest.mark.parametrize("path", sorted(COLLECTOR.glob("*.yaml")), ids=lambda p: p.name)
def test_every_variable_a_file_reads_is_in_its_header(path: Path) -> None:
    text = header(path)
    if path.name == "jaeger-badger.yaml":
        # Its addresses are collector/jaeger.yaml's, documented there.
        text += header(COLLECTOR / "jaeger.yaml")
    missing = sorted(v for v in read_vars(path) if v not in text)
    assert not missing, f"{path.name} reads {missing} without documenting them"


@pytest.mark.parametrize("path", sorted(COLLECTOR.glob("*.yaml")), ids=lambda p: p.name)
def test_every_file_parses(path: Path) -> None:
    config = yaml.safe_load(path.read_text())
    assert set(config["service"]["pipelines"]) >= {"traces"}


def test_compose_sets_only_variables_its_files_read() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    checked = 0
    for name, service in compose["services"].items():
        configs = [
            COLLECTOR / Path(volume.split(":")[0]).name
            for volume in service.get("volumes", [])
            if volume.startswith("./collector/")
        ]
        if not configs:
            continue
        read = set().union(*(read_vars(c) for c in configs))
        unknown = sorted(set(service.get("environment", {})) - read)
        assert not unknown, f"compose service {name} sets {unknown}, which its file never reads"
        checked += 1
    assert checked >= 6  # jaeger, otel-collector, two samplers, two gateways
