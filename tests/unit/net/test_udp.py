"""The UDP backend (tests without root, kcptun interop) behind the common interface, and the
factory."""

import select

import pytest

from paqet.net import backend as be
from paqet.net.factory import open_backend
from paqet.net.udp import UdpBackend


def wait_readable(b, timeout=2.0):
    r, _, _ = select.select([b], [], [], timeout)
    return bool(r)


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_round_trip_and_counters(host):
    try:
        a, b = UdpBackend(host, 0), UdpBackend(host, 0)
    except OSError as exc:
        pytest.skip(f"no {host}: {exc}")
    try:
        for p in (a.local_port, b.local_port):
            assert be.CLIENT_PORT_RANGE[0] <= p <= be.CLIENT_PORT_RANGE[1]
        assert a.recv_batch() == []  # non-blocking when nothing waits
        for i in range(50):
            a.send(b"d%d" % i, (host, b.local_port))
        got = []
        for _ in range(50):
            if len(got) == 50 or not wait_readable(b):
                break
            got += b.recv_batch(7)  # drains at most max_n per call
        assert [p for p, _ in got] == [b"d%d" % i for i in range(50)]
        assert {addr for _, addr in got} == {(host, a.local_port)}
        assert a.counters()["frames_out"] == 50 and b.counters()["frames_in"] == 50
        a.set_peer_flags((host, b.local_port), [2])  # meaningless for UDP, accepted
    finally:
        a.close()
        b.close()


def test_fixed_port_and_send_errors():
    a = UdpBackend("127.0.0.1", 0)
    try:
        b = UdpBackend("127.0.0.1", a.local_port + 1 if a.local_port < 65535 else a.local_port - 1)
    except OSError:
        pytest.skip("neighbouring port in use")
    try:
        assert abs(b.local_port - a.local_port) == 1
        a.send(b"x", ("2001:2::1", 9))  # wrong family for this socket: counted, not raised
        assert a.send_errors == 1
    finally:
        a.close()
        b.close()


def test_random_port_range():
    ports = {be.random_port() for _ in range(2000)}
    assert min(ports) >= 32768 and max(ports) <= 65535 and len(ports) > 1000


def test_factory():
    u = open_backend("udp", host="127.0.0.1")
    try:
        assert isinstance(u, UdpBackend) and u.local_port >= 32768
    finally:
        u.close()
    with pytest.raises(ValueError):
        open_backend("carrier-pigeon")
    with pytest.raises(ValueError):
        open_backend("afpacket")  # needs an interface


def test_link_type_from_sysfs():
    from paqet.net.interface import interface_mac, link_type
    assert link_type("lo") == "ether"  # ARPHRD_LOOPBACK carries (zero) Ethernet headers
    assert link_type("no-such-interface-x") == "ether"
    assert interface_mac("no-such-interface-x") == b"\0" * 6
