"""The ``hangguard`` command: ``demo``, ``config``, ``doctor`` and ``chaos-mcp``.

It lives behind the ``cli`` extra (rich). The entry point checks for rich before it
imports anything else, so an install without the extra gets a short answer telling how to
add it (the pip command for how hangguard was installed) instead of a traceback; the
help (``hangguard --help``, ``hangguard doctor --help``, ...) needs no extra::

    $ pip install 'hangguard[cli]'
    $ hangguard demo
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from .._hints import pip_install

__all__ = ["install_hint", "main"]


def install_hint() -> str:
    """What the command prints when rich is missing."""
    return (
        "The hangguard command needs the 'cli' extra. Install it with:\n"
        "\n"
        f"    {pip_install('cli')}\n"
        "\n"
        "or everything (MCP client, OTLP exporters and the command): "
        f"{pip_install('all')}"
    )


def _without_rich(argv: list[str]) -> int:
    """Help, ``--version`` and usage errors work without rich; a command gets the hint."""
    from ._app import CHAOS, build_parser, run

    if argv[:1] == [CHAOS]:
        return run(argv)  # it needs the mcp extra, not rich
    build_parser().parse_args(argv)  # --help / --version print and exit here
    print(install_hint(), file=sys.stderr)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``hangguard`` command with ``argv`` (default: ``sys.argv[1:]``).

    Returns the exit status: 0 on success, 1 when a check or the demo found a real
    problem, 2 on bad usage or configuration::

        raise SystemExit(main(["config", "--json"]))
    """
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        import rich  # noqa: F401
    except ImportError:
        return _without_rich(args)
    from ._app import run

    try:
        return run(args)
    except KeyboardInterrupt:
        # Ctrl-C ends the command, quietly, with the shell's status for SIGINT.
        print(file=sys.stderr)
        return 130
