"""Minimal pytree helpers: a state is an array, or a tuple, list or dict of states.

revseq's runtime depends on numpy and attrs only, so it cannot lean on
``jax.tree_util`` or ``optree``; this covers the containers users put states
and parameters in. Leaves are anything else (numpy arrays, scalars, tensors).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

_CONTAINERS = (tuple, list, dict)


def is_leaf(tree: Any) -> bool:
    return not isinstance(tree, _CONTAINERS)


def tree_map(fn: Callable[..., Any], tree: Any, *rest: Any) -> Any:
    """Apply ``fn`` leafwise over trees of the same structure as ``tree``."""
    if isinstance(tree, dict):
        return {k: tree_map(fn, v, *(r[k] for r in rest)) for k, v in tree.items()}
    if isinstance(tree, (tuple, list)):
        items = [tree_map(fn, *parts) for parts in zip(tree, *rest, strict=True)]
        if isinstance(tree, list):
            return items
        if hasattr(tree, "_fields"):  # a namedtuple keeps its type
            return type(tree)(*items)
        return type(tree)(items)
    return fn(tree, *rest)


def leaves(tree: Any) -> list[Any]:
    if isinstance(tree, dict):
        return [leaf for v in tree.values() for leaf in leaves(v)]
    if isinstance(tree, (tuple, list)):
        return [leaf for v in tree for leaf in leaves(v)]
    return [tree]


def describe(tree: Any) -> Any:
    """The structure of a tree with each leaf replaced by its (shape, dtype)."""
    return tree_map(lambda a: (tuple(getattr(a, "shape", ())), str(getattr(a, "dtype", type(a).__name__))), tree)


def shapes(tree: Any) -> Any:
    """The structure of a tree with each leaf replaced by its shape."""
    return tree_map(lambda a: tuple(getattr(a, "shape", ())), tree)


def nbytes(tree: Any) -> int:
    """Bytes held by the leaves that report ``nbytes`` (numpy arrays do)."""
    size = getattr(tree, "nbytes", None)
    if size is not None:
        return int(size)
    return sum(int(getattr(leaf, "nbytes", 0)) for leaf in leaves(tree))


def tree_add(a: Any, b: Any) -> Any:
    return tree_map(lambda x, y: x + y, a, b)


def tree_mul(a: Any, b: Any) -> Any:
    return tree_map(lambda x, y: x * y, a, b)


def deep_copy(tree: Any) -> Any:
    return tree_map(copy.deepcopy, tree)
