"""Shared test configuration."""

from hypothesis import HealthCheck, settings

# Machines here are shared and noisy: no per-example deadlines; a fixed
# derandomised profile in CI so a red run can be reproduced.
settings.register_profile("default", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", parent=settings.get_profile("default"), derandomize=True, print_blob=True)
settings.load_profile("ci" if __import__("os").environ.get("CI") else "default")
