"""Ray tasks that never hang: a guarded group of remote tasks, typed errors, traced workers.

Needs the ``ray`` extra (``pip install 'hangguard[ray]'``)::

    import ray
    from hangguard.ray import RemoteGroup

    ray.init()
    group = RemoteGroup("embed", timeout=120)
    for chunk in chunks:
        group.submit(embed, chunk)
    vectors = group.join(return_exceptions=True)

Each task runs in its worker under the caller's remaining budget (sent as relative
milliseconds) and in the caller's trace; the join ends on time, cancelling what is left
(``ray.cancel``, then ``force=True`` after the cancel grace). See docs/ray.md.
"""

try:
    import ray as _ray  # noqa: F401  (only to fail early with the install hint)
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        f"hangguard.ray needs the ray extra: pip install 'hangguard[ray]' ({exc})"
    ) from exc

from ._env import worker_env
from ._errors import NodeLost, ObjectLost, RemoteTaskError, TaskCancelled, WorkerLost
from ._group import RemoteGroup, TaskOptions

__all__ = [
    "NodeLost",
    "ObjectLost",
    "RemoteGroup",
    "RemoteTaskError",
    "TaskCancelled",
    "TaskOptions",
    "WorkerLost",
    "worker_env",
]

for _name in __all__:
    globals()[_name].__module__ = __name__
del _name
