"""Ports for raw frames are held by a bound TCP socket, so two clients never share one."""

import socket

from paqet.net.backend import CLIENT_PORT_RANGE, reserve_port


def test_random_ports_are_held_and_distinct():
    held = [reserve_port() for _ in range(32)]
    try:
        ports = [p for p, _ in held]
        assert all(s is not None for _, s in held)
        assert len(set(ports)) == len(ports)
        assert all(CLIENT_PORT_RANGE[0] <= p <= CLIENT_PORT_RANGE[1] for p in ports)
        # the kernel will not give a held port to anyone else
        probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            try:
                probe.bind(("127.0.0.1", ports[0]))
                bound = True
            except OSError:
                bound = False
            assert not bound
        finally:
            probe.close()
    finally:
        for _, s in held:
            s.close()


def test_a_port_in_use_is_used_without_a_hold():
    port, s = reserve_port()
    try:
        again, s2 = reserve_port(port)
        assert again == port and s2 is None
    finally:
        s.close()
    # released: it can be held again
    again, s3 = reserve_port(port)
    assert s3 is not None
    s3.close()
