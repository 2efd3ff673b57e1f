#!/usr/bin/env bash
# Install the TypeScript reference MCP server "server-everything" with npm into a cache
# outside the repository, and print the path of its entry script (run it with node).
#
# The MCP tests run it as a third-party peer (it answers a stale session with HTTP 400,
# not the spec's 404). The install is cached, keyed by the version below:
#     ${HANGGUARD_CACHE_DIR:-$HOME/.cache/hangguard}/server-everything-<version>/
# Progress goes to stderr; the last line on stdout is the entry script's path.
#
# Usage:
#     HANGGUARD_MCP_EVERYTHING="$(bash scripts/mcp-everything.sh | tail -n 1)"
set -euo pipefail

readonly VERSION="2026.8.31"
readonly PACKAGE="@modelcontextprotocol/server-everything"
dir="${HANGGUARD_CACHE_DIR:-$HOME/.cache/hangguard}/server-everything-$VERSION"
entry="$dir/node_modules/$PACKAGE/dist/index.js"

say() { printf 'mcp-everything: %s\n' "$*" >&2; }

command -v npm >/dev/null 2>&1 || { say "npm is missing (install Node.js 20+)"; exit 1; }
if [[ -f "$entry" ]]; then
	say "using cached $dir"
else
	mkdir -p "$dir"
	exec 9>"$dir.lock"
	if command -v flock >/dev/null 2>&1; then
		flock 9
	fi
	if [[ ! -f "$entry" ]]; then
		say "installing $PACKAGE@$VERSION into $dir"
		npm install --prefix "$dir" --no-audit --no-fund --loglevel=error \
			"$PACKAGE@$VERSION" >&2
	fi
fi
[[ -f "$entry" ]] || { say "no $entry after the install"; exit 1; }
printf '%s\n' "$entry"
