"""Repository-level pytest configuration.

The autodiff adapters (and the compress extra) are optional: where their framework is not
installed, their modules are not collected for doctests (their tests skip
with a reason on their own).
"""

import importlib.util

_OPTIONAL = (("torch", "revseq/torch"), ("jax", "revseq/jax.py"))  # the torch adapter is a package
collect_ignore = [path for name, path in _OPTIONAL if importlib.util.find_spec(name) is None]
if importlib.util.find_spec("numcodecs") is None:  # the compress extra: CompressedStore's doctest needs it
    collect_ignore.append("revseq/compressed.py")
