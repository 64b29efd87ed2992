"""Subcommand implementations of the fdsl CLI, one module per area."""

from typing import Any


def add_include_option(parser: Any) -> None:
    """`-I DIR`: another directory policies may include from (see fdsl.lang.includes)."""
    parser.add_argument("-I", dest="include_dirs", action="append", default=[], metavar="DIR",
                        help="also look for included files in DIR and allow includes from it "
                        "(by default includes stay under the policy's directory); repeatable")
