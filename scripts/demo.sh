#!/usr/bin/env bash
# Set up (see setup.sh), then the main job: compile the example policies, and
# mount a small sample tree through examples/hide_secrets.fdsl to show what
# the filters do.  Mounting needs /dev/fuse (and root, or fusermount3).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
FDSL=.venv/bin/fdsl

work=$(mktemp -d -t fdsl-demo.XXXXXX)
mnt="$work/view"
cleanup() {
    if mountpoint -q "$mnt" 2>/dev/null; then
        "$FDSL" umount "$mnt" 2>/dev/null || fusermount3 -u "$mnt" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

show() { printf '\n$ %s\n' "$*"; "$@" 2>&1 || true; }
show_sh() { printf '\n$ %s\n' "$1"; sh -c "$1" 2>&1 || true; }

echo "== compiling every example policy"
for policy in examples/*.fdsl; do
    out="$work/$(basename "${policy%.fdsl}").bpf.o"
    "$FDSL" compile "$policy" -o "$out"
    printf '  %-32s -> %s (%s bytes)\n' "$policy" "$(basename "$out")" "$(stat -c %s "$out")"
done

echo
echo "== the policy's own test blocks, run through the compiled object"
"$FDSL" test examples/hide_secrets.fdsl

echo
echo "== what the hide_secrets policy does, per opcode and phase"
"$FDSL" explain examples/hide_secrets.fdsl

if [ ! -e /dev/fuse ]; then
    echo "no /dev/fuse here: skipping the mount part of the demo"
    exit 0
fi

echo
echo "== a sample tree, mounted through examples/hide_secrets.fdsl"
data="$work/data"
mkdir -p "$data/src" "$data/.git" "$mnt"
echo "hello from a.txt" > "$data/a.txt"
echo "API_TOKEN=do-not-leak" > "$data/.env"
echo "-----BEGIN PRIVATE KEY-----" > "$data/src/server.key"
echo "print('hi')" > "$data/src/main.py"
echo "ref: refs/heads/main" > "$data/.git/HEAD"

show "$FDSL" mount examples/hide_secrets.fdsl "$data" "$mnt"
show ls -la "$data"
show ls -la "$mnt"
show ls "$mnt/src"
show cat "$mnt/a.txt"
show cat "$mnt/.env"
show cat "$mnt/src/server.key"
show touch "$mnt/new.key"
show_sh "echo written-through > '$mnt/notes.txt' && cat '$data/notes.txt'"
show "$FDSL" stats "$mnt"
show "$FDSL" umount "$mnt"
echo
echo "demo finished"
