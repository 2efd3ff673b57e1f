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
    import ray as _ray  # only to fail early with the install hint
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        f"hangguard.ray needs the ray extra: pip install 'hangguard[ray]' ({exc})"
    ) from exc
if not callable(getattr(_ray, "remote", None)):
    # A folder named ``ray`` on sys.path (the working directory, say) hides the real
    # package, or stands in for a missing one, until the first submit fails obscurely.
    _where = ", ".join(getattr(_ray, "__path__", None) or [str(getattr(_ray, "__file__", "?"))])
    raise ImportError(
        f"hangguard.ray found a 'ray' that is not Ray at {_where}: rename that folder, "
        "or install the ray extra: pip install 'hangguard[ray]'"
    )

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
