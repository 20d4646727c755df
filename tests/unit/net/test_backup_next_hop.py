"""Failover on raw sockets: each backup server's next-hop MAC is looked up once at start
(runtime.Network.add_destination) and given to the frame builder per destination; a
configured router_mac applies to all servers; a failed lookup keeps the default."""

import yaml

from paqet.config import load_config_text
from paqet.net import autodetect
from paqet.runtime import Network

CLIENT = {"role": "client", "socks5": [{"listen": "127.0.0.1:1080"}],
          "network": {"interface": "eth0", "ipv4": {"addr": "198.18.0.1:0",
                                                    "router_mac": "02:00:00:00:00:01"}},
          "server": {"addr": "198.18.0.2:9999", "backup": ["198.18.5.2:9999"]},
          "transport": {"protocol": "kcp", "kcp": {"key": "k"}}}


def network(router_mac: bool = True, driver: str = "afpacket") -> Network:
    d = yaml.safe_load(yaml.safe_dump(CLIENT))
    d["network"]["driver"] = driver
    cfg = load_config_text(yaml.safe_dump(d))
    net = Network(cfg, "198.18.0.2")  # built with a MAC: no auto-detection here
    if not router_mac:
        cfg.network.ipv4.router_mac = ""  # ... then as if none was configured
    return net


def test_backup_gets_its_own_next_hop(monkeypatch):
    seen = []

    def fake_detect(ip, **kw):
        seen.append((ip, kw.get("interface"), kw.get("local_ip")))
        c = autodetect.NetworkChoice(interface="eth0", ifindex=2, ip4="198.18.0.1")
        c.gateway_mac4 = bytes.fromhex("020000000009")
        return c
    monkeypatch.setattr(autodetect, "detect", fake_detect)
    net = network(router_mac=False)
    net.add_destination("198.18.5.2")
    assert seen == [("198.18.5.2", "eth0", "198.18.0.1")]
    assert net.dst_macs == {"198.18.5.2": bytes.fromhex("020000000009")}


def test_configured_router_mac_or_udp_needs_no_lookup(monkeypatch):
    def boom(*a, **kw):
        raise AssertionError("no lookup expected")
    monkeypatch.setattr(autodetect, "detect", boom)
    net = network(router_mac=True)
    net.add_destination("198.18.5.2")
    assert net.dst_macs == {}
    net = network(router_mac=True, driver="udp")
    net.add_destination("198.18.5.2")
    assert net.dst_macs == {}


def test_failed_lookup_keeps_the_default(monkeypatch):
    def fail(*a, **kw):
        raise autodetect.AutodetectError("no ARP answer")
    monkeypatch.setattr(autodetect, "detect", fail)
    net = network(router_mac=False)
    net.add_destination("198.18.5.2")
    assert net.dst_macs == {}
