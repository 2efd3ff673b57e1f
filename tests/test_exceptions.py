"""The exception hierarchy: what each error is, so ``except`` clauses keep working."""

from __future__ import annotations

import asyncio
import math

import pytest

import hangguard
from hangguard import (
    ConfigError,
    DeadlineExceeded,
    HangguardError,
    JoinTimeout,
    McpCallError,
    McpConnectError,
    McpError,
    McpToolError,
)


@pytest.mark.parametrize(
    ("cls", "bases"),
    [
        (DeadlineExceeded, (HangguardError, TimeoutError, asyncio.TimeoutError)),
        (JoinTimeout, (DeadlineExceeded, HangguardError, TimeoutError)),
        (ConfigError, (HangguardError, ValueError)),
        (McpError, (HangguardError,)),
        (McpConnectError, (McpError, HangguardError)),
        (McpCallError, (McpError, HangguardError)),
        (McpToolError, (McpError, HangguardError)),
    ],
)
def test_hierarchy(cls: type[BaseException], bases: tuple[type[BaseException], ...]) -> None:
    for base in bases:
        assert issubclass(cls, base), f"{cls.__name__} should subclass {base.__name__}"
    assert issubclass(cls, Exception)


def test_hangguard_errors_are_not_cancellation() -> None:
    # Cancellation is not an error: none of hangguard's errors may be caught by
    # ``except asyncio.CancelledError`` or escape ``except Exception``.
    for cls in (HangguardError, DeadlineExceeded, JoinTimeout, ConfigError, McpError):
        assert not issubclass(cls, asyncio.CancelledError)


def test_mcp_errors_are_not_timeouts_or_value_errors() -> None:
    for cls in (McpError, McpConnectError, McpCallError, McpToolError):
        assert not issubclass(cls, TimeoutError)
        assert not issubclass(cls, ValueError)


def test_deadline_exceeded_default_message_names_deadline_and_budget() -> None:
    exc = DeadlineExceeded(deadline_name="search-all", budget=2.5)
    assert exc.deadline_name == "search-all"
    assert exc.budget == 2.5
    assert "'search-all'" in str(exc)
    assert "2.5s" in str(exc)


def test_deadline_exceeded_unnamed_and_unlimited() -> None:
    exc = DeadlineExceeded()
    assert exc.deadline_name is None
    assert math.isinf(exc.budget)
    assert "(unnamed)" in str(exc)
    assert "no limit" in str(exc)


def test_deadline_exceeded_custom_message() -> None:
    exc = DeadlineExceeded("took too long", deadline_name="x", budget=1.0)
    assert str(exc) == "took too long"
    assert exc.deadline_name == "x"


def test_deadline_exceeded_caught_as_asyncio_timeout() -> None:
    with pytest.raises(asyncio.TimeoutError):
        raise DeadlineExceeded(deadline_name="d", budget=1.0)


def test_join_timeout_carries_partial_results() -> None:
    boom = RuntimeError("boom")
    late = DeadlineExceeded(deadline_name="join", budget=3.0)
    exc = JoinTimeout(
        deadline_name="join", budget=3.0, results=("ok", boom, late), pending=["task slow"]
    )
    assert exc.results == ["ok", boom, late]
    assert exc.pending == ["task slow"]
    assert exc.deadline_name == "join"
    assert exc.budget == 3.0
    # The seed's way of keeping the successes still works on the partial results.
    assert [r for r in exc.results if not isinstance(r, Exception)] == ["ok"]


def test_join_timeout_defaults_are_empty_lists() -> None:
    exc = JoinTimeout()
    assert exc.results == []
    assert exc.pending == []


def test_config_error_names_variable_and_value() -> None:
    exc = ConfigError("HANGGUARD_X='abc' is bad", name="HANGGUARD_X", value="abc")
    assert exc.name == "HANGGUARD_X"
    assert exc.value == "abc"
    assert "HANGGUARD_X" in str(exc)
    with pytest.raises(ValueError, match="HANGGUARD_X"):
        raise exc


def test_mcp_error_fields() -> None:
    err = McpError("failed", server="search", tool="web_search")
    assert (err.server, err.tool) == ("search", "web_search")
    assert McpError("x").server == ""
    assert McpError("x").tool is None

    call = McpCallError("bad params", code=-32602, server="search", tool="web_search")
    assert call.code == -32602
    assert (call.server, call.tool) == ("search", "web_search")

    result = {"isError": True}
    tool = McpToolError("tool said no", result=result, server="s", tool="t")
    assert tool.result is result

    connect = McpConnectError("refused", server="s")
    assert connect.tool is None


def test_exceptions_are_exported_under_the_package_name() -> None:
    for cls in (
        HangguardError,
        DeadlineExceeded,
        JoinTimeout,
        ConfigError,
        McpError,
        McpConnectError,
        McpCallError,
        McpToolError,
    ):
        assert getattr(hangguard, cls.__name__) is cls
        assert cls.__module__ == "hangguard"


@pytest.mark.parametrize(("name", "budget"), [("join fetch", 0.5), (None, math.inf)])
def test_an_unfinished_task_s_exception_is_the_one_the_constructor_makes(
    name: str | None, budget: float
) -> None:
    import pickle

    from hangguard._exceptions import unfinished_task

    quick = unfinished_task("task 'f[3]' did not finish", name, budget)
    made = DeadlineExceeded("task 'f[3]' did not finish", deadline_name=name, budget=budget)
    assert type(quick) is DeadlineExceeded
    for exc in (quick, made):
        assert exc.args == ("task 'f[3]' did not finish",)
        assert (exc.deadline_name, exc.budget) == (name, budget)
        assert (exc.errno, exc.strerror, exc.filename) == (None, None, None)
    assert (str(quick), repr(quick)) == (str(made), repr(made))
    assert vars(quick) == vars(made)
    again = pickle.loads(pickle.dumps(quick))
    assert (str(again), again.deadline_name, again.budget) == (str(made), name, budget)
    with pytest.raises(TimeoutError, match=r"f\[3\]"):
        raise quick
