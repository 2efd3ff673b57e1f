#!/usr/bin/env bash
# Build the separate virtual environment in which hangguard is checked against the real
# flowllm 0.2 (BaseOp thread fan-out, BaseAsyncOp, BaseRayOp), or with "0.3" as argument
# against flowllm 0.3 (BaseStep, agentscope's model), and print its python.
#
# flowllm 0.2 pins its own MCP stack (fastmcp), LLM SDKs and pandas, so it gets a venv of
# its own instead of the test environment: the flowllm tests run their op code in this
# interpreter as a subprocess. The venv is cached outside the repository, keyed by the
# versions below, so later runs reuse it:
#     ${HANGGUARD_CACHE_DIR:-$HOME/.cache/hangguard}/flowllm-<version>/
# Progress goes to stderr; the last line on stdout is the interpreter's path.
#
# flowllm 0.3.0.0 imports `six` without declaring it (flowllm.utils imports tushare, whose
# modules import six): `import flowllm` fails with ModuleNotFoundError in a fresh venv, so
# the 0.3 venv installs six too.
#
# Usage:
#     HANGGUARD_FLOWLLM_PYTHON="$(bash scripts/flowllm-env.sh | tail -n 1)"
#     HANGGUARD_FLOWLLM3_PYTHON="$(bash scripts/flowllm-env.sh 0.3 | tail -n 1)"
set -euo pipefail

case "${1:-0.2}" in
0.2)
	readonly FLOWLLM_VERSION="0.2.0.10"
	# Ray for BaseRayOp; the check imports both.
	readonly EXTRA=("ray>=2.40")
	readonly PROBE="import flowllm, ray"
	;;
0.3)
	readonly FLOWLLM_VERSION="0.3.0.0"
	# six: see above. httpx: hangguard.http's transport goes to agentscope's OpenAI client.
	readonly EXTRA=("six" "httpx>=0.27")
	readonly PROBE="import flowllm, agentscope, six"
	;;
*)
	printf 'flowllm-env: unknown flowllm series %s (expected 0.2 or 0.3)\n' "$1" >&2
	exit 2
	;;
esac
repo="$(cd "$(dirname "$0")/.." && pwd)"
venv="${HANGGUARD_CACHE_DIR:-$HOME/.cache/hangguard}/flowllm-$FLOWLLM_VERSION"
py="$venv/bin/python"

say() { printf 'flowllm-env: %s\n' "$*" >&2; }

if [[ -x "$py" ]] && "$py" -c "$PROBE" >/dev/null 2>&1; then
	say "using cached $venv"
else
	mkdir -p "$(dirname "$venv")"
	exec 9>"$venv.lock"
	if command -v flock >/dev/null 2>&1; then
		flock 9
	fi
	if ! { [[ -x "$py" ]] && "$py" -c "$PROBE" >/dev/null 2>&1; }; then
		say "creating $venv (flowllm $FLOWLLM_VERSION and its dependencies: a few minutes)"
		rm -rf "$venv"
		python3 -m venv "$venv"
		"$py" -m pip install --quiet --upgrade pip >&2
		"$py" -m pip install --progress-bar off "flowllm==$FLOWLLM_VERSION" "${EXTRA[@]}" \
			"opentelemetry-sdk>=1.30" >&2
	fi
fi
# hangguard itself comes from the checkout (tests also put its src/ first on the path).
"$py" -m pip install --quiet --no-deps -e "$repo" >&2
"$py" -m pip install --quiet "opentelemetry-api>=1.30" "tenacity>=9.0" >&2
printf '%s\n' "$py"
