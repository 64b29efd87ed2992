"""`python -m fdsl ...` is the `fdsl` command."""
import sys

from fdsl.cli import main

sys.exit(main())
