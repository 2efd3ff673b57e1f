"""The async op guard against the real flowllm 0.3 ``BaseStep`` (and agentscope's OpenAI
model), in the separate interpreter built by ``scripts/flowllm-env.sh 0.3``.

``HANGGUARD_FLOWLLM3_PYTHON`` names that interpreter; the step code
(``tests/flowllm3/check_base_step.py``) runs there as a subprocess with this checkout's
``src`` first on its path. Without it the test is skipped, except under ``CI=true``, where
a missing interpreter is a failure.

The servers run here, on 127.0.0.1, and count what they received: the chaos MCP server
(one tool call of the fan-out hangs) and an OpenAI-compatible endpoint that accepts the
connection, reads the request and never answers.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hangguard.testing.chaos import ChaosServer
from timing import WIDE_MARGIN

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "flowllm3" / "check_base_step.py"
#: The steps' budgets, from HANGGUARD_BUDGETS as an application would set them.
BUDGET = 1.0
INSTALL = 'HANGGUARD_FLOWLLM3_PYTHON="$(bash scripts/flowllm-env.sh 0.3 | tail -n 1)"'


def flowllm3_python() -> str:
    python = os.environ.get("HANGGUARD_FLOWLLM3_PYTHON", "")
    problem = None
    if not python:
        problem = "HANGGUARD_FLOWLLM3_PYTHON is unset"
    elif not Path(python).exists():
        problem = f"HANGGUARD_FLOWLLM3_PYTHON={python!r} does not exist"
    if problem is None:
        return python
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but {problem}: build the flowllm 0.3 venv with {INSTALL}")
    pytest.skip(f"{problem}: build the flowllm 0.3 venv with {INSTALL}")


class SilentLlm:
    """An OpenAI-compatible endpoint on 127.0.0.1 that reads each request, never answers.

    ``requests`` holds the request line of every request it received.
    """

    def __init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", 0))
        self.base_url = f"http://127.0.0.1:{self._server.getsockname()[1]}/v1"
        self.requests: list[str] = []
        self._conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            self._conns.append(conn)
            head = b""
            while b"\r\n" not in head:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                head += chunk
            self.requests.append(head.split(b"\r\n", 1)[0].decode("latin-1"))

    def close(self) -> None:
        self._server.close()
        for conn in self._conns:
            conn.close()
        self._thread.join(timeout=5)


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[ChaosServer, SilentLlm]]:
    flowllm3_python()  # skip before starting anything
    chaos = ChaosServer().start()
    llm = SilentLlm()
    try:
        yield chaos, llm
    finally:
        llm.close()
        chaos.stop()


@pytest.fixture(scope="module")
def check(servers: tuple[ChaosServer, SilentLlm]) -> dict[str, Any]:
    python = flowllm3_python()
    chaos, llm = servers
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "src"),
        "HANGGUARD_BUDGETS": f"McpFanOutStep={BUDGET},LlmStep={BUDGET}",
    }
    for var in ("HANGGUARD_DEFAULT_BUDGET", "HANGGUARD_JOIN_TIMEOUT", "HANGGUARD_SERIAL"):
        env.pop(var, None)
    out = subprocess.run(
        [python, str(SCRIPT), chaos.url, llm.base_url],
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
        env=env,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-4000:]
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def spans_named(check: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [s for s in check["spans"] if s["name"] == name]


def test_a_hanging_mcp_call_is_bounded_by_the_steps_env_budget(check: dict[str, Any]) -> None:
    fanout = check["fanout"]
    assert fanout["error"] == "JoinTimeout"
    assert fanout["deadline"] == "McpFanOutStep"
    assert fanout["elapsed"] < BUDGET + WIDE_MARGIN
    (op,) = spans_named(check, "McpFanOutStep")
    assert op["attributes"]["hangguard.timeout_s"] == BUDGET
    assert op["attributes"]["error.type"].endswith("JoinTimeout")


def test_the_answered_calls_are_kept_in_submit_order(check: dict[str, Any]) -> None:
    assert check["fanout"]["results"] == ["a", "b", "DeadlineExceeded", "c"]


def test_the_server_got_every_call_and_saw_the_hanging_one_cancelled(
    servers: tuple[ChaosServer, SilentLlm], check: dict[str, Any]
) -> None:
    chaos, _ = servers
    assert chaos.recorder.count("finished", "echo") == 3
    assert chaos.recorder.count("started", "hang") == 1
    # The client's cancel notice reached the handler: the server does not keep it running.
    asyncio.run(chaos.wait_for("cancelled", "hang"))
    assert chaos.recorder.count("finished", "hang") == 0


def test_an_llm_call_that_never_answers_raises_instead_of_an_empty_success(
    check: dict[str, Any],
) -> None:
    # agentscope's model catches the CancelledError and returns an "interrupted" reply;
    # the guarded step turns that into DeadlineExceeded instead of a hollow success.
    llm = check["llm"]
    assert llm["error"] == "DeadlineExceeded", llm
    assert llm["deadline"] == "LlmStep"
    assert "swallowed the cancellation" in llm["message"]
    assert llm["elapsed"] < BUDGET + WIDE_MARGIN
    (op,) = spans_named(check, "LlmStep")
    assert op["status"] == "ERROR"
    assert op["attributes"]["hangguard.cancel.swallowed"] is True


def test_the_llm_request_went_out_through_hangguards_transport(
    servers: tuple[ChaosServer, SilentLlm], check: dict[str, Any]
) -> None:
    _, llm = servers
    assert llm.requests and all(r == "POST /v1/chat/completions HTTP/1.1" for r in llm.requests)
    (post,) = [s for s in check["spans"] if s["name"] == "POST"][:1]
    assert post["attributes"]["url.full"] == f"{llm.base_url}/chat/completions"
    assert 0 < post["attributes"]["hangguard.timeout_s"] <= BUDGET
