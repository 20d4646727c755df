"""`paqet ping` reports what the path does (issue 10's acceptance): client and server joined
through tests/impair.py's relay; the average RTT grows by about twice the added one-way
delay, and with 30 % of frames dropped the retransmissions show and, with a reply timeout
shorter than a retransmission, so does ping loss. Upstream's ping flags keep working.

The delay assertion is a band, as the issue asks for an RTT that moves: +60..+300 ms for
+100 ms added per round trip (the relay itself adds about a millisecond; a loaded machine
adds scheduling noise, hence the generous upper bound)."""

import os
import re

import pytest

import netlab
from conftest import netlab_unavailable
from impair import Relay, impaired_hosts
from paqetlab import PY, Paqet, client_config, server_config, tempdir, write_config

pytestmark = [pytest.mark.root, pytest.mark.timeout(240)]


@pytest.fixture(scope="module")
def site():
    reason = netlab_unavailable()
    if reason:
        pytest.skip(f"network-namespace test skipped: {reason}")
    with netlab.NetLab() as lab, tempdir() as d:
        topo = impaired_hosts(lab)
        relay = Relay(lab, topo)
        srv = Paqet(lab, topo.server, server_config(topo), "server", d)
        assert srv.wait_log("listening for packets"), srv.log()
        s = type("Site", (), {})()
        s.lab, s.topo, s.dir, s.relay = lab, topo, d, relay
        s.client = write_config(os.path.join(d, "client.yaml"), client_config(topo, explicit=False))
        yield s
        s.relay.stop()
        srv.stop()


def impair(site, **kw) -> str:
    """Restart the relay with new settings; returns the old one's counters."""
    counters = site.relay.stop()
    site.relay = Relay(site.lab, site.topo, **kw)
    return counters


def ping(site, *args):
    r = site.lab.run(site.topo.client, PY, "-m", "paqet", "ping", "-c", site.client, *args,
                     check=False, timeout=120)
    out = r.stdout
    m = re.search(r"(\d+) packets transmitted, (\d+) received, (\d+)% packet loss", out)
    assert m, out + r.stderr
    rtt = re.search(r"rtt min/avg/max/mdev = ([\d.]+)/([\d.]+)/([\d.]+)/([\d.]+) ms", out)
    kcp = re.search(r"kcp: (\d+) segments sent by this end, (\d+) retransmitted", out)
    return dict(rc=r.returncode, out=out, sent=int(m.group(1)), received=int(m.group(2)),
                loss=int(m.group(3)), avg=float(rtt.group(2)) if rtt else None,
                retrans=int(kcp.group(2)) if kcp else None)


def test_the_relay_itself_delays_and_drops(site):
    """tests/impair.py on its own, measured with the kernel's ping(8)."""
    impair(site, delay_ms=40)
    r = site.lab.run(site.topo.client, "ping", "-c", "3", "-i", "0.2", "-W", "2",
                     site.topo.server_ip4, check=False)
    times = [float(t) for t in re.findall(r"time=([\d.]+) ms", r.stdout)]
    assert len(times) == 3 and min(times) >= 80, r.stdout
    counters = impair(site, loss=1.0)
    assert "dropped=0" in counters and "overflow=0" in counters, counters
    r = site.lab.run(site.topo.client, "ping", "-c", "2", "-i", "0.2", "-W", "1",
                     site.topo.server_ip4, check=False)
    assert r.returncode != 0 and " 0 received" in r.stdout, r.stdout
    counters = impair(site)
    assert re.search(r"dropped=[1-9]", counters) and "relayed=0" in counters, counters


def test_rtt_grows_with_added_delay(site):
    base = ping(site, "-n", "8", "-i", "0.1")
    assert base["rc"] == 0 and base["received"] == 8 and base["loss"] == 0, base["out"]
    counters = impair(site, delay_ms=50)
    assert re.search(r"relayed=[1-9]", counters), counters  # the frames did cross the relay
    slow = ping(site, "-n", "8", "-i", "0.1")
    assert slow["rc"] == 0 and slow["received"] == 8, slow["out"]
    grew = slow["avg"] - base["avg"]
    print(f"avg RTT {base['avg']:.1f} ms -> {slow['avg']:.1f} ms with 50 ms each way (+{grew:.1f})")
    assert 60 <= grew <= 300, (base["out"], slow["out"])
    # every single reply took at least the added 100 ms
    times = [float(t) for t in re.findall(r"time=([\d.]+) ms", slow["out"])]
    assert len(times) == 8 and min(times) >= 100, slow["out"]


def test_loss_shows_as_retransmissions_and_late_replies(site):
    impair(site, loss=0.0)
    clean = ping(site, "-n", "10", "-i", "0.05")
    assert clean["rc"] == 0 and clean["received"] == 10, clean["out"]
    impair(site, loss=0.3, seed=7)
    lossy = ping(site, "-n", "10", "-i", "0.05")
    print(f"30 % loss: {lossy['loss']} % ping loss, {lossy['retrans']} KCP retransmissions, "
          f"avg {lossy['avg']} ms (clean: {clean['avg']} ms)")
    # the reliable transport hides the drops from a patient ping, but not its retransmissions
    assert lossy["retrans"] > 0, lossy["out"]
    # a reply timeout shorter than any retransmission (RTO >= the 100 ms RTT here) turns the
    # drops into ping loss: a round trip survives 30 % loss each way about half the time
    impair(site, delay_ms=50, loss=0.3, seed=11)
    short = ping(site, "-n", "10", "-i", "0.05", "-W", "0.15")
    print(f"30 % loss, 50 ms each way, -W 0.15: {short['loss']} % ping loss")
    assert short["sent"] == 10 and short["loss"] > 0, short["out"]
    assert "no reply for seq=" in short["out"]


def test_upstream_ping_flags(site):
    impair(site)
    # upstream's `paqet ping -c FILE --payload STR` (our --raw: one unmeasured packet)
    r = site.lab.run(site.topo.client, PY, "-m", "paqet", "ping", "-c", site.client, "--raw",
                     "--payload", "HELLO", check=False, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert 'payload: "HELLO" (5 bytes)' in r.stderr and "packet sent successfully" in r.stderr
    counters = site.relay.stop()
    site.relay = Relay(site.lab, site.topo)
    assert re.search(r"relayed=[1-9]", counters), counters
    # --config long form and --payload accepted together with the measuring ping
    r = site.lab.run(site.topo.client, PY, "-m", "paqet", "ping", "--config", site.client,
                     "--payload", "PING", "--count", "2", "--interval", "0.1", "--timeout", "3",
                     check=False, timeout=60)
    assert r.returncode == 0 and "2 packets transmitted, 2 received" in r.stdout, r.stdout + r.stderr
