"""Users on one server (tunnel.users): clients with their own keys over loopback UDP, each
session bound to the user whose key opened it, per-user figures, a key not in the list,
removing and re-keying users while their sessions run, and the per-user limits."""

import asyncio
import contextlib
import dataclasses

import pytest

from harness import blob_server, fetch
from paqet.client.pool import ClientPool
from paqet.client.socks import Socks5Listener
from paqet.client.udpflows import UdpFlows
from paqet.net.udp import UdpBackend
from paqet.server.app import Server
from paqet.tunnel.params import TunnelParams
from paqet.tunnel.users import UserSpec

pytestmark = pytest.mark.timeout(90)
PARAMS = TunnelParams.for_mode("fast3", block="aes", key="")


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 80))


class Client:
    """A client stack (pool + SOCKS5) with its own key, talking to `server_port`."""

    def __init__(self, key: str, server_port: int) -> None:
        self.params = dataclasses.replace(PARAMS, key=key)
        self.addr = ("127.0.0.1", server_port)

    async def __aenter__(self):
        self.pool = ClientPool(self.params, self.addr, lambda: UdpBackend("127.0.0.1", 0),
                               conns=1, remote_flags=[0x18], dialect="alpha21",
                               health_interval=0)
        await self.pool.start()
        self.flows = UdpFlows(self.pool)
        self.flows.start()
        self.socks = Socks5Listener(self.pool, self.flows, ("127.0.0.1", 0))
        await self.socks.start()
        self.port = self.socks.port
        return self

    async def __aexit__(self, *exc):
        await self.socks.stop()
        await self.flows.close()
        await self.pool.close()


@contextlib.asynccontextmanager
async def server(users):
    """A Server with these users over loopback UDP: yields (its listener, its port)."""
    backend = UdpBackend("127.0.0.1", 0)
    srv = Server(PARAMS, backend, users=users)
    await srv.start()
    try:
        yield srv.listener, backend.local_port
    finally:
        srv.listener.close()


USERS = [UserSpec("alice", "key-alice"), UserSpec("bob", "key-bob")]


async def gets_nothing(socks_port: int, target_port: int) -> None:
    """A fetch through this client fails or stalls (3 s): the server takes nothing of it."""
    with pytest.raises((ConnectionError, OSError, asyncio.TimeoutError, AssertionError,
                        asyncio.IncompleteReadError)):
        await asyncio.wait_for(fetch(socks_port, target_port), 3)


@contextlib.asynccontextmanager
async def alice_and_bob(size_a: int, size_b: int):
    """A server with USERS, a blob server for each user (size_a, size_b bytes) and each
    user's client: yields (listener, port, (client, blob port, sha256) for alice, for bob)."""
    async with server(USERS) as (lst, port), blob_server(size_a, b"a") as (pa, ha), \
            blob_server(size_b, b"b") as (pb, hb), Client("key-alice", port) as a, \
            Client("key-bob", port) as b:
        yield lst, port, (a, pa, ha), (b, pb, hb)


def test_two_users_each_counted_and_a_foreign_key_gets_nothing():
    async def main():
        async with alice_and_bob(3 << 20, 2 << 20) as (lst, port, (a, pa, ha), (b, pb, hb)):
            (na, ga), (nb, gb) = await asyncio.gather(fetch(a.port, pa), fetch(b.port, pb))
            assert (na, ga) == (3 << 20, ha) and (nb, gb) == (2 << 20, hb)
            figs = lst.users.figures()
            assert figs["alice"]["sessions"] == 1 and figs["bob"]["sessions"] == 1
            # application bytes plus smux framing (8 bytes a frame)
            assert 3 << 20 <= figs["alice"]["bytes_out"] <= (3 << 20) * 1.01
            assert 2 << 20 <= figs["bob"]["bytes_out"] <= (2 << 20) * 1.01
            assert figs["alice"]["bytes_in"] < 10000 and figs["bob"]["bytes_in"] < 10000
            conns = {lst.user_of[c].name: c for c in lst.sessions.values()}
            assert conns["alice"].params.key != conns["bob"].params.key
            async with Client("key-mallory", port) as m:
                await gets_nothing(m.port, pa)
            assert lst.drops["bad_crc"] > 0
            assert set(lst.users.figures()) == {"alice", "bob"}
            assert len(lst.sessions) == 2
    run(main())


def test_removed_user_is_cut_off_and_the_other_keeps_running():
    async def main():
        async with alice_and_bob(6 << 20, 64 << 10) as (lst, port, (a, pa, ha), (b, pb, hb)):
            assert (await fetch(b.port, pb))[0] == 64 << 10  # bob is in
            running = asyncio.ensure_future(fetch(a.port, pa))
            while lst.users.by_name["alice"].bytes_out() < 256 << 10:
                await asyncio.sleep(0.01)
            added, removed, rekeyed = lst.set_users(PARAMS, [USERS[0]])
            assert (added, removed, rekeyed) == ([], ["bob"], [])
            # bob's session is gone at once, alice's download goes on to the end
            assert [lst.user_of[c].name for c in lst.sessions.values()] == ["alice"]
            assert await running == (6 << 20, ha)
            await gets_nothing(b.port, pb)
            assert "bob" not in lst.users.figures()
    run(main())


def test_a_new_key_closes_the_users_sessions_and_admits_the_new_key():
    async def main():
        async with server(USERS) as (lst, port):
            async with blob_server(64 << 10) as (pb, hb):
                async with Client("key-bob", port) as b:
                    assert (await fetch(b.port, pb))[0] == 64 << 10
                    _, _, rekeyed = lst.set_users(PARAMS, [USERS[0], UserSpec("bob", "bob-2")])
                    assert rekeyed == ["bob"] and not lst.sessions
                async with Client("bob-2", port) as b2:
                    assert (await fetch(b2.port, pb))[0] == 64 << 10
                    assert lst.users.figures()["bob"]["sessions"] == 1
    run(main())


def test_max_sessions_per_user():
    users = [UserSpec("alice", "key-alice", max_sessions=1), UserSpec("bob", "key-bob")]

    async def main():
        async with server(users) as (lst, port), blob_server(16 << 10) as (pb, hb):
            async with Client("key-alice", port) as a1, Client("key-alice", port) as a2, \
                    Client("key-bob", port) as b:
                assert (await fetch(a1.port, pb))[0] == 16 << 10
                await gets_nothing(a2.port, pb)
                assert lst.drops["user_sessions"] > 0
                assert (await fetch(b.port, pb))[0] == 16 << 10
                assert lst.users.figures()["alice"]["sessions"] == 1
    run(main())


def test_daily_quota_closes_sessions_until_the_next_day():
    async def main():
        async with server([UserSpec("alice", "key-alice", daily_quota=200 << 10)]) as (lst, port):
            async with blob_server(512 << 10) as (pb, hb):
                async with Client("key-alice", port) as a:
                    assert (await fetch(a.port, pb))[0] == 512 << 10
                    lst._check_quotas((2030, 1, 1))  # the first look at a day starts its count
                    assert lst.sessions
                    lst._check_quotas((2030, 1, 1))
                    assert lst.sessions  # nothing since the day began
                    u = lst.users.by_name["alice"]
                    u.day_base -= 300 << 10  # as if 300 KiB had come today
                    lst._check_quotas((2030, 1, 1))
                    assert not lst.sessions and u.over_quota
                    await gets_nothing(a.port, pb)
                    assert lst.drops["user_quota"] > 0
                    lst._check_quotas((2030, 1, 2))
                    assert not u.over_quota
    run(main())


def test_rate_limit_holds_datagrams_back_both_ways_and_loses_nothing():
    from harness import echo_server, socks_connect
    rate = 1_000_000
    users = [UserSpec("alice", "key-alice", rate_limit=rate), UserSpec("bob", "key-bob")]

    async def main():
        async with server(users) as (lst, port), blob_server(3 << 20) as (pb, hb), \
                echo_server() as pe, Client("key-alice", port) as a:
            alice = lst.users.by_name["alice"]
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            assert await fetch(a.port, pb) == (3 << 20, hb)
            took = loop.time() - t0
            out = alice.shaper_out
            print(f"3 MiB at a limit of {rate} B/s: {took:.2f} s ({(3 << 20) / took / 1e6:.2f} "
                  f"MB/s); datagrams held back {out.delayed}, dropped {out.dropped}")
            assert out.delayed > 1000 and out.dropped < out.delayed // 10
            # an upload, echoed back: the limit holds what comes in too
            r, w, rep = await socks_connect(a.port, "127.0.0.1", pe)
            assert rep == 0
            data = bytes(range(256)) * 4096  # 1 MiB
            w.write(data)
            assert await asyncio.wait_for(r.readexactly(len(data)), 30) == data
            w.close()
            assert alice.shaper_in.delayed > 100
            # lifted by a reload: nothing is held back any more
            lst.set_users(PARAMS, [UserSpec("alice", "key-alice"), UserSpec("bob", "key-bob")])
            before = out.delayed
            assert await fetch(a.port, pb) == (3 << 20, hb)
            assert out.delayed == before
    run(main())
