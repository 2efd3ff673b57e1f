"""The ``hangguard`` command: ``demo``, ``config``, ``doctor`` and ``chaos-mcp``.

It lives behind the ``cli`` extra (rich). The entry point checks for rich before it
imports anything else, so an install without the extra gets a one-line answer telling
how to add it instead of a traceback::

    $ pip install 'hangguard[cli]'
    $ hangguard demo
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

__all__ = ["INSTALL_HINT", "main"]

#: What the command prints when rich is missing.
INSTALL_HINT = (
    "The hangguard command needs the 'cli' extra. Install it with:\n"
    "\n"
    "    pip install 'hangguard[cli]'\n"
    "\n"
    "or everything (MCP client, OTLP exporters and the command): pip install 'hangguard[all]'"
)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``hangguard`` command with ``argv`` (default: ``sys.argv[1:]``).

    Returns the exit status: 0 on success, 1 when a check or the demo found a real
    problem, 2 on bad usage or configuration::

        raise SystemExit(main(["config", "--json"]))
    """
    try:
        import rich  # noqa: F401
    except ImportError:
        print(INSTALL_HINT, file=sys.stderr)
        return 1
    from ._app import run

    try:
        return run(list(sys.argv[1:] if argv is None else argv))
    except KeyboardInterrupt:
        # Ctrl-C ends the command, quietly, with the shell's status for SIGINT.
        print(file=sys.stderr)
        return 130
