"""Exit with the collector blackholed: how long a traced process takes to exit.

The collector's address is a loopback port that completes the TCP handshake (the
kernel does, from the listen backlog) and never says a word, like a collector behind a
dead proxy. A child process sets up tracing against it, makes a few spans and returns
from its main; the wall time from that moment to the process being gone is measured.
The stock SDK (provider with defaults, BatchSpanProcessor, OTLP gRPC exporter) blocks
the exit in its flush; ``hangguard.setup_tracing(shutdown_timeout=2)`` must not.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time

from ._harness import Config, Row, Target, worker_env

__all__ = ["child", "run"]

ROUNDS = 3
SHUTDOWN_TIMEOUT = 2.0
#: When to stop waiting for a child and kill it (the stock SDK's wait is ~30 s).
CAP = 90.0
SMOKE_CAP = 15.0
#: Printed by the child when its work is done and only the exit is left.
DONE = "bench-shutdown-done"
SPANS = 100


def child(variant: str, endpoint: str) -> None:
    """The child process: set up tracing the ``variant`` way, make spans, return."""
    if variant == "stock":
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
        trace.set_tracer_provider(provider)
    elif variant == "hangguard":
        import hangguard

        hangguard.setup_tracing(endpoint=endpoint, shutdown_timeout=SHUTDOWN_TIMEOUT)
    elif variant == "bare":
        # The same modules loaded, nothing installed: the interpreter's own teardown.
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace import TracerProvider

        import hangguard

        del hangguard, OTLPSpanExporter, TracerProvider
    else:
        raise SystemExit(f"variant must be 'stock', 'hangguard' or 'bare', got {variant!r}")
    from opentelemetry import trace

    tracer = trace.get_tracer("bench")
    for i in range(SPANS):
        with tracer.start_as_current_span(f"span {i}"):
            pass
    print(DONE, flush=True)


def _time_exit(variant: str, endpoint: str, cap: float) -> tuple[float, bool]:
    """Seconds from the child's DONE to its exit, and whether it had to be killed."""
    # The child's stderr (the SDK's export errors, expected here) is shown only when it
    # fails; otherwise it would bury the table.
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.shutdown", variant, endpoint],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env=worker_env(),
        )
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                if line.strip() == DONE:
                    break
            else:
                code = proc.wait()
                err.seek(0)
                raise RuntimeError(
                    f"{variant} child exited {code} before making its spans:\n{err.read()}"
                )
            done = time.perf_counter()
            try:
                proc.wait(timeout=cap)
                return time.perf_counter() - done, False
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                return cap, True
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()


def run(cfg: Config) -> list[Row]:
    """Rotate the variants against one blackhole, a few rounds each."""
    rounds = cfg.rounds_or(ROUNDS)
    cap = SMOKE_CAP if cfg.smoke else CAP
    variants = ["stock", "hangguard", "bare"]
    samples: dict[str, list[float]] = {v: [] for v in variants}
    killed: dict[str, int] = {v: 0 for v in variants}
    # Never accept()ed: the kernel completes handshakes from the backlog and that's all.
    with socket.create_server(("127.0.0.1", 0), backlog=128) as hole:
        endpoint = f"http://127.0.0.1:{hole.getsockname()[1]}"
        for r in range(rounds):
            for variant in variants[r % 3 :] + variants[: r % 3]:
                seconds, was_killed = _time_exit(variant, endpoint, cap)
                samples[variant].append(seconds)
                killed[variant] += was_killed

    def note(variant: str) -> str:
        return f"killed at the {cap:g} s cap {killed[variant]}x" if killed[variant] else ""

    stock = Row(
        "shutdown",
        f"{SPANS} spans",
        "stock SDK: BatchSpanProcessor + OTLP gRPC",
        "s",
        samples["stock"],
        note=note("stock"),
    )
    ours = Row(
        "shutdown",
        f"{SPANS} spans",
        f"hangguard.setup_tracing(shutdown_timeout={SHUTDOWN_TIMEOUT:g})",
        "s",
        samples["hangguard"],
        baseline=stock,
        target=Target("abs", plus=SHUTDOWN_TIMEOUT),
        note=note("hangguard"),
    )
    bare = Row(
        "shutdown",
        f"{SPANS} spans",
        "no tracing set up (the interpreter's own exit)",
        "s",
        samples["bare"],
        note="reference",
    )
    return [stock, ours, bare]


if __name__ == "__main__":
    child(sys.argv[1], sys.argv[2])
