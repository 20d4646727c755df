"""Auto-detection from the routing and neighbour tables, run inside namespaces: the right
interface, local addresses and next-hop MAC (the router's through a router, the server's own
on one link), IPv4 and IPv6 (also a link-local IPv6 gateway), explicit values winning, the
server role, links without MACs, and actionable errors."""

import json

import pytest

from paqetlab import PY

pytestmark = pytest.mark.root

SCRIPT = r'''
import json, sys, time
from paqet.net.autodetect import AutodetectError, detect
kw = json.loads(sys.argv[2])
if "router_mac" in kw:
    kw["router_mac"] = bytes.fromhex(kw["router_mac"])
t = time.monotonic()
try:
    c = detect(sys.argv[1] or None, **kw)
except AutodetectError as e:
    print(json.dumps({"error": str(e), "secs": time.monotonic() - t}))
else:
    print(json.dumps({"interface": c.interface, "ifindex": c.ifindex, "link": c.link,
                      "mac": c.mac.hex(":"), "ip4": c.ip4, "ip6": c.ip6, "gateway": c.gateway,
                      "mac4": c.gateway_mac4.hex(":") if c.gateway_mac4 else None,
                      "mac6": c.gateway_mac6.hex(":") if c.gateway_mac6 else None,
                      "reason": c.reason}))
'''


def detect_in(lab, ns, server_ip, **kw):
    r = lab.run(ns, PY, "-c", SCRIPT, server_ip or "", json.dumps(kw), timeout=30)
    return json.loads(r.stdout)


@pytest.mark.parametrize("family", [4, 6])
def test_same_link_next_hop_is_the_server_itself(lab, family):
    topo = lab.two_hosts()
    server = topo.server_ip4 if family == 4 else topo.server_ip6
    c = detect_in(lab, topo.client, server)
    assert c["interface"] == topo.client_if and c["link"] == "ether"
    assert c["ip4"] == topo.client_ip4 and c["ip6"] == topo.client_ip6
    assert c["mac"] == lab.mac(topo.client, topo.client_if)
    assert c["gateway"] is None
    peer = lab.mac(topo.server, topo.server_if)
    assert (c["mac4"], c["mac6"]) == ((peer, None) if family == 4 else (None, peer))
    assert "on the link" in c["reason"]


@pytest.mark.parametrize("family", [4, 6])
def test_through_a_router_the_next_hop_is_the_gateway(lab, family):
    topo = lab.routed()
    server = topo.server_ip4 if family == 4 else topo.server_ip6
    c = detect_in(lab, topo.client, server)
    assert c["interface"] == topo.client_if
    assert c["ip4"] == topo.client_ip4 and c["ip6"] == topo.client_ip6
    assert c["gateway"] == (topo.gateway_ip4 if family == 4 else topo.gateway_ip6)
    router = lab.mac(topo.router, topo.router_client_if)
    assert c["mac4" if family == 4 else "mac6"] == router
    assert router != lab.mac(topo.server, topo.server_if)


def test_link_local_ipv6_gateway(lab):
    topo = lab.routed()
    out = lab.run(topo.router, "ip", "-6", "-o", "addr", "show", "dev", topo.router_client_if,
                  "scope", "link").stdout
    ll = out.split("inet6 ")[1].split("/")[0]
    lab.run(topo.client, "ip", "-6", "route", "replace", "default", "via", ll, "dev", topo.client_if)
    c = detect_in(lab, topo.client, topo.server_ip6)
    assert c["gateway"] == ll and c["ip6"] == topo.client_ip6  # a global source, not fe80
    assert c["mac6"] == lab.mac(topo.router, topo.router_client_if)


def test_explicit_values_win_and_skip_the_neighbour_lookup(lab):
    topo = lab.routed()
    fake = "02:00:5e:00:53:01"
    c = detect_in(lab, topo.client, topo.server_ip4, interface=topo.client_if,
                  ipv4="198.18.1.99", router_mac=fake.replace(":", ""))
    assert c["interface"] == topo.client_if
    assert c["ip4"] == "198.18.1.99"            # even though it is not on the interface
    assert c["mac4"] == fake and "as configured" in c["reason"]
    # the kernel was never asked to resolve the gateway
    neigh = lab.run(topo.client, "ip", "neigh", "show", topo.gateway_ip4).stdout
    assert lab.mac(topo.router, topo.router_client_if) not in neigh


def test_server_role_picks_the_default_route_or_the_configured_address(lab):
    topo = lab.routed()
    c = detect_in(lab, topo.server, None)
    assert c["interface"] == topo.server_if and c["ip4"] == topo.server_ip4
    assert c["ip6"] == topo.server_ip6 and "default route" in c["reason"]
    extra = lab.link(topo.server, topo.router, ["198.18.9.1/24"], ["198.18.9.2/24"])
    c = detect_in(lab, topo.server, None, ipv4="198.18.9.1")
    assert c["interface"] == extra.if_a and c["ip4"] == "198.18.9.1" and "holds" in c["reason"]


def test_ip_only_link_needs_no_mac(lab):
    topo = lab.two_hosts()
    lab.run(topo.client, "ip", "tuntap", "add", "mode", "tun", "dev", "pqtun0")
    lab.run(topo.client, "ip", "addr", "add", "198.18.50.1/24", "dev", "pqtun0")
    lab.run(topo.client, "ip", "link", "set", "pqtun0", "up")
    c = detect_in(lab, topo.client, "198.18.50.2")
    assert c["interface"] == "pqtun0" and c["link"] == "ip"
    assert c["mac4"] is None and c["ip4"] == "198.18.50.1" and "no MAC needed" in c["reason"]


def test_errors_are_actionable_and_bounded(lab):
    topo = lab.two_hosts()
    e = detect_in(lab, topo.client, "198.19.255.1")      # no route at all
    assert "no route" in e["error"] and "network.interface" in e["error"]
    e = detect_in(lab, topo.client, "198.18.0.77", neighbour_wait=0.5)  # nobody answers ARP
    assert "198.18.0.77" in e["error"] and "network.ipv4.router_mac" in e["error"]
    assert e["secs"] < 5
    e = detect_in(lab, topo.client, "2001:2:0:1::77", neighbour_wait=0.5)
    assert "network.ipv6.router_mac" in e["error"]
    e = detect_in(lab, topo.client, topo.client_ip4)     # our own address
    assert "belongs to this host" in e["error"]
    e = detect_in(lab, topo.client, topo.server_ip4, interface="pqnosuch0")
    assert "does not exist" in e["error"]
