#!/usr/bin/env bash
# Check docker-compose.yml with the Compose loader itself, and print the checker's path.
#
# No machine here runs Docker with images, so `docker compose up` cannot be tried. The
# checker in tools/compose-check/ (main.go, go.mod, go.sum) loads the compose file with
# github.com/compose-spec/compose-go/v2 v2.16.2, the loader `docker compose` is built on, for
# the default services and for each profile (two-tier), and fails when the file does not
# load, names a file that is missing (bind-mount source, config, secret, env_file), runs
# `--config` on a path nothing is mounted on, or sets an environment variable that no file
# mounted into the service reads as ${env:NAME} (the rule is in main.go's doc comment).
#
# The binary is built once and cached outside the repository, keyed by a hash of its
# sources, so a change to go.mod/go.sum/main.go rebuilds it (about a minute cold):
#     ${HANGGUARD_CACHE_DIR:-$HOME/.cache/hangguard}/compose-check/compose-check-<hash>
# Each fault is printed to stderr; exits non-zero when there is one, or when the build fails.
# On success the last line on stdout is the checker's path (tests/test_compose_check.py
# runs it as HANGGUARD_COMPOSE_CHECK_BIN against broken copies of the file).
#
# Usage:
#     HANGGUARD_COMPOSE_CHECK_BIN="$(scripts/check-compose.sh | tail -n 1)"
#     scripts/check-compose.sh path/to/docker-compose.yml
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
src="$here/../tools/compose-check"
compose_file="${1:-$here/../docker-compose.yml}"
cache_dir="${HANGGUARD_CACHE_DIR:-$HOME/.cache/hangguard}/compose-check"

say() { printf 'check-compose: %s\n' "$*" >&2; }

if ! command -v go >/dev/null 2>&1 && [[ -x /usr/local/go/bin/go ]]; then
	PATH="/usr/local/go/bin:$PATH"
fi

hash="$(cat "$src/go.mod" "$src/go.sum" "$src/main.go" | sha256sum | cut -c1-12)"
bin="$cache_dir/compose-check-$hash"

build() {
	if ! command -v go >/dev/null 2>&1; then
		say "go is not on PATH and $bin is not built"
		exit 1
	fi
	mkdir -p "$cache_dir"
	# Two sessions may start at once; only one of them builds.
	exec 9>"$cache_dir/.lock"
	if command -v flock >/dev/null 2>&1; then
		flock 9
	fi
	if [[ -x "$bin" ]]; then
		return
	fi

	tmp="$(mktemp "$cache_dir/.build.XXXXXX")"
	trap 'rm -f "${tmp:-}"' EXIT
	say "go $(go env GOVERSION): building tools/compose-check"
	# -mod=readonly: go.sum is the committed one, never rewritten by a build.
	if ! (cd "$src" && go build -mod=readonly -trimpath -buildvcs=false -o "$tmp" .) >&2; then
		say "go build failed (see above)"
		exit 1
	fi
	chmod +x "$tmp"
	mv -f "$tmp" "$bin"
	say "built $(basename "$bin")"
}

if [[ ! -x "$bin" ]]; then
	build
fi

compose_dir="$(cd "$(dirname "$compose_file")" && pwd)"
# Relative paths in the file are relative to its directory, as for `docker compose`.
if ! (cd "$compose_dir" && "$bin" -f "$(basename "$compose_file")") >&2; then
	say "$compose_file: docker compose would not start what it says (see above)"
	exit 1
fi
printf '%s\n' "$bin"
