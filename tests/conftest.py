"""Shared test configuration."""

import importlib.util

import pytest
from hypothesis import HealthCheck, settings

# Machines here are shared and noisy: no per-example deadlines; a fixed
# derandomised profile in CI so a red run can be reproduced.
settings.register_profile("default", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", parent=settings.get_profile("default"), derandomize=True, print_blob=True)
settings.load_profile("ci" if __import__("os").environ.get("CI") else "default")


@pytest.fixture
def one_torch_thread():
    """PyTorch on one thread for the test: steps this small gain nothing from threads, and on a shared
    machine spinning OpenMP workers make them many times slower. Nothing where PyTorch is missing."""
    if importlib.util.find_spec("torch") is None:
        yield
        return
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def jax_float64():
    """JAX with float64 enabled for a module's tests, as it was after. Nothing where JAX is missing."""
    if importlib.util.find_spec("jax") is None:
        yield
        return
    import jax

    before = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", before)
