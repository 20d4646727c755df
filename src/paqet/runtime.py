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
#: what a reload did or refused, shown whatever log.level says (the operator asked for it)
reload_log = logging.getLogger("paqet.reload")
reload_log.setLevel(logging.INFO)


class StartupError(RuntimeError):
    pass


def tunnel_params(cfg: Config) -> TunnelParams:
    return TunnelParams.from_config(cfg)


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
        # an empty IP (":9999") is detected below, as a missing addr
        self.ip4 = (split_host_port(fam4.addr)[0] or None) if fam4 and fam4.addr else None
        self.ip6 = (split_host_port(fam6.addr)[0] or None) if fam6 and fam6.addr else None
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
        from paqet.net.factory import open_backend
        if self.driver == "udp":
            return open_backend("udp", port=port, host=self.ip4 or self.ip6 or "0.0.0.0",
                                sockbuf=cfg.network.pcap.sockbuf)
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
            b = open_backend(
                self.driver, interface=self.interface, port=port, src_ip4=self.ip4,
                src_ip6=self.ip6, router_mac4=self.router_mac4, router_mac6=self.router_mac6,
                local_flags=cfg.local_flags, sockbuf=cfg.network.pcap.sockbuf,
                learn_macs=self.router_mac4 is None or cfg.role == "server")
        except OSError as exc:
            if fw:
                fw.remove()
            if hold is not None:
                hold.close()
            if isinstance(exc, PermissionError):
                raise StartupError("raw packet sockets need root (or CAP_NET_RAW): run with "
                                   "sudo") from None
            raise StartupError(f"cannot open a raw socket on {self.interface}: {exc}") from None
        if (tcp_mode or cfg.network.tcp.mode) == "handshake":
            from paqet.net.handshake import HandshakeBackend
            b = HandshakeBackend(b, client=cfg.role == "client", key=syn_keys(cfg),
                                 keepalive_ms=int(cfg.network.tcp.keepalive * 1000))
        builder = getattr(b, "builder", None)
        for ip, mac in self.dst_macs.items():
            if builder is not None:
                builder.set_dst_mac(ip, mac)
        return _FirewalledBackend(b, fw, hold)


def syn_keys(cfg: Config) -> list:
    """The keys handshake SYN tokens are made and checked with: a client's one key, a
    server's users' keys (transport.kcp.key being the unnamed user's)."""
    if cfg.role == "client":
        return [cfg.transport.kcp.key]
    from paqet.tunnel.users import UserSpec
    return [u.key for u in UserSpec.from_config(cfg)]


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


def _listener_entries(cfg: Config) -> list[tuple[str, int, object]]:
    """(kind, index, entry) of a client config's listeners, in start order."""
    return ([("socks5", i, e) for i, e in enumerate(cfg.socks5)]
            + [("http", i, e) for i, e in enumerate(cfg.http)]
            + [("forward", i, e) for i, e in enumerate(cfg.forward)])


def _listener_key(kind: str, entry) -> bytes:
    """Identifies a listener across reloads: its kind and every field of its entry."""
    import msgspec
    return kind.encode() + b" " + msgspec.json.encode(entry)


class Runtime:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.parts: list = []
        #: a client's socks5/http/forward listeners: _listener_key -> ("forward ADDR", part)
        self.listeners: dict[bytes, tuple[str, object]] = {}
        self.retired: list = []  # listeners a reload removed: their connections finish
        self.pool = None
        self.flows = None
        self.server = None
        self.backend = None
        self.stats = None  # control.StatsService once started
        self._reloading = False

    async def _start_stats(self) -> None:
        """The stats service (control socket, Prometheus, periodic log line): control.py."""
        from paqet.control import StatsService, socket_path
        st = self.cfg.stats
        listener = self.server.listener if self.server is not None else None
        svc = StatsService(self.cfg.role, self.connections, socket_path=socket_path(self.cfg),
                           prometheus=st.prometheus, log_interval=st.log_interval,
                           drop_sources=[listener.drops] if listener is not None else None,
                           process_drops=[RingDrops(self.backends)],
                           users=listener.users.figures if listener is not None else None,
                           user_of=listener.user_name if listener is not None else None)
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
            from paqet.tunnel.users import UserSpec
            self.server = Server(params, self.backend,
                                 limits=ListenerLimits.from_config(cfg.limits),
                                 users=UserSpec.from_config(cfg))
            await self.server.start()
            log.info("server listening for packets on :%d (interface %s)",
                     self.backend.local_port, net.interface or "udp")
            await self._start_stats()
            return
        from paqet.client.pool import ClientPool
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
        self.flows = flows
        self.parts.append(flows)
        for kind, i, entry in _listener_entries(cfg):
            self.listeners[_listener_key(kind, entry)] = (
                f"{kind} {entry.listen}", await self._open_listener(kind, i, entry))
        await self._start_stats()

    async def _open_listener(self, kind: str, i: int, entry):
        """One socks5 / http / forward listener of the config, started; StartupError with
        the entry's key path when its address cannot be bound."""
        from paqet.client.forward import TcpForward, UdpForward
        from paqet.client.forward import split_host_port as shp
        lh, lp = shp(entry.listen)
        addr = (lh or "0.0.0.0", lp)
        if kind == "socks5":
            from paqet.client.socks import Socks5Listener
            part = Socks5Listener(self.pool, self.flows, addr, username=entry.username,
                                  password=entry.password, wait_dial=entry.wait_dial)
        elif kind == "http":
            from paqet.client.httpproxy import HttpProxyListener
            part = HttpProxyListener(self.pool, addr, username=entry.username,
                                     password=entry.password, wait_dial=entry.wait_dial)
        elif entry.protocol == "tcp":
            part = TcpForward(self.pool, addr, entry.target)
        else:
            part = UdpForward(self.pool, self.flows, addr, entry.target)
        try:
            await part.start()
        except OSError as exc:
            raise StartupError(f"{kind}[{i}]: cannot listen on {entry.listen}: "
                               f"{exc.strerror or exc}") from None
        return part

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

    async def reload(self) -> None:
        """SIGHUP: read the configuration file again and apply what can change while
        running (config/changes.py): log level, limits, users (server), socks5 / http /
        forward listeners (client). A file that does not load is refused with its error and
        the running configuration stays; keys that need a restart are named and keep their
        running values. Sessions and connections the change does not concern go on."""
        if self._reloading:
            reload_log.warning("reload: the previous SIGHUP is still being applied; this one "
                               "is ignored")
            return
        self._reloading = True
        try:
            await self._reload()
        except Exception:
            reload_log.exception("reload failed")
        finally:
            self._reloading = False

    async def _reload(self) -> None:
        from paqet import logs
        from paqet.config import ConfigError, load_config
        from paqet.config.changes import applied, split
        old = self.cfg
        path = old.source
        logging.getLogger("paqet.config").setLevel(logging.WARNING)  # its warnings: shown
        try:
            new = await asyncio.to_thread(load_config, path)
        except ConfigError as exc:
            reload_log.error("reload refused: %s; the running configuration stays in force",
                             exc)
            return
        live, restart = split(old, new)
        if restart:
            reload_log.warning("reload: %s changed in %s but cannot change while running: "
                               "restart paqet for %s (the running values stay)",
                               ", ".join(restart), path, "it" if len(restart) == 1 else "them")
        if not live:
            reload_log.info("reload: %s: nothing that changes live is different", path)
            return
        cfg = applied(old, new)
        done: list[str] = []
        if "log.level" in live:
            logs.set_level(cfg.log.level)
            done.append(f"log.level {cfg.log.level}")
        if any(k.startswith("limits.") for k in live):
            done.append("limits")
        params = tunnel_params(cfg)
        if self.server is not None:
            done += await self._reload_server(cfg, params, live)
        elif self.pool is not None:
            self.pool.params = params  # sessions made from now on
            done += await self._reload_listeners(cfg)
        self.cfg = cfg
        reload_log.info("reload: %s applied: %s", path, "; ".join(done) or "no change")

    async def _reload_server(self, cfg: Config, params, live: list[str]) -> list[str]:
        from paqet.tunnel.guard import ListenerLimits
        from paqet.tunnel.stats import user_name
        from paqet.tunnel.users import UserSpec
        listener = self.server.listener
        if any(k.startswith("limits.") for k in live):
            listener.set_limits(ListenerLimits.from_config(cfg.limits))
        specs = UserSpec.from_config(cfg)
        await asyncio.to_thread(lambda: [crypto.derive_key(k)
                                         for k in listener.users.new_keys(specs)])
        self.server.params = params
        added, removed, rekeyed = listener.set_users(params, specs)
        set_keys = getattr(self.backend, "set_keys", None)
        if set_keys is not None:   # handshake mode: SYN tokens of the users now in force
            set_keys(syn_keys(cfg))
        done = []
        if added or removed or rekeyed:
            done.append("users " + " ".join([f"+{user_name(n)}" for n in added]
                                            + [f"-{user_name(n)}" for n in removed]
                                            + [f"~{user_name(n)} (new key)" for n in rekeyed]))
        elif "users" in live:
            done.append("users' limits")
        return done

    async def _reload_listeners(self, cfg: Config) -> list[str]:
        want = {_listener_key(kind, e): (kind, i, e) for kind, i, e in _listener_entries(cfg)}
        done = []
        for key in [k for k in self.listeners if k not in want]:
            name, part = self.listeners.pop(key)
            part.stop_accepting()
            self.retired.append(part)
            done.append(f"-{name}")
        for key, (kind, i, entry) in want.items():
            if key in self.listeners:
                continue
            try:
                self.listeners[key] = (f"{kind} {entry.listen}",
                                       await self._open_listener(kind, i, entry))
                done.append(f"+{kind}[{i}] {entry.listen}")
            except StartupError as exc:
                reload_log.error("reload: %s", exc)
        return ["listeners " + " ".join(done)] if done else []

    def log_stats(self) -> None:
        """SIGUSR1: one line of statistics per tunnel session; a server adds its listener's
        drop counters (docs/reliability.md); then the process summary line."""
        for conn in self.connections():
            log.info("stats %s", conn.stats())
        if self.server is not None and self.server.listener is not None:
            log.info("stats drops %s", self.server.listener.drops)
            from paqet.tunnel.stats import user_name
            for name, figures in self.server.listener.users.figures().items():
                log.info("stats user %s %s", user_name(name), figures)
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
        for p in ([p for _, p in self.listeners.values()] + self.retired
                  + list(reversed(self.parts))):
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
    reloads: set = set()
    running = []

    def sighup() -> None:
        if not running:
            reload_log.warning("reload: SIGHUP before start-up finished: ignored")
            return
        t = loop.create_task(rt.reload())
        reloads.add(t)
        t.add_done_callback(reloads.discard)
    loop.add_signal_handler(signal.SIGHUP, sighup)
    try:
        try:
            await rt.start()
        except StartupError as exc:
            print(f"paqet: {exc}", file=sys.stderr, flush=True)
            return 1
        _tune_gc()
        running.append(True)  # SIGHUP re-reads the config from now on
        await stop.wait()
        print("shutdown signal received, shutting down...", file=sys.stderr, flush=True)
    finally:
        try:
            await asyncio.wait_for(rt.stop(), 4.0)
        except (asyncio.TimeoutError, Exception):
            log.debug("shutdown did not finish cleanly", exc_info=True)
    return 0


def run(cfg: Config) -> int:
    keys = [u.key for u in cfg.users]
    if cfg.transport.kcp.key or not keys:  # (the unnamed user's, or upstream's one key)
        keys.append(cfg.transport.kcp.key)
    for key in keys:
        crypto.derive_key_soon(key)  # derived in threads while the rest starts
    try:
        import uvloop
        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    if os.environ.get("PAQET_NO_UVLOOP"):
        runner = asyncio.run
    return runner(serve(cfg))
