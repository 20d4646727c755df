import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))  # tests/netlab.py, tests/sim.py

import netlab  # noqa: E402

VECTORS = os.path.join(os.path.dirname(__file__), "vectors")


@pytest.fixture(scope="session")
def vectors_dir() -> str:
    return VECTORS


_netlab_reason: list[str | None] = []


def netlab_unavailable() -> str | None:
    if not _netlab_reason:
        _netlab_reason.append(netlab.available())
    return _netlab_reason[0]


@pytest.fixture
def lab():
    """A NetLab whose namespaces are always deleted; skips where namespaces cannot be made."""
    reason = netlab_unavailable()
    if reason:
        pytest.skip(f"network-namespace test skipped: {reason}")
    with netlab.NetLab() as lab:
        yield lab
