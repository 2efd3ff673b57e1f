"""The demo's scenario: the user guide's op, fanning out searches as MCP tool calls.

The two op classes are written the way the guide's users write theirs (``self.ops[0].copy()``,
``submit_async_task`` / ``join_async_task``) and guarded with :func:`hangguard.guarded_op`;
each search is a real ``tools/call`` to the chaos MCP server, where the tool decides how it
misbehaves: ``sleep`` (slow), ``hang`` (never answers), ``raise`` (a JSON-RPC error) and
``flaky`` (an ``isError`` result the first time, then an answer)::

    searches = plan(6, hang=True, fail=True, flaky=True, slow=0.3)
    op = make_op(budget=3.0, join_timeout=1.5)(searches, SearchOp(url, timeout=30))
    results = await op.async_call()
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

import mcp_types

import hangguard
import hangguard.mcp

__all__ = [
    "OP_NAME",
    "QUERIES",
    "BaseAsyncOp",
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


class BaseAsyncOp:
    """The guide's base class as its users have it: tasks on a list, joined with gather.

    Unguarded, a hanging task hangs ``join_async_task`` forever and a failure leaves its
    siblings running. :func:`hangguard.guarded_op` fixes both without touching this code.
    """

    def __init__(self) -> None:
        self.task_list: list[asyncio.Task[Any]] = []

    def submit_async_task(
        self, fn: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any
    ) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(fn(*args, **kwargs))
        self.task_list.append(task)
        return task

    async def join_async_task(
        self, timeout: float | None = None, return_exceptions: bool = False
    ) -> list[Any]:
        try:
            return list(await asyncio.gather(*self.task_list, return_exceptions=return_exceptions))
        finally:
            self.task_list.clear()


@hangguard.guarded_op
class SearchOp(BaseAsyncOp):
    """One search as an MCP tool call, with the guide's client-level timeout (its 3.1).

    Like the guide's ``BaseMcpOp`` it opens an ``McpClient`` per call; the client bounds
    the connect and the call, and the retry policy gives a tool that reported an error
    (``isError``) two more tries within whatever the deadline leaves.
    """

    def __init__(self, url: str, *, timeout: float | None, run_key: str) -> None:
        super().__init__()
        self.url = url
        self.timeout = timeout
        self.run_key = run_key

    def copy(self) -> SearchOp:
        return SearchOp(self.url, timeout=self.timeout, run_key=self.run_key)

    async def async_call(self, query: Search) -> str:
        tool, arguments = query.call(self.run_key)
        async with hangguard.mcp.McpClient(
            self.url, name="search", timeout=self.timeout, raise_on_error=True
        ) as client:
            result = await hangguard.retry_call(
                lambda: client.call_tool(tool, arguments), _RETRY, name=f"search {query.query!r}"
            )
        return result_text(result)


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
        """Fan the searches out and keep what came back in time (the guide's scenario 4)."""

        def __init__(
            self, searches: Sequence[Search], search_op: SearchOp, watch: Watch | None = None
        ) -> None:
            super().__init__()
            self.searches = list(searches)
            self.ops = [search_op]
            self.watch = watch

        async def async_call(self) -> list[Any]:
            for search in self.searches:
                search_op = self.ops[0].copy()
                task = self.submit_async_task(search_op.async_call, query=search)
                if self.watch is not None:
                    self.watch(task, search)
            if block_loop:
                # Blocks the event loop: no search, timeout or deadline progresses meanwhile.
                parse_report(block_loop)
            try:
                # Fault-tolerant + timeout: failures stand in their places, and what
                # has not finished at the timeout is cancelled.
                results: list[Any] = await self.join_async_task(
                    timeout=join_timeout, return_exceptions=True
                )
            except hangguard.JoinTimeout as exc:
                logger.warning("%s; keeping the partial results", exc)
                results = list(exc.results)
            return results

    return CompanySegmentFactorOp
