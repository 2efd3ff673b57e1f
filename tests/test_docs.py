"""The docs against the code: every variable, span, attribute and event the code has is
documented, the README's commands are what CI runs, links resolve, and every Python example of the
README, getting-started, the guide and mcp.md (and their Chinese pages) runs as written.

Names are collected from the code itself (constants and string literals), so a new
variable or attribute without a line in docs/ fails here, not in a user's hands.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import os
import pkgutil
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import hangguard
from hangguard import _config, _semconv

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "hangguard"
DOCS = ROOT / "docs"
README = ROOT / "README.md"

DEMO_COMMAND = (
    "python3 -m venv .venv && . .venv/bin/activate && pip install -e '.[all]' && hangguard demo"
)
TEST_COMMAND = (
    "python3 -m venv .venv && . .venv/bin/activate && pip install -e '.[test]' && python -m pytest"
)


def string_literals(paths: list[Path]) -> set[str]:
    out: set[str] = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                out.add(node.value)
    return out


def source_files() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


def public_identifiers() -> set[str]:
    """Every name in the ``__all__`` of hangguard's modules (identifiers, not env vars)."""
    names: set[str] = set(hangguard.__all__)
    for info in pkgutil.walk_packages(hangguard.__path__, "hangguard."):
        module = importlib.import_module(info.name)
        names |= set(getattr(module, "__all__", ()))
    return names


def code_blocks(text: str, lang: str | None = None) -> list[str]:
    blocks = re.findall(r"^```([\w+-]*)\n(.*?)^```", text, flags=re.S | re.M)
    return [body for tag, body in blocks if lang is None or tag == lang]


def backticked(text: str) -> set[str]:
    return set(re.findall(r"`([^`\n]+)`", text))


# --- env.md --------------------------------------------------------------------------------


def env_vars_in_code() -> set[str]:
    names = set(_config.ENV_VARS)
    names |= {
        v
        for k, v in vars(_config).items()
        if k.startswith(("ENV_", "OTEL_")) and isinstance(v, str)
    }
    pattern = re.compile(r"^(HANGGUARD|OTEL)_[A-Z0-9_]+$")
    literals = {s for s in string_literals(source_files()) if pattern.match(s)}
    names |= literals - public_identifiers()
    scripts = [*ROOT.glob("scripts/*.sh"), ROOT / ".ci" / "run"]
    for path in scripts:
        names |= set(re.findall(r"\b(HANGGUARD_[A-Z0-9_]+)", path.read_text()))
    return names


def test_every_env_var_the_code_reads_is_in_env_md() -> None:
    documented = backticked((DOCS / "env.md").read_text())
    names = env_vars_in_code()
    assert {"HANGGUARD_SERIAL", "HANGGUARD_TRACE_FILE", "OTEL_EXPORTER_OTLP_ENDPOINT"} <= names
    missing = sorted(names - documented)
    assert not missing, f"docs/env.md does not document {missing}"


def test_env_md_names_no_variable_that_does_not_exist() -> None:
    documented = {
        n for n in backticked((DOCS / "env.md").read_text()) if n.startswith("HANGGUARD_")
    }
    everywhere = "\n".join(
        p.read_text()
        for p in [*SRC.rglob("*.py"), *ROOT.glob("tests/**/*.py"), *ROOT.glob("scripts/*")]
    )
    stale = sorted(n for n in documented if n not in everywhere)
    assert not stale, f"docs/env.md documents variables nothing reads: {stale}"


def test_env_md_gives_each_default_the_code_has() -> None:
    text = (DOCS / "env.md").read_text()
    for name, (default, _) in _config.ENV_VARS.items():
        (row,) = [line for line in text.splitlines() if line.startswith(f"| `{name}` |")]
        cell = row.split("|")[2].strip().strip("`")
        assert cell == default, f"{name}: env.md says {cell!r}, the code {default!r}"


# --- trace-schema.md -----------------------------------------------------------------------


def telemetry_names() -> dict[str, str]:
    prefixes = ("ATTR_", "EVENT_", "CANCEL_", "OUTCOME_", "ERROR_TYPE_", "METRIC_")
    return {
        k: getattr(_semconv, k)
        for k in _semconv.__all__
        if k.startswith(prefixes) or k == "TRACER_NAME"
    }


def test_every_span_attribute_event_and_metric_is_in_the_trace_schema() -> None:
    text = (DOCS / "trace-schema.md").read_text()
    documented = backticked(text)
    names = telemetry_names()
    assert len(names) > 40
    missing = sorted(f"{k} = {v!r}" for k, v in names.items() if v not in documented)
    assert not missing, f"docs/trace-schema.md does not document {missing}"
    for const in ("SPAN_GROUP", "SPAN_TASK", "SPAN_EXECUTE_TOOL"):
        shown = getattr(_semconv, const).format("<x>").split("<")[0]
        assert any(d.startswith(shown) for d in documented), const


def test_attribute_literals_outside_the_constants_are_documented_too() -> None:
    """A ``"hangguard.x"`` string in the code that is neither a module nor a logger name
    is a span attribute or event name, and must be documented like the constants."""
    text = (DOCS / "trace-schema.md").read_text()
    loggers: set[str] = set()
    for path in source_files():
        loggers |= set(re.findall(r'getLogger\("([^"]+)"\)', path.read_text()))
    found = set()
    for literal in string_literals(source_files()):
        if not re.fullmatch(r"hangguard(\.[a-z][a-z_]*)+", literal):
            continue
        if literal in loggers or importlib.util.find_spec(literal.split(".")[0]) is None:
            continue
        try:
            if importlib.util.find_spec(literal) is not None:
                continue  # a module path, e.g. for python -m
        except ModuleNotFoundError:
            pass
        found.add(literal)
    assert "hangguard.cancel_grace_s" in found  # the check can fail: it sees the group's
    missing = sorted(n for n in found if f"`{n}`" not in text)
    assert not missing, f"docs/trace-schema.md does not document {missing}"


def test_loggers_are_documented() -> None:
    text = (DOCS / "trace-schema.md").read_text()
    for path in source_files():
        if "_cli" in path.parts:
            continue  # the command's own log lines are not the library's
        for name in re.findall(r'getLogger\("([^"]+)"\)', path.read_text()):
            if name.startswith("hangguard.testing"):
                continue
            assert f"`{name}`" in text, f"logger {name} is not in docs/trace-schema.md"


# --- README ---------------------------------------------------------------------------------


def test_readme_has_exactly_the_two_setup_commands() -> None:
    blocks = [b.strip() for b in code_blocks(README.read_text())]
    assert DEMO_COMMAND in blocks
    assert TEST_COMMAND in blocks


def ci_commands() -> list[str]:
    lines = []
    for raw in (ROOT / ".ci" / "run").read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith(("#", "echo ", "set ", "cd ", "export ")):
            lines.append(line)
    return lines


def normalise(step: str) -> str:
    words = shlex.split(step)
    if words[:3] == ["python", "-m", "pip"]:
        words = words[2:]  # "python -m pip" runs the same pip
    return " ".join(w for w in words if w != "--quiet")


def test_readme_test_command_is_what_ci_runs() -> None:
    steps = [normalise(s) for s in TEST_COMMAND.split(" && ")]
    ci = [normalise(c) for c in ci_commands()]
    positions = []
    for step in steps:
        assert step in ci, f"the README's step {step!r} is not in .ci/run: {ci}"
        positions.append(ci.index(step))
    assert positions == sorted(positions), "the README's steps run in another order in .ci/run"
    assert ci[-1] == "python -m pytest", "the tests are not the last thing CI runs"


def test_readme_mentions_how_the_e2e_tests_get_jaeger() -> None:
    text = " ".join(README.read_text().split())
    assert "Go" in text and "CI=true" in text


# --- every page ----------------------------------------------------------------------------


def pages() -> list[Path]:
    return [README, *sorted(DOCS.rglob("*.md"))]


@pytest.mark.parametrize("page", pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page: Path) -> None:
    text = page.read_text()
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        path = (page.parent / target.split("#")[0]).resolve()
        assert path.exists(), f"{page.name} links to {target}, which does not exist"


@pytest.mark.parametrize("page", pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_python_examples_parse(page: Path) -> None:
    for block in code_blocks(page.read_text(), "python"):
        compile(block, str(page), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)


# --- the examples run as written ---------------------------------------------------------

#: The pages whose every Python block is a program (or a test file) a reader can paste.
RUNNABLE_PAGES = [
    README,
    DOCS / "getting-started.md",
    DOCS / "guide.md",
    DOCS / "mcp.md",
    *sorted((DOCS / "zh").glob("*.md")),
]
#: A block that is deliberately a fragment says so right before it, with the reason.
NOT_RUN = re.compile(r"<!--\s*not-run:\s*(\S[^>]*?)\s*-->\s*$")
#: At most this many fragments per page: the rest of the examples must run.
MAX_NOT_RUN = 2
#: Each example gets this long (it starts its own chaos server when it needs one).
EXAMPLE_TIME_LIMIT = 90.0  # under the 120 s per-test limit; a loaded machine is slow


@dataclass(frozen=True)
class Example:
    page: Path
    line: int
    code: str
    not_run: str | None

    @property
    def id(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def python_examples(page: Path) -> list[Example]:
    text = page.read_text()
    out = []
    for match in re.finditer(r"^```python\n(.*?)^```", text, flags=re.S | re.M):
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        reason = NOT_RUN.search(before)
        line = text.count("\n", 0, match.start()) + 1
        out.append(Example(page, line, match.group(1), reason.group(1) if reason else None))
    return out


ALL_EXAMPLES = [e for page in RUNNABLE_PAGES for e in python_examples(page)]


def test_fragments_are_few_and_say_why() -> None:
    for page in RUNNABLE_PAGES:
        fragments = [e for e in python_examples(page) if e.not_run is not None]
        assert len(fragments) <= MAX_NOT_RUN, [e.id for e in fragments]
    # The marker is seen (the check can fail): the guide's two wrong/right pairs.
    assert sum(e.not_run is not None for e in ALL_EXAMPLES) >= 2
    assert sum(e.not_run is None for e in ALL_EXAMPLES) >= 15


def example_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HANGGUARD_", "OTEL_", "CI"))}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    return env


def run_example(example: Example, where: Path) -> subprocess.CompletedProcess[str]:
    """Paste the example into a file and run it: a program with ``python file``, a file
    of ``test_`` functions with pytest. Only the page's text goes in, nothing else."""
    is_test = re.search(r"^(async )?def test_", example.code, flags=re.M) is not None
    where.mkdir()
    script = where / ("test_example.py" if is_test else "example.py")
    script.write_text(example.code)
    args = [str(script)]
    if is_test:
        args = ["-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "error", *args]
        args += ["-o", "asyncio_default_fixture_loop_scope=function"]
    try:
        return subprocess.run(
            [sys.executable, *args],
            cwd=where,
            env=example_env(),
            capture_output=True,
            text=True,
            timeout=EXAMPLE_TIME_LIMIT,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
        err = exc.stderr.decode() if isinstance(exc.stderr, bytes) else exc.stderr or ""
        return subprocess.CompletedProcess(exc.cmd, -1, out, f"{err}\ntimed out")


class ExampleRuns:
    """Every example, run side by side in the background: most of their time is spent
    waiting (a timeout that fires, a server that starts), so conftest starts them when
    collection ends and they run while the rest of the suite does. Each test then waits
    for its own, under its own limit."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="hangguard-doc-examples-"))
        self.pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="doc-example")
        runnable = [e for e in ALL_EXAMPLES if e.not_run is None]
        self.futures: dict[str, Future[Any]] = {
            e.id: self.pool.submit(run_example, e, self.root / f"example-{i}")
            for i, e in enumerate(runnable)
        }

    def stop(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(self.root, ignore_errors=True)


_started: list[ExampleRuns] = []


def start_examples() -> ExampleRuns:
    """Start every example once per session (conftest calls this early)."""
    if not _started:
        _started.append(ExampleRuns())
    return _started[0]


def stop_examples() -> None:
    while _started:
        _started.pop().stop()


@pytest.fixture(scope="module")
def example_runs() -> dict[str, Future[Any]]:
    return start_examples().futures


@pytest.mark.parametrize(
    "example", [e for e in ALL_EXAMPLES if e.not_run is None], ids=lambda e: e.id
)
def test_example_runs_as_written(example: Example, example_runs: dict[str, Future[Any]]) -> None:
    proc = example_runs[example.id].result()
    assert proc.returncode == 0, f"{example.id} failed:\n{proc.stdout}\n{proc.stderr}"


def test_docs_exist_in_chinese_too() -> None:
    for name in ("getting-started.md", "guide.md"):
        text = (DOCS / "zh" / name).read_text()
        assert re.search(r"[\u4e00-\u9fff]", text), f"docs/zh/{name} is not in Chinese"
        english = (DOCS / name).read_text()
        # The same commands and names in both languages.
        for fragment in ("hangguard demo", "join_async_task", "HANGGUARD_SERIAL"):
            assert (fragment in english) == (fragment in text), (name, fragment)
