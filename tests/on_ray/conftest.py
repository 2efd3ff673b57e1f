"""Fixtures of the tests on a real Ray: one local Ray instance per session, on 127.0.0.1.

Without Ray these tests skip, except under ``CI=true``, where they fail: CI must never
pass by skipping them. Ray binds every address to the loopback interface here: on Linux
``ray.init(_node_ip_address="127.0.0.1")`` alone is turned into a routable address, and
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (set before Ray is imported) keeps it local.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

HERE = Path(__file__).resolve().parent
SRC = HERE.parents[1] / "src"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def need_ray() -> None:
    try:
        import ray  # noqa: F401
    except ImportError as exc:
        if in_ci():
            pytest.fail(f"ray is not installed but CI=true: {exc}")
        pytest.skip(f"ray is not installed: {exc}", allow_module_level=True)


@dataclass(frozen=True)
class RaySession:
    #: Where the workers' local exporter appends their spans (JSON lines).
    worker_spans: Path
    #: A directory the tasks and the test share (pid files, markers).
    shared: Path


@pytest.fixture(scope="session")
def ray_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RaySession]:
    """A single-node Ray (2 CPUs, no dashboard) whose workers trace to a file."""
    need_ray()
    import ray

    from hangguard.ray import worker_env

    base = tmp_path_factory.mktemp("ray")
    session = RaySession(worker_spans=base / "worker-spans.jsonl", shared=base)
    env = worker_env(environ={})
    env["HANGGUARD_TRACE_FILE"] = str(session.worker_spans)
    # The workers import hangguard from this checkout and the task bodies from here.
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(SRC), str(HERE), os.environ.get("PYTHONPATH", "")) if p
    )
    # address="local": a cluster of its own, never another run's that is up on this machine
    # (without it ray.init() joins the newest one, and refuses num_cpus there).
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        log_to_driver=False,
        runtime_env={"env_vars": env},
    )
    try:
        yield session
    finally:
        ray.shutdown()
