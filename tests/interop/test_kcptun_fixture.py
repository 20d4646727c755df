"""The kcptun fixture on its own: kcptun-client -> kcptun-server -> a loopback TCP echo (or
sink) server moves 1 MB byte-exact for several ciphers, FEC off and 10/3, smux v1 and v2.
This proves the helpers in kcptun.py (start, readiness, stop by PID, targets, flags) before
they are used against our stack; plus the key derivation against independent values."""

import hashlib
import os
import socket
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import kcptun  # noqa: E402

from paqet.wire.datagram import DatagramCodec  # noqa: E402

pytestmark = [pytest.mark.kcptun, pytest.mark.timeout(120)]
_reason = kcptun.available()
needs_kcptun = pytest.mark.skipif(_reason is not None,
                                  reason=f"kcptun interop skipped: {_reason}")

SIZE = 1 << 20
CASES = [("aes", (0, 0), 2, "fast"), ("aes", (10, 3), 2, "fast3"),
         ("salsa20", (0, 0), 1, "fast2"), ("salsa20", (10, 3), 1, "fast"),
         ("xor", (4, 2), 2, "normal"), ("none", (0, 0), 2, "fast3"),
         ("sm4", (10, 3), 2, "fast"), ("aes-128", (0, 0), 1, "fast")]


def tunnel(target_addr, crypt, fec, smuxver, mode, **kw):
    kport = kcptun.free_port()
    srv = kcptun.server(f"127.0.0.1:{kport}", target_addr, crypt=crypt, fec=fec,
                        smuxver=smuxver, mode=mode, **kw)
    try:
        lport = kcptun.free_port(kcptun.socket.SOCK_STREAM)
        cli = kcptun.client(f"127.0.0.1:{lport}", f"127.0.0.1:{kport}", crypt=crypt, fec=fec,
                            smuxver=smuxver, mode=mode, **kw)
    except BaseException:
        srv.stop()
        raise
    return srv, cli, f"127.0.0.1:{lport}"


@needs_kcptun
@pytest.mark.parametrize("crypt,fec,smuxver,mode", CASES,
                         ids=[f"{c}-fec{f[0]}.{f[1]}-v{v}-{m}" for c, f, v, m in CASES])
def test_one_megabyte_through_kcptun_echo(crypt, fec, smuxver, mode):
    data = os.urandom(SIZE)
    with kcptun.TcpTarget("echo") as echo:
        srv, cli, addr = tunnel(echo.addr, crypt, fec, smuxver, mode)
        with srv, cli:
            got = kcptun.exchange(addr, data, timeout=60)
            log = srv.stderr()
        assert len(got) == SIZE
        assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
        assert echo.connections == 1
    # kcptun logs the parameters it was given: the flags reached it
    assert f"encryption: {crypt}" in log
    assert f"datashard: {fec[0]} parityshard: {fec[1]}" in log
    assert "compression: false" in log
    assert f"smux version: {smuxver}" in log


@needs_kcptun
def test_sink_two_connections_and_stop_by_pid():
    data = [os.urandom(300_000), os.urandom(200_000)]
    with kcptun.TcpTarget("sink") as sink:
        srv, cli, addr = tunnel(sink.addr, "aes", (0, 0), 2, "fast3")
        with srv, cli:
            for d in data:
                host, port = addr.split(":")
                with socket.create_connection((host, int(port)), timeout=30) as c:
                    c.sendall(d)
                    c.shutdown(socket.SHUT_WR)
                    c.settimeout(30)
                    assert c.recv(1) == b""      # the sink closed: all of it arrived
            pids = (srv.pid, cli.pid)
            assert kcptun.bound(srv.pid, "udp", srv.port)
            assert kcptun.bound(cli.pid, "tcp", cli.port)
        assert srv.proc.returncode is not None and cli.proc.returncode is not None
        for pid, proto, port in ((pids[0], "udp", srv.port), (pids[1], "tcp", cli.port)):
            assert not kcptun.bound(pid, proto, port)
        want = sorted((len(d), hashlib.sha256(d).hexdigest()) for d in data)
        assert sorted(sink.received) == want


@needs_kcptun
@pytest.mark.parametrize("crypt", ["null", "aes-128-gcm", "no-such-cipher"])
def test_crypt_names_this_kcptun_does_not_know_mean_aes(crypt):
    data = os.urandom(50_000)
    with kcptun.TcpTarget("echo") as echo:
        kport = kcptun.free_port()
        lport = kcptun.free_port(socket.SOCK_STREAM)
        with kcptun.server(f"127.0.0.1:{kport}", echo.addr, crypt=crypt), \
                kcptun.client(f"127.0.0.1:{lport}", f"127.0.0.1:{kport}", crypt="aes"):
            got = kcptun.exchange(f"127.0.0.1:{lport}", data, timeout=30)
    assert got == data


@needs_kcptun
def test_bad_flags_fail_fast_with_the_log():
    with pytest.raises(RuntimeError, match="exited"):
        kcptun.server("127.0.0.1:1", "127.0.0.1:2", extra=["--no-such-flag"])


@needs_kcptun
def test_readiness_timeout_is_bounded():
    # wait for a port this process will never bind: RuntimeError after the timeout, and the
    # process is stopped
    port = kcptun.free_port()
    with pytest.raises(RuntimeError, match="did not bind"):
        kcptun.Kcptun(["kcptun-server", "-l", f"127.0.0.1:{port}", "-t", "127.0.0.1:9",
                       "--quiet"], ready=("tcp", port), timeout=1.0)


# -- key derivation: independent of kcptun being installed --------------------------------------

def test_kcptun_key_is_pbkdf2_sha1_kcp_go_4096():
    # PBKDF2-HMAC-SHA1 test vector shape (RFC 6070 uses salt "salt"); here kcptun's salt
    k = kcptun.kcptun_key("it's a secrect")          # kcptun's default --key (sic)
    assert len(k) == 32
    assert k == hashlib.pbkdf2_hmac("sha1", b"it's a secrect", b"kcp-go", 4096, 32)
    assert k != hashlib.pbkdf2_hmac("sha256", b"it's a secrect", b"paqet", 100000, 32)


@pytest.mark.parametrize("crypt,block,n", [
    ("aes", "aes", 32), ("aes-128", "aes-128", 16), ("aes-192", "aes-192", 24),
    ("salsa20", "salsa20", 32), ("blowfish", "blowfish", 32), ("twofish", "twofish", 32),
    ("cast5", "cast5", 16), ("3des", "3des", 24), ("tea", "tea", 16), ("xtea", "xtea", 16),
    ("xor", "xor", 32), ("sm4", "sm4", 16), ("none", "none", 32),
    ("null", "aes", 32), ("aes-128-gcm", "aes", 32), ("bogus", "aes", 32)])
def test_block_key_cut_and_name(crypt, block, n):
    full = kcptun.kcptun_key("interop")
    assert kcptun.kcptun_key("interop", crypt) == full[:n]
    assert kcptun.paqet_block(crypt) == block


@pytest.mark.parametrize("crypt", ["aes", "aes-128", "salsa20", "xor", "sm4", "none"])
def test_codec_accepts_full_or_cut_kcptun_key(crypt):
    block = kcptun.paqet_block(crypt)
    a = DatagramCodec(block, kcptun.kcptun_key("interop"))
    b = DatagramCodec(block, kcptun.kcptun_key("interop", crypt))
    payload = b"\x01\x02\x03\x04" * 30
    for wire in a.encode(payload, 0):
        assert [bytes(k) for k, _ in b.decode(wire)] == [payload]
    # and the paqet-derived key for the same passphrase does not open it (unless no cipher)
    c = DatagramCodec(block, "interop")
    if crypt != "none":
        assert all(c.decode(w) == [] for w in a.encode(payload, 0))
