"""A reference op base class with flowllm 0.2's ``BaseAsyncOp`` shape.

For examples, the demo and tests.
Public as :class:`hangguard.testing.BaseAsyncOp`; private here so the CLI's demo uses it
without importing test-support code.

hangguard does not depend on flowllm; this small class has the same surface the
decorator works with (``ops`` copied per use, ``copy()``, ``async_call(**kwargs)`` →
``async_execute()``, ``submit_async_task`` / ``join_async_task``), and the same plain
``gather``-based join flowllm 0.2 ships, so every example in the docs runs as written and
shows the hang that ``guarded_op`` removes.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Callable, Coroutine
from typing import Any

__all__ = ["BaseAsyncOp", "OpContext"]

logger = logging.getLogger("hangguard.testing")


class OpContext(dict[str, Any]):
    """The keyword arguments of one ``async_call``, readable as attributes (``ctx.query``)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class BaseAsyncOp:
    """An op: ``async_execute`` does the work, sub-ops in ``ops``, fan-out by submit/join.

    Like flowllm 0.2's ``BaseAsyncOp``: ``copy()`` makes a fresh op with the same
    constructor arguments (and copies of its sub-ops), ``async_call(**kwargs)`` puts the
    arguments in ``self.context`` and runs ``async_execute()``, and ``join_async_task``
    is a plain ``gather`` that flattens list results and drops falsy ones — with no
    bound, which is what :func:`hangguard.guarded_op` adds::

        import asyncio

        from hangguard.testing import BaseAsyncOp

        class EchoOp(BaseAsyncOp):
            async def async_execute(self) -> str:
                return self.context.query

        assert asyncio.run(EchoOp().async_call(query="hi")) == "hi"
    """

    _init_args: tuple[Any, ...]
    _init_kwargs: dict[str, Any]

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        op = super().__new__(cls)
        # Kept so copy() can build a fresh op the way this one was built.
        op._init_args, op._init_kwargs = copy.copy(args), copy.copy(kwargs)
        return op

    def __init__(self, ops: list[BaseAsyncOp] | None = None, name: str = "") -> None:
        self.ops: list[BaseAsyncOp] = list(ops) if ops else []
        self.name = name or type(self).__name__
        self.task_list: list[asyncio.Task[Any]] = []
        self.context = OpContext()

    def copy(self) -> Any:
        """A new op built with the same arguments, with copies of the sub-ops."""
        op = type(self)(*self._init_args, **self._init_kwargs)
        op.ops = [o.copy() for o in self.ops]
        return op

    async def async_call(self, **kwargs: Any) -> Any:
        """Run the op with ``kwargs`` as its context; returns what ``async_execute`` returns."""
        self.context = OpContext(kwargs)
        return await self.async_execute()

    async def async_execute(self) -> Any:
        """The op's work; subclasses implement it."""
        raise NotImplementedError(f"{type(self).__name__} must implement async_execute")

    def submit_async_task(
        self, fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any, **kwargs: Any
    ) -> None:
        """Start ``fn(*args, **kwargs)`` as a task, to be collected by ``join_async_task``."""
        self.task_list.append(asyncio.get_running_loop().create_task(fn(*args, **kwargs)))

    async def join_async_task(
        self, timeout: float | None = None, return_exceptions: bool = False
    ) -> list[Any]:
        """Gather the submitted tasks: list results flattened, falsy ones dropped.

        With ``return_exceptions=True`` failures are left out, each logged here once with
        its traceback (a guarded op's group hands them over unlogged). Without
        :func:`hangguard.guarded_op` this waits as long as the slowest task.
        """
        tasks, self.task_list = self.task_list, []
        gathered = asyncio.gather(*tasks, return_exceptions=return_exceptions)
        results = await asyncio.wait_for(gathered, timeout)
        out: list[Any] = []
        for task, result in zip(tasks, results, strict=True):
            if return_exceptions and isinstance(result, Exception):
                logger.error("task %r failed", task.get_name(), exc_info=result)
                continue
            if isinstance(result, list):
                out.extend(result)
            elif result:
                out.append(result)
        return out
