"""Two KCP engines over the simulated lossy link deliver a byte stream intact, every mode."""

import hashlib
import random

import pytest

from paqet.kcp.engine import KCP
from paqet.kcp.presets import configure
from sim import Link, Sim


def make(conv, mode, snd=128, rcv=512, mtu=1330):
    # paqet's client defaults (sndwnd 128, rcvwnd 512); the receiver gets the server's 1024
    return configure(KCP(conv), mode, mtu=mtu, sndwnd=snd, rcvwnd=rcv)


def transfer(mode, loss, size, seed=7, dup=0.02, reorder=0.05):
    a, b = make(0x1234, mode), make(0x1234, mode, snd=1024, rcv=1024)
    sim = Sim(a, b, Link(loss=loss, dup=dup, reorder=reorder, delay_ms=10, seed=seed),
              Link(loss=loss, dup=dup, reorder=reorder, delay_ms=10, seed=seed + 1))
    payload = random.Random(seed).randbytes(size)
    sent = [0]
    got = []
    total = [0]

    def feed():
        while sent[0] < size and a.send_room > 0:
            chunk = payload[sent[0]:sent[0] + 8192]
            a.send(chunk)
            sent[0] += len(chunk)
        data = b.recv()
        if data:
            got.append(data)
            total[0] += len(data)

    ok = sim.run(lambda: total[0] >= size, max_ms=600_000, each=feed)
    assert ok, f"{mode} at {loss:.0%}: only {total[0]} of {size} bytes after {sim.now} ms"
    data = b"".join(got)
    assert hashlib.sha256(data).digest() == hashlib.sha256(payload).digest()
    return a, b, sim


@pytest.mark.parametrize("mode", ["normal", "fast", "fast2", "fast3"])
@pytest.mark.parametrize("loss", [0.0, 0.05, 0.20])
def test_stream_arrives_intact(mode, loss):
    a, b, sim = transfer(mode, loss, 4 << 20)
    if loss:
        assert a.retransmissions > 0 and a.lost_segments + a.fast_retransmissions > 0
    assert b.bad_input == 0


def test_no_loss_means_no_retransmission():
    a, b, sim = transfer("fast3", 0.0, 200_000, dup=0, reorder=0)
    assert a.retransmissions == 0
    assert a.rx_srtt > 0
