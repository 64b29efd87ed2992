#!/usr/bin/env bash
# Install what fdsl needs on a Debian machine and create .venv with fdsl in it.
# Idempotent and quick when nothing changed: apt only for missing packages, pip only
# when pyproject.toml (or the Python) differs from the last successful install
# (a stamp in .venv).  Quiet: pip's output is shown only when it fails.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(fuse3 libfuse3-dev pkg-config clang llvm python3-venv python3-dev gcc bindfs fio)

installed=$(dpkg-query -W -f='${Package} ${Status}\n' "${APT_PACKAGES[@]}" 2>/dev/null \
            | awk '$NF == "installed" {print $1}' || true)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    grep -qx "$pkg" <<<"$installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    echo "setup: installing ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
stamp=.venv/.fdsl-setup-stamp
want=$( (cat pyproject.toml; .venv/bin/python -V) | sha256sum | cut -d' ' -f1)
if [ ! -x .venv/bin/fdsl ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    log=$(mktemp -t fdsl-setup.XXXXXX)
    trap 'rm -f "$log"' EXIT
    if ! { .venv/bin/pip install -q --upgrade pip && \
           .venv/bin/pip install -q -e '.[test,bench]'; } >"$log" 2>&1; then
        cat "$log" >&2
        echo "setup: pip install failed" >&2
        exit 1
    fi
    echo "$want" > "$stamp"
fi
echo "setup: ready ($(.venv/bin/fdsl --version))"
