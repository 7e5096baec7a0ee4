"""The hot-standby rig of the tests: `tools.bench.ha_cluster`'s (which `cuelog bench ha`
shares), with etcd required: without Debian's ``etcd-server`` a test is skipped, except in CI
(``CI`` or ``CUELOG_CI`` set, as ``.ci/run`` does), where it fails."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tools.bench import ha_cluster
from tools.bench.ha_cluster import (
    Candidates,
    Proxy,
    Writer,
    free_pair,
    free_port,
    markers,
)

__all__ = ["Candidates", "Etcd", "Proxy", "Writer", "free_pair", "free_port", "markers"]


def etcd_binary() -> str:
    binary = ha_cluster.etcd_binary()
    if binary is None:
        if os.environ.get("CI") or os.environ.get("CUELOG_CI"):
            pytest.fail("etcd is not installed (.ci/run installs Debian's etcd-server)")
        pytest.skip("etcd is not installed (apt-get install etcd-server)")
    return binary


class Etcd(ha_cluster.Etcd):
    """`ha_cluster.Etcd`, skipped (or failed in CI) without etcd."""

    def __init__(self, folder: Path, size: int = 1) -> None:
        super().__init__(folder, size, etcd_binary())
