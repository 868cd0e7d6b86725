"""The examples in the documentation run, and say what they claim."""

import doctest
import re
import runpy
from pathlib import Path

import pytest

import revseq
import revseq.testing

ROOT = Path(__file__).resolve().parent.parent


def test_guide_doctests():
    result = doctest.testfile(
        str(ROOT / "docs" / "guide.md"),
        module_relative=False,
        globs={"revseq": revseq},
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
    )
    assert result.attempted > 0
    assert result.failed == 0


def test_guide_own_strategy_example_passes_the_contract():
    text = (ROOT / "docs" / "guide.md").read_text()
    block = next(b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "class EveryKth" in b)
    namespace: dict[str, object] = {}
    exec(compile(block, "docs/guide.md", "exec"), namespace)  # runs its own check_strategy(EveryKth(k=5))
    revseq.testing.check_strategy(namespace["EveryKth"](k=1))  # type: ignore[operator]


def test_readme_quickstart_snippet_numbers():
    # The README's use section promises these numbers; check them the way a reader would.
    import numpy as np

    rec = revseq.Recurrence(f=np.sin, df=np.cos)
    x0 = np.random.default_rng(0).uniform(-1, 1, 100)
    w = np.random.default_rng(1).uniform(-1, 1, 100)
    out = revseq.backprop(rec, x0, n=10_000, strategy=revseq.BinomialCheckpointing(checkpoints=15), adjoint=w)
    assert out.stats.forward_steps == 45156
    assert out.stats.peak_checkpoints == 15
    states = revseq.reverse(np.sin, x0, 10_000, revseq.RecursiveHalving())
    assert sum(1 for _ in states) == 10_000
    assert states.stats.peak_checkpoints == 14
    text = (ROOT / "README.md").read_text()
    table = [
        revseq.StoreAll(),
        revseq.SqrtCheckpointing(),
        revseq.BinomialCheckpointing(),
        revseq.BinomialCheckpointing(checkpoints=15),
        revseq.OnlineCheckpointing(checkpoints=15),
        revseq.RecursiveHalving(),
        revseq.Recompute(),
    ]
    for strategy in table:
        cost = strategy.cost(10_000)
        row = f"| {cost.forward_steps:,} | {cost.peak_checkpoints:,} |".replace(",", " ")
        assert row in text, f"README's table row for {strategy!r} should read {row}"


@pytest.mark.parametrize(
    ("script", "argv", "needs", "says"),
    [
        ("sin_cos.py", [], None, "StoreAll"),
        ("lorenz_adjoint.py", [], None, "largest relative difference"),
        ("reverse_automaton.py", [], None, "newest first"),
        ("rnn_torch.py", ["--steps", "300", "--width", "16", "--epochs", "10"], "torch", "saved"),
        ("jax_train.py", ["--steps", "300", "--width", "16", "--epochs", "10"], "jax", "temp bytes"),
    ],
    ids=lambda v: v if isinstance(v, str) and v.endswith(".py") else "",
)
def test_example_runs(script, argv, needs, says, capsys, monkeypatch):
    # Each example is a script a user copies; it must run as one (its own asserts check its numbers).
    if needs:
        pytest.importorskip(needs, reason=f"{script} needs {needs}")
    monkeypatch.setattr("sys.argv", [script, *argv])
    runpy.run_path(str(ROOT / "examples" / script), run_name="__main__")
    assert says in capsys.readouterr().out
