#!/usr/bin/env bash
# Build a venv on one of pyenv's interpreters (e.g. 3.12) with this checkout installed
# (-e '.[test]'), and print its python.
#
# The machine image carries pyenv's builds of several Pythons (`pyenv versions`); the newest
# patch release of the asked-for minor version is used. The venv is cached outside the
# repository, keyed by that version, so later runs reuse it (only the editable install of
# the checkout is redone, so a fresh clone elsewhere points it at itself):
#     ${HANGGUARD_CACHE_DIR:-$HOME/.cache/hangguard}/pyenv-<version>/
# Progress goes to stderr; the last line on stdout is the interpreter's path.
#
# Usage:
#     PY312="$(bash scripts/pyenv-python.sh 3.12 | tail -n 1)"
set -euo pipefail

minor="${1:?usage: pyenv-python.sh <major.minor, e.g. 3.12>}"
repo="$(cd "$(dirname "$0")/.." && pwd)"

say() { printf 'pyenv-python: %s\n' "$*" >&2; }

if ! command -v pyenv >/dev/null 2>&1; then
	say "pyenv is not installed: no $minor here (see docs/python-versions.md for the Debian chroot)"
	exit 2
fi
versions="$(pyenv root)/versions"
version="$(ls "$versions" 2>/dev/null | grep -E "^${minor//./\\.}\.[0-9]+$" | sort -V | tail -n 1 || true)"
if [[ -z "$version" ]]; then
	say "pyenv has no $minor.x (pyenv versions lists: $(ls "$versions" | tr '\n' ' '))"
	exit 2
fi
base="$versions/$version/bin/python$minor"
venv="${HANGGUARD_CACHE_DIR:-$HOME/.cache/hangguard}/pyenv-$version"
py="$venv/bin/python"

mkdir -p "$(dirname "$venv")"
exec 9>"$venv.lock"
if command -v flock >/dev/null 2>&1; then
	flock 9
fi
if [[ ! -x "$py" ]]; then
	say "creating $venv on $base"
	"$base" -m venv "$venv"
	"$py" -m pip install --quiet --upgrade pip >&2
fi
say "installing the checkout (-e '.[test]') into $venv"
(cd "$repo" && "$py" -m pip install --quiet --progress-bar off -e '.[test]' >&2)
say "$("$py" -c 'import sys; print(sys.version.replace(chr(10), " "))')"
printf '%s\n' "$py"
