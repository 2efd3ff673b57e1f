#!/usr/bin/env bash
# Build the separate virtual environment in which hangguard is checked against the real
# flowllm 0.2 (BaseOp thread fan-out, BaseAsyncOp, BaseRayOp), and print its python.
#
# flowllm 0.2 pins its own MCP stack (fastmcp), LLM SDKs and pandas, so it gets a venv of
# its own instead of the test environment: the flowllm tests run their op code in this
# interpreter as a subprocess. The venv is cached outside the repository, keyed by the
# versions below, so later runs reuse it:
#     ${HANGGUARD_CACHE_DIR:-$HOME/.cache/hangguard}/flowllm-<version>/
# Progress goes to stderr; the last line on stdout is the interpreter's path.
#
# Usage:
#     HANGGUARD_FLOWLLM_PYTHON="$(bash scripts/flowllm-env.sh | tail -n 1)"
set -euo pipefail

readonly FLOWLLM_VERSION="0.2.0.10"
readonly RAY_SPEC="ray>=2.40"
repo="$(cd "$(dirname "$0")/.." && pwd)"
venv="${HANGGUARD_CACHE_DIR:-$HOME/.cache/hangguard}/flowllm-$FLOWLLM_VERSION"
py="$venv/bin/python"

say() { printf 'flowllm-env: %s\n' "$*" >&2; }

if [[ -x "$py" ]] && "$py" -c "import flowllm, ray" >/dev/null 2>&1; then
	say "using cached $venv"
else
	mkdir -p "$(dirname "$venv")"
	exec 9>"$venv.lock"
	if command -v flock >/dev/null 2>&1; then
		flock 9
	fi
	if ! { [[ -x "$py" ]] && "$py" -c "import flowllm, ray" >/dev/null 2>&1; }; then
		say "creating $venv (flowllm $FLOWLLM_VERSION and its dependencies: a few minutes)"
		rm -rf "$venv"
		python3 -m venv "$venv"
		"$py" -m pip install --quiet --upgrade pip >&2
		"$py" -m pip install --progress-bar off "flowllm==$FLOWLLM_VERSION" "$RAY_SPEC" \
			"opentelemetry-sdk>=1.30" >&2
	fi
fi
# hangguard itself comes from the checkout (tests also put its src/ first on the path).
"$py" -m pip install --quiet --no-deps -e "$repo" >&2
"$py" -m pip install --quiet "opentelemetry-api>=1.30" "tenacity>=9.0" >&2
printf '%s\n' "$py"
