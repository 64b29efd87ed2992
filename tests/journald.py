"""A real systemd-journald for tests, in a journal namespace of its own.

`systemd-journald NAMESPACE` runs standalone (no systemd as PID 1 needed): it
listens on /run/systemd/journal.NAMESPACE/socket and keeps its files apart
from the system journal, where `journalctl --namespace=NAMESPACE` reads them.
The fixture stops it and removes its socket directory and journal files.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

CANDIDATES = ("/lib/systemd/systemd-journald", "/usr/lib/systemd/systemd-journald")


@dataclass
class Journal:
    namespace: str
    socket: Path

    def entries(self, *matches: str) -> list[dict]:
        proc = subprocess.run(["journalctl", f"--namespace={self.namespace}", "-o", "json",
                               "--no-pager", *matches], capture_output=True, text=True,
                              timeout=30)
        assert proc.returncode in (0, 1), proc.stderr     # 1: no entries yet
        return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]

    def wait_for(self, predicate, *matches: str, timeout: float = 20) -> list[dict]:
        """Entries matching `matches` once one satisfies `predicate` (journald writes
        asynchronously); the last read if none did in time."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.entries(*matches)
            if any(predicate(e) for e in found) or time.monotonic() > deadline:
                return found
            time.sleep(0.2)


def _machine_id() -> str:
    try:
        return Path("/etc/machine-id").read_text().strip()
    except OSError:
        return ""


@pytest.fixture
def journald():
    binary = next((c for c in CANDIDATES if os.access(c, os.X_OK)), None)
    assert binary is not None, ("systemd-journald is missing (apt package systemd, which "
                                "scripts/setup.sh installs)")
    namespace = f"fdsltest{uuid.uuid4().hex[:12]}"
    sock = Path(f"/run/systemd/journal.{namespace}/socket")
    proc = subprocess.Popen([binary, namespace], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while not sock.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sock.exists(), f"systemd-journald {namespace} did not start ({proc.poll()})"
        yield Journal(namespace, sock)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(sock.parent, ignore_errors=True)
        mid = _machine_id()
        if mid:
            for base in ("/var/log/journal", "/run/log/journal"):
                shutil.rmtree(f"{base}/{mid}.{namespace}", ignore_errors=True)
