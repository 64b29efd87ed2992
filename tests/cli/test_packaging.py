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
