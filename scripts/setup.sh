#!/usr/bin/env bash
# Install what fdsl needs on a Debian machine and create .venv with fdsl in it.
# Idempotent and quick when nothing changed: apt only for missing packages, pip only
# when pyproject.toml (or the Python) differs from the last successful install
# (a stamp in .venv).  Quiet: pip's output is shown only when it fails.
# Also byte-compiles fdsl (a start-up cost otherwise paid by every command where
# PYTHONDONTWRITEBYTECODE is set) and, as root, links the mount helper that
# `mount -t fuse.fdsl` and fstab lines need (/usr/local/sbin/fdsl).
set -euo pipefail
cd "$(dirname "$0")/.."

# systemd: journald and journalctl, for -o log=journal and its tests
APT_PACKAGES=(fuse3 libfuse3-dev pkg-config clang llvm python3-venv python3-dev gcc bindfs fio
              systemd)

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
# The man pages: an editable install skips data files, so link them into the venv, where
# man(1) finds them once .venv/bin is on PATH (man-db looks beside each PATH entry).
for page in man/fdsl.1 man/fdsl-language.7; do
    dir=.venv/share/man/man${page##*.}
    [ -e "$dir/${page#man/}" ] || { mkdir -p "$dir" && ln -sfn "$PWD/$page" "$dir/"; }
done

# Bytecode for fdsl's own modules (pip compiled the dependencies); quick when current.
.venv/bin/python -m compileall -q fdsl runtime grammar >/dev/null || true

# mount(8) runs mount.fuse3, which runs `fdsl` from root's standard PATH: link ours into
# /usr/local/sbin if nothing is there, or only a link to this venv or to a removed one.
# (FDSL_HELPER_DIR: another directory, for the test of this step.)
helper_note=""
if [ "$(id -u)" -eq 0 ]; then
    helper_dir=${FDSL_HELPER_DIR:-/usr/local/sbin}
    helper=$helper_dir/fdsl
    ours="$PWD/.venv/bin/fdsl"
    current=$(readlink "$helper" 2>/dev/null || true)
    if [ "$current" = "$ours" ]; then
        helper_note=", mount helper $helper"
    elif { [ ! -e "$helper" ] && [ ! -L "$helper" ]; } || \
         { [ -L "$helper" ] && [ ! -e "$helper" ] && [[ "$current" == */.venv/bin/fdsl ]]; }; then
        mkdir -p "$helper_dir"
        ln -sfn "$ours" "$helper"
        helper_note=", mount helper $helper -> $ours (for mount -t fuse.fdsl)"
    else
        helper_note=", mount helper $helper left as it is (${current:-not a link}: not this venv's)"
    fi
fi
echo "setup: ready ($(.venv/bin/fdsl --version)$helper_note)"
