#!/usr/bin/env bash
# Build the collector that runs the gateway tier (collector/gateway.yaml), once, and print its
# path.
#
# The Jaeger v2 binary has tail_sampling but no loadbalancing exporter, so the gateway is the
# small distribution in collector/gateway/ (main.go, go.mod, go.sum): the OpenTelemetry
# Collector's own modules, every one at release v0.161.0 (v1.67.0 for the stable modules),
# fetched through the Go module proxy and built with `go build`. It also carries
# tail_sampling (it runs collector/sampler.yaml too) and file_storage (the gateway's queue on
# disk). go.mod needs Go 1.26. One requirement is not the release's own: the module proxy
# refuses github.com/aws/aws-sdk-go-v2/service/servicediscovery v1.48.0, which the
# loadbalancing exporter asks for ("This module version is not available"), so go.mod
# requires v1.49.0, the next minor release, which it serves.
#
# The binary is cached outside the repository, keyed by the release and a hash of the sources,
# so later runs reuse it and a change to go.mod/go.sum/main.go rebuilds it:
#     ${HANGGUARD_CACHE_DIR:-$HOME/.cache/hangguard}/gateway/hangguard-otelcol-<release>-<hash>
# A cold build compiles several hundred packages (10+ minutes on a 2-core machine); each one
# is printed to stderr as it is compiled. The last line on stdout is the binary's path. Exits
# non-zero, with what go said, when the build fails.
#
# Usage:
#     HANGGUARD_GATEWAY_BIN="$(scripts/build-gateway.sh | tail -n 1)"
set -euo pipefail

readonly RELEASE="v0.161.0"

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
src="$here/../collector/gateway"
cache_dir="${HANGGUARD_CACHE_DIR:-$HOME/.cache/hangguard}/gateway"

say() { printf 'build-gateway: %s\n' "$*" >&2; }

if ! command -v go >/dev/null 2>&1 && [[ -x /usr/local/go/bin/go ]]; then
	PATH="/usr/local/go/bin:$PATH"
fi

hash="$(cat "$src/go.mod" "$src/go.sum" "$src/main.go" | sha256sum | cut -c1-12)"
bin="$cache_dir/hangguard-otelcol-$RELEASE-$hash"

usable() {
	[[ -x "$1" ]] && "$1" --version >/dev/null 2>&1
}

if usable "$bin"; then
	say "using cached $(basename "$bin")"
	printf '%s\n' "$bin"
	exit 0
fi

if ! command -v go >/dev/null 2>&1; then
	say "go is not on PATH and $bin is not built"
	exit 1
fi

mkdir -p "$cache_dir"
# Two test sessions may start at once; only one of them builds.
exec 9>"$cache_dir/.lock"
if command -v flock >/dev/null 2>&1; then
	flock 9
fi
if usable "$bin"; then
	say "built meanwhile by another session: $(basename "$bin")"
	printf '%s\n' "$bin"
	exit 0
fi

tmp="$(mktemp "$cache_dir/.build.XXXXXX")"
trap 'rm -f "$tmp"' EXIT

say "go $(go env GOVERSION): downloading the modules of collector/gateway/go.mod"
(cd "$src" && go mod download) >&2
say "go build (collector $RELEASE); each package is printed as it is compiled"
start=$SECONDS
# -mod=readonly: go.sum is the committed one, never rewritten by a build.
if ! (cd "$src" && go build -mod=readonly -trimpath -buildvcs=false -v \
	-o "$tmp" .) 2>&1 | sed -u 's/^/  compiled /' >&2; then
	say "go build failed (see above)"
	exit 1
fi
if [[ ! -s "$tmp" ]]; then
	say "go build produced no binary (see above)"
	exit 1
fi
chmod +x "$tmp"
mv -f "$tmp" "$bin"
say "built $(basename "$bin") in $((SECONDS - start)) s"
printf '%s\n' "$bin"
