"""The editor syntax files know every keyword of the grammar."""
from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
EDITORS = ROOT / "editors"


def grammar_keywords() -> set[str]:
    text = re.sub(r"//[^\n]*", "", (ROOT / "grammar" / "fdsl.lark").read_text())
    return set(re.findall(r'"([a-z_]+)"', text))


def test_vim_syntax_lists_every_keyword():
    words = set()
    for line in (EDITORS / "vim" / "syntax" / "fdsl.vim").read_text().splitlines():
        if line.startswith("syn keyword") and "contained" not in line:
            words.update(line.split()[3:])
    assert grammar_keywords() <= words, sorted(grammar_keywords() - words)


def test_textmate_grammar_is_valid_json_and_lists_every_keyword():
    grammar = json.loads((EDITORS / "textmate" / "fdsl.tmLanguage.json").read_text())
    assert grammar["scopeName"] == "source.fdsl"
    words: set[str] = set()
    for rule in grammar["repository"]["keywords"]["patterns"] + \
            grammar["repository"]["constants"]["patterns"]:
        re.compile(rule["match"])
        group = re.search(r"\((.*)\)", rule["match"])
        if group and re.fullmatch(r"[a-z_|]+", group.group(1)):
            words.update(group.group(1).split("|"))
    assert grammar_keywords() <= words, sorted(grammar_keywords() - words)
