"""Issue 9's fault tests over raw frames: client - router - server namespaces, real `paqet run`
processes, targets from soak_target.py. kill -9 and restart of either side, a 30 s partition
(nftables drop in the router) then heal, a client vanishing mid-transfer, a target that never
reads, a target that resets mid-transfer. Leaks are checked by counting /proc/PID/fd and the
sessions the server reports on SIGUSR1."""

import json
import os
import signal
import subprocess
import time

import pytest

import netlab
from conftest import netlab_unavailable
from paqetlab import PY, Paqet, client_config, server_config, tempdir, wait_port

pytestmark = [pytest.mark.root, pytest.mark.timeout(240)]
HERE = os.path.dirname(__file__)
TOOL = os.path.join(HERE, "faults_tool.py")
TARGET = 7200           # blob; +1 echo; +2 never reads; +3 resets
KEEPALIVE_TIMEOUT = 8   # transport.kcp.smuxktimeout default
# a dead peer is noticed 8-10 s after its last frame (timeout + one keepalive interval; Go's
# smux, checking once per period, takes 8-16 s); each sessions() reading takes a second or more
NOTICE_BOUND = 2 * KEEPALIVE_TIMEOUT + 6


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def poll(cond, timeout: float, step: float = 0.5):
    """cond() until true or timeout; returns the last value (the caller asserts)."""
    end = time.monotonic() + timeout
    while True:
        v = cond()
        if v or time.monotonic() >= end:
            return v
        time.sleep(step)


class Pair:
    def __init__(self, lab, topo, d) -> None:
        self.lab, self.topo, self.dir = lab, topo, d
        self.n = 0
        self.server = self.client = None

    def start_server(self) -> None:
        self.n += 1
        self.server = Paqet(self.lab, self.topo.server, server_config(self.topo),
                            f"server-{self.n}", self.dir)
        assert self.server.wait_log("listening for packets"), self.server.log()

    def start_client(self) -> None:
        self.n += 1
        self.client = Paqet(self.lab, self.topo.client,
                            client_config(self.topo, explicit=False), f"client-{self.n}", self.dir)
        assert wait_port(self.lab, self.topo.client, 1080), self.client.log()

    def ensure(self) -> None:
        """Both processes running and a request through the tunnel succeeding."""
        if self.server is None or self.server.proc.poll() is not None:
            self.start_server()
        if self.client is None or self.client.proc.poll() is not None:
            self.start_client()
        assert poll(lambda: self.fetch_ok(64 << 10, timeout=10), 40), self.logs()

    def tool(self, *args, timeout: float = 60) -> dict:
        r = self.lab.run(self.topo.client, PY, TOOL, *map(str, args), check=False,
                         timeout=timeout)
        if r.returncode != 0:
            return {"error": r.stderr.strip().splitlines()[-1:] or r.returncode}
        return json.loads(r.stdout)

    def fetch_ok(self, size: int, seed: int = 1, timeout: float = 60) -> bool:
        try:
            out = self.tool("fetch", 1080, self.topo.server_ip4, TARGET, size, seed,
                            timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
        return bool(out.get("ok"))

    def popen_tool(self, *args) -> subprocess.Popen:
        return self.lab.popen(self.topo.client, [PY, TOOL, *map(str, args)],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)

    def sessions(self) -> int:
        """Sessions the server holds: SIGUSR1 logs one `stats` line per session."""
        mark = len(self.server.log())
        self.server.proc.send_signal(signal.SIGUSR1)
        time.sleep(1.0)
        return self.server.log()[mark:].count(" stats {")

    def logs(self) -> str:
        return (f"--- server\n{self.server.log()[-6000:]}\n"
                f"--- client\n{self.client.log()[-2500:]}")


@pytest.fixture(scope="module")
def pair():
    reason = netlab_unavailable()
    if reason:
        pytest.skip(f"network-namespace test skipped: {reason}")
    with netlab.NetLab() as lab, tempdir() as d:
        topo = lab.routed()
        lab.popen(topo.server, [PY, os.path.join(HERE, "soak_target.py"), str(TARGET)])
        assert wait_port(lab, topo.server, TARGET + 1, host=topo.server_ip4)
        p = Pair(lab, topo, d)
        p.ensure()
        yield p
        for proc in (p.client, p.server):
            if proc is not None:
                proc.stop()


def test_target_resets_mid_transfer(pair):
    pair.ensure()
    base = fds(pair.server.proc.pid)
    out = pair.tool("reset", 1080, pair.topo.server_ip4, TARGET + 3, 4 << 20, 3)
    # the local connection ends (EOF or RST) instead of hanging until the tool's 30 s timeout
    assert out.get("end") in ("eof", "reset"), (out, pair.logs())
    assert poll(lambda: fds(pair.server.proc.pid) <= base, 10), (base, pair.logs())
    assert pair.fetch_ok(1 << 20)


def test_target_that_never_reads(pair):
    """The client keeps sending to a target that never reads: the sender is held back,
    memory stays bounded, and other streams of the same session keep working (a stuck
    stream holds at most its smux window: docs/reliability.md on head-of-line blocking)."""
    pair.ensure()
    cpid, spid = pair.client.proc.pid, pair.server.proc.pid
    rss0 = (rss_kb(cpid), rss_kb(spid))
    base_fds = fds(spid)
    pusher = pair.popen_tool("push", 1080, pair.topo.server_ip4, TARGET + 2, 10)
    time.sleep(4)
    assert pair.fetch_ok(2 << 20, seed=5), pair.logs()   # same session, another stream
    out, _ = pusher.communicate(timeout=60)
    res = json.loads(out)
    rss1 = (rss_kb(cpid), rss_kb(spid))
    print(f"never-reading target: {res}, RSS client {rss0[0]}->{rss1[0]} KiB, "
          f"server {rss0[1]}->{rss1[1]} KiB")
    assert res["stalled_s"] >= 2, res           # back-pressure reached the sender
    assert res["sent"] < 64 << 20, res          # kernel buffers + windows + send budget
    assert rss1[0] - rss0[0] < 48 << 10 and rss1[1] - rss0[1] < 48 << 10, (rss0, rss1)
    assert pair.fetch_ok(1 << 20, seed=6)
    # the sender left (RST): both relays reset after LINGER (10 s) without progress, and
    # the stuck target's socket is freed
    assert poll(lambda: fds(spid) <= base_fds, 30), (base_fds, fds(spid), pair.logs())


def test_client_vanishes_mid_transfer(pair):
    pair.ensure()
    spid = pair.server.proc.pid
    base = fds(spid)
    assert pair.sessions() == 1
    dl = pair.popen_tool("forever", 1080, pair.topo.server_ip4, TARGET)
    assert json.loads(dl.stdout.readline()).get("started")
    time.sleep(1.0)
    assert fds(spid) > base  # the target connection is open
    pair.client.proc.kill()  # kill -9 the client mid-download
    pair.client.proc.wait(5)
    dl.kill()
    dl.wait(5)
    # the server notices within its keepalive timeout (8-10 s) and frees session, stream and fds
    assert poll(lambda: fds(spid) <= base, NOTICE_BOUND), (base, fds(spid), pair.logs())
    assert pair.sessions() == 0, pair.logs()
    assert "keepalive timeout" in pair.server.log()


def test_kill9_client_and_restart(pair):
    pair.ensure()
    pair.client.proc.kill()
    pair.client.proc.wait(5)
    pair.start_client()
    assert poll(lambda: pair.fetch_ok(1 << 20, timeout=15), 30), pair.logs()
    # the killed client's session expires; only the new one stays
    assert poll(lambda: pair.sessions() == 1, NOTICE_BOUND), pair.logs()


def test_kill9_server_and_restart(pair):
    pair.ensure()
    cpid = pair.client.proc.pid
    base = fds(cpid)
    pair.server.proc.kill()
    pair.server.proc.wait(5)
    pair.start_server()
    t0 = time.monotonic()
    assert poll(lambda: pair.fetch_ok(1 << 20, timeout=15), 40), pair.logs()
    print(f"server restart: first good fetch {time.monotonic() - t0:.1f} s after it listened")
    assert poll(lambda: fds(cpid) <= base, 10), (base, fds(cpid), pair.logs())
    # the client's old conversation may have reached the new server before the client gave
    # it up (keepalive timeout): that session expires too, one stays
    assert poll(lambda: pair.sessions() == 1, NOTICE_BOUND), pair.logs()


def test_partition_30s_then_heal(pair):
    pair.ensure()
    cpid, spid = pair.client.proc.pid, pair.server.proc.pid
    base = (fds(cpid), fds(spid))
    dl = pair.popen_tool("forever", 1080, pair.topo.server_ip4, TARGET)
    assert json.loads(dl.stdout.readline()).get("started")
    time.sleep(1.0)
    pair.lab.set_loss(pair.topo.router, 100)   # every forwarded packet dropped
    try:
        time.sleep(30)
    finally:
        pair.lab.set_loss(pair.topo.router, 0)
    healed = time.monotonic()
    dl.kill()
    dl.wait(5)
    assert poll(lambda: pair.fetch_ok(1 << 20, seed=9, timeout=15), 45), pair.logs()
    print(f"partition: first good fetch {time.monotonic() - healed:.1f} s after the heal")
    # no stuck streams or leaked fds on either side, one session left
    assert poll(lambda: fds(cpid) <= base[0] and fds(spid) <= base[1], 15), \
        (base, fds(cpid), fds(spid), pair.logs())
    assert pair.sessions() == 1, pair.logs()
