"""fdsl: a declarative filter language for FUSE stacked filesystems."""
import os as _os

__version__ = "0.1.0"

# In a source checkout `runtime/` and `grammar/` sit beside this package (an install maps
# them to fdsl.runtime and fdsl.grammar): with the checkout on sys.path and no install,
# look for subpackages there too, so `import fdsl.runtime` works from the repo root.
_checkout = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
if _os.path.isfile(_os.path.join(_checkout, "runtime", "__init__.py")) and \
        not _os.path.isdir(_os.path.join(_os.path.dirname(__file__), "runtime")):
    __path__.append(_checkout)  # type: ignore[name-defined]  # noqa: F821
