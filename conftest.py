"""Repository-level pytest configuration.

The autodiff adapters are optional extras: where their framework is not
installed, their modules are not collected for doctests (their tests skip
with a reason on their own).
"""

import importlib.util

collect_ignore = [f"revseq/{name}.py" for name in ("torch", "jax") if importlib.util.find_spec(name) is None]
