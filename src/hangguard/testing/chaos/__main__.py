"""``python -m hangguard.testing.chaos``: run the chaos MCP server (see ``--help``)."""

import sys

from ...mcp._chaos._server import main

sys.exit(main())
