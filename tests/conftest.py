"""Shared test set-up: the real-network tier needs root, Mininet and Open vSwitch.

Outside CI those tests are skipped where the machine cannot run them; with ``QIOT_REQUIRE_NET=1``
(set by ``.ci/run``) a missing prerequisite is a failure, so CI can never pass by skipping them.
"""

import os
import shutil

import pytest


def network_prerequisites() -> str | None:
    """Why the real-network tier cannot run here, or None if it can."""
    if os.geteuid() != 0:
        return "not root"
    for tool in ("mnexec", "ovs-vsctl", "mosquitto", "iptables"):
        if shutil.which(tool) is None and not os.path.exists(f"/usr/sbin/{tool}"):
            return f"{tool} not installed"
    try:
        import mininet.net  # noqa: F401
    except ImportError:
        return "mininet not importable"
    return None


@pytest.fixture(scope="session")
def network_ok():
    """Skip (or, in CI, fail) a test that needs the real network."""
    reason = network_prerequisites()
    if reason:
        if os.environ.get("QIOT_REQUIRE_NET") == "1":
            pytest.fail(f"real-network tests required but cannot run: {reason}")
        pytest.skip(f"real-network tests need root, Mininet and OVS: {reason}")
    from harness.network import ensure_ovs

    ensure_ovs()
