#!/usr/bin/env bash
# Run the README's test command (`python -m pytest`) on the other Pythons hangguard
# supports, one after another: 3.12 from pyenv, 3.13 from Debian trixie, 3.14 from Debian
# sid (see docs/python-versions.md). Each interpreter gets its venv with this checkout
# installed (-e '.[test]') from scripts/pyenv-python.sh or scripts/debian-python.sh, which
# build and cache it. The host's builds are shared through the same variables as the main
# run: HANGGUARD_JAEGER_BIN, HANGGUARD_GATEWAY_BIN, HANGGUARD_COMPOSE_CHECK_BIN,
# HANGGUARD_FLOWLLM_PYTHON, HANGGUARD_FLOWLLM3_PYTHON and HANGGUARD_MCP_EVERYTHING (the
# chroot wrapper mounts them).
#
# Every version runs even when one fails; the exit status is non-zero if any failed. The
# time each one took is printed at the end.
#
# Usage:
#     bash scripts/other-pythons.sh              # 3.12 3.13 3.14
#     bash scripts/other-pythons.sh 3.14 -- -x   # one version, extra pytest arguments
set -euo pipefail
cd "$(dirname "$0")/.."

versions=()
while [[ $# -gt 0 && "$1" != "--" ]]; do
	versions+=("$1")
	shift
done
[[ "${1:-}" == "--" ]] && shift
[[ ${#versions[@]} -gt 0 ]] || versions=(3.12 3.13 3.14)

say() { printf 'other-pythons: %s\n' "$*" >&2; }

interpreter() {
	case "$1" in
	3.12) bash scripts/pyenv-python.sh 3.12 | tail -n 1 ;;
	3.13) bash scripts/debian-python.sh trixie python3.13 | tail -n 1 ;;
	3.14) bash scripts/debian-python.sh sid python3.14 | tail -n 1 ;;
	*)
		say "no recipe for Python $1 (known: 3.12 3.13 3.14)"
		return 2
		;;
	esac
}

summary=()
failed=0
for version in "${versions[@]}"; do
	echo "== tests on Python $version"
	start=$SECONDS
	if ! py="$(interpreter "$version")"; then
		summary+=("$version: no interpreter (see above)")
		failed=1
		continue
	fi
	built=$((SECONDS - start))
	start=$SECONDS
	status=0
	"$py" -m pytest "$@" || status=$?
	took=$((SECONDS - start))
	if [[ $status -eq 0 ]]; then
		summary+=("$version: passed in ${took} s (interpreter and venv ready in ${built} s)")
	else
		summary+=("$version: FAILED (pytest exit $status) after ${took} s")
		failed=1
	fi
done
echo "== other Pythons"
printf '  %s\n' "${summary[@]}"
exit "$failed"
