"""Helpers of the two-tier end-to-end tests: the gateway binary, gateways, samplers.

The gateway tier (``collector/gateway.yaml``) needs the ``loadbalancing`` exporter, which
the Jaeger binary lacks: it runs on the collector ``scripts/build-gateway.sh`` builds from
the OpenTelemetry Collector's modules (``collector/gateway/``), which also runs the
samplers (``collector/sampler.yaml``), so both tiers use one release of tail sampling.

The binary comes from ``HANGGUARD_GATEWAY_BIN``, else the newest cached build. The tests
never build it (a cold build takes 10+ minutes): ``.ci/run`` runs the build script first.
Without a binary the two-tier tests skip with that instruction, except under ``CI=true``,
where they fail.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from jaeger_helpers import COLLECTOR_DIR, Proc, free_port, http_get, pause, procs, start


def _cache_dir() -> Path:
    root = os.environ.get("HANGGUARD_CACHE_DIR") or str(Path.home() / ".cache" / "hangguard")
    return Path(root) / "gateway"


def _runs(path: Path) -> bool:
    try:
        proc = subprocess.run(
            [str(path), "--version"], capture_output=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


def locate_gateway() -> tuple[Path | None, str]:
    """The gateway binary, or ``None`` and why not."""
    explicit = os.environ.get("HANGGUARD_GATEWAY_BIN", "").strip()
    if explicit:
        path = Path(explicit)
        if _runs(path):
            return path, ""
        return None, f"HANGGUARD_GATEWAY_BIN={explicit} is not a working collector binary"
    cached = sorted(_cache_dir().glob("hangguard-otelcol-*"), key=lambda p: p.stat().st_mtime)
    for path in reversed(cached):
        if _runs(path):
            return path, ""
    return None, (
        "no gateway binary: run `bash scripts/build-gateway.sh` once (needs Go; 10+ minutes "
        "cold) or set HANGGUARD_GATEWAY_BIN"
    )


@dataclass
class Tier:
    """One running gateway or sampler: its process and addresses."""

    proc: Proc
    grpc: str  # host:port of its OTLP/gRPC receiver
    telemetry: str  # its own metrics (Prometheus text)

    @property
    def url(self) -> str:
        return f"http://{self.grpc}"

    def decisions(self) -> dict[str, float]:
        """Tail-sampling decisions so far, by ``sampled`` (a sampler's own metrics)."""
        status, body = http_get(self.telemetry)
        assert status == 200, body
        out = {"true": 0.0, "false": 0.0}
        for line in body.decode().splitlines():
            if line.startswith("otelcol_processor_tail_sampling_global_count_traces_sampled"):
                sampled = "true" if 'sampled="true"' in line else "false"
                out[sampled] += float(line.rsplit(" ", 1)[1])
        return out


def start_sampler(
    binary: Path, jaeger_grpc: str, log_dir: Path, name: str, knobs: dict[str, str]
) -> Tier:
    ports = {k: free_port() for k in ("grpc", "zpages", "telemetry")}
    env = {
        "SAMPLER_OTLP_GRPC_ENDPOINT": f"127.0.0.1:{ports['grpc']}",
        "SAMPLER_ZPAGES_ENDPOINT": f"127.0.0.1:{ports['zpages']}",
        "SAMPLER_TELEMETRY_HOST": "127.0.0.1",
        "SAMPLER_TELEMETRY_PORT": str(ports["telemetry"]),
        "JAEGER_OTLP_ENDPOINT": jaeger_grpc,
        **knobs,
    }
    health = f"http://127.0.0.1:{ports['zpages']}/debug/servicez"
    config = COLLECTOR_DIR / "sampler.yaml"
    proc = start(binary, name, config, env, health, log_dir, port=ports["grpc"])
    return Tier(proc, env["SAMPLER_OTLP_GRPC_ENDPOINT"], _metrics(ports["telemetry"]))


def samplers_file(path: Path, samplers: list[Tier]) -> Path:
    """A config overlay that gives the gateways their sampler list (read again on SIGHUP)."""
    hosts = "".join(f"\n          - {s.grpc}" for s in samplers)
    path.write_text(
        f"exporters:\n  load_balancing:\n    resolver:\n      static:\n        hostnames:{hosts}\n"
    )
    return path


def start_gateway(binary: Path, overlay: Path, log_dir: Path, name: str) -> Tier:
    ports = {k: free_port() for k in ("grpc", "http", "zpages", "telemetry")}
    env = {
        "GATEWAY_OTLP_GRPC_ENDPOINT": f"127.0.0.1:{ports['grpc']}",
        "GATEWAY_OTLP_HTTP_ENDPOINT": f"127.0.0.1:{ports['http']}",
        "GATEWAY_ZPAGES_ENDPOINT": f"127.0.0.1:{ports['zpages']}",
        "GATEWAY_TELEMETRY_HOST": "127.0.0.1",
        "GATEWAY_TELEMETRY_PORT": str(ports["telemetry"]),
        "GATEWAY_QUEUE_DIR": str(log_dir / f"{name}-queue"),
    }
    health = f"http://127.0.0.1:{ports['zpages']}/debug/servicez"
    config = COLLECTOR_DIR / "gateway.yaml"
    proc = start(
        binary, name, config, env, health, log_dir, port=ports["grpc"], extra_configs=[overlay]
    )
    return Tier(proc, env["GATEWAY_OTLP_GRPC_ENDPOINT"], _metrics(ports["telemetry"]))


def reload(gateway: Tier) -> None:
    """Make a gateway read its configuration again (SIGHUP), and wait until it runs again."""

    def started() -> int:
        # The whole log: retries to a dead sampler can push the last start out of a tail.
        return gateway.proc.log.read_text(errors="replace").count("Everything is ready")

    before = started()
    gateway.proc.popen.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 30
    while started() <= before:
        assert gateway.proc.popen.poll() is None, gateway.proc.tail()
        assert time.monotonic() < deadline, f"{gateway.proc.name} did not reload"
        pause()


def _metrics(port: int) -> str:
    return f"http://127.0.0.1:{port}/metrics"


__all__ = [
    "Tier",
    "locate_gateway",
    "procs",
    "reload",
    "samplers_file",
    "start_gateway",
    "start_sampler",
]
