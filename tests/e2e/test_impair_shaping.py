"""tests/impair.py's line rate, bottleneck buffer and per-direction loss, end to end between
namespaces: the kernel's TCP through a 20 Mbit/s line gets no more than the line (plus the
bucket's 2 ms depth), a UDP blast beyond the buffer is dropped at the tail and counted as
overflow in its own direction only, and random loss set for one direction stays there.
The bounds are generous: a loaded machine only makes the flows slower, never faster than
the line."""

import json
import os
import subprocess

import pytest

import netlab
from conftest import netlab_unavailable
from impair import DEPTH, Relay, impaired_hosts
from paqetlab import PY, wait_port

pytestmark = [pytest.mark.root, pytest.mark.timeout(240)]

TRAFFIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "wan_traffic.py")
PORT = 8000

BLAST = """
import socket, sys
n, size = int(sys.argv[2]), int(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
payload = bytes(size)
sent = 0
for _ in range(n):
    try:
        s.sendto(payload, (sys.argv[1], 9))
        sent += 1
    except BlockingIOError:
        pass
print(sent)
"""


@pytest.fixture(scope="module")
def site():
    reason = netlab_unavailable()
    if reason:
        pytest.skip(f"network-namespace test skipped: {reason}")
    with netlab.NetLab() as lab:
        topo = impaired_hosts(lab)
        lab.popen(topo.server, [PY, TRAFFIC, "serve", "--port", str(PORT)],
                  stdout=subprocess.DEVNULL)
        s = type("Site", (), {})()
        s.lab, s.topo = lab, topo
        yield s


def transfer(site, direction, size, cap=20.0):
    spec = {"flows": [{"host": site.topo.server_ip4, "port": PORT, "dir": direction,
                       "size": size}], "cap": cap}
    r = site.lab.run(site.topo.client, PY, TRAFFIC, "run", json.dumps(spec), check=False,
                     timeout=cap + 60)
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout)["flows"][0]


@pytest.mark.parametrize("direction", ["down", "up"])
def test_tcp_gets_no_more_than_the_line(site, direction):
    relay = Relay(site.lab, site.topo, delay_ms=5, rate_mbit=20, buffer=100, queue=100000)
    try:
        assert wait_port(site.lab, site.topo.client, PORT, host=site.topo.server_ip4)
        f = transfer(site, direction, 6 << 20)
        counters = relay.counters()
    finally:
        relay.stop()
    assert not f["error"] and f["bytes"] > 0, f
    mbit = f["bytes"] * 8 / f["seconds"] / 1e6
    print(f"{direction}: {mbit:.1f} Mbit/s of TCP payload through a 20 Mbit/s line")
    # payload is ~95 % of the frames' bytes; the bucket's depth adds 2 ms of line at most
    bound = 20e6 * (f["seconds"] + DEPTH) / 8
    assert f["bytes"] <= bound, (f, bound)
    # the data direction's frames are counted there: more frames than the payload needs
    data = counters["down" if direction == "down" else "up"]
    assert data["bytes"] >= f["bytes"] and data["relayed"] >= f["bytes"] // 1500, counters
    # and the shaped flow still got a fair part of the line (generous: a loaded machine)
    assert mbit >= 4, f


def test_udp_blast_overflows_the_buffer_and_is_counted(site):
    relay = Relay(site.lab, site.topo, rate_mbit=20, buffer=50, queue=100000)
    try:
        r = site.lab.run(site.topo.client, PY, "-c", BLAST, site.topo.server_ip4, "3000",
                         "1400", check=False)
        assert r.returncode == 0, r.stderr
        sent = int(r.stdout)
        c = relay.counters()
    finally:
        relay.stop()
    up, down = c["up"], c["down"]
    print(f"sent {sent}: {up}")
    assert sent > 2000
    # every datagram reached the relay (plus the odd ARP or neighbour frame)
    assert sent <= up["frames"] <= sent + 20, (sent, up)
    # a blast far beyond 20 Mbit/s: the buffer holds 50 frames, the rest of the burst is
    # dropped at the tail, and only there (no random loss, no holding cap)
    assert up["overflow"] >= sent // 2, up
    assert up["dropped"] == 0 and up["queue_full"] == 0
    assert up["relayed"] + up["overflow"] + up["send_errors"] <= up["frames"]
    assert down["overflow"] == 0 and down["frames"] < 50, down


def test_random_loss_per_direction(site):
    relay = Relay(site.lab, site.topo, loss=(0.5, 0.0), seed=3, queue=100000)
    try:
        r = site.lab.run(site.topo.client, PY, "-c", BLAST, site.topo.server_ip4, "2000",
                         "200", check=False)
        sent = int(r.stdout)
        c = relay.counters()
    finally:
        final = relay.stop()
    up = c["up"]
    assert sent > 1500
    assert 0.35 * sent <= up["dropped"] <= 0.65 * sent, up
    assert up["overflow"] == 0 and c["down"]["dropped"] == 0, c
    # the totals line of the stopped relay still carries the old keys
    assert "dropped=" in final and "relayed=" in final and "overflow=0" in final, final
    assert relay.final["up"]["dropped"] == up["dropped"]
