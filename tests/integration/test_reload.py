"""SIGHUP's reload (Runtime.reload) on real Runtimes over the UDP driver in one event loop:
listeners added, removed and changed, users removed and re-keyed, limits and the log level
in force at once, a broken file refused with one line, keys that need a restart named,
and a transfer running through all of it untouched."""

import asyncio
import logging
import socket

import pytest

from harness import blob_server, echo_server, socks_connect
from paqet.config import load_config
from paqet.runtime import Runtime

pytestmark = pytest.mark.timeout(90)


def _free_port(kind=socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


COMMON = ("network:\n  driver: udp\n  firewall: manual\n  ipv4:\n    addr: '127.0.0.1:{p}'\n"
          "stats:\n  socket: off\n  log_interval: 0\n")


def server_yaml(port, users, *, mode="fast3", max_sessions=4096, level="none"):
    u = "".join(f"  - {{name: {n}, key: {k}}}\n" for n, k in users)
    return (f"role: server\nlog:\n  level: {level}\nlisten:\n  addr: ':{port}'\n"
            + COMMON.format(p=port)
            + f"transport:\n  protocol: kcp\n  kcp:\n    mode: {mode}\n    block: aes\n"
            + f"limits:\n  max_sessions: {max_sessions}\nusers:\n{u}")


def client_yaml(port, key, *, socks, forwards=(), level="none", mode="fast3"):
    f = "".join(f"  - {{listen: '127.0.0.1:{lp}', target: '127.0.0.1:{tp}', protocol: tcp}}\n"
                for lp, tp in forwards)
    return (f"role: client\nlog:\n  level: {level}\nserver:\n  addr: '127.0.0.1:{port}'\n"
            + f"socks5:\n  - listen: '127.0.0.1:{socks}'\n"
            + (f"forward:\n{f}" if f else "") + COMMON.format(p=0)
            + f"transport:\n  protocol: kcp\n  kcp:\n    mode: {mode}\n    key: {key}\n")


class Lines(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines = []

    def emit(self, record):
        self.lines.append((record.levelname, record.getMessage()))

    def take(self):
        out, self.lines = self.lines, []
        return out


@pytest.fixture
def reload_lines():
    h = Lines()
    lg = logging.getLogger("paqet.reload")
    lg.addHandler(h)
    yield h
    lg.removeHandler(h)


async def echo_via(port: int, data: bytes = b"ping") -> bytes:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(data)
    await w.drain()
    got = await asyncio.wait_for(r.readexactly(len(data)), 10)
    w.close()
    return got


async def download(socks: int, port: int) -> int:
    r, w, rep = await socks_connect(socks, "127.0.0.1", port)
    assert rep == 0
    w.write(b"GET\n")
    await w.drain()
    n = 0
    while data := await asyncio.wait_for(r.read(1 << 16), 20):
        n += len(data)
    w.close()
    return n


def test_client_listeners_log_level_and_a_broken_file(tmp_path, reload_lines):
    port, socks, f1, f2 = (_free_port(socket.SOCK_DGRAM), _free_port(), _free_port(),
                           _free_port())
    spath, cpath = tmp_path / "server.yaml", tmp_path / "client.yaml"
    spath.write_text(server_yaml(port, [("alice", "key-a")]))

    async def main():
        async with echo_server() as eport, blob_server(8 << 20) as (bport, _):
            cpath.write_text(client_yaml(port, "key-a", socks=socks, forwards=[(f1, eport)]))
            srv, cli = Runtime(load_config(str(spath))), Runtime(load_config(str(cpath)))
            await srv.start()
            await cli.start()
            try:
                assert await echo_via(f1) == b"ping"
                running = asyncio.ensure_future(download(socks, bport))
                # forward 1 removed, forward 2 added, log level up, and the mode changed
                # (which needs a restart)
                cpath.write_text(client_yaml(port, "key-a", socks=socks, forwards=[(f2, eport)],
                                             level="debug", mode="fast2"))
                await cli.reload()
                assert await echo_via(f2) == b"ping"
                with pytest.raises(OSError):
                    await echo_via(f1)
                assert logging.getLogger("paqet").level == logging.DEBUG
                assert cli.cfg.transport.kcp.mode == "fast3"  # still the running one
                lines = reload_lines.take()
                assert [lv for lv, _ in lines] == ["WARNING", "INFO"], lines
                assert "transport.kcp.mode" in lines[0][1] and "restart" in lines[0][1]
                assert "+forward[0]" in lines[1][1] and f"-forward 127.0.0.1:{f1}" in lines[1][1]
                # a broken file: one error line, nothing changes
                cpath.write_text(client_yaml(port, "key-a", socks=socks, forwards=[(f1, eport)])
                                 .replace("mode: fast3", "mode: fast3\n    mtu: 20"))
                await cli.reload()
                lines = reload_lines.take()
                assert len(lines) == 1 and lines[0][0] == "ERROR", lines
                assert "transport.kcp.mtu" in lines[0][1] and "stays in force" in lines[0][1]
                assert await echo_via(f2) == b"ping"
                with pytest.raises(OSError):
                    await echo_via(f1)
                assert await running == 8 << 20  # the download went on through all of it
            finally:
                await cli.stop()
                await srv.stop()
    asyncio.run(asyncio.wait_for(main(), 80))


def test_server_users_and_limits(tmp_path, reload_lines):
    port, socks_a, socks_b = _free_port(socket.SOCK_DGRAM), _free_port(), _free_port()
    spath = tmp_path / "server.yaml"
    spath.write_text(server_yaml(port, [("alice", "key-a"), ("bob", "key-b")]))
    (tmp_path / "a.yaml").write_text(client_yaml(port, "key-a", socks=socks_a))
    (tmp_path / "b.yaml").write_text(client_yaml(port, "key-b", socks=socks_b))

    async def main():
        async with blob_server(6 << 20) as (bport, _):
            srv = Runtime(load_config(str(spath)))
            ca = Runtime(load_config(str(tmp_path / "a.yaml")))
            cb = Runtime(load_config(str(tmp_path / "b.yaml")))
            for rt in (srv, ca, cb):
                await rt.start()
            lst = srv.server.listener
            try:
                assert await download(socks_b, bport) == 6 << 20
                running = asyncio.ensure_future(download(socks_a, bport))
                while lst.users.by_name["alice"].bytes_out() < 256 << 10:
                    await asyncio.sleep(0.01)
                spath.write_text(server_yaml(port, [("alice", "key-a"), ("carol", "key-c")],
                                             max_sessions=7))
                await srv.reload()
                assert sorted(lst.users.figures()) == ["alice", "carol"]
                assert [lst.user_of[c].name for c in lst.sessions.values()] == ["alice"]
                assert lst.max_sessions == 7
                lines = reload_lines.take()
                assert lines == [("INFO", f"reload: {spath} applied: limits; users +carol -bob")]
                with pytest.raises((ConnectionError, OSError, asyncio.TimeoutError,
                                    AssertionError, asyncio.IncompleteReadError)):
                    await asyncio.wait_for(download(socks_b, bport), 3)
                assert await running == 6 << 20
                # nothing live changed: said so
                await srv.reload()
                assert reload_lines.take()[0][1].endswith("nothing that changes live is different")
            finally:
                for rt in (cb, ca, srv):
                    await rt.stop()
    asyncio.run(asyncio.wait_for(main(), 80))
