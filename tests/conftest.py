"""Shared test set-up: hypothesis profiles and the log path fixture (builders: tests/helpers.py).

Profiles: ``ci`` (the default) is derandomized and small, so every run tries the same examples;
``long`` (``make test-long``) explores many more, randomly. Pick one with the environment
variable ``CUELOG_HYPOTHESIS_PROFILE``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    max_examples=50,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.register_profile(
    "long",
    derandomize=False,
    deadline=None,
    max_examples=2000,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.load_profile(os.environ.get("CUELOG_HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    """Where a test's log file goes (not created yet)."""
    return tmp_path / "show.cuelog"
