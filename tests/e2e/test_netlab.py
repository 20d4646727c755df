"""The namespace lab itself: topologies come up, carry traffic, and are always removed."""

import subprocess

import pytest

import netlab

pytestmark = pytest.mark.root


def _namespaces() -> set[str]:
    out = subprocess.run(["ip", "-o", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def test_two_hosts_ping_and_cleanup(lab):
    topo = lab.two_hosts()
    assert lab.run(topo.client, "ping", "-c1", "-W2", topo.server_ip4).returncode == 0
    assert lab.run(topo.client, "ping", "-6", "-c1", "-W2", topo.server_ip6).returncode == 0
    assert {topo.client, topo.server} <= _namespaces()
    lab.close()
    assert not ({topo.client, topo.server} & _namespaces())


def test_routed_forwards_and_drops_with_loss(lab):
    topo = lab.routed()
    assert lab.run(topo.client, "ping", "-c1", "-W2", topo.server_ip4).returncode == 0
    lab.set_loss(topo.router, 100)
    r = lab.run(topo.client, "ping", "-c2", "-W1", topo.server_ip4, check=False)
    assert r.returncode != 0
    lab.set_loss(topo.router, 0)
    assert lab.run(topo.client, "ping", "-c1", "-W2", topo.server_ip4).returncode == 0
