"""Fixtures of the end-to-end tests: the Jaeger binary, Jaeger and a collector on free ports.

See jaeger_helpers.py for how they run. Without a Jaeger binary (``HANGGUARD_JAEGER_BIN`` or
the build cache) these tests skip with the command that builds one, except under
``CI=true``, where they fail: CI must never pass by skipping them. The build itself
(``scripts/build-jaeger.sh``, minutes, with progress) never runs inside a test session.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jaeger_helpers import (
    COLLECTOR_DIR,
    Stack,
    free_port,
    in_ci,
    locate_jaeger,
    procs,
    start,
    start_collector,
)
from two_tier_helpers import locate_gateway

_located: tuple[Path | None, str] | None = None
_gateway: tuple[Path | None, str] | None = None


def pytest_collection_finish(session: pytest.Session) -> None:
    # Found (or built) before the first test starts, so no test timeout covers a build.
    global _located, _gateway
    if _located is None and any(item.get_closest_marker("e2e") for item in session.items):
        _located = locate_jaeger()
    if _gateway is None and any(
        "gateway_bin" in getattr(item, "fixturenames", ()) for item in session.items
    ):
        _gateway = locate_gateway()


@pytest.fixture(scope="session")
def jaeger_bin() -> Path:
    """The Jaeger v2 binary; skips without one (fails under CI=true)."""
    path, why = _located if _located is not None else locate_jaeger()
    if path is None:
        if in_ci() or os.environ.get("HANGGUARD_JAEGER_BIN"):
            pytest.fail(f"end-to-end tests cannot run: {why}", pytrace=False)
        pytest.skip(f"end-to-end tests need Jaeger: {why}")
    return path


@pytest.fixture(scope="session")
def gateway_bin() -> Path:
    """The collector of the two-tier setup (scripts/build-gateway.sh); skips without one
    (fails under CI=true)."""
    path, why = _gateway if _gateway is not None else locate_gateway()
    if path is None:
        if in_ci() or os.environ.get("HANGGUARD_GATEWAY_BIN"):
            pytest.fail(f"two-tier tests cannot run: {why}", pytrace=False)
        pytest.skip(f"two-tier tests need the gateway collector: {why}")
    return path


@pytest.fixture(scope="session")
def stack(jaeger_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Jaeger and a collector, for the whole session."""
    log_dir = tmp_path_factory.mktemp("jaeger-logs")
    ports = {k: free_port() for k in ("grpc", "http", "query", "qgrpc", "health", "telemetry")}
    env = {
        "JAEGER_OTLP_GRPC_ENDPOINT": f"127.0.0.1:{ports['grpc']}",
        "JAEGER_OTLP_HTTP_ENDPOINT": f"127.0.0.1:{ports['http']}",
        "JAEGER_QUERY_HTTP_ENDPOINT": f"127.0.0.1:{ports['query']}",
        "JAEGER_QUERY_GRPC_ENDPOINT": f"127.0.0.1:{ports['qgrpc']}",
        "JAEGER_HEALTH_ENDPOINT": f"127.0.0.1:{ports['health']}",
        "JAEGER_TELEMETRY_HOST": "127.0.0.1",
        "JAEGER_TELEMETRY_PORT": str(ports["telemetry"]),
    }
    health = f"http://127.0.0.1:{ports['health']}/status"
    config = COLLECTOR_DIR / "jaeger.yaml"
    jaeger = start(jaeger_bin, "jaeger", config, env, health, log_dir, port=ports["grpc"])
    try:
        jaeger_grpc = f"127.0.0.1:{ports['grpc']}"
        collector = start_collector(jaeger_bin, jaeger_grpc, log_dir, "collector")
        yield Stack(
            jaeger=jaeger,
            jaeger_grpc=f"http://{jaeger_grpc}",
            jaeger_http=f"http://127.0.0.1:{ports['http']}",
            query=f"http://127.0.0.1:{ports['query']}",
            collector=collector,
            log_dir=log_dir,
        )
    finally:
        for proc in reversed(procs):
            proc.stop()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.failed and item.get_closest_marker("e2e") is not None:
        for proc in procs:
            report.sections.append((f"{proc.name} log (tail)", proc.tail()))
    return report


@pytest.fixture
def stopped_collector(stack: Stack, jaeger_bin: Path, tmp_path: Path) -> str:
    """The OTLP/gRPC URL of a collector that was running and has been stopped."""
    jaeger = stack.jaeger_grpc.removeprefix("http://")
    collector = start_collector(jaeger_bin, jaeger, tmp_path, "collector-stopped")
    collector.proc.stop()
    return collector.grpc
