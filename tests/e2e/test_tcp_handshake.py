"""network.tcp.mode handshake (issue 20) over real raw frames: client - router with strict
connection tracking (nf_conntrack_tcp_loose=0, be_liberal=0, `ct state invalid drop`,
new connections only with a SYN) - server. Stateless frames get nothing through it (the
contrast that shows these tests can fail); handshake flows carry 50 MB intact, with 2 %
loss before the tracker and after it without a single invalid drop after the handshake;
survive the tracker's established timeout passing during silence; work through MASQUERADE;
and a handshake server still serves stateless clients. Speed: bench/handshake.py."""

import hashlib
import os
import re
import signal
import subprocess
import time

import pytest

from paqetlab import PY, Paqet, client_config, curl, http_server, make_blob, server_config, \
    tempdir, wait_port, write_config

pytestmark = [pytest.mark.root, pytest.mark.timeout(300)]

MB50 = 50 << 20


def handshake(cfg: dict, **tcp) -> dict:
    cfg["network"]["tcp"] = {"mode": "handshake", **tcp}
    return cfg


def quiet_tunnel(cfg: dict) -> dict:
    """smux keep-alives every 60 s: the tunnel itself stays silent through an idle test."""
    cfg["transport"]["kcp"].update(smuxkalive=60, smuxktimeout=120)
    return cfg


class Setup:
    def __init__(self, lab, d, masquerade=False, established_timeout=None, server_tcp=None,
                 client_tcp=None, quiet=False, blob=MB50, ipv6=False, driver="auto") -> None:
        self.lab, self.dir = lab, d
        self.topo = t = lab.routed()
        lab.strict_tracking(t.router, masquerade_out=t.router_server_if if masquerade else None,
                            established_timeout=established_timeout)
        self.digest = make_blob(d, "blob", blob)
        http_server(lab, t.server, d)
        scfg = server_config(t, ipv6=ipv6, driver=driver)
        ccfg = client_config(t, ipv6=ipv6)
        ccfg["network"]["driver"] = driver
        self.host = f"[{t.server_ip6}]" if ipv6 else t.server_ip4
        if server_tcp is not None:
            handshake(scfg, **server_tcp)
        if client_tcp is not None:
            handshake(ccfg, **client_tcp)
        if quiet:
            quiet_tunnel(scfg)
            quiet_tunnel(ccfg)
        self.server = Paqet(lab, t.server, scfg, "server", d)
        assert self.server.wait_log("listening for packets"), self.server.log()
        self.client = Paqet(lab, t.client, ccfg, "client", d)
        assert wait_port(lab, t.client, 1080), self.client.log()
        assert wait_port(lab, t.server, 8000, host=t.server_ip4)

    def fetch(self, timeout: float = 120) -> tuple[bool, float, str]:
        """(intact, seconds, curl's status line) of one download of the blob."""
        out = os.path.join(self.dir, f"got-{time.monotonic_ns()}")
        t0 = time.monotonic()
        r = curl(self.lab, self.topo.client, f"http://{self.host}:8000/blob",
                 timeout=timeout, out=out)
        took = time.monotonic() - t0
        ok = False
        if os.path.exists(out):
            with open(out, "rb") as f:
                ok = hashlib.sha256(f.read()).hexdigest() == self.digest
            os.unlink(out)
        return ok and r.stdout.startswith("200 "), took, (r.stdout + r.stderr).strip()

    def drops(self) -> dict:
        return self.lab.tracker_drops(self.topo.router)

    def open_flow(self) -> None:
        """A first request (a 404), so that the session and its flow are up."""
        r = curl(self.lab, self.topo.client, f"http://{self.host}:8000/none", timeout=30)
        assert r.stdout.startswith("404 "), (r.stdout, r.stderr, self.client.log()[-1500:])


def test_stateless_frames_get_nothing_through_a_strict_router(lab):
    """The contrast: today's frames (no handshake) are all dropped by the router (conntrack
    calls them invalid: it does not pick up connections it did not see open), so nothing is
    fetched. The server runs handshake mode
    (it serves stateless peers too: test_handshake_server_serves_stateless_clients_too)."""
    with tempdir() as d:
        s = Setup(lab, d, server_tcp={}, blob=1 << 20)
        ok, took, status = s.fetch(timeout=8)
        assert not ok, status
        drops = s.drops()
        print(f"\nstateless through the strict router: {status!r}, router drops {drops}")
        assert drops["invalid"] > 0


@pytest.mark.parametrize("variant", ["ipv4", "ipv6", "pcap"])
def test_handshake_download_through_a_strict_router(lab, variant):
    """50 MB intact, not one packet dropped by the router (IPv4, AF_PACKET); the same
    through IPv6 and with the libpcap backend (5 MB)."""
    with tempdir() as d:
        size = MB50 if variant == "ipv4" else 5 << 20
        s = Setup(lab, d, server_tcp={}, client_tcp={}, blob=size, ipv6=variant == "ipv6",
                  driver="pcap" if variant == "pcap" else "auto")
        ok, took, status = s.fetch()
        assert ok, (status, s.client.log()[-2000:])
        drops = s.drops()
        print(f"\nhandshake ({variant}), {size >> 20} MB through the strict router: "
              f"{size / took / 1e6:.1f} MB/s, router drops {drops}")
        assert drops == {"invalid": 0, "new": 0}, drops
        assert "tcp: flow to" in s.client.log()


@pytest.mark.parametrize("where", ["before", "after"])
def test_handshake_with_loss_before_or_after_the_tracker(lab, where):
    """2 % of the TCP packets the router forwards are lost, both directions, before its
    tracking sees them or after: the download is intact and the tracker counts no invalid
    packet once the flow is open."""
    with tempdir() as d:
        s = Setup(lab, d, server_tcp={}, client_tcp={})
        t = s.topo
        s.open_flow()
        before = s.drops()
        lab.set_tcp_loss(t.router, where, 2.0, [t.router_client_if, t.router_server_if])
        ok, took, status = s.fetch()
        lost = lab.tcp_lost(t.router, where)
        lab.set_tcp_loss(t.router, where, 0, [])
        after = s.drops()
        print(f"\nhandshake, 2 % loss {where} the tracker: 50 MB in {took:.1f} s "
              f"({MB50 / took / 1e6:.1f} MB/s), {lost} packets lost, router drops {before} -> "
              f"{after}")
        assert ok, (status, s.client.log()[-2000:])
        assert lost > 500  # ~2 % of the ~40000 frames of 50 MB and their ACKs
        assert after["invalid"] == before["invalid"], (before, after)


@pytest.mark.parametrize("keepalive,recovers", [(5, False), (0, True)],
                         ids=["keepalive-5s", "keepalive-off"])
def test_idle_past_the_trackers_timeout(lab, keepalive, recovers):
    """Established timeout 10 s, 20 s without a frame from the tunnel (smux keep-alives
    every 60 s): with the TCP keep-alive (5 s) the flow survives; without it (0) the tracker
    forgets the flow and the client opens it again. Either way the next fetch works, within
    5 s (curl's time limit: the acceptance's bound)."""
    with tempdir() as d:
        s = Setup(lab, d, established_timeout=10, server_tcp={},
                  client_tcp={"keepalive": keepalive}, quiet=True, blob=1 << 20)
        ok, _, status = s.fetch(timeout=30)
        assert ok, status
        time.sleep(20)
        ok, took, status = s.fetch(timeout=5)
        log = s.client.log()
        print(f"\nkeepalive {keepalive}: the fetch after 20 s idle took {took:.1f} s; "
              f"router drops {s.drops()}")
        assert ok, (status, log[-2000:])
        assert ("stopped getting through" in log) == recovers, log[-2000:]


def test_masquerade_router_with_strict_tracking(lab):
    with tempdir() as d:
        s = Setup(lab, d, masquerade=True, server_tcp={}, client_tcp={})
        ok, took, status = s.fetch()
        assert ok, (status, s.client.log()[-2000:])
        assert s.drops()["invalid"] == 0
        # the server saw the router's address, not the client's
        assert re.search(r"198\.18\.2\.1:\d+", s.server.log()), s.server.log()[-2000:]


def test_handshake_server_serves_stateless_clients_too(lab):
    """One server in handshake mode, two clients through a plain router at once: one opens
    a flow, the other sends today's frames; both fetch intact."""
    with tempdir() as d:
        t = lab.routed()
        digest = make_blob(d, "blob", 5 << 20)
        http_server(lab, t.server, d)
        srv = Paqet(lab, t.server, handshake(server_config(t)), "server", d)
        assert srv.wait_log("listening for packets"), srv.log()
        flow = Paqet(lab, t.client, handshake(client_config(t)), "flow", d)
        plain = Paqet(lab, t.client, client_config(t, socks_port=1081), "plain", d)
        assert wait_port(lab, t.client, 1080) and wait_port(lab, t.client, 1081)
        assert wait_port(lab, t.server, 8000, host=t.server_ip4)
        for port, who in ((1080, flow), (1081, plain)):
            out = os.path.join(d, f"got{port}")
            r = curl(lab, t.client, f"http://{t.server_ip4}:8000/blob", socks_port=port, out=out)
            with open(out, "rb") as f:
                assert hashlib.sha256(f.read()).hexdigest() == digest, (r.stdout, who.log()[-1500:])
        assert "tcp: flow to" in flow.log() and "tcp: flow" not in plain.log()


PROBE = r'''
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.settimeout(3)
try:
    s.connect((sys.argv[1], 9999))
    print("connected")
except socket.timeout:
    print("timeout")
except OSError as exc:
    print(type(exc).__name__)
'''


def test_syns_without_the_token_get_no_answer(lab):
    """Probing: a kernel's SYN (a port scan, a prober's connect) and our own SYN with another
    key both get nothing back from a handshake server - no SYN-ACK, no RST: the port looks
    filtered, as in stateless mode. The server counts them."""
    with tempdir() as d:
        t = lab.routed()
        srv = Paqet(lab, t.server, handshake(server_config(t)), "server", d)
        assert srv.wait_log("listening for packets"), srv.log()
        dump = lab.popen(t.client, ["timeout", "9", "tcpdump", "-n", "-l", "-i", t.client_if,
                                    "tcp and src port 9999"], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True)
        time.sleep(1)
        r = lab.run(t.client, PY, "-c", PROBE, t.server_ip4, check=False, timeout=20)
        assert r.stdout.strip() == "timeout", r.stdout + r.stderr
        stranger = Paqet(lab, t.client, handshake(client_config(t, key="not the key")),
                         "stranger", d)
        assert stranger.wait_log("no SYN-ACK", timeout=15), stranger.log()
        out, _ = dump.communicate(timeout=20)
        assert out.strip() == "", out  # not one frame from the server's port
        stranger.stop()
        srv.proc.send_signal(signal.SIGUSR1)
        assert srv.wait_log("tcp_syn_refused", timeout=5), srv.log()
        refused = int(re.search(r"'tcp_syn_refused': (\d+)", srv.log()).group(1))
        assert refused >= 3  # the stranger's SYN and its retransmissions


def test_check_tells_that_the_path_needs_handshake(lab):
    """`paqet check` tries both modes: through the strict router a stateless client config
    fails with the fix to set handshake; a handshake config passes and says why it is needed."""
    with tempdir() as d:
        t = lab.routed()
        lab.strict_tracking(t.router)
        srv = Paqet(lab, t.server, handshake(server_config(t)), "server", d)
        assert srv.wait_log("listening for packets"), srv.log()
        for name, cfg, code, want in (
                ("stateless", client_config(t), 1,
                 ["[FAIL] tunnel: no answer from 198.18.2.2:9999 in network.tcp.mode stateless",
                  "this path needs network.tcp.mode handshake", "1 problem(s) found",
                  "fix: set network.tcp.mode: handshake"]),
                ("handshake", handshake(client_config(t)), 0,
                 ["[ OK ] tunnel:", "[ OK ] tcp mode: this path needs network.tcp.mode "
                  "handshake: stateless frames get no answer"])):
            path = write_config(os.path.join(d, f"{name}.yaml"), cfg)
            r = lab.run(t.client, PY, "-m", "paqet", "check", "-c", path, "-n", "2", "-W", "1.5",
                        check=False, timeout=90)
            print(r.stdout)
            assert r.returncode == code, r.stdout + r.stderr
            assert all(w in r.stdout for w in want), r.stdout
            assert "Traceback" not in r.stdout + r.stderr


def test_server_restart_through_a_strict_router(lab):
    """The server restarts (its flows and sessions gone): the client opens a new flow and a
    new session by itself, and fetches work again (bounded wait)."""
    with tempdir() as d:
        s = Setup(lab, d, server_tcp={}, client_tcp={}, blob=1 << 20)
        assert s.fetch(timeout=30)[0]
        s.server.stop()
        t = s.topo
        s.server = Paqet(lab, t.server, handshake(server_config(t)), "server2", d)
        assert s.server.wait_log("listening for packets"), s.server.log()
        ok, status = False, ""
        end = time.monotonic() + 60
        while not ok and time.monotonic() < end:
            ok, _, status = s.fetch(timeout=5)
        assert ok, (status, s.client.log()[-2000:])
        assert s.client.log().count("tcp: flow to") >= 2
