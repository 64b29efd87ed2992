"""`fdsl.cli.COMMANDS` (which module registers a command, so that `fdsl mount` builds
only its own parsers) agrees with what the modules really register."""
from __future__ import annotations

import argparse
import subprocess
import sys

from fdsl import cli


def _commands(parser: argparse.ArgumentParser) -> set[str]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return set(sub.choices)


def test_every_command_is_mapped_to_the_module_that_registers_it() -> None:
    assert _commands(cli.build_parser()) == set(cli.COMMANDS)
    for module in cli.COMMAND_MODULES:
        mine = {name for name, owner in cli.COMMANDS.items() if owner == module}
        assert _commands(cli.build_parser(module)) == mine, module


def test_a_command_line_loads_only_its_own_command_module() -> None:
    probe = ("import sys; from fdsl import cli; cli.main(['umount', '--help'])")
    code = (f"import sys\ntry:\n    exec({probe!r})\nexcept SystemExit:\n    pass\n"
            "print(' '.join(m for m in sys.modules if m.startswith('fdsl.commands.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip().splitlines()[-1]
    loaded = set(out.split()) & set(cli.COMMAND_MODULES)
    assert loaded == {"fdsl.commands.mount"}
