"""`paqet run`: builds the client or server from a loaded config and runs it until a signal.

Start-up order: network detection → firewall → packet backend → tunnel sessions →
listeners. Shutdown runs the reverse (listeners, streams and sessions, packet sockets,
firewall rules) and finishes within a few seconds; the firewall rules also go on a crash of
the main loop (finally + atexit), and a later start removes those of a killed run.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys

from paqet.config import Config
from paqet.config.values import parse_mac, split_host_port
from paqet.tunnel.params import TunnelParams
from paqet.wire import crypto

log = logging.getLogger("paqet")


class StartupError(RuntimeError):
    pass


def tunnel_params(cfg: Config) -> TunnelParams:
    k = cfg.transport.kcp
    nd, iv, rs, nc, wd, an = k.effective_mode()
    return TunnelParams(block=k.block, key=k.key, dshard=k.dshard, pshard=k.pshard, mtu=k.mtu,
                        sndwnd=k.sndwnd, rcvwnd=k.rcvwnd, nodelay=nd, interval=iv, resend=rs,
                        nc=nc, wdelay=wd, acknodelay=an, smuxbuf=k.smuxbuf,
                        streambuf=k.streambuf, keepalive_ms=k.smuxkalive * 1000,
                        keepalive_timeout_ms=k.smuxktimeout * 1000,
                        replay_window=cfg.limits.replay_window,
                        replay_horizon_ms=int(cfg.limits.replay_horizon * 1000),
                        max_streams=cfg.limits.max_streams,
                        send_buffer=cfg.limits.session_send_buffer,
                        request_timeout=cfg.limits.request_timeout,
                        idle_timeout=cfg.limits.idle_timeout,
                        udp_idle_timeout=cfg.limits.udp_idle_timeout)


def resolve(host: str, port: int) -> tuple[str, int]:
    if not host:
        return "127.0.0.1", port
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except socket.gaierror as exc:
        raise StartupError(f"cannot resolve '{host}': {exc}") from None
    fam, _, _, _, addr = infos[0]
    return addr[0], addr[1]


def _driver(cfg: Config) -> str:
    d = cfg.network.driver
    if d == "auto":
        return "afpacket" if sys.platform.startswith("linux") else "pcap"
    return d


class _FirewalledBackend:
    """A packet backend whose firewall rules live exactly as long as it does."""

    def __init__(self, backend, firewall, hold=None) -> None:
        self._b = backend
        self._fw = firewall
        self._hold = hold  # the TCP socket keeping the port ours (net.backend.reserve_port)

    _OWN = ("_b", "_fw", "_hold")

    def __getattr__(self, name):
        return getattr(self._b, name)

    def __setattr__(self, name, value) -> None:
        # transparent both ways: a reader setting `on_stash` must reach the AF_PACKET
        # backend, not stop at this wrapper
        if name in self._OWN:
            object.__setattr__(self, name, value)
        else:
            setattr(self._b, name, value)

    def close(self) -> None:
        try:
            self._b.close()
        finally:
            if self._fw is not None:
                self._fw.remove()
                self._fw = None
            if self._hold is not None:
                self._hold.close()
                self._hold = None


class Network:
    """What the configuration and auto-detection say about the local network."""

    def __init__(self, cfg: Config, server_ip: str | None) -> None:
        self.cfg = cfg
        self.dst_macs: dict[str, bytes] = {}  # per-destination next hops (backup servers)
        net = cfg.network
        fam4, fam6 = net.ipv4, net.ipv6
        self.ip4 = split_host_port(fam4.addr)[0] if fam4 and fam4.addr else None
        self.ip6 = split_host_port(fam6.addr)[0] if fam6 and fam6.addr else None
        mac4 = parse_mac(fam4.router_mac) if fam4 and fam4.router_mac else None
        mac6 = parse_mac(fam6.router_mac) if fam6 and fam6.router_mac else None
        self.interface = net.interface or None
        self.router_mac4, self.router_mac6 = mac4, mac6
        self.driver = _driver(cfg)
        self.choice = None  # the auto-detection's NetworkChoice, when it ran
        if self.driver == "udp":
            return
        want_v6 = bool(server_ip and ":" in server_ip)
        have_mac = mac6 if want_v6 else mac4
        local = self.ip6 if want_v6 else self.ip4
        if self.interface and local and (have_mac or cfg.role == "server"):
            return
        from paqet.net.autodetect import AutodetectError, detect
        try:
            if cfg.role == "server" and not self.interface:
                choice = detect(None, local_ip=local)
                self.interface = self._iface_holding(local) or choice.interface
            else:
                choice = detect(server_ip, interface=self.interface, local_ip=local,
                                router_mac=have_mac)
                self.interface = self.interface or choice.interface
        except (AutodetectError, OSError, ImportError) as exc:
            raise StartupError(f"network auto-detection failed: {exc}") from None
        self.choice = choice
        self.ip4 = self.ip4 or choice.ip4
        self.ip6 = self.ip6 or choice.ip6
        if choice.next_hop_mac:
            if want_v6:
                self.router_mac6 = self.router_mac6 or choice.next_hop_mac
            else:
                self.router_mac4 = self.router_mac4 or choice.next_hop_mac
        log.info("network: interface %s, IPv4 %s, IPv6 %s (%s)", self.interface, self.ip4,
                 self.ip6, choice.reason)

    @staticmethod
    def _iface_holding(ip: str | None) -> str | None:
        if not ip:
            return None
        try:
            from pyroute2 import IPRoute
            with IPRoute() as ipr:
                for a in ipr.get_addr():
                    if a.get_attr("IFA_ADDRESS") == ip:
                        return ipr.get_links(a["index"])[0].get_attr("IFLA_IFNAME")
        except Exception:
            return None
        return None

    def add_destination(self, ip: str) -> None:
        """Failover (beyond upstream): another server may be reached through another next
        hop than the first one (on the link vs. through the gateway): look its MAC up once,
        on the same interface; without an answer the configured/detected router MAC is used."""
        if self.driver == "udp":
            return
        fam = self.cfg.network.ipv6 if ":" in ip else self.cfg.network.ipv4
        if fam is not None and fam.router_mac:
            return  # configured: one next hop for the family
        from paqet.net.autodetect import AutodetectError, detect
        try:
            choice = detect(ip, interface=self.interface,
                            local_ip=self.ip6 if ":" in ip else self.ip4, neighbour_wait=1.0)
        except (AutodetectError, OSError, ImportError) as exc:
            log.warning("backup server %s: next hop not found (%s); using the default one",
                        ip, exc)
            return
        if choice.next_hop_mac:
            self.dst_macs[ip] = choice.next_hop_mac
            log.info("backup server %s: %s", ip, choice.reason)

    def open_backend(self, port: int, tcp_mode: str | None = None):
        """A packet backend on `port` (0: random) with its firewall rules; `tcp_mode`
        overrides network.tcp.mode (`paqet check` tries both)."""
        cfg = self.cfg
        if self.driver == "udp":
            from paqet.net.udp import UdpBackend
            host = self.ip4 or self.ip6 or ("0.0.0.0" if cfg.role == "server" else "0.0.0.0")
            return UdpBackend(host, port, sockbuf=cfg.network.pcap.sockbuf)
        if self.driver == "pcap":
            from paqet.net.pcap import PcapBackend as Backend
        else:
            from paqet.net.afpacket import AfPacketBackend as Backend
        from paqet.net.backend import reserve_port
        port, hold = reserve_port(port)
        fw = None
        if cfg.network.firewall == "managed":
            from paqet.net.firewall import Firewall, FirewallError
            fw = Firewall(port)
            try:
                fw.install()
            except FirewallError as exc:
                if hold is not None:
                    hold.close()
                raise StartupError(str(exc)) from None
        try:
            b = Backend(
                self.interface, port=port, src_ip4=self.ip4, src_ip6=self.ip6,
                router_mac4=self.router_mac4, router_mac6=self.router_mac6,
                local_flags=cfg.local_flags, sockbuf=cfg.network.pcap.sockbuf,
                learn_macs=self.router_mac4 is None or cfg.role == "server")
        except PermissionError:
            if fw:
                fw.remove()
            if hold is not None:
                hold.close()
            raise StartupError("raw packet sockets need root (or CAP_NET_RAW): run with sudo") from None
        except OSError as exc:
            if fw:
                fw.remove()
            if hold is not None:
                hold.close()
            raise StartupError(f"cannot open a raw socket on {self.interface}: {exc}") from None
        if (tcp_mode or cfg.network.tcp.mode) == "handshake":
            from paqet.net.handshake import HandshakeBackend
            b = HandshakeBackend(b, client=cfg.role == "client", key=cfg.transport.kcp.key,
                                 keepalive_ms=int(cfg.network.tcp.keepalive * 1000))
        builder = getattr(b, "builder", None)
        for ip, mac in self.dst_macs.items():
            if builder is not None:
                builder.set_dst_mac(ip, mac)
        return _FirewalledBackend(b, fw, hold)


def backend_counters(backends) -> dict:
    """The packet backends' counters summed (kernel ring drops, refused sends, frames)."""
    total: dict = {}
    for b in backends:
        try:
            for k, v in b.counters().items():
                total[k] = total.get(k, 0) + v
        except (OSError, AttributeError):
            pass
    return total


class RingDrops:
    """A drop source for the stats (`ring_full`): frames that passed the kernel filter but
    found the RX ring full, over the process's live packet sockets (a client's reconnected
    session starts a new socket, and its count, afresh)."""

    def __init__(self, backends) -> None:
        self._backends = backends

    def items(self):
        return [("ring_full", backend_counters(self._backends()).get("kernel_drops", 0))]


class Runtime:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.parts: list = []
        self.pool = None
        self.server = None
        self.backend = None
        self.stats = None  # control.StatsService once started

    async def _start_stats(self) -> None:
        """The stats service (control socket, Prometheus, periodic log line): control.py."""
        from paqet.control import StatsService, socket_path
        st = self.cfg.stats
        listener = self.server.listener if self.server is not None else None
        svc = StatsService(self.cfg.role, self.connections, socket_path=socket_path(self.cfg),
                           prometheus=st.prometheus, log_interval=st.log_interval,
                           drop_sources=[listener.drops] if listener is not None else None,
                           process_drops=[RingDrops(self.backends)])
        if listener is not None:
            prev = listener.on_session_closed

            def closed(conn, reason, prev=prev) -> None:
                svc.session_closed(conn)
                if prev is not None:
                    prev(conn, reason)
            listener.on_session_closed = closed
        if self.pool is not None:
            self.pool.on_session_closed = svc.session_closed
        self.stats = svc
        await svc.start()

    async def start(self) -> None:
        cfg = self.cfg
        params = tunnel_params(cfg)
        if cfg.role == "server":
            from paqet.server.app import Server
            net = await asyncio.to_thread(Network, cfg, None)
            self.backend = net.open_backend(cfg.local_port)
            from paqet.tunnel.guard import ListenerLimits
            self.server = Server(params, self.backend,
                                 limits=ListenerLimits.from_config(cfg.limits))
            await self.server.start()
            log.info("server listening for packets on :%d (interface %s)",
                     self.backend.local_port, net.interface or "udp")
            await self._start_stats()
            return
        from paqet.client.forward import TcpForward, UdpForward, split_host_port as shp
        from paqet.client.pool import ClientPool
        from paqet.client.socks import Socks5Listener
        from paqet.client.udpflows import UdpFlows
        host, port = split_host_port(cfg.server.addr)
        server = resolve(host, port)
        backups = [resolve(*split_host_port(b)) for b in cfg.server.backup]
        net = await asyncio.to_thread(Network, cfg, server[0])
        for b in backups:
            await asyncio.to_thread(net.add_destination, b[0])
        local_port = cfg.local_port
        self.pool = ClientPool(params, server, lambda: net.open_backend(local_port),
                               conns=cfg.transport.conn, remote_flags=cfg.remote_flags,
                               dialect=cfg.transport.dialect, backups=backups,
                               failback_interval=cfg.server.failback if not local_port else 0)
        try:
            await self.pool.start()
        except StartupError:
            raise
        log.info("client IPv4:%s IPv6:%s -> %s:%s (%d connections)", net.ip4, net.ip6,
                 server[0], server[1], cfg.transport.conn)
        if backups:
            log.info("failover to %s when %s:%s fails", ", ".join(f"{b[0]}:{b[1]}" for b in backups),
                     server[0], server[1])
            if local_port and cfg.server.failback:
                log.warning("server.failback needs a random client port (port 0 in "
                            "network.*.addr): with port %d the first server is not probed",
                            local_port)
        flows = UdpFlows(self.pool)
        flows.start()
        self.parts.append(flows)
        for i, s in enumerate(cfg.socks5):
            lh, lp = shp(s.listen)
            sl = Socks5Listener(self.pool, flows, (lh or "0.0.0.0", lp), username=s.username,
                                password=s.password)
            try:
                await sl.start()
            except OSError as exc:
                raise StartupError(f"socks5[{i}]: cannot listen on {s.listen}: {exc.strerror or exc}") from None
            self.parts.append(sl)
        for i, h in enumerate(cfg.http):
            from paqet.client.httpproxy import HttpProxyListener
            lh, lp = shp(h.listen)
            hl = HttpProxyListener(self.pool, (lh or "0.0.0.0", lp), username=h.username,
                                   password=h.password)
            try:
                await hl.start()
            except OSError as exc:
                raise StartupError(f"http[{i}]: cannot listen on {h.listen}: {exc.strerror or exc}") from None
            self.parts.append(hl)
        for i, f in enumerate(cfg.forward):
            lh, lp = shp(f.listen)
            fw = (TcpForward(self.pool, (lh or "0.0.0.0", lp), f.target) if f.protocol == "tcp"
                  else UdpForward(self.pool, flows, (lh or "0.0.0.0", lp), f.target))
            try:
                await fw.start()
            except OSError as exc:
                raise StartupError(f"forward[{i}]: cannot listen on {f.listen}: {exc.strerror or exc}") from None
            self.parts.append(fw)
        await self._start_stats()

    def connections(self) -> list:
        if self.server is not None and self.server.listener is not None:
            return list(self.server.listener.sessions.values())
        if self.pool is not None:
            return self.pool.connections()
        return []

    def backends(self) -> list:
        """The process's live packet backends (a server's one, a client's one per session)."""
        if self.server is not None:
            return [self.server.backend]
        return self.pool.backends() if self.pool is not None else []

    def log_stats(self) -> None:
        """SIGUSR1: one line of statistics per tunnel session; a server adds its listener's
        drop counters (docs/reliability.md); then the process summary line."""
        for conn in self.connections():
            log.info("stats %s", conn.stats())
        if self.server is not None and self.server.listener is not None:
            log.info("stats drops %s", self.server.listener.drops)
        total = backend_counters(self.backends())
        if total:
            # frames the kernel dropped before we read them (RX ring full) and sends refused
            # because the socket's buffer was full, summed over the process's packet sockets
            log.info("stats backend %s", total)
        if self.stats is not None:
            from paqet.tunnel.stats import format_line
            log.info("%s", format_line(self.stats.snapshot(0)))

    async def stop(self) -> None:
        if self.stats is not None:
            await self.stats.stop()
        for p in reversed(self.parts):
            try:
                if hasattr(p, "stop"):
                    await p.stop()
                else:
                    await p.close()
            except Exception:
                log.debug("stopping %r failed", p, exc_info=True)
        if self.pool is not None:
            await self.pool.close()
        if self.server is not None:
            await self.server.stop()
        if self.backend is not None:
            self.backend.close()


def _tune_gc() -> None:
    """Once started: move everything allocated so far (modules, config, tables) out of the
    cyclic collector's reach, and let the youngest generation grow larger before a pass.
    The per-packet path frees its objects by reference counting; what the collector finds
    is rare, but its passes over KCP's segment objects stalled the loop for up to 20 ms at
    a time under loss (docs/decisions.md)."""
    import gc
    gc.collect()
    gc.freeze()
    gen0, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(max(gen0, 20000), gen1, gen2)


async def serve(cfg: Config) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    rt = Runtime(cfg)
    loop.add_signal_handler(signal.SIGUSR1, rt.log_stats)
    try:
        try:
            await rt.start()
        except StartupError as exc:
            print(f"paqet: {exc}", file=sys.stderr, flush=True)
            return 1
        _tune_gc()
        await stop.wait()
        print("shutdown signal received, shutting down...", file=sys.stderr, flush=True)
    finally:
        try:
            await asyncio.wait_for(rt.stop(), 4.0)
        except (asyncio.TimeoutError, Exception):
            log.debug("shutdown did not finish cleanly", exc_info=True)
    return 0


def run(cfg: Config) -> int:
    crypto.derive_key_soon(cfg.transport.kcp.key or "")  # derived while the rest starts
    try:
        import uvloop
        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    if os.environ.get("PAQET_NO_UVLOOP"):
        runner = asyncio.run
    return runner(serve(cfg))
