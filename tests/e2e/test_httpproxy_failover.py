"""Issue 10's HTTP proxy and failover over real raw frames between namespaces: curl through
the HTTP proxy (plain GET, CONNECT, Basic auth); and a client with a backup server behind a
router: the first server's process is stopped, curl gets through the second; the first is
started again and the client moves back to it."""

import hashlib
import os
import subprocess
import time

import pytest

import netlab
from conftest import netlab_unavailable
from paqetlab import PY, Paqet, client_config, write_config, http_server, make_blob, server_config, tempdir, wait_port

pytestmark = [pytest.mark.root, pytest.mark.timeout(240)]


def http_curl(lab, ns, url, proxy, out, *extra, timeout=60):
    cmd = ["curl", "-sS", "--max-time", str(timeout), "-x", proxy, "-o", out, "-w",
           "%{http_code}", *extra, url]
    return lab.run(ns, *cmd, check=False, timeout=timeout + 10)


def sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


@pytest.fixture
def need_netlab():
    reason = netlab_unavailable()
    if reason:
        pytest.skip(f"network-namespace test skipped: {reason}")


def test_curl_through_http_proxy(need_netlab):
    with netlab.NetLab() as lab, tempdir() as d:
        topo = lab.two_hosts()
        digest = make_blob(d, "blob", 3 << 20)
        http_server(lab, topo.server, d, bind=topo.server_ip4)
        server = Paqet(lab, topo.server, server_config(topo), "server", d)
        assert server.wait_log("listening for packets"), server.log()
        cfg = client_config(topo, extra={"http": [
            {"listen": "127.0.0.1:8080"},
            {"listen": "127.0.0.1:8081", "username": "alice", "password": "s3cret"}]})
        client = Paqet(lab, topo.client, cfg, "client", d)
        assert wait_port(lab, topo.client, 8080), client.log()
        assert wait_port(lab, topo.client, 8081), client.log()
        assert wait_port(lab, topo.server, 8000, host=topo.server_ip4)
        url = f"http://{topo.server_ip4}:8000/blob"
        out = os.path.join(d, "got")
        # plain GET with an absolute URI
        r = http_curl(lab, topo.client, url, "http://127.0.0.1:8080", out)
        assert r.stdout == "200", (r.stdout, r.stderr, client.log()[-1500:])
        assert sha(out) == digest
        # two URLs in one curl: it keeps the proxy connection for the second (keep-alive;
        # needs an HTTP/1.1 origin, http.server's default is 1.0)
        lab.popen(topo.server, [PY, "-m", "http.server", "8001", "--bind", topo.server_ip4,
                                "--protocol", "HTTP/1.1", "--directory", d],
                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert wait_port(lab, topo.server, 8001, host=topo.server_ip4)
        url11 = f"http://{topo.server_ip4}:8001/blob"
        out2 = os.path.join(d, "got2")
        r = lab.run(topo.client, "curl", "-sS", "-v", "--max-time", "60", "-x",
                    "http://127.0.0.1:8080", url11, "-o", out, url11, "-o", out2, check=False,
                    timeout=70)
        assert r.returncode == 0, r.stderr[-1500:]
        assert sha(out) == digest and sha(out2) == digest
        assert "Re-using existing connection" in r.stderr or "Reusing existing" in r.stderr, \
            r.stderr[-1500:]
        os.unlink(out2)
        # CONNECT (curl's --proxytunnel), bytes relayed untouched
        os.unlink(out)
        r = http_curl(lab, topo.client, url, "http://127.0.0.1:8080", out, "--proxytunnel")
        assert r.stdout == "200", (r.stdout, r.stderr)
        assert sha(out) == digest
        # Basic proxy auth: none or wrong -> 407, right -> the page
        r = http_curl(lab, topo.client, url, "http://127.0.0.1:8081", out)
        assert r.stdout == "407", r.stdout
        r = http_curl(lab, topo.client, url, "http://127.0.0.1:8081", out, "-U", "alice:wrong")
        assert r.stdout == "407", r.stdout
        r = http_curl(lab, topo.client, url, "http://127.0.0.1:8081", out, "-U", "alice:s3cret")
        assert r.stdout == "200" and sha(out) == digest, (r.stdout, r.stderr)
        # a refused target is a 502 from the proxy (the server's dial status)
        r = http_curl(lab, topo.client, f"http://{topo.server_ip4}:1/", "http://127.0.0.1:8080",
                      out)
        assert r.stdout == "502", r.stdout
        client.stop()
        server.stop()


def two_servers(lab):
    """client - router - s1 (198.18.2.2) and router - s2 (198.18.3.2)."""
    c, r, s1, s2 = lab.add_ns("c"), lab.add_ns("r"), lab.add_ns("s1"), lab.add_ns("s2")
    left = lab.link(c, r, ["198.18.1.2/24"], ["198.18.1.1/24"])
    l1 = lab.link(r, s1, ["198.18.2.1/24"], ["198.18.2.2/24"])
    l2 = lab.link(r, s2, ["198.18.3.1/24"], ["198.18.3.2/24"])
    lab.sysctl(r, "net.ipv4.ip_forward", "1")
    lab.run(c, "ip", "route", "add", "default", "via", "198.18.1.1")
    lab.run(s1, "ip", "route", "add", "default", "via", "198.18.2.1")
    lab.run(s2, "ip", "route", "add", "default", "via", "198.18.3.1")
    return c, left.if_a, (s1, l1.if_b, "198.18.2.2"), (s2, l2.if_b, "198.18.3.2")


def server_cfg(ifname, ip, port=9999):
    return {"role": "server", "log": {"level": "info"}, "listen": {"addr": f":{port}"},
            "network": {"interface": ifname, "ipv4": {"addr": f"{ip}:{port}"}},
            "transport": {"protocol": "kcp", "kcp": {"mode": "fast3", "key": "e2e-failover"}}}


def test_failover_to_backup_and_back(need_netlab):
    with netlab.NetLab() as lab, tempdir() as d:
        c, c_if, (s1, s1_if, ip1), (s2, s2_if, ip2) = two_servers(lab)
        digest = make_blob(d, "blob", 1 << 20)
        for ns, ip in ((s1, ip1), (s2, ip2)):
            http_server(lab, ns, d, bind=ip)
        a = Paqet(lab, s1, server_cfg(s1_if, ip1), "s1", d)
        b = Paqet(lab, s2, server_cfg(s2_if, ip2), "s2", d)
        assert a.wait_log("listening for packets"), a.log()
        assert b.wait_log("listening for packets"), b.log()
        cfg = {"role": "client", "log": {"level": "info"},
               "http": [{"listen": "127.0.0.1:8080"}],
               "network": {"interface": c_if, "ipv4": {"addr": "198.18.1.2:0"}},
               "server": {"addr": f"{ip1}:9999", "backup": [f"{ip2}:9999"], "failback": 1},
               "transport": {"protocol": "kcp", "kcp": {"mode": "fast3", "key": "e2e-failover",
                                                        "smuxkalive": 1, "smuxktimeout": 2}}}
        # paqet check pings the first server and the backup (its own next hop)
        path = write_config(os.path.join(d, "check.yaml"), cfg)
        r = lab.run(c, PY, "-m", "paqet", "check", "-c", path, "-n", "2", check=False,
                    timeout=90)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "[ OK ] tunnel" in r.stdout and "[ OK ] backup: server.backup[0] 198.18.3.2:9999" \
            in r.stdout, r.stdout
        client = Paqet(lab, c, cfg, "client", d)
        assert wait_port(lab, c, 8080), client.log()
        out = os.path.join(d, "got")

        def get(ip, timeout=10):
            if os.path.exists(out):
                os.unlink(out)
            return http_curl(lab, c, f"http://{ip}:8000/blob", "http://127.0.0.1:8080", out,
                             timeout=timeout).stdout

        assert get(ip1) == "200", client.log()[-2000:]
        assert sha(out) == digest
        assert "accepted TCP stream" in a.log() and "accepted TCP stream" not in b.log()

        a.stop()  # the first server goes away (its process ends; its frames stop)
        # new requests succeed via the second within a few seconds (keepalive timeout 2 s);
        # bounded retries: each curl has its own timeout
        t0 = time.monotonic()
        ok = False
        for _ in range(15):
            ok = get(ip2, timeout=5) == "200"
            if ok:
                break
            time.sleep(0.5)
        took = time.monotonic() - t0
        assert ok and sha(out) == digest, client.log()[-2000:]
        assert "failing over to 198.18.3.2:9999" in client.log()
        assert "accepted TCP stream" in b.log()
        print(f"HTTP through the backup {took:.1f} s after stopping the first server")

        # the first server comes back: the client probes it (server.failback: 1) and moves
        a2 = Paqet(lab, s1, server_cfg(s1_if, ip1), "s1-again", d)
        assert a2.wait_log("listening for packets"), a2.log()
        assert client.wait_log("answers again: moving", timeout=20), client.log()[-2000:]
        assert get(ip1) == "200" and sha(out) == digest
        # the request went through the restarted first server
        assert a2.wait_log("accepted TCP stream", timeout=5), a2.log()
        client.stop()
        a2.stop()
        b.stop()
