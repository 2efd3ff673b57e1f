"""The trace vocabulary: every span, attribute, event and metric name hangguard emits.

Names only, no behaviour and no imports of the rest of the package, so every module (span
helpers, metrics, the CLI's tree, the docs test) can use it without an import cycle.
docs/trace-schema.md is checked against these constants by a test.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "ATTR_CANCEL_CAUSE",
    "ATTR_CANCEL_FORCED",
    "ATTR_CANCEL_GRACE_S",
    "ATTR_CANCEL_REASON",
    "ATTR_CANCEL_SWALLOWED",
    "ATTR_DEADLINE_BUDGET_S",
    "ATTR_DEADLINE_NAME",
    "ATTR_ERROR_TYPE",
    "ATTR_EXCEPTION_MESSAGE",
    "ATTR_EXCEPTION_TYPE",
    "ATTR_GEN_AI_OPERATION_NAME",
    "ATTR_GEN_AI_TOOL_CALL_ARGUMENTS",
    "ATTR_GEN_AI_TOOL_CALL_RESULT",
    "ATTR_GEN_AI_TOOL_NAME",
    "ATTR_GROUP_ABANDONED",
    "ATTR_GROUP_CANCELLED",
    "ATTR_GROUP_CANCEL_IGNORED",
    "ATTR_GROUP_FAILED",
    "ATTR_GROUP_LIMIT",
    "ATTR_GROUP_NAME",
    "ATTR_GROUP_SERIAL",
    "ATTR_GROUP_SIZE",
    "ATTR_GROUP_TIMED_OUT",
    "ATTR_HTTP_REQUEST_METHOD",
    "ATTR_HTTP_REQUEST_RESEND_COUNT",
    "ATTR_HTTP_RESPONSE_STATUS_CODE",
    "ATTR_LOOP_BLOCKED_S",
    "ATTR_LOOP_STACK",
    "ATTR_LOOP_THRESHOLD_S",
    "ATTR_HTTP_TIMEOUT_HEADER",
    "ATTR_MCP_BREAKER_LAST_ERROR",
    "ATTR_MCP_BREAKER_STATE",
    "ATTR_MCP_METHOD_NAME",
    "ATTR_MCP_PROGRESS",
    "ATTR_MCP_PROGRESS_TOTAL",
    "ATTR_MCP_RESEND_ANNOTATIONS",
    "ATTR_MCP_RESEND_RULE",
    "ATTR_MCP_SERVER",
    "ATTR_NETWORK_TRANSPORT",
    "ATTR_OP_NAME",
    "ATTR_RAY_FORCE_ATTEMPTS",
    "ATTR_RAY_FORCE_CONFIRMED",
    "ATTR_RAY_NODE_ID",
    "ATTR_RAY_TASK_ID",
    "ATTR_RAY_WORKER_PID",
    "ATTR_RETRY_ATTEMPT",
    "ATTR_RETRY_ATTEMPTS",
    "ATTR_RETRY_NAME",
    "ATTR_RETRY_REMAINING_S",
    "ATTR_RETRY_SLEEP_S",
    "ATTR_SERVER_ADDRESS",
    "ATTR_SERVER_PORT",
    "ATTR_SNAPSHOT_BUDGET_LEFT_S",
    "ATTR_SNAPSHOT_ELAPSED_S",
    "ATTR_SNAPSHOT_KIND",
    "ATTR_SNAPSHOT_NAME",
    "ATTR_SNAPSHOT_PATH",
    "ATTR_SNAPSHOT_SEQ",
    "ATTR_SNAPSHOT_STACK",
    "ATTR_SNAPSHOT_STATE",
    "ATTR_TASK_NAME",
    "ATTR_TASK_OUTCOME",
    "ATTR_TASK_STACK",
    "ATTR_TERMINATED_STACK",
    "ATTR_THREAD_ID",
    "ATTR_THREAD_NAME",
    "ATTR_OWN_TIMEOUT_S",
    "ATTR_TIMEOUT_S",
    "ATTR_URL_FULL",
    "ATTR_URL_PATH",
    "CANCEL_ABANDONED_AT_EXIT",
    "CANCEL_DEADLINE",
    "CANCEL_NO_FREE_WORKER",
    "CANCEL_PARENT",
    "CANCEL_RAY",
    "CANCEL_SIBLING_FAILED",
    "CANCEL_TERMINATED",
    "CANCEL_TIMEOUT",
    "ERROR_TYPE_TIMEOUT",
    "ERROR_TYPE_TOOL_ERROR",
    "EVENT_CANCELLED",
    "EVENT_CANCEL_IGNORED",
    "EVENT_DEADLINE_EXCEEDED",
    "EVENT_LOOP_BLOCKED",
    "EVENT_RAY_RETRY_SKIPPED",
    "EVENT_RAY_WORKER_SURVIVED",
    "EVENT_MCP_BREAKER",
    "EVENT_MCP_PROGRESS",
    "EVENT_MCP_RESEND",
    "EVENT_MCP_RESEND_REFUSED",
    "EVENT_MCP_SESSION_LOST",
    "EVENT_RETRY",
    "EVENT_RETRY_BUDGET_EXHAUSTED",
    "EVENT_RETRY_BUDGET_REFUSED",
    "METRIC_DEADLINE_EXCEEDED",
    "METRIC_LOOP_BLOCKED",
    "METRIC_MCP_BREAKER_TRANSITIONS",
    "METRIC_MCP_CLIENT_OPERATION_DURATION",
    "METRIC_RETRIES",
    "METRIC_RETRY_BUDGET_REFUSALS",
    "METRIC_TASKS",
    "METRIC_THREADS_ABANDONED",
    "METRIC_THREADS_NO_FREE_WORKER",
    "BREAKER_CLOSED",
    "BREAKER_HALF_OPEN",
    "BREAKER_OPEN",
    "EVENT_TERMINATED",
    "ANNOTATIONS_CACHED",
    "ANNOTATIONS_LEARNED",
    "RESEND_ALLOW_LIST",
    "RESEND_CALLER",
    "RESEND_IDEMPOTENT_HINT",
    "RESEND_NOT_IDEMPOTENT",
    "RESEND_NOT_SENT",
    "RESEND_READ_ONLY_HINT",
    "RESEND_SESSION_LOST",
    "RESEND_TOOL_LIST_UNKNOWN",
    "OUTCOME_CANCELLED",
    "OUTCOME_FAILED",
    "OUTCOME_OK",
    "OUTCOME_TIMEOUT",
    "SPAN_EXECUTE_TOOL",
    "SPAN_GROUP",
    "SPAN_LOOP_BLOCKED",
    "SPAN_HTTP_CLIENT",
    "SPAN_HTTP_SERVER",
    "SPAN_OP",
    "SPAN_RAY_TASK",
    "SPAN_SNAPSHOT",
    "SPAN_TASK",
    "TRACER_NAME",
]

TRACER_NAME: Final = "hangguard"

# A live snapshot of work still open: a short child span of the open span (``{}`` takes
# its entry's name), and what it carries.
SPAN_SNAPSHOT: Final = "snapshot {}"
ATTR_SNAPSHOT_KIND: Final = "hangguard.snapshot.kind"
ATTR_SNAPSHOT_NAME: Final = "hangguard.snapshot.name"
ATTR_SNAPSHOT_STATE: Final = "hangguard.snapshot.state"
ATTR_SNAPSHOT_ELAPSED_S: Final = "hangguard.snapshot.elapsed_s"
ATTR_SNAPSHOT_BUDGET_LEFT_S: Final = "hangguard.snapshot.budget_left_s"
ATTR_SNAPSHOT_STACK: Final = "hangguard.snapshot.stack"
ATTR_SNAPSHOT_SEQ: Final = "hangguard.snapshot.seq"
ATTR_SNAPSHOT_PATH: Final = "hangguard.snapshot.path"
# On a span a termination ended (SIGTERM, or the exit past work still running): where it was.
ATTR_TERMINATED_STACK: Final = "hangguard.terminated.stack"
EVENT_TERMINATED: Final = "hangguard.terminated"

# Span names (``{}`` takes the group / task / op name).
SPAN_OP: Final = "{}"
SPAN_GROUP: Final = "group {}"
SPAN_TASK: Final = "task {}"
# A blocked event loop, when no span of ours was running (else an event on that span).
SPAN_LOOP_BLOCKED: Final = "loop blocked"

# Attributes.
ATTR_OP_NAME: Final = "hangguard.op.name"
ATTR_GROUP_NAME: Final = "hangguard.group.name"
ATTR_GROUP_SIZE: Final = "hangguard.group.size"
ATTR_GROUP_FAILED: Final = "hangguard.group.failed"
ATTR_GROUP_CANCELLED: Final = "hangguard.group.cancelled"
# Of the tasks the group cancelled: those that did not end cancelled (they returned, raised
# or were still running after the grace), and of those the ones left running, detached
# (for a thread group: the threads that did not stop when it gave up on them).
ATTR_GROUP_CANCEL_IGNORED: Final = "hangguard.group.cancel_ignored"
ATTR_GROUP_ABANDONED: Final = "hangguard.group.abandoned"
ATTR_GROUP_TIMED_OUT: Final = "hangguard.group.timed_out"
ATTR_GROUP_LIMIT: Final = "hangguard.group.limit"
ATTR_GROUP_SERIAL: Final = "hangguard.group.serial"
# OpenTelemetry's thread attributes, on the cancelled record of an abandoned thread.
ATTR_THREAD_ID: Final = "thread.id"
ATTR_THREAD_NAME: Final = "thread.name"
ATTR_TIMEOUT_S: Final = "hangguard.timeout_s"
# On an op span whose own budget is longer than what the enclosing deadline leaves: that
# own budget (hangguard.timeout_s is then the budget in force, the shorter).
ATTR_OWN_TIMEOUT_S: Final = "hangguard.own_timeout_s"
ATTR_TASK_NAME: Final = "hangguard.task.name"
ATTR_TASK_STACK: Final = "hangguard.task.stack"
# On every cancelled task or op span (attributes: cheap, and what sampling matches), and
# on its hangguard.cancelled event when it has one (the first few per group).
ATTR_CANCEL_REASON: Final = "hangguard.cancel.reason"
ATTR_CANCEL_CAUSE: Final = "hangguard.cancel.cause"
ATTR_CANCEL_GRACE_S: Final = "hangguard.cancel_grace_s"
#: On a guarded op's span: its deadline cancelled the body, which caught the
#: cancellation and returned normally; the op raised ``DeadlineExceeded`` instead.
ATTR_CANCEL_SWALLOWED: Final = "hangguard.cancel.swallowed"
ATTR_DEADLINE_NAME: Final = "hangguard.deadline.name"
ATTR_DEADLINE_BUDGET_S: Final = "hangguard.deadline.budget_s"
# On loop_blocked: how long the loop ran no callback, the stack sampled while it was
# blocked (innermost frame first), and the watchdog's threshold.
ATTR_LOOP_BLOCKED_S: Final = "hangguard.loop.blocked_s"
ATTR_LOOP_STACK: Final = "hangguard.loop.stack"
ATTR_LOOP_THRESHOLD_S: Final = "hangguard.loop.threshold_s"
# On retry events: the number of the attempt that failed (1-based), the most attempts
# allowed, what is being retried, the backoff before the next attempt, and the seconds
# left on the enclosing deadline when a retry did not fit.
ATTR_RETRY_ATTEMPT: Final = "hangguard.retry.attempt"
ATTR_RETRY_ATTEMPTS: Final = "hangguard.retry.attempts"
ATTR_RETRY_NAME: Final = "hangguard.retry.name"
ATTR_RETRY_SLEEP_S: Final = "hangguard.retry.sleep_s"
ATTR_RETRY_REMAINING_S: Final = "hangguard.retry.remaining_s"
ATTR_ERROR_TYPE: Final = "error.type"
# OpenTelemetry's exception attributes, on events that describe a failure the span survived.
ATTR_EXCEPTION_TYPE: Final = "exception.type"
ATTR_EXCEPTION_MESSAGE: Final = "exception.message"

# The span of one MCP tool call (OpenTelemetry GenAI / MCP conventions); the mcp SDK's
# own "MCP send tools/call <tool>" client span of each attempt nests under it.
SPAN_EXECUTE_TOOL: Final = "execute_tool {}"
ATTR_GEN_AI_OPERATION_NAME: Final = "gen_ai.operation.name"
ATTR_GEN_AI_TOOL_CALL_ARGUMENTS: Final = "gen_ai.tool.call.arguments"
ATTR_GEN_AI_TOOL_CALL_RESULT: Final = "gen_ai.tool.call.result"
ATTR_SERVER_ADDRESS: Final = "server.address"
ATTR_SERVER_PORT: Final = "server.port"
ATTR_NETWORK_TRANSPORT: Final = "network.transport"
ATTR_HTTP_RESPONSE_STATUS_CODE: Final = "http.response.status_code"
ATTR_MCP_SERVER: Final = "hangguard.mcp.server"
# A call that failed after its request may have reached the server: re-sent or not, and
# the rule that decided (values below); a session the server forgot (re-sent at once).
EVENT_MCP_RESEND: Final = "hangguard.mcp.resend"
EVENT_MCP_RESEND_REFUSED: Final = "hangguard.mcp.resend_refused"
EVENT_MCP_SESSION_LOST: Final = "hangguard.mcp.session_lost"
ATTR_MCP_RESEND_RULE: Final = "hangguard.mcp.resend.rule"
RESEND_NOT_SENT: Final = "not_sent"
RESEND_SESSION_LOST: Final = "session_lost"
RESEND_CALLER: Final = "caller"
RESEND_ALLOW_LIST: Final = "allow_list"
RESEND_READ_ONLY_HINT: Final = "read_only_hint"
RESEND_IDEMPOTENT_HINT: Final = "idempotent_hint"
RESEND_NOT_IDEMPOTENT: Final = "not_idempotent"
RESEND_TOOL_LIST_UNKNOWN: Final = "tool_list_unknown"
# For a rule read from the tool's annotations: where the client had them from.
ATTR_MCP_RESEND_ANNOTATIONS: Final = "hangguard.mcp.resend.annotations"
ANNOTATIONS_CACHED: Final = "cached"  # a tools/list made before this call failed
ANNOTATIONS_LEARNED: Final = "learned"  # a tools/list made by the client to decide
# Progress notifications the server sent during a call (idle_timeout restarts on each).
EVENT_MCP_PROGRESS: Final = "hangguard.mcp.progress"
ATTR_MCP_PROGRESS: Final = "hangguard.mcp.progress.value"
ATTR_MCP_PROGRESS_TOTAL: Final = "hangguard.mcp.progress.total"
# The per-server circuit breaker: a state change, its new state and the failure behind it.
EVENT_MCP_BREAKER: Final = "hangguard.mcp.breaker"
ATTR_MCP_BREAKER_STATE: Final = "hangguard.mcp.breaker.state"
ATTR_MCP_BREAKER_LAST_ERROR: Final = "hangguard.mcp.breaker.last_error"
BREAKER_CLOSED: Final = "closed"
BREAKER_OPEN: Final = "open"
BREAKER_HALF_OPEN: Final = "half_open"
# Plain HTTP (hangguard.http): the client span of the transport wrapper and the server
# span of the ASGI middleware, named by the method as OpenTelemetry's HTTP conventions
# say when the route is unknown; the header the server read its budget from.
SPAN_HTTP_CLIENT: Final = "{}"
SPAN_HTTP_SERVER: Final = "{}"
ATTR_HTTP_REQUEST_METHOD: Final = "http.request.method"
ATTR_HTTP_REQUEST_RESEND_COUNT: Final = "http.request.resend_count"
ATTR_URL_FULL: Final = "url.full"
ATTR_URL_PATH: Final = "url.path"
ATTR_HTTP_TIMEOUT_HEADER: Final = "hangguard.http.timeout_header"
# Values of error.type on that span, besides a JSON-RPC code, an HTTP status or a class.
ERROR_TYPE_TIMEOUT: Final = "timeout"
ERROR_TYPE_TOOL_ERROR: Final = "tool_error"

# Ray (hangguard.ray): the span of a remote task in its worker process, under the driver's
# task span; where it ran; whether a cancel had to kill the worker (on cancel_ignored).
SPAN_RAY_TASK: Final = "ray task {}"
ATTR_RAY_NODE_ID: Final = "hangguard.ray.node_id"
ATTR_RAY_TASK_ID: Final = "hangguard.ray.task_id"
ATTR_RAY_WORKER_PID: Final = "hangguard.ray.worker_pid"
ATTR_CANCEL_FORCED: Final = "hangguard.cancel.forced"
# A failed remote task that was not retried because the budget left could not fit it.
EVENT_RAY_RETRY_SKIPPED: Final = "hangguard.ray.retry_skipped"
# On the driver's task span of a task whose worker the group killed: whether Ray confirmed
# the task ended (its ref completed) and after how many forced cancels; an event when the
# worker was still running after the last one.
ATTR_RAY_FORCE_CONFIRMED: Final = "hangguard.ray.force_confirmed"
ATTR_RAY_FORCE_ATTEMPTS: Final = "hangguard.ray.force_attempts"
EVENT_RAY_WORKER_SURVIVED: Final = "hangguard.ray.worker_survived"

# Values of hangguard.cancel.reason.
CANCEL_SIBLING_FAILED: Final = "sibling_failed"
CANCEL_TIMEOUT: Final = "timeout"
CANCEL_DEADLINE: Final = "deadline"
CANCEL_PARENT: Final = "parent_cancelled"
# A thread task whose deadline passed before any worker of its pool was free to start it.
CANCEL_NO_FREE_WORKER: Final = "no_free_worker"
# In a Ray worker: the driver's ray.cancel arrived (a KeyboardInterrupt in the task).
CANCEL_RAY: Final = "ray_cancel"
# Work still running when the process exits: its span is ended then, at the latest.
CANCEL_ABANDONED_AT_EXIT: Final = "abandoned_at_exit"
# The process was terminated (a signal) while the work ran.
CANCEL_TERMINATED: Final = "terminated"

# Events.
EVENT_CANCELLED: Final = "hangguard.cancelled"
EVENT_CANCEL_IGNORED: Final = "hangguard.cancel_ignored"
EVENT_DEADLINE_EXCEEDED: Final = "hangguard.deadline_exceeded"
EVENT_RETRY: Final = "hangguard.retry"
EVENT_RETRY_BUDGET_EXHAUSTED: Final = "hangguard.retry.budget_exhausted"
EVENT_RETRY_BUDGET_REFUSED: Final = "hangguard.retry.budget_refused"
EVENT_LOOP_BLOCKED: Final = "hangguard.loop_blocked"

# Metrics (instruments in _metrics.py), with the attributes only they carry.
METRIC_TASKS: Final = "hangguard.tasks"
METRIC_RETRIES: Final = "hangguard.retries"
METRIC_RETRY_BUDGET_REFUSALS: Final = "hangguard.retry.budget_refusals"
METRIC_DEADLINE_EXCEEDED: Final = "hangguard.deadline.exceeded"
METRIC_THREADS_ABANDONED: Final = "hangguard.threads.abandoned"
METRIC_THREADS_NO_FREE_WORKER: Final = "hangguard.threads.no_free_worker"
METRIC_LOOP_BLOCKED: Final = "hangguard.loop.blocked"
METRIC_MCP_BREAKER_TRANSITIONS: Final = "hangguard.mcp.breaker.transitions"
ATTR_TASK_OUTCOME: Final = "hangguard.task.outcome"
# The MCP semantic conventions' client call duration, with their attribute names.
METRIC_MCP_CLIENT_OPERATION_DURATION: Final = "mcp.client.operation.duration"
ATTR_MCP_METHOD_NAME: Final = "mcp.method.name"
ATTR_GEN_AI_TOOL_NAME: Final = "gen_ai.tool.name"

# Values of hangguard.task.outcome.
OUTCOME_OK: Final = "ok"
OUTCOME_FAILED: Final = "failed"
OUTCOME_CANCELLED: Final = "cancelled"
OUTCOME_TIMEOUT: Final = "timeout"
