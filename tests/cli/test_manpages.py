"""The man pages are generated (fdsl.manpage) and the committed ones are current."""
from __future__ import annotations

import argparse
import shutil
import subprocess

import pytest

from fdsl import manpage
from fdsl.commands import mount_options


def test_committed_pages_are_current():
    for name, text in manpage.generate().items():
        path = manpage.MAN_DIR / name
        assert path.exists() and path.read_text() == text, \
            f"man/{name} is out of date: run .venv/bin/python -m fdsl.manpage"


def test_command_page_covers_every_command_and_mount_option():
    from fdsl.cli import build_parser

    page = manpage.command_page()
    for name, _, sub in manpage._subcommands(build_parser()):
        assert f".SS {manpage.escape(name)}\n" in page
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            for opt in action.option_strings:
                assert manpage.escape(opt) in page, (name, opt)
    for opt in mount_options.OPTIONS:
        assert manpage.escape(opt.synopsis()) in page


def test_language_page_has_every_section_of_the_doc():
    doc = manpage.LANGUAGE_DOC.read_text()
    page = manpage.language_page()
    for line in doc.splitlines():
        if line.startswith("## "):
            assert ".SH " + manpage.escape(line[3:].upper()) in page


@pytest.mark.skipif(shutil.which("groff") is None, reason="needs groff (man-db)")
@pytest.mark.parametrize("name", sorted(manpage.PAGES))
def test_pages_render_without_warnings(name):
    proc = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z",
                           str(manpage.MAN_DIR / name)], capture_output=True, text=True)
    assert proc.returncode == 0 and not proc.stderr, proc.stderr
