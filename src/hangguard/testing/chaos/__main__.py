"""``python -m hangguard.testing.chaos``: run the chaos MCP server (see ``--help``)."""

import sys

from ...mcp._chaos._server import main

if __name__ == "__main__":
    sys.exit(main())
