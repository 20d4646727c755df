"""Issue 7's acceptance over real raw frames between namespaces: SOCKS5 downloads (single,
parallel, IPv6 target, domain target), auth, reply codes, UDP ASSOCIATE and UDP forward,
server restart, no leaks after many cycles; and bulk transfer through 5 % loss."""

import hashlib
import os
import shutil
import subprocess
import sys
import time

import pytest

import netlab
from conftest import netlab_unavailable
from paqetlab import (PY, Paqet, client_config, curl, http_server, make_blob, server_config,
                      tempdir, wait_port)

pytestmark = [pytest.mark.root, pytest.mark.timeout(300)]
TOOL = os.path.join(os.path.dirname(__file__), "socks_tool.py")
ECHO = os.path.join(os.path.dirname(__file__), "echo_servers.py")
DOMAIN = "blob.paqet.test"


class Site:
    pass


@pytest.fixture(scope="module")
def site():
    reason = netlab_unavailable()
    if reason:
        pytest.skip(f"network-namespace test skipped: {reason}")
    with netlab.NetLab() as lab, tempdir() as d:
        topo = lab.two_hosts()
        hosts_dir = f"/etc/netns/{topo.server}"
        os.makedirs(hosts_dir, exist_ok=True)
        with open(f"{hosts_dir}/hosts", "w") as f:
            f.write(f"127.0.0.1 localhost\n{topo.server_ip4} {DOMAIN}\n")
        try:
            s = Site()
            s.lab, s.topo, s.dir = lab, topo, d
            s.digest50 = make_blob(d, "blob50", 50 << 20)
            s.digest5 = make_blob(d, "blob5", 5 << 20)
            http_server(lab, topo.server, d)
            lab.popen(topo.server, [PY, ECHO, "7000"])
            s.server = Paqet(lab, topo.server, server_config(topo), "server", d)
            assert s.server.wait_log("listening for packets"), s.server.log()
            fwd = [{"listen": "127.0.0.1:5353", "target": f"{topo.server_ip4}:7000", "protocol": "udp"},
                   {"listen": "127.0.0.1:8081", "target": f"{topo.server_ip4}:7000", "protocol": "tcp"}]
            # a second SOCKS5 listener that answers after the server's dial (wait_dial)
            exact = {"socks5": [{"listen": "127.0.0.1:1080"},
                                {"listen": "127.0.0.1:1082", "wait_dial": True}]}
            s.client = Paqet(lab, topo.client, client_config(topo, forward=fwd, extra=exact),
                             "client", d)
            s.auth = Paqet(lab, topo.client, client_config(topo, socks_port=1081,
                                                           socks_auth=("alice", "s3cret")), "auth", d)
            assert wait_port(lab, topo.client, 1080), s.client.log()
            assert wait_port(lab, topo.client, 1082), s.client.log()
            assert wait_port(lab, topo.client, 1081), s.auth.log()
            assert wait_port(lab, topo.server, 8000, host=topo.server_ip4)
            yield s
        finally:
            shutil.rmtree(hosts_dir, ignore_errors=True)


def tool(site, *args):
    r = site.lab.run(site.topo.client, PY, TOOL, *map(str, args), check=False, timeout=120)
    assert r.returncode == 0, r.stderr
    return int(r.stdout.strip())


def fetch_ok(site, url, digest, port=1080, auth=None):
    out = os.path.join(site.dir, f"got-{time.monotonic_ns()}")
    r = curl(site.lab, site.topo.client, url, socks_port=port, auth=auth, out=out)
    assert r.stdout.startswith("200 "), (r.stdout, r.stderr, site.client.log()[-1500:])
    with open(out, "rb") as f:
        ok = hashlib.sha256(f.read()).hexdigest() == digest
    os.unlink(out)
    return ok


def test_50mb_download_curl(site):
    assert fetch_ok(site, f"http://{site.topo.server_ip4}:8000/blob50", site.digest50)


def test_50mb_download_python_socks(site):
    code = ("import asyncio,hashlib,sys\nfrom python_socks.async_.asyncio import Proxy\n"
            "async def main():\n"
            "  p=Proxy.from_url('socks5://127.0.0.1:1080')\n"
            f"  s=await p.connect(dest_host='{site.topo.server_ip4}',dest_port=8000)\n"
            "  r,w=await asyncio.open_connection(sock=s)\n"
            "  w.write(b'GET /blob50 HTTP/1.0\\r\\n\\r\\n'); await w.drain()\n"
            "  data=await r.read(-1); body=data.split(b'\\r\\n\\r\\n',1)[1]\n"
            "  print(hashlib.sha256(body).hexdigest())\n"
            "asyncio.run(main())\n")
    r = site.lab.run(site.topo.client, PY, "-c", code, check=False, timeout=200)
    assert r.stdout.strip() == site.digest50, r.stderr


def test_20_parallel_downloads(site):
    url = f"http://{site.topo.server_ip4}:8000/blob5"
    outs = [os.path.join(site.dir, f"par-{i}") for i in range(20)]
    # every curl writes to its own file, so all 20 read at once (a reader stuck on a full
    # pipe would hold its stream's window and, as in Go smux, stall the shared session)
    procs = [subprocess.Popen(["ip", "netns", "exec", site.topo.client, "curl", "-sS", "-x",
                               "socks5h://127.0.0.1:1080", "-o", out, url]) for out in outs]
    for p in procs:
        p.wait(timeout=240)
    digests = [hashlib.sha256(open(out, "rb").read()).hexdigest() for out in outs]
    assert digests == [site.digest5] * 20


def test_ipv6_and_domain_targets(site):
    assert fetch_ok(site, f"http://[{site.topo.server_ip6}]:8000/blob5", site.digest5)
    assert fetch_ok(site, f"http://{DOMAIN}:8000/blob5", site.digest5)


def test_auth(site):
    assert fetch_ok(site, f"http://{site.topo.server_ip4}:8000/blob5", site.digest5, port=1081,
                    auth=("alice", "s3cret"))
    assert tool(site, "rep", 1081, site.topo.server_ip4, 8000, "alice", "wrong") == -1
    assert tool(site, "rep", 1081, site.topo.server_ip4, 8000, "alice", "s3cret") == 0


def outcome(site, host, port, sport=1080):
    r = site.lab.run(site.topo.client, PY, TOOL, "outcome", str(sport), str(host), str(port),
                     check=False, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def test_unreachable_target_resets_after_the_early_success(site):
    """By default the success reply goes at once; when the server reports that it could
    not connect, the client resets the connection (the application reads ECONNRESET, not
    a clean end) and logs the reason."""
    assert outcome(site, site.topo.server_ip4, 1) == "0 reset"              # refused
    assert outcome(site, "no-such-host.paqet.test", 80) == "0 reset"        # DNS failure
    assert site.client.wait_log("the server could not connect: connection refused (reply 0x05)")
    assert site.client.wait_log("the server could not connect: host unreachable (reply 0x04)")
    assert outcome(site, site.topo.server_ip4, 8000) == "0 data"            # and a good one


def test_unreachable_targets_get_reply_codes_with_wait_dial(site):
    # a reply code, not success-then-EOF; the tool's own socket timeout bounds any hang
    assert tool(site, "rep", 1082, site.topo.server_ip4, 1) == 0x05        # refused
    assert tool(site, "rep", 1082, "no-such-host.paqet.test", 80) == 0x04  # DNS failure


def test_udp_associate_and_forward_1000_exchanges(site):
    assert tool(site, "udp", 1080, site.topo.server_ip4, 7000, 1000) == 1000
    assert tool(site, "fwd", 5353, 1000) == 1000


def _fds(lab, ns, pid):
    r = lab.run(ns, "sh", "-c", f"ls /proc/{pid}/fd | wc -l", check=False)
    return int(r.stdout.strip())


def test_cycles_leave_no_fds(site):
    pid = site.client.proc.pid
    # the paqet process is the child of `ip netns exec` (exec'd in place: same pid)
    assert tool(site, "cycles", 1080, site.topo.server_ip4, 7000, 5) == 5
    before = _fds(site.lab, site.topo.client, pid)
    assert tool(site, "cycles", 1080, site.topo.server_ip4, 7000, 50) == 50
    time.sleep(1)
    after = _fds(site.lab, site.topo.client, pid)
    assert after <= before + 2, (before, after)


def test_server_restart_recovers_within_15s(site):
    site.server.stop(sig=9)
    site.server = Paqet(site.lab, site.topo.server, server_config(site.topo), "server-2", site.dir)
    assert site.server.wait_log("listening for packets"), site.server.log()
    t0 = time.monotonic()
    ok = False
    while time.monotonic() - t0 < 15 and not ok:
        r = curl(site.lab, site.topo.client, f"http://{site.topo.server_ip4}:8000/blob5", timeout=5)
        ok = r.stdout.startswith("200 ")
    assert ok, site.client.log()[-3000:]


@pytest.mark.parametrize("fec", [(0, 0), (10, 3)], ids=["nofec", "fec10-3"])
def test_50mb_through_5pct_loss(lab, fec):
    topo = lab.routed()
    lab.set_loss(topo.router, 5)
    with tempdir() as d:
        digest = make_blob(d, "blob", 50 << 20)
        http_server(lab, topo.server, d)
        srv = Paqet(lab, topo.server, server_config(topo, fec=fec), "server", d)
        assert srv.wait_log("listening for packets"), srv.log()
        cli = Paqet(lab, topo.client, client_config(topo, explicit=False, fec=fec), "client", d)
        assert wait_port(lab, topo.client, 1080), cli.log()
        out = os.path.join(d, "got")
        r = curl(lab, topo.client, f"http://{topo.server_ip4}:8000/blob", out=out, timeout=240)
        assert r.stdout.startswith("200 "), (r.stdout, r.stderr, cli.log()[-2000:])
        with open(out, "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == digest
        print(f"5% loss {fec}: {r.stdout}")


def test_paqet_ping_measures_rtt(site):
    r = site.lab.run(site.topo.client, PY, "-m", "paqet", "ping", "-c", site.client.path,
                     "-n", "3", "-i", "0.2", check=False, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "3 packets transmitted, 3 received, 0% packet loss" in r.stdout
    assert "rtt min/avg/max/mdev" in r.stdout


def test_paqet_dump_shows_frames(site):
    p = subprocess.Popen(["ip", "netns", "exec", site.topo.server, PY, "-m", "paqet", "dump", "-c",
                          site.server.path, "--decode", "--count", "3"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.5)
    curl(site.lab, site.topo.client, f"http://{site.topo.server_ip4}:8000/blob5")
    out, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    assert out.count(" IN  198.18.0.1:") >= 3 and "  kcp conv=0x" in out, out
