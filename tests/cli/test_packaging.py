"""The wheel must carry every package, and the grammar as package data.

`pyproject.toml` lists packages explicitly (the `runtime/` and `grammar/`
folders are mapped to `fdsl.runtime` and `fdsl.grammar`), so a new
subpackage that is not listed would work in an editable install and be
missing from a wheel.
"""
from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent


def test_every_package_directory_is_listed_in_pyproject():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    folders = {name: ROOT / path for name, path in config["package-dir"].items()}
    found = set()
    for package, folder in folders.items():
        for init in folder.rglob("__init__.py"):
            relative = init.parent.relative_to(folder).parts
            found.add(".".join((package, *relative)))
    assert found <= listed, f"packages missing from pyproject.toml: {sorted(found - listed)}"


def test_grammar_is_package_data():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "*.lark" in config["package-data"]["fdsl.grammar"]
    assert (ROOT / "grammar" / "fdsl.lark").is_file()


def test_sdist_carries_what_its_tests_need(tmp_path):
    """Build the sdist with the real backend; it must hold the tests and their inputs."""
    import subprocess
    import sys
    import tarfile

    code = ("import sys; from setuptools import build_meta; "
            "print(build_meta.build_sdist(sys.argv[1]))")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    name = proc.stdout.strip().splitlines()[-1]
    with tarfile.open(tmp_path / name) as tar:
        members = {m.name.split("/", 1)[1] for m in tar.getmembers() if "/" in m.name}
    needed = ["LICENSE", "README.md", "grammar/fdsl.lark", "docs/language.md", "man/fdsl.1",
              "man/fdsl-language.7", "tests/conftest.py", "tests/mounting.py",
              "tests/c/fuse_bpf.h", "examples/hide_secrets.fdsl", "scripts/setup.sh"]
    needed += [str(p.relative_to(ROOT)) for p in (ROOT / "tests" / "golden").iterdir()][:5]
    missing = [n for n in needed if n not in members]
    assert not missing, f"sdist lacks {missing}"
    assert not [m for m in members if "__pycache__" in m or m.endswith(".pyc")]


def test_license_file_is_the_declared_license():
    text = (ROOT / "LICENSE").read_text()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "GPL-2.0-only" and project["license-files"] == ["LICENSE"]
    assert "GNU GENERAL PUBLIC LICENSE" in text and "Version 2, June 1991" in text


def test_plain_checkout_imports_the_mapped_subpackages():
    """Without the install (no site, so no editable finder) fdsl.runtime and fdsl.grammar
    still resolve from the repo root."""
    import subprocess
    import sys

    code = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); "
            "import fdsl.runtime.mounttable, fdsl.grammar; print(fdsl.runtime.mounttable.__file__)")
    proc = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(ROOT / "runtime" / "mounttable.py")
