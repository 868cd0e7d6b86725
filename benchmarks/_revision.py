"""Load revseq as it was at another commit, beside the current one, in the same process.

For ratios "this change against the code before it" measured in one run
(interleaved rounds, the same machine state): ``git archive`` writes the old
package to a temporary directory, it is imported under its own name
``revseq``, and then both module trees are set aside so that the current
``revseq`` is the one imported again. The old functions keep working: their
globals are their own modules' dictionaries.

Limits: an import the old code makes lazily, inside a function (the disk
store, the online strategy), would find the current package; benchmark only
paths that make none (the memory store and the offline strategies do not).
"""

from __future__ import annotations

import atexit
import importlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from types import ModuleType

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_revision(revision: str) -> ModuleType:
    """The ``revseq`` package at ``revision`` (a commit id or name), as a module."""
    directory = tempfile.mkdtemp(prefix="revseq-revision-")
    atexit.register(shutil.rmtree, directory, ignore_errors=True)  # the modules stay loaded until then
    archive = os.path.join(directory, "revseq.tar")
    subprocess.run(
        ["git", "-C", ROOT, "archive", "--format=tar", "-o", archive, revision, "revseq"],
        check=True,
        capture_output=True,
    )
    with tarfile.open(archive) as tar:
        tar.extractall(directory, filter="data")
    current = {name: module for name, module in sys.modules.items() if name == "revseq" or name.startswith("revseq.")}
    for name in current:
        del sys.modules[name]
    sys.path.insert(0, directory)
    try:
        old = importlib.import_module("revseq")
        importlib.import_module("revseq.engine")
    finally:
        sys.path.remove(directory)
        for name in [n for n in sys.modules if n == "revseq" or n.startswith("revseq.")]:
            del sys.modules[name]
        sys.modules.update(current)
    assert old.__file__ is not None
    assert old.__file__.startswith(directory)
    return old


def revision_or_skip(revision: str) -> ModuleType:
    """:func:`load_revision`, or the calling test skipped where git or the commit is missing (a shallow clone)."""
    import pytest

    try:
        return load_revision(revision)
    except Exception as exc:
        pytest.skip(f"cannot load revseq at {revision}: {exc}")
