"""Run in the flowllm 0.2 interpreter (see tests/test_flowllm.py): real ``BaseAsyncOp``
subclasses guarded by this checkout's hangguard, each sub-task failure counted in the logs.

flowllm logs with loguru and hangguard with ``logging``: both are captured, and every
record that carries a traceback of the sub-ops' ``ConnectionError`` is listed by its
message. Prints one JSON object with what the test checks.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from flowllm.core.op.base_async_op import BaseAsyncOp
from loguru import logger as loguru_logger

import hangguard


class Records(logging.Handler):
    """The ``logging`` records with a ConnectionError traceback, by message."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info is not None and isinstance(record.exc_info[1], ConnectionError):
            self.messages.append(f"logging: {record.getMessage()}")


handler = Records()
logging.getLogger().addHandler(handler)
logging.getLogger().setLevel(logging.DEBUG)


def loguru_sink(message: Any) -> None:
    exception = message.record["exception"]
    if exception is not None and isinstance(exception.value, ConnectionError):
        handler.messages.append(f"loguru: {message.record['message']}")


loguru_logger.remove()
loguru_logger.add(loguru_sink, level="DEBUG")


class FlakySearchOp(BaseAsyncOp):
    async def async_execute(self) -> Any:
        query = self.context.query
        if query.startswith("down"):
            raise ConnectionError(f"search for {query!r} failed")
        return [query]


@hangguard.guarded_op(budget=30)
class SearchAllOp(BaseAsyncOp):
    async def async_execute(self) -> Any:
        for q in self.context.queries:
            self.submit_async_task(self.ops[0].copy().async_call, query=q)
        # flowllm 0.2's default: return_exceptions=True.
        return await self.join_async_task()


@hangguard.guarded_op(budget=30)
class SearchOrFailOp(BaseAsyncOp):
    async def async_execute(self) -> Any:
        for q in self.context.queries:
            self.submit_async_task(self.ops[0].copy().async_call, query=q)
        return await self.join_async_task(return_exceptions=False)


def sub_op() -> FlakySearchOp:
    return FlakySearchOp(raise_exception=True)


async def main() -> dict[str, Any]:
    out: dict[str, Any] = {}
    got = await SearchAllOp(ops=[sub_op()], raise_exception=True).async_call(
        queries=["a", "down-1", "down-2"]
    )
    out["returned"] = {"result": got, "logged": list(handler.messages)}
    handler.messages.clear()

    error: str | None = None
    try:
        await SearchOrFailOp(ops=[sub_op()], raise_exception=True).async_call(
            queries=["down-1", "a"]
        )
    except ConnectionError as exc:
        error = str(exc)
    out["raised"] = {"error": error, "logged": list(handler.messages)}
    return out


print(json.dumps(asyncio.run(main())))
