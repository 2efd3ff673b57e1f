#!/usr/bin/env bash
# Build the Jaeger v2 binary the end-to-end tests run, once, and print its path.
#
# Jaeger v2 is itself an OpenTelemetry Collector distribution, so the same binary runs both
# collector/jaeger.yaml (Jaeger with in-memory storage) and collector/otel-collector.yaml (the
# collector tier), and the tests exercise the very files users deploy. No Docker is needed:
# the binary is built from the Go module with the machine's Go toolchain.
#
# 1. The pinned commit of release v2.20.0 is tried first with `go install` (the module has no
#    /v2 path suffix, so a v2.x tag cannot be named; the commit can).
# 2. If the module proxy refuses it, release v1.76.0 (tagged v2.13.0 on the same commit) is
#    built from its module source. `go install` cannot build it because its go.mod has a
#    replace directive; building inside a copy of the module makes it the main module, so
#    the replace is honoured.
#
# The binary is cached outside the repository, keyed by version, so later runs reuse it:
#     ${HANGGUARD_CACHE_DIR:-$HOME/.cache/hangguard}/jaeger/jaeger-<version>
# Progress goes to stderr, at least every $HANGGUARD_BUILD_PROGRESS_S seconds (default 30)
# while a step runs: how long it has run and what it is doing (the package go compiled last).
# The last line on stdout is the binary's path. Exits non-zero, with what the module proxy
# answered, when neither build works.
#
# A cold build takes 10-15 minutes on a 2-core machine (the fallback source build compiles
# about a thousand packages); a cached one returns at once.
#
# Usage:
#     HANGGUARD_JAEGER_BIN="$(scripts/build-jaeger.sh | tail -n 1)"
set -euo pipefail

readonly MODULE="github.com/jaegertracing/jaeger"
readonly PINNED_COMMIT="798e4b0fcf22609e381df764a01461affd813e1e" # release v2.20.0
readonly PINNED_NAME="v2.20.0-${PINNED_COMMIT:0:12}"
readonly FALLBACK_VERSION="v1.76.0" # the same commit as v2.13.0
readonly FALLBACK_V2="v2.13.0"

cache_dir="${HANGGUARD_CACHE_DIR:-$HOME/.cache/hangguard}/jaeger"
pinned_bin="$cache_dir/jaeger-$PINNED_NAME"
fallback_bin="$cache_dir/jaeger-$FALLBACK_VERSION"

say() { printf 'build-jaeger: %s\n' "$*" >&2; }

usable() {
	[[ -x "$1" ]] && "$1" --help >/dev/null 2>&1
}

# run_step LOG WHAT CMD...: run CMD with its output in LOG and, every progress_s seconds
# until it ends, say how long WHAT has run and the last line CMD wrote (with `go build -v`,
# the package it compiled last) and how many lines so far. Returns CMD's status.
progress_s="${HANGGUARD_BUILD_PROGRESS_S:-30}"
run_step() {
	local log="$1" what="$2"
	shift 2
	local start=$SECONDS
	"$@" >>"$log" 2>&1 &
	local pid=$!
	while ! wait_for "$pid" "$progress_s"; do
		local last lines
		last="$(tail -n 1 "$log" 2>/dev/null | cut -c1-100)"
		lines="$(wc -l <"$log" 2>/dev/null || echo 0)"
		say "$what: $((SECONDS - start)) s so far, ${lines// /} lines of output, last: ${last:-(none yet)}"
	done
	wait "$pid"
}

# wait_for PID SECONDS: true once PID has ended, false when SECONDS pass first.
wait_for() {
	local pid="$1" ticks=$(($2 * 10))
	while ((ticks > 0)); do
		kill -0 "$pid" 2>/dev/null || return 0
		sleep 0.1
		ticks=$((ticks - 1))
	done
	! kill -0 "$pid" 2>/dev/null
}

if usable "$pinned_bin"; then
	say "using cached $PINNED_NAME"
	printf '%s\n' "$pinned_bin"
	exit 0
fi

if ! command -v go >/dev/null 2>&1; then
	if usable "$fallback_bin"; then
		say "go is not on PATH; using cached $FALLBACK_VERSION ($FALLBACK_V2)"
		printf '%s\n' "$fallback_bin"
		exit 0
	fi
	say "go is not on PATH and no Jaeger binary is cached in $cache_dir"
	exit 1
fi

mkdir -p "$cache_dir"
# Two test sessions may start at once; only one of them builds.
exec 9>"$cache_dir/.lock"
if command -v flock >/dev/null 2>&1; then
	flock 9
fi

work="$(mktemp -d "$cache_dir/.build.XXXXXX")"
cleanup() { chmod -R u+w "$work" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

# 1. The pinned commit.
pinned_log="$work/pinned.log"
say "trying go install $MODULE/cmd/jaeger@$PINNED_COMMIT"
if run_step "$pinned_log" "go install of the pinned commit" \
	env GOBIN="$work/bin" go install -trimpath "$MODULE/cmd/jaeger@$PINNED_COMMIT"; then
	mv -f "$work/bin/jaeger" "$pinned_bin"
	say "built $PINNED_NAME (go install of the pinned commit)"
	printf '%s\n' "$pinned_bin"
	exit 0
fi
say "the pinned commit could not be installed; go said:"
sed 's/^/    /' "$pinned_log" >&2
if grep -q "403\|not available" "$pinned_log"; then
	say "(expected: the module proxy does not serve this module's v2.x commits, so the same Jaeger v2 is built from the $FALLBACK_VERSION module source instead)"
fi

# 2. The fallback release, built from its module source.
if usable "$fallback_bin"; then
	say "using cached $FALLBACK_VERSION ($FALLBACK_V2), built from module source"
	printf '%s\n' "$fallback_bin"
	exit 0
fi

say "falling back to a source build of $MODULE@$FALLBACK_VERSION ($FALLBACK_V2)"
fallback_log="$work/fallback.log"
download_log="$work/download.json"
if ! run_step "$download_log" "go mod download $MODULE@$FALLBACK_VERSION" \
	go mod download -json "$MODULE@$FALLBACK_VERSION"; then
	say "go mod download $MODULE@$FALLBACK_VERSION failed too:"
	sed 's/^/    /' "$download_log" >&2
	exit 1
fi
module_json="$(cat "$download_log")"
module_dir="$(printf '%s\n' "$module_json" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')"
if [[ -z "$module_dir" || ! -d "$module_dir" ]]; then
	say "go mod download gave no module directory:"
	printf '%s\n' "$module_json" | sed 's/^/    /' >&2
	exit 1
fi

cp -R "$module_dir" "$work/src"
chmod -R u+w "$work/src"
say "go build ./cmd/jaeger in a copy of $module_dir (10-15 minutes on a 2-core machine; progress every $progress_s s)"
build_start=$SECONDS
if ! run_step "$fallback_log" "go build ./cmd/jaeger" \
	bash -c 'cd "$1" && exec go build -v -trimpath -ldflags "-X $2/internal/version.latestVersion=$3" -o "$4" ./cmd/jaeger' \
	_ "$work/src" "$MODULE" "$FALLBACK_V2" "$work/jaeger"; then
	say "the source build of $FALLBACK_VERSION failed (the last 80 lines of go's output):"
	tail -n 80 "$fallback_log" | sed 's/^/    /' >&2
	exit 1
fi
mv -f "$work/jaeger" "$fallback_bin"
say "built $FALLBACK_VERSION ($FALLBACK_V2) from module source in $((SECONDS - build_start)) s"
printf '%s\n' "$fallback_bin"
