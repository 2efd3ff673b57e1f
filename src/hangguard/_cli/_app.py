"""The argument parser of ``hangguard`` and the dispatch to each subcommand.

Output that a program may parse (``--json``, the tree) goes to stdout; progress, logs,
warnings and errors go to stderr, so ``hangguard demo --json | jq`` always works.
"""

from __future__ import annotations

import argparse
import sys
from typing import Final

from .. import _config
from .._config import ENV_JAEGER_UI
from .._exceptions import ConfigError
from .._hints import pip_install
from .._version import __version__
from ._defaults import DEFAULT_JAEGER_UI
from ._ps_cmd import add_parser as add_ps_parser

__all__ = ["CHAOS", "build_parser", "run"]

#: Exit status for bad usage or configuration (argparse uses it too).
EXIT_USAGE: Final = 2

#: The subcommand whose own parser owns its flags (and which needs the mcp extra, not rich).
CHAOS: Final = "chaos-mcp"

_EPILOG = """\
environment: every HANGGUARD_* variable is listed by 'hangguard config' and in docs/env.md.
exit status: 0 ok, 1 a problem was found, 2 bad usage or configuration.
"""

_DEMO_DESCRIPTION = """\
Run the user guide's scenario for real, in this process: a chaos MCP server on
127.0.0.1, then a guarded op (CompanySegmentFactorOp) that fans out N searches as MCP
tool calls -- some slow, one that hangs, one that fails, one flaky that a retry
rescues -- under a deadline, joined with join_async_task(timeout=...,
return_exceptions=True). It prints the partial results and the trace as a tree: op ->
group -> tasks -> MCP calls, with durations, status, retries, and each cancellation with
its cause and where the hung task was stuck.

The op's budget is --budget, else its HANGGUARD_BUDGETS entry, else
HANGGUARD_DEFAULT_BUDGET, else 3s (+0.25s per search beyond six); the join timeout is
--join-timeout, else HANGGUARD_JOIN_TIMEOUT, else half the budget. With
OTEL_EXPORTER_OTLP_ENDPOINT set the trace is exported too and the Jaeger link printed.

Exits 0 when the op degraded gracefully as designed (the hang cancelled, the failure
reported, the partial results kept); 1 when the demo itself went wrong.
"""


def _duration(flag: str, *, allow_none: bool = False) -> type[float]:
    # The env's own parser, so a flag and its variable accept the same values.
    def parse(text: str) -> float:
        try:
            return _config.parse_duration(text, name=flag, allow_none=allow_none)
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = "duration"  # argparse names the type in "invalid <type> value"
    return parse  # type: ignore[return-value]


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 1 <= value <= 100:
        raise argparse.ArgumentTypeError(f"must be between 1 and 100, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The parser of the whole command (``hangguard --help``)."""
    parser = argparse.ArgumentParser(
        prog="hangguard",
        description=(
            "Concurrent async work that never hangs: deadlines, guarded task groups, "
            "retries and MCP calls, traced with OpenTelemetry."
        ),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"hangguard {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    demo = sub.add_parser(
        "demo",
        help="run the guide's hanging-searches scenario against a chaos MCP server",
        description=_DEMO_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument(
        "--tasks", type=_count, default=6, metavar="N", help="searches to fan out (default 6)"
    )
    demo.add_argument(
        "--budget",
        type=_duration("--budget"),
        default=None,
        metavar="DURATION",
        help=(
            "the op's deadline, e.g. 3, 2.5s, 1500ms (default: from the env, else 3s, "
            "+0.25s per search beyond six)"
        ),
    )
    demo.add_argument(
        "--join-timeout",
        type=_duration("--join-timeout"),
        default=None,
        metavar="DURATION",
        help="join_async_task's timeout (default: HANGGUARD_JOIN_TIMEOUT, else budget/2)",
    )
    demo.add_argument(
        "--slow",
        type=_duration("--slow"),
        default=0.3,
        metavar="DURATION",
        help="the slowest of the slow searches takes this long (default 0.3s)",
    )
    for flag, what in (
        ("hang", "one search calls a tool that never answers"),
        ("fail", "one search gets a JSON-RPC error"),
        ("flaky", "one search fails once with isError, and a retry rescues it"),
    ):
        demo.add_argument(
            f"--{flag}",
            action=argparse.BooleanOptionalAction,
            default=True,
            help=f"{what} (default: on)",
        )
    demo.add_argument(
        "--serial",
        action="store_true",
        help="the guide's debug mode: run the searches one at a time, in order, logging "
        "each (sets HANGGUARD_SERIAL=1)",
    )
    demo.add_argument(
        "--block-loop",
        type=float,
        nargs="?",
        const=0.5,
        default=0.0,
        metavar="SECONDS",
        help="a blocking call (time.sleep) in the op's coroutine stops the event loop for "
        "SECONDS (0.5 when not given); the loop watchdog shows where",
    )
    demo.add_argument("--json", action="store_true", help="print one JSON document, no tree")
    demo.add_argument(
        "--all-spans",
        action="store_true",
        help="also show the mcp SDK's own transport spans (client sends, server handlers) "
        "in the tree",
    )
    demo.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="live progress on stderr (default: when stderr is a terminal)",
    )
    demo.add_argument(
        "--jaeger-ui",
        default=None,
        metavar="URL",
        help=f"Jaeger UI base for the trace link (default: {ENV_JAEGER_UI}, "
        f"else {DEFAULT_JAEGER_UI})",
    )
    demo.add_argument(
        "-v", "--verbose", action="store_true", help="log tracebacks and hangguard's info logs"
    )

    config = sub.add_parser(
        "config",
        help="show the effective configuration and where each value came from",
        description=(
            "Show every HANGGUARD_* variable (value, source: default or env, meaning), the "
            "per-op budgets of HANGGUARD_BUDGETS, and the OpenTelemetry variables that decide "
            "where traces go. Each variable is parsed the way the library parses it; a bad "
            "value is reported naming the variable and exits 2."
        ),
        epilog=_EPILOG,
    )
    config.add_argument("--json", action="store_true", help="print one JSON document")

    doctor = sub.add_parser(
        "doctor",
        help="check the configuration, packages, OTLP endpoint and (given its URL) Jaeger",
        description=(
            "Check that the configuration parses, the installed versions of mcp, "
            "opentelemetry-api/-sdk and tenacity (API and SDK must match), that the OTLP "
            "endpoint answers an empty OTLP export (http/protobuf: POST /v1/traces expects "
            "200; grpc: connect, then Export), and what records work still in flight "
            "(HANGGUARD_PS, HANGGUARD_SNAPSHOT_AFTER, HANGGUARD_RECORD_ON_SIGTERM). Jaeger is "
            "checked only when --jaeger-url or HANGGUARD_JAEGER_UI gives its address: then "
            "its query API must answer GET /api/services, and doctor says whether it serves "
            "the UI. Prints what is wrong and how to fix it; exits 1 on a problem. Network "
            "checks connect directly (no proxy) with a short timeout."
        ),
        epilog=_EPILOG,
    )
    doctor.add_argument(
        "--endpoint",
        default=None,
        metavar="URL",
        help="OTLP endpoint (default: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, "
        "else OTEL_EXPORTER_OTLP_ENDPOINT)",
    )
    doctor.add_argument(
        "--protocol",
        choices=["grpc", "http/protobuf"],
        default=None,
        help="OTLP protocol (default: OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL, "
        "else grpc on port 4317 and http/protobuf otherwise)",
    )
    doctor.add_argument(
        "--jaeger-url",
        default=None,
        metavar="URL",
        help=f"Jaeger query/UI base, e.g. {DEFAULT_JAEGER_UI} (default: {ENV_JAEGER_UI}; "
        "neither given: Jaeger is not checked)",
    )
    doctor.add_argument(
        "--timeout",
        type=_duration("--timeout"),
        default=3.0,
        metavar="DURATION",
        help="timeout of each network check (default 3s)",
    )
    doctor.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE (the one defining your ops; repeatable) and name each "
        "HANGGUARD_BUDGETS entry that matches none of its ops",
    )
    doctor.add_argument("--json", action="store_true", help="print one JSON document")

    trace = sub.add_parser(
        "trace",
        help="show a trace as a tree: from a HANGGUARD_TRACE_FILE, or from Jaeger's query API",
        description=(
            "Show the spans an application traced without a collector left in its "
            "HANGGUARD_TRACE_FILE (JSON lines): the most recent trace as a tree, like "
            "'hangguard demo' shows its own, or with --list every trace in the file. "
            "With --jaeger URL, read the trace from Jaeger's query API instead (e.g. a "
            "Jaeger built from source, which has no UI): 'hangguard trace --jaeger URL "
            "TRACE_ID', or '--service NAME' for its latest trace (--list: its last --last N)."
        ),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    trace.add_argument(
        "source",
        nargs="?",
        default=None,
        metavar="FILE | TRACE_ID",
        help="the JSON-lines span file; with --jaeger, the trace id (optional with --service)",
    )
    trace.add_argument(
        "--jaeger",
        default=None,
        metavar="URL",
        help="read from the Jaeger query API at URL (e.g. http://localhost:16686)",
    )
    trace.add_argument(
        "--service",
        default=None,
        metavar="NAME",
        help="with --jaeger: the service whose latest traces to read",
    )
    trace.add_argument(
        "--last",
        type=_count,
        default=20,
        metavar="N",
        help="with --service: how many of its latest traces to read (default 20)",
    )
    trace.add_argument(
        "--lookback",
        type=_duration("--lookback"),
        default=3600.0,
        metavar="DURATION",
        help="with --service: how far back to look (default 1h)",
    )
    trace.add_argument(
        "--trace-id",
        default=None,
        help="the trace to show, or a unique prefix of its id (default: the latest)",
    )
    trace.add_argument(
        "--list", action="store_true", help="list the traces (in the file, or of --service)"
    )
    trace.add_argument(
        "--all-spans",
        action="store_true",
        help="also show the mcp SDK's own transport spans",
    )
    trace.add_argument("--json", action="store_true", help="print JSON instead of the tree")
    trace.add_argument(
        "--timeout",
        type=_duration("--timeout"),
        default=10.0,
        metavar="DURATION",
        help="with --jaeger: timeout of the request (default 10s)",
    )

    add_ps_parser(sub)

    sub.add_parser(
        CHAOS,
        help="run the chaos MCP server (HTTP or stdio) to test your own ops against",
        description="Run the chaos MCP server; see 'hangguard chaos-mcp --help'.",
        add_help=False,
    )
    return parser


def _chaos(argv: list[str]) -> int:
    try:
        from ..mcp._chaos._server import main as chaos_main
    except ImportError as exc:
        print(
            f"hangguard chaos-mcp needs the 'mcp' extra ({exc}): {pip_install('mcp')}",
            file=sys.stderr,
        )
        return 1
    return chaos_main(argv, prog=f"hangguard {CHAOS}")


def run(argv: list[str]) -> int:
    """Parse ``argv`` and run the subcommand; returns the exit status."""
    if argv and argv[0] == CHAOS:
        # Its own parser owns every flag, --help included.
        return _chaos(argv[1:])
    args = build_parser().parse_args(argv)
    # Imported here, not at the top: the parser (and so every --help) needs no rich.
    from rich.console import Console

    from ._tree import MCP_SDK_SCOPE

    # No markup or emoji codes: tool results, errors and paths are shown as they are.
    out = Console(highlight=False, markup=False, emoji=False)
    err = Console(stderr=True, highlight=False, markup=False, emoji=False, soft_wrap=True)
    if not out.is_terminal:
        out.width = max(out.width, 160)  # piped: keep each tree line whole
    if args.command == "config":
        from ._config_cmd import print_config

        return print_config(out, err, as_json=args.json)
    if args.command == "doctor":
        from ._doctor import run_doctor

        return run_doctor(
            out,
            endpoint=args.endpoint,
            protocol=args.protocol,
            jaeger_url=args.jaeger_url,
            timeout=args.timeout,
            as_json=args.json,
            imports=args.imports,
        )
    if args.command == "ps":
        from ._ps_cmd import run_ps

        return run_ps(out, err, args.pid, as_json=args.json)
    if args.command == "trace":
        from ._trace_cmd import show_jaeger_trace, show_trace_file

        hide = () if args.all_spans else (MCP_SDK_SCOPE,)
        if args.jaeger is not None:
            return show_jaeger_trace(
                out,
                err,
                args.jaeger,
                trace_id=args.source or args.trace_id,
                service=args.service,
                last=args.last,
                lookback_s=args.lookback,
                list_only=args.list,
                hide_scopes=hide,
                as_json=args.json,
                timeout=args.timeout,
            )
        if args.source is None:
            err.print("error: hangguard trace needs a FILE, or --jaeger URL (see --help)")
            return EXIT_USAGE
        return show_trace_file(
            out,
            err,
            args.source,
            trace_id=args.trace_id,
            list_only=args.list,
            hide_scopes=() if args.all_spans else (MCP_SDK_SCOPE,),
            as_json=args.json,
        )
    try:
        from ._demo import run_demo
    except ImportError as exc:
        err.print(
            f"hangguard demo needs the MCP client and the OpenTelemetry SDK ({exc}); "
            f"install them with: {pip_install('all')}"
        )
        return 1
    return run_demo(args, out, err)
