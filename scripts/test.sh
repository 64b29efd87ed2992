#!/usr/bin/env bash
# Set up (see setup.sh) and run the whole test suite.  Mount tests need root
# and /dev/fuse; everything else runs anywhere.  The type check runs first.  pytest's exit code 5 ("no
# tests collected") counts as a failure.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 1
# Shipped policies are in the canonical layout (fdsl fmt) and the man pages are current.
.venv/bin/fdsl fmt --check examples/*.fdsl bench/policies/*.fdsl || {
    echo "test.sh: run '.venv/bin/fdsl fmt' on the files above" >&2; exit 1; }
.venv/bin/python -m fdsl.manpage --check || exit 1
echo "test.sh: type check (mypy, config in pyproject.toml)"
.venv/bin/python -m mypy || { echo "test.sh: mypy found type errors: failing" >&2; exit 1; }
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
    echo "test.sh: pytest collected no tests: failing" >&2
    exit 1
fi
exit "$rc"
