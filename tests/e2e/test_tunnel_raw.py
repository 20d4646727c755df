"""The real thing: `paqet run` client and server in two network namespaces, raw TCP frames
on a veth, SOCKS5 in front, an HTTP server behind."""

import hashlib
import os
import subprocess

import pytest

from paqetlab import (Paqet, client_config, curl, http_server, make_blob, server_config,
                      tempdir, wait_port)

pytestmark = [pytest.mark.root, pytest.mark.timeout(240)]


def _nft_tables(lab, ns):
    return lab.run(ns, "nft", "list", "tables", check=False).stdout


@pytest.mark.parametrize("ipv6,driver", [(False, "auto"), (True, "auto"), (False, "pcap")],
                         ids=["ipv4", "ipv6", "ipv4-pcap-server"])
def test_download_via_socks(lab, ipv6, driver):
    topo = lab.two_hosts()
    with tempdir() as d:
        digest = make_blob(d, "blob", 20 << 20)
        http_server(lab, topo.server, d)
        srv = Paqet(lab, topo.server, server_config(topo, ipv6=ipv6, driver=driver), "server", d)
        assert srv.wait_log("listening for packets"), srv.log()
        assert "paqet_9999_" in _nft_tables(lab, topo.server)
        cli = Paqet(lab, topo.client, client_config(topo, ipv6=ipv6), "client", d)
        assert wait_port(lab, topo.client, 1080), cli.log()
        host = f"[{topo.server_ip6}]" if ipv6 else topo.server_ip4
        out = os.path.join(d, "got")
        r = curl(lab, topo.client, f"http://{host}:8000/blob", out=out)
        assert r.stdout.startswith("200 "), (r.stdout, r.stderr, cli.log()[-2000:], srv.log()[-2000:])
        with open(out, "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == digest
        assert cli.stop() == 0
        assert srv.stop() == 0
        assert "paqet_" not in _nft_tables(lab, topo.server)
        assert "paqet_" not in _nft_tables(lab, topo.client)


def test_autodetect_through_a_router_with_loss(lab):
    topo = lab.routed()
    lab.set_loss(topo.router, 5)
    with tempdir() as d:
        digest = make_blob(d, "blob", 5 << 20)
        http_server(lab, topo.server, d)
        srv = Paqet(lab, topo.server, server_config(topo, fec=(10, 3)), "server", d)
        assert srv.wait_log("listening for packets"), srv.log()
        cli = Paqet(lab, topo.client, client_config(topo, explicit=False, fec=(10, 3)), "client", d)
        assert wait_port(lab, topo.client, 1080), cli.log()
        assert cli.wait_log("network: interface"), cli.log()
        log = cli.log()
        assert topo.client_if in log and topo.client_ip4 in log
        assert lab.mac(topo.router, topo.router_client_if) in log
        out = os.path.join(d, "got")
        r = curl(lab, topo.client, f"http://{topo.server_ip4}:8000/blob", out=out)
        assert r.stdout.startswith("200 "), (r.stdout, r.stderr, cli.log()[-3000:])
        with open(out, "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == digest


def test_sigkill_leaves_rules_that_the_next_start_removes(lab):
    topo = lab.two_hosts()
    with tempdir() as d:
        srv = Paqet(lab, topo.server, server_config(topo), "server", d)
        assert srv.wait_log("listening for packets"), srv.log()
        srv.stop(sig=9)
        assert "paqet_9999_" in _nft_tables(lab, topo.server)
        srv2 = Paqet(lab, topo.server, server_config(topo), "server2", d)
        assert srv2.wait_log("listening for packets"), srv2.log()
        tables = _nft_tables(lab, topo.server)
        assert tables.count("paqet_9999_") == 1, tables
        assert f"paqet_9999_{srv.proc.pid}" not in tables.split()  # the stale one is gone
        assert f"paqet_9999_{srv2.proc.pid}" in tables.split()
        srv2.stop()
        assert "paqet_" not in _nft_tables(lab, topo.server)


def test_autodetect_ipv6_through_a_router(lab):
    topo = lab.routed()
    with tempdir() as d:
        digest = make_blob(d, "blob", 2 << 20)
        http_server(lab, topo.server, d)
        srv = Paqet(lab, topo.server, server_config(topo, ipv6=True), "server", d)
        assert srv.wait_log("listening for packets"), srv.log()
        cli = Paqet(lab, topo.client, client_config(topo, explicit=False, ipv6=True), "client", d)
        assert wait_port(lab, topo.client, 1080), cli.log()
        assert cli.wait_log("network: interface"), cli.log()
        log = cli.log()
        assert topo.client_if in log and topo.client_ip6 in log
        assert lab.mac(topo.router, topo.router_client_if) in log
        out = os.path.join(d, "got")
        r = curl(lab, topo.client, f"http://[{topo.server_ip6}]:8000/blob", out=out)
        assert r.stdout.startswith("200 "), (r.stdout, r.stderr, cli.log()[-3000:])
        with open(out, "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == digest
