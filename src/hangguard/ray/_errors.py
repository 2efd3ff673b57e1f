"""Ray's failures as hangguard errors: which task, on which node, with Ray's error as cause.

An application exception raised by the task body is not translated: Ray already re-raises
it as an instance of the original class (``RayTaskError`` dual-typed), carrying the remote
traceback, and that is what stands in the task's place. What is translated are the ways a
remote task fails *around* the body: its worker or node died, it was cancelled, its result
object was lost.
"""

from __future__ import annotations

import re
from typing import Final

from .._exceptions import HangguardError

__all__ = [
    "NodeLost",
    "ObjectLost",
    "RemoteTaskError",
    "TaskCancelled",
    "WorkerLost",
    "translate",
]

# Ray names the node in the text of its node-death errors, not in an attribute.
_NODE_ID: Final = re.compile(r"node ID: ([0-9a-f]{16,})", re.IGNORECASE)


class RemoteTaskError(HangguardError):
    """A remote task failed for a reason outside its own code.

    ``task`` is the task's name in its group, ``node`` the Ray node id when Ray reported
    one (else ``""``); ``__cause__`` is Ray's own exception.
    """

    def __init__(self, message: str, *, task: str, node: str = "") -> None:
        self.task = task
        self.node = node
        super().__init__(message)


class WorkerLost(RemoteTaskError):
    """The worker process running the task died (crashed, killed, out of memory)."""


class NodeLost(WorkerLost):
    """The node running the task died or became unreachable (its raylet is gone)."""


class TaskCancelled(RemoteTaskError):
    """The task was cancelled by someone other than its group (``ray.cancel`` elsewhere)."""


class ObjectLost(RemoteTaskError):
    """The task's result object was lost from the object store (owner or node gone)."""


def _node_of(exc: BaseException) -> str:
    match = _NODE_ID.search(str(exc))
    return match.group(1) if match else ""


def translate(exc: BaseException, task: str) -> BaseException:
    """The hangguard error for Ray's ``exc`` about ``task``, or ``exc`` itself when it is
    the task's own exception (or nothing hangguard has a type for)."""
    from ray import exceptions as rex

    where = _node_of(exc)
    on = f" on node {where}" if where else ""
    new: RemoteTaskError
    if isinstance(exc, rex.RayTaskError):
        cause = getattr(exc, "cause", None)
        if not isinstance(cause, rex.RayError):
            return exc  # the body's own exception, already of the original class
        exc = cause  # Ray's own error, wrapped on its way out of the worker
    if isinstance(exc, (rex.NodeDiedError, rex.LocalRayletDiedError)):
        new = NodeLost(f"remote task {task!r}: its node died{on}", task=task, node=where)
    elif isinstance(exc, (rex.WorkerCrashedError, rex.OutOfMemoryError)):
        new = WorkerLost(f"remote task {task!r}: its worker died{on}", task=task, node=where)
    elif isinstance(exc, rex.TaskCancelledError):
        new = TaskCancelled(f"remote task {task!r} was cancelled", task=task, node=where)
    elif isinstance(exc, rex.ObjectLostError):
        new = ObjectLost(f"remote task {task!r}: its result was lost{on}", task=task, node=where)
    else:
        return exc
    new.__cause__ = exc
    return new
