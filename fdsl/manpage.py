"""The man pages, generated so they cannot drift from the program.

fdsl(1) is built from the argparse parser (`fdsl.cli.build_parser`: every
command, argument and help text) and the `-o` table
(`fdsl.commands.mount_options`); fdsl-language(7) is docs/language.md
turned into roff.  `python -m fdsl.manpage` rewrites `man/`; a test fails
when the committed pages differ from what this module generates.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from fdsl import __version__

ROOT = Path(__file__).resolve().parent.parent
MAN_DIR = ROOT / "man"
LANGUAGE_DOC = ROOT / "docs" / "language.md"
PAGES = {"fdsl.1": "command", "fdsl-language.7": "language"}

FSTAB_TEXT = """\
mount(8) runs the helper of the fuse3 package, mount.fuse3, for the type
fuse.fdsl; it runs `fdsl BACKING MOUNTPOINT -o OPTIONS`, which is
`fdsl mount` with the policy given as -o policy=FILE.  The fdsl command
must be on the standard PATH for that (scripts/setup.sh, run as root, links
a virtual environment's bin/fdsl into /usr/local/sbin).
"""

FSTAB_EXAMPLES = """\
mount -t fuse.fdsl /srv/data /mnt/view -o policy=/etc/fdsl/view.fdsl,allow_other
# /etc/fstab
/srv/data  /mnt/view  fuse.fdsl  policy=/etc/fdsl/view.fdsl,allow_other,nofail  0  0
umount /mnt/view"""


# ------------------------------------------------------------------ roff

def escape(text: str) -> str:
    """Plain text -> roff: backslashes, hyphens, and a leading dot or quote."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return re.sub(r"^([.'])", r"\\&\1", text, flags=re.M)


def inline(md: str) -> str:
    """Markdown inline markup -> roff fonts (code and bold in bold, links as their text)."""
    out = []
    for part in re.split(r"(`[^`]*`)", md):
        if part.startswith("`") and part.endswith("`") and len(part) > 1:
            out.append("\\fB" + escape(part[1:-1]) + "\\fR")
            continue
        part = re.sub(r"\[([^\]]+)\]\([^)]+\)", r"\1", part)
        chunks = re.split(r"(\*\*[^*]+\*\*)", part)
        out.append("".join("\\fB" + escape(c[2:-2]) + "\\fR" if c.startswith("**")
                           else escape(c) for c in chunks))
    return "".join(out)


def preformatted(text: str) -> list[str]:
    return [".PP", ".RS 4", ".nf", *(escape(line) for line in text.splitlines()), ".fi", ".RE"]


# ------------------------------------------------------------------ fdsl(1)

def _subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, str, argparse.ArgumentParser]]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {a.dest: a.help or "" for a in action._choices_actions}
    return [(name, helps.get(name, ""), sub) for name, sub in action.choices.items()]


def _argument_lines(sub: argparse.ArgumentParser) -> list[str]:
    formatter = sub._get_formatter()
    lines: list[str] = []
    for action in sub._actions:
        if isinstance(action, argparse._HelpAction) or action.help == argparse.SUPPRESS:
            continue
        if action.option_strings:
            names = ", ".join(action.option_strings)
            if action.nargs != 0:
                names += " " + formatter._format_args(action, action.dest.upper())
        else:
            names = formatter._metavar_formatter(action, action.dest)(1)[0]
        help_text = formatter._expand_help(action) if action.help else ""
        lines += [".TP", "\\fB" + escape(names) + "\\fR", inline(help_text)]
    return lines


def _mount_option_lines() -> list[str]:
    from fdsl.commands import mount_options as mo

    lines: list[str] = []
    for group, title in ((mo.FDSL, "fdsl settings"), (mo.FUSE, "FUSE options"),
                         (mo.IGNORED, "accepted and ignored (fstab bookkeeping)")):
        lines += [".SS " + escape(title)]
        for opt in mo.OPTIONS:
            if opt.group != group:
                continue
            default = ""
            if opt.default is not None and opt.kind != mo.FLAG:
                shown = int(opt.default) if isinstance(opt.default, bool) else opt.default
                default = f" (default {shown})"
            lines += [".TP", "\\fB" + escape(opt.synopsis()) + "\\fR",
                      inline(opt.help + default)]
    lines += [".TP", "\\fBx\\-*\\fR", "options for other tools (systemd, gvfs), ignored"]
    return lines


def command_page() -> str:
    from fdsl.cli import EPILOG, build_parser

    parser = build_parser()
    commands = _subcommands(parser)
    out = [f'.TH FDSL 1 "" "fdsl {__version__}" "User Commands"', ".SH NAME",
           "fdsl \\- " + escape(parser.description or ""), ".SH SYNOPSIS", ".nf"]
    out += ["\\fBfdsl\\fR " + escape(sub.format_usage().strip().removeprefix("usage: fdsl "))
            for _, _, sub in commands]
    out += ["\\fBfdsl\\fR \\-\\-version", ".fi", ".SH COMMANDS"]
    for name, summary, sub in commands:
        out += [".SS " + escape(name), inline(summary[:1].upper() + summary[1:] + ".")]
        if sub.description:
            out += [".PP", inline(sub.description)]
        out += _argument_lines(sub)
    out += [".SH MOUNT OPTIONS",
            "Given as \\fB\\-o\\fR OPT[,OPT...] to \\fBfdsl mount\\fR, to mount(8), or in the "
            "options field of an fstab line.  A value that does not parse is a usage error "
            "(exit status 2)."]
    out += _mount_option_lines()
    out += [".SH MOUNTING WITH MOUNT(8) AND FSTAB", inline(" ".join(FSTAB_TEXT.split()))]
    out += preformatted(FSTAB_EXAMPLES)
    out += [".SH LOGS",
            inline("Policy `log` lines and daemon warnings go to stderr with `-f`; a detached "
                   "daemon writes them to a 0600 log file (default: next to its control socket; "
                   "`-o log_file=`), rotated at `-o log_size=` bytes with one old file kept. "
                   "`fdsl stats` shows its path, `fdsl stats --follow` tails it.")]
    out += [".SH EXIT STATUS", inline(" ".join(EPILOG.split("Run")[0].split()))]
    out += [".SH ENVIRONMENT", ".TP", "\\fBFDSL_CACHE\\fR",
            inline("the cache of parser tables (default /var/cache/fdsl for root, else "
                   "`$XDG_CACHE_HOME/fdsl`); `off` disables it"),
            ".TP", "\\fBFDSL_JIT_CACHE\\fR", inline("the JIT's object code cache; `off` disables it")]
    out += [".SH SEE ALSO", "fdsl\\-language(7), mount.fuse3(8), fusermount3(1), bindfs(1)"]
    return "\n".join(out) + "\n"


# ------------------------------------------------------------- fdsl-language(7)

def language_page(markdown: str | None = None) -> str:
    md = LANGUAGE_DOC.read_text(encoding="utf-8") if markdown is None else markdown
    out = [f'.TH FDSL\\-LANGUAGE 7 "" "fdsl {__version__}" "Miscellaneous"', ".SH NAME",
           "fdsl\\-language \\- the fdsl filter policy language"]
    lines = md.splitlines()
    i = 0
    paragraph: list[str] = []

    def flush() -> None:
        if paragraph:
            out.extend([".PP", inline(" ".join(paragraph))])
            paragraph.clear()

    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            flush()
            end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith("```")),
                       len(lines))
            out.extend(preformatted("\n".join(lines[i + 1:end])))
            i = end + 1
            continue
        if line.startswith("# "):
            flush()
            out.extend([".SH DESCRIPTION"])
        elif line.startswith("## "):
            flush()
            out.append(".SH " + escape(line[3:].upper()))
        elif line.startswith("#"):
            flush()
            out.append(".SS " + escape(line.lstrip("#").strip()))
        elif line.startswith("|"):
            flush()
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                rows.append(_cells(lines[i]))
                i += 1
            out.extend(_table(rows))
            continue
        elif re.match(r"\s*([*-]|\d+\.) ", line):
            flush()
            item = [re.sub(r"^\s*([*-]|\d+\.) ", "", line)]
            while i + 1 < len(lines) and lines[i + 1].startswith("  ") and \
                    not re.match(r"\s*([*-]|\d+\.) ", lines[i + 1]):
                i += 1
                item.append(lines[i].strip())
            out.extend([".IP \\(bu 2", inline(" ".join(item))])
        elif line.startswith("    "):
            flush()
            block = []
            while i < len(lines) and (lines[i].startswith("    ") or not lines[i].strip()):
                block.append(lines[i][4:])
                i += 1
            out.extend(preformatted("\n".join(block).rstrip("\n")))
            continue
        elif not line.strip():
            flush()
        else:
            paragraph.append(line.strip())
        i += 1
    flush()
    out += [".SH SEE ALSO", "fdsl(1)"]
    return "\n".join(out) + "\n"


def _cells(row: str) -> list[str]:
    """A Markdown table row's cells (`\\|` is a literal bar)."""
    cells = re.split(r"(?<!\\)\|", row.strip().strip("|"))
    return [c.strip().replace("\\|", "|") for c in cells]


def _table(rows: list[list[str]]) -> list[str]:
    """A Markdown table as tagged paragraphs: the first cell as the tag, the others
    under it, each with its column header."""
    if len(rows) < 2:
        return []
    header, body = rows[0], [r for r in rows[2:]]
    out: list[str] = []
    for row in body:
        out += [".TP", inline(row[0])]
        rest = [f"{h}: {c}" if h else c for h, c in zip(header[1:], row[1:]) if c]
        for n, text in enumerate(rest):
            out += ([".br"] if n else []) + [inline(text)]
    return out


# ------------------------------------------------------------------ files

def generate() -> dict[str, str]:
    return {"fdsl.1": command_page(), "fdsl-language.7": language_page()}


def main(argv: list[str] | None = None) -> int:
    """Write the pages into man/ (`--check`: only say whether they are current)."""
    check = "--check" in (argv if argv is not None else sys.argv[1:])
    stale = []
    for name, text in generate().items():
        path = MAN_DIR / name
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            stale.append(name)
            if not check:
                MAN_DIR.mkdir(exist_ok=True)
                path.write_text(text, encoding="utf-8")
    if check and stale:
        print(f"man pages out of date: {', '.join(stale)}; run python -m fdsl.manpage",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
