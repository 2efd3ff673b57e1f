"""What the one group core must get right, whatever runs the work (tasks or threads).

Each test here was seen failing before the fix it pins; the names say the rule.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import pytest

import hangguard
from hangguard import GuardedOpMixin, JoinTimeout, TaskGroup, ThreadGroup
from hangguard._exceptions import DeadlineExceeded


@pytest.fixture(autouse=True)
def _wide_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HANGGUARD_CANCEL_GRACE", "10")


# --- nothing outlives the op ---------------------------------------------------------------


class _Hangs(GuardedOpMixin):
    def __init__(self, join_kwargs: dict[str, Any]) -> None:
        self.join_kwargs = join_kwargs
        self.started = asyncio.Event()
        self.cancelled = 0

    async def _hang(self) -> None:
        self.started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise

    async def async_execute(self) -> list[Any]:
        self.submit_async_task(self._hang)
        await self.started.wait()
        return await self.join_async_task(**self.join_kwargs)


async def _op_tasks_end_with_op(op: _Hangs, error: type[BaseException]) -> None:
    before = set(asyncio.all_tasks())
    with pytest.raises(error):
        await op.async_execute()
    left = [t for t in asyncio.all_tasks() - before if not t.done()]
    assert left == [], "a sub-task outlived its op"
    assert op.cancelled == 1


async def test_op_join_with_a_bad_timeout_cancels_its_sub_tasks() -> None:
    await _op_tasks_end_with_op(_Hangs({"timeout": -1}), ValueError)


async def test_op_join_with_a_bad_env_timeout_cancels_its_sub_tasks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HANGGUARD_JOIN_TIMEOUT", "soon")
    await _op_tasks_end_with_op(_Hangs({}), hangguard.ConfigError)


# --- a task that raises CancelledError itself: one rule ------------------------------------


async def _raises_cancelled() -> None:
    raise asyncio.CancelledError("I give up")


async def _ok() -> int:
    return 1


class _GatheringOp:
    """The seed's op pattern: sub-tasks on ``task_list``, a join that gathers them."""

    def __init__(self) -> None:
        self.task_list: list[asyncio.Task[Any]] = []

    def submit_async_task(self, fn: Any, *args: Any) -> None:
        self.task_list.append(asyncio.get_running_loop().create_task(fn(*args)))

    async def join_async_task(
        self, timeout: float | None = None, return_exceptions: bool = False
    ) -> list[Any]:
        try:
            return list(await asyncio.gather(*self.task_list, return_exceptions=return_exceptions))
        finally:
            self.task_list.clear()


@hangguard.guarded_op
class _SelfCancelling(_GatheringOp):
    async def async_execute(self, return_exceptions: bool) -> list[Any]:
        self.submit_async_task(_ok)
        self.submit_async_task(_raises_cancelled)
        return await self.join_async_task(return_exceptions=return_exceptions)


@pytest.mark.parametrize("return_exceptions", [True, False])
async def test_a_self_cancelled_task_is_one_rule_for_group_and_op(
    return_exceptions: bool,
) -> None:
    group = TaskGroup("g")
    group.submit(_ok)
    group.submit_named("quitter", _raises_cancelled)
    results = await group.join(return_exceptions=return_exceptions)
    assert results[0] == 1
    assert isinstance(results[1], asyncio.CancelledError)
    assert "quitter" in str(results[1])
    # The op follows the same rule: the caller, never cancelled, gets the list.
    op_results = await _SelfCancelling().async_execute(return_exceptions)
    assert op_results[0] == 1
    assert isinstance(op_results[1], asyncio.CancelledError)
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


# --- same arguments, same semantics ----------------------------------------------------------


def _fails() -> None:
    raise ValueError("boom")


def test_thread_group_join_return_exceptions_overrides_the_group() -> None:
    # The second call is running before the first fails: threads start at submit, so a
    # failure that came first would cancel it (the group fails fast until its join says
    # otherwise), and the test would race the pool.
    second_running = threading.Event()

    def fails_once_the_second_runs() -> None:
        assert second_running.wait(30)
        _fails()

    def second() -> int:
        second_running.set()
        return 2

    group = ThreadGroup("t", return_exceptions=False)
    group.submit(fails_once_the_second_runs)
    group.submit(second)
    results = group.join(return_exceptions=True)
    assert isinstance(results[0], ValueError)
    assert results[1] == 2


async def test_task_group_join_return_exceptions_overrides_the_group() -> None:
    async def fails() -> None:
        raise ValueError("boom")

    group = TaskGroup("g", return_exceptions=False)
    group.submit(fails)
    group.submit(_ok)
    results = await group.join(return_exceptions=True)
    assert isinstance(results[0], ValueError)


# --- one mode rule, one life, for every backend ---------------------------------------------

_MODES = [None, True, False]


def _collects(group_arg: bool | None, join_arg: bool | None) -> bool:
    """The one rule: join's own argument, else the group's, else fail fast."""
    return join_arg if join_arg is not None else bool(group_arg)


@pytest.mark.parametrize("join_arg", _MODES)
@pytest.mark.parametrize("group_arg", _MODES)
def test_a_thread_group_decides_its_mode_by_the_one_rule(
    group_arg: bool | None, join_arg: bool | None
) -> None:
    group = ThreadGroup("t", return_exceptions=group_arg)
    group.submit(_fails)
    if _collects(group_arg, join_arg):
        assert isinstance(group.join(return_exceptions=join_arg)[0], ValueError)
    else:
        with pytest.raises(ValueError, match="boom"):
            group.join(return_exceptions=join_arg)


@pytest.mark.parametrize("join_arg", _MODES)
@pytest.mark.parametrize("group_arg", _MODES)
async def test_a_task_group_decides_its_mode_by_the_one_rule(
    group_arg: bool | None, join_arg: bool | None
) -> None:
    async def fails() -> None:
        raise ValueError("boom")

    group = TaskGroup("g", return_exceptions=group_arg)
    group.submit(fails)
    if _collects(group_arg, join_arg):
        assert isinstance((await group.join(return_exceptions=join_arg))[0], ValueError)
    else:
        with pytest.raises(ValueError, match="boom"):
            await group.join(return_exceptions=join_arg)


def test_a_thread_group_join_with_a_bad_timeout_leaves_it_joinable() -> None:
    group = ThreadGroup("t")
    group.submit(lambda: 2)
    with pytest.raises(ValueError, match="timeout"):
        group.join(timeout=-1)
    assert group.join() == [2]
    with pytest.raises(RuntimeError, match="thread group 't' was already joined"):
        group.join()
    with pytest.raises(RuntimeError, match="thread group 't' was already joined"):
        group.submit(lambda: 3)


async def test_a_task_group_join_with_a_bad_timeout_leaves_it_joinable() -> None:
    group = TaskGroup("g")
    group.submit(_ok)
    with pytest.raises(ValueError, match="timeout"):
        await group.join(timeout=-1)
    assert group.never_joined()
    assert await group.join() == [1]
    with pytest.raises(RuntimeError, match="task group 'g' was already joined"):
        await group.join()
    with pytest.raises(RuntimeError, match="task group 'g' was already joined"):
        group.submit(_ok)


async def test_a_traced_group_s_entry_carries_its_own_span_from_the_first_submit(
    spans: Any,
) -> None:
    """The entry is made after the group span: a reader shows the group's own ids, and a
    termination record can end that span (before, a task group's entry had none)."""
    from hangguard import _inflight

    release = threading.Event()
    threads = ThreadGroup("threads")
    threads.submit(release.wait)
    tasks = TaskGroup("tasks")
    gate = asyncio.Event()
    tasks.submit(gate.wait)
    try:
        records = {r.name: r for r in _inflight.snapshot(stacks=False) if r.kind == "group"}
        for group in (tasks, threads):
            record = records[group.name]
            span_id = group._span.get_span_context().span_id  # type: ignore[union-attr]
            assert record.span_id == f"{span_id:016x}", group.name
    finally:
        release.set()
        gate.set()
        threads.join()
        await tasks.join()


# --- a failure is never lost ----------------------------------------------------------------


def test_a_thread_raising_its_own_timeout_after_a_sibling_failed_is_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    release = threading.Event()
    sibling_failed = threading.Event()

    nested_started = threading.Event()

    def first() -> None:
        sibling_failed.wait(10)
        raise ValueError("first failure")

    def nested() -> None:
        nested_started.set()
        release.wait(10)
        # A nested group timing out: its own error, not an acknowledged cancel.
        raise JoinTimeout("nested group timed out", deadline_name="inner", budget=1.0)

    group = ThreadGroup("t", return_exceptions=False)
    group.submit(first)
    group.submit(nested)
    assert nested_started.wait(10)
    with caplog.at_level(logging.INFO, logger="hangguard"):
        sibling_failed.set()
        threading.Timer(0.2, release.set).start()
        with pytest.raises(ValueError, match="first failure"):
            group.join()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert any(r.exc_info and isinstance(r.exc_info[1], JoinTimeout) for r in errors), [
        r.getMessage() for r in caplog.records
    ]


# --- held back by the limiter: say it never started ------------------------------------------


async def test_a_task_held_back_by_the_limit_says_it_was_cancelled_before_it_started(
    caplog: pytest.LogCaptureFixture,
) -> None:
    release = asyncio.Event()

    async def hang() -> None:
        await release.wait()

    group = TaskGroup("g", limit=1)
    group.submit_named("runs", hang)
    group.submit_named("held", hang)
    with pytest.raises(JoinTimeout) as info:
        await group.join(timeout=0.2)
    held = info.value.results[1]
    assert isinstance(held, DeadlineExceeded)
    assert "before it started" in str(held)
    assert "no free worker" not in str(held)


def test_a_thread_held_back_by_the_limit_says_it_was_cancelled_before_it_started(
    caplog: pytest.LogCaptureFixture,
) -> None:
    release = threading.Event()
    group = ThreadGroup("t", limit=1)
    group.submit_named("runs", release.wait, 10)
    group.submit_named("held", release.wait, 10)
    try:
        with caplog.at_level(logging.INFO, logger="hangguard"), pytest.raises(JoinTimeout) as info:
            group.join(timeout=0.2)
    finally:
        release.set()
    held = info.value.results[1]
    assert isinstance(held, DeadlineExceeded)
    assert "before it started" in str(held), str(held)
    assert "no free worker" not in str(held)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not [r for r in errors if "held" in r.getMessage()]


def test_a_thread_held_back_past_its_deadline_is_not_a_pool_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    finished = threading.Event()

    def first() -> None:
        time.sleep(0.4)  # the blocking call itself, outliving the deadline
        finished.set()

    with caplog.at_level(logging.INFO, logger="hangguard"), hangguard.deadline(0.2, name="batch"):
        group = ThreadGroup("t", limit=1, return_exceptions=True)
        group.submit_named("first", first)
        group.submit_named("held", lambda: 1)
        assert finished.wait(10)
        try:
            results = group.join()
        except JoinTimeout as timeout:  # the held call had not ended yet
            results = timeout.results
    held = results[1]
    assert isinstance(held, DeadlineExceeded)
    assert "before it started" in str(held), str(held)
    assert "no free worker" not in str(held)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


# --- to_thread keeps the thread's own exception ---------------------------------------------


async def test_to_thread_re_raises_the_threads_own_timeout_error() -> None:
    raised: list[BaseException] = []

    def times_out() -> None:
        exc = TimeoutError("socket read timed out")
        raised.append(exc)
        raise exc

    with pytest.raises(TimeoutError) as info:
        await hangguard.to_thread(times_out)
    assert info.value is raised[0]
    assert info.value.__traceback__ is not None


# --- the in-flight registry: one entry per group, its tasks listed on demand ----------------


def _read_registry() -> list[Any]:
    """A snapshot taken on another thread, as ``hangguard ps`` and the timers take it."""
    from hangguard import _inflight

    out: list[Any] = []
    reader = threading.Thread(target=lambda: out.extend(_inflight.snapshot(stacks=True)))
    reader.start()
    reader.join(10)
    return out


def _group_and_children(records: list[Any], name: str) -> tuple[Any, list[Any]]:
    group = next(r for r in records if r.kind == "group" and r.name == name)
    return group, [r for r in records if r.parent_id == group.id]


async def test_a_task_group_lists_its_tasks_with_their_states() -> None:
    started = asyncio.Event()
    release = asyncio.Event()

    async def hang() -> None:
        started.set()
        await release.wait()

    group = TaskGroup("listed")
    group.submit_named("a", hang)
    group.submit_named("b", hang)
    await started.wait()
    records = await asyncio.to_thread(_read_registry)
    _, kids = _group_and_children(records, "listed")
    assert sorted(k.name for k in kids) == ["a", "b"]
    assert {k.kind for k in kids} == {"task"}
    assert {k.state for k in kids} == {"running"}
    assert all(k.stack for k in kids), "each task says where it is"
    release.set()
    await group.join()
    assert not [r for r in await asyncio.to_thread(_read_registry) if r.name == "listed"]


async def test_a_task_ignoring_its_cancel_stays_listed_as_abandoned(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HANGGUARD_CANCEL_GRACE", "0.05")
    started = asyncio.Event()
    release = asyncio.Event()

    async def stubborn() -> None:
        started.set()
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                continue  # ignores its cancellation

    group = TaskGroup("stubborn")
    task = group.submit_named("mule", stubborn)
    await started.wait()
    with pytest.raises(JoinTimeout):
        await group.join(timeout=0.05)
    records = await asyncio.to_thread(_read_registry)
    assert not [r for r in records if r.name == "stubborn"], "the group itself is done"
    _, kids = _group_and_children(records, "abandoned tasks")
    assert [(k.name, k.state) for k in kids] == [("mule", "abandoned")]
    release.set()
    await asyncio.wait([task], timeout=10)
    assert task.done()
    assert not [r for r in await asyncio.to_thread(_read_registry) if r.name == "mule"]


def test_a_thread_group_lists_its_threads_running_then_cancelling() -> None:
    started = [threading.Event(), threading.Event()]
    release = threading.Event()

    def works(i: int) -> None:
        started[i].set()
        while not release.wait(0.01):
            hangguard.checkpoint()

    def stubborn(i: int) -> None:
        started[i].set()
        release.wait(10)  # never checks: it ignores its cancel until released

    def fails() -> None:
        raise ValueError("boom")

    group = ThreadGroup("threads", return_exceptions=False)
    group.submit_named("works", works, 0)
    group.submit_named("stubborn", stubborn, 1)
    assert all(e.wait(10) for e in started)
    _, kids = _group_and_children(_read_registry(), "threads")
    assert sorted((k.name, k.kind, k.state) for k in kids) == [
        ("stubborn", "thread", "running"),
        ("works", "thread", "running"),
    ]
    assert all(k.stack for k in kids), "each thread says where it is"
    seen: list[Any] = []
    group.submit_named("fails", fails)  # fail-fast: the others are cancelled

    def read_during_grace() -> None:
        give_up = time.monotonic() + 10
        while time.monotonic() < give_up and not any(k.state == "cancelling" for k in seen):
            seen[:] = [r for r in _read_registry() if r.name in ("works", "stubborn")]
        release.set()

    reader = threading.Thread(target=read_during_grace)
    reader.start()
    with pytest.raises(ValueError, match="boom"):
        group.join()
    reader.join(10)
    assert ("stubborn", "cancelling") in [(k.name, k.state) for k in seen]
    assert not [r for r in _read_registry() if r.name == "threads"]


def test_an_abandoned_thread_stays_listed_until_it_ends(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HANGGUARD_CANCEL_GRACE", "0.05")
    release = threading.Event()
    ended = threading.Event()

    def stuck() -> None:
        release.wait(10)
        ended.set()

    closed = threading.Event()

    class _Closed(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "has ended" in record.getMessage():
                closed.set()  # logged once the abandoned slot is closed

    handler = _Closed()
    logging.getLogger("hangguard").addHandler(handler)
    level = logging.getLogger("hangguard").level
    logging.getLogger("hangguard").setLevel(logging.INFO)
    group = ThreadGroup("leaves")
    group.submit_named("stuck", stuck)
    with pytest.raises(JoinTimeout):
        group.join(timeout=0.05)
    records = _read_registry()
    assert not [r for r in records if r.name == "leaves"], "the group itself is done"
    _, kids = _group_and_children(records, "abandoned threads")
    assert [(k.name, k.state) for k in kids] == [("stuck", "abandoned")]
    release.set()
    try:
        assert ended.wait(10) and closed.wait(10)
    finally:
        logging.getLogger("hangguard").removeHandler(handler)
        logging.getLogger("hangguard").setLevel(level)
    assert not [r for r in _read_registry() if r.name == "stuck"]


def test_a_thread_groups_fail_fast_cancel_is_announced_once_as_a_task_groups_is(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The WARNING that names the failure and the count is one line in the group core;
    # the thread group used to cancel its calls without it.
    started, release = threading.Event(), threading.Event()

    def waits() -> None:
        started.set()
        while not release.wait(0.01):
            hangguard.checkpoint()  # raises ThreadCancelled once the group cancels it

    def fails() -> None:
        assert started.wait(30)
        raise ValueError("boom")

    group = ThreadGroup("t", return_exceptions=False)
    with caplog.at_level(logging.WARNING, logger="hangguard"):
        try:
            group.submit_named("waits", waits)
            group.submit_named("bad", fails)
            with pytest.raises(ValueError, match="boom"):
                group.join()
        finally:
            release.set()
    announced = [r.getMessage() for r in caplog.records if "cancelling" in r.getMessage()]
    assert announced == [
        "thread group 't': task 'bad' failed with ValueError, cancelling 1 remaining task(s)"
    ]
