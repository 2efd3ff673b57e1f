"""The demo's scenario: the user guide's op, fanning out searches as MCP tool calls.

The two op classes are written the way the guide's users write theirs, on the reference
``BaseAsyncOp`` (``self.ops[0].copy()``, ``submit_async_task`` / ``join_async_task``), the
searches sharing one ``McpClient``, and guarded with :func:`hangguard.guarded_op`;
each search is a real ``tools/call`` to the chaos MCP server, where the tool decides how it
misbehaves: ``sleep`` (slow), ``hang`` (never answers), ``raise`` (a JSON-RPC error) and
``flaky`` (an ``isError`` result the first time, then an answer)::

    searches = plan(6, hang=True, fail=True, flaky=True, slow=0.3)
    async with hangguard.mcp.McpClient(url, timeout=30, raise_on_error=True) as client:
        op = make_op(budget=3.0, join_timeout=1.5)(searches, SearchOp(client, run_key="k"))
        results = await op.async_call()
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

import mcp_types

import hangguard
import hangguard.mcp

from .._reference_op import BaseAsyncOp

__all__ = [
    "OP_NAME",
    "QUERIES",
    "Search",
    "SearchOp",
    "make_op",
    "plan",
    "result_text",
]

#: The op's name: its span, its deadline and its HANGGUARD_BUDGETS key.
OP_NAME: Final = "CompanySegmentFactorOp"

#: Search queries in the spirit of the guide's CompanySegmentFactorOp.
QUERIES: Final = (
    "segment revenue 2024",
    "segment operating margin",
    "market share by segment",
    "competitors per segment",
    "segment capex plans",
    "segment guidance",
    "regional segment split",
    "segment headcount",
)

Kind = Literal["slow", "hang", "fail", "flaky"]

logger = logging.getLogger("hangguard.demo")

# The retry that rescues the flaky search: only a tool's isError is worth another try
# here; short waits, so that the demo stays fast.
_RETRY: Final = hangguard.RetryPolicy(
    attempts=3,
    on=hangguard.McpToolError,
    backoff=hangguard.Backoff(initial=0.05, maximum=0.2, jitter=0.02),
)


@dataclass(frozen=True, slots=True)
class Search:
    """One search of the fan-out and how the chaos server will treat it."""

    index: int
    query: str
    kind: Kind
    seconds: float = 0.0

    def call(self, run_key: str) -> tuple[str, dict[str, Any]]:
        """The chaos tool and arguments that make this search behave as its kind says."""
        if self.kind == "slow":
            return "sleep", {"seconds": self.seconds}
        if self.kind == "hang":
            return "hang", {}
        if self.kind == "fail":
            return "raise", {"message": f"search backend rejected {self.query!r}"}
        return "flaky", {"key": f"{run_key}-{self.index}", "failures": 1, "mode": "error"}

    def describe(self) -> str:
        return f"slow {self.seconds:g}s" if self.kind == "slow" else self.kind


def plan(tasks: int, *, hang: bool, fail: bool, flaky: bool, slow: float) -> list[Search]:
    """The searches: the faults asked for at fixed places, slow ones around them.

    The failing search comes second and the flaky one fourth, so that both run among
    slow siblings; the hanging one comes last, so that in serial mode every other
    search has had its turn before the join times out on it. Raises ``ValueError``
    naming ``--tasks`` when there are more faults than searches.
    """
    wanted: dict[Kind, bool] = {"fail": fail, "flaky": flaky, "hang": hang}
    faults = [kind for kind, on in wanted.items() if on]
    if tasks < len(faults):
        raise ValueError(
            f"--tasks {tasks} leaves no room for the {len(faults)} faults asked for "
            f"({', '.join(faults)}): use --tasks {len(faults)} or more, or --no-hang, "
            "--no-fail, --no-flaky"
        )
    kinds: list[Kind | None] = [None] * tasks
    if hang:
        kinds[-1] = "hang"
    placed: tuple[tuple[Kind, int], ...] = (("fail", 1), ("flaky", 3))
    for kind, place in placed:
        if wanted[kind]:
            free = [i for i, k in enumerate(kinds) if k is None]
            kinds[min(free, key=lambda i: (abs(i - place), i))] = kind
    slow_slots = [i for i, k in enumerate(kinds) if k is None]
    searches = []
    for i, slot in enumerate(kinds):
        query = QUERIES[i % len(QUERIES)]
        if i >= len(QUERIES):
            query += f" #{i // len(QUERIES) + 1}"
        if slot is None:
            rank = slow_slots.index(i) + 1
            searches.append(Search(i, query, "slow", round(slow * rank / len(slow_slots), 3)))
        else:
            searches.append(Search(i, query, slot))
    return searches


def result_text(result: mcp_types.CallToolResult) -> str:
    """The text of a tool result (its text blocks joined)."""
    parts = [b.text for b in result.content if isinstance(b, mcp_types.TextContent)]
    return " ".join(parts)


@hangguard.guarded_op
class SearchOp(BaseAsyncOp):
    """One search as an MCP tool call, on the client the whole fan-out shares.

    ``copy()`` builds each search's op with the same constructor arguments, so every copy
    calls through the one client: one connection and one handshake for the fan-out, not
    one per search (each costs hundreds of milliseconds on a loaded machine, taken from
    the search's budget). The client bounds each call (the guide's client-level timeout),
    and the retry policy gives a tool that reported an error (``isError``) two more tries
    within whatever the deadline leaves.
    """

    def __init__(self, client: hangguard.mcp.McpClient, *, run_key: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.client = client
        self.run_key = run_key

    async def async_execute(self) -> str:
        search: Search = self.context.query
        tool, arguments = search.call(self.run_key)
        result = await hangguard.retry_call(
            lambda: self.client.call_tool(tool, arguments),
            _RETRY,
            name=f"search {search.query!r}",
        )
        return result_text(result)


def _outcome(task: asyncio.Task[Any]) -> Any:
    """What a finished task ended with: its value, its exception, or a CancelledError."""
    if task.cancelled():
        return asyncio.CancelledError()
    exc = task.exception()
    return exc if exc is not None else task.result()


Watch = Callable[[asyncio.Task[Any], Search], None]


def parse_report(seconds: float) -> None:
    """The demo's blocking call: a sync parse run straight in a coroutine (a mistake)."""
    time.sleep(seconds)


def make_op(*, budget: float, join_timeout: float, block_loop: float = 0.0) -> type[Any]:
    """The guide's fan-out op, guarded with this run's budget.

    Made per run because the budget is the decorator's argument; ``watch`` (an
    argument of the op) sees every submitted task, for the live progress.
    """

    @hangguard.guarded_op(name=OP_NAME, budget=budget)
    class CompanySegmentFactorOp(BaseAsyncOp):
        """Fan the searches out and keep what came back in time (the guide's scenario 4).

        Returns one entry per search, in order (its result, or the exception in its
        place), for the demo's table.
        """

        def __init__(
            self, searches: Sequence[Search], search_op: SearchOp, watch: Watch | None = None
        ) -> None:
            super().__init__(ops=[search_op])
            self.searches = list(searches)
            self.watch = watch

        async def async_execute(self) -> list[Any]:
            tasks: list[asyncio.Task[Any]] = []
            # Guarded, submit_async_task returns the task (flowllm's, typed on the
            # class, returns None).
            submit: Callable[..., asyncio.Task[Any]] = getattr(self, "submit_async_task")  # noqa: B009
            for search in self.searches:
                search_op = self.ops[0].copy()
                task = submit(search_op.async_call, query=search)
                tasks.append(task)
                if self.watch is not None:
                    self.watch(task, search)
            if block_loop:
                # Blocks the event loop: no search, timeout or deadline progresses meanwhile.
                parse_report(block_loop)
            try:
                # Fault-tolerant + timeout: failures stand in their places, and what
                # has not finished at the timeout is cancelled.
                await self.join_async_task(timeout=join_timeout, return_exceptions=True)
            except hangguard.JoinTimeout as exc:
                logger.warning("%s; keeping the partial results", exc)
                # A DeadlineExceeded stands where the join cut a search off.
                return list(exc.results)
            return [_outcome(task) for task in tasks]

    return CompanySegmentFactorOp
