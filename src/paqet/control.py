"""The running instance's statistics service (asyncio shell around tunnel/stats.py):

* a sampling tick (once a second) feeding the StatsCollector its rate samples;
* the control socket: a unix socket (mode 0600, only root or our own user may talk to it)
  where `paqet stats` sends one request line and gets the snapshot as one JSON line;
* the optional Prometheus endpoint (`stats.prometheus`: host:port, loopback by default):
  GET /metrics in the text exposition format, produced by prometheus-client from a custom
  collector that reads the snapshot in the event loop (no threads);
* the periodic one-line stats log at info (`stats.log_interval`).

Protocol of the control socket: the client writes one line, `stats` or `stats N` (list at most
the N busiest sessions), the server answers with one line of JSON and closes. Anything else
gets `{"error": "..."}`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import stat
import struct
import time

from paqet.config.values import split_host_port
from paqet.tunnel.clock import now_ms
from paqet.tunnel.stats import StatsCollector, format_line

log = logging.getLogger("paqet.stats")

DEFAULT_DIR = "/run/paqet"
REQUEST_LIMIT = 4096
TICK_S = 1.0


class ControlError(RuntimeError):
    pass


def socket_path(cfg) -> str | None:
    """The control socket's path for a configuration: `stats.socket`, or by default
    /run/paqet/paqet-<role>-<port>.sock where port is the server's listen port, or for a
    client its network port when fixed, else its first SOCKS5 / HTTP / forward listen port, else
    the server's port. None when turned off (`stats.socket: off`)."""
    st = getattr(cfg, "stats", None)
    explicit = getattr(st, "socket", "") if st is not None else ""
    if explicit is False:  # YAML `off` / `false`
        return None
    if explicit and explicit is not True:
        if explicit.lower() in ("off", "none", "-"):
            return None
        return os.path.abspath(explicit)
    return os.path.join(DEFAULT_DIR, f"paqet-{cfg.role}-{_instance_port(cfg)}.sock")


def _instance_port(cfg) -> int:
    if cfg.role == "server":
        return cfg.local_port or split_host_port(cfg.listen.addr)[1]
    if cfg.local_port:
        return cfg.local_port
    for lst in (getattr(cfg, "socks5", None), getattr(cfg, "http", None),
                getattr(cfg, "forward", None)):
        for entry in lst or ():
            listen = getattr(entry, "listen", "")
            if listen:
                try:
                    return split_host_port(listen)[1]
                except Exception:
                    continue
    try:
        return split_host_port(cfg.server.addr)[1]
    except Exception:
        return 0


# -- the client side (paqet stats) -----------------------------------------------------------
def query(path: str, timeout: float = 5.0, max_sessions: int | None = None) -> dict:
    """Ask the instance at `path` for its snapshot (at most `max_sessions` sessions listed,
    the busiest; None = all). Raises ControlError with one line."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        try:
            s.connect(path)
        except (FileNotFoundError, ConnectionRefusedError):
            raise ControlError(f"no paqet instance is running with a control socket at {path}") from None
        except PermissionError:
            raise ControlError(f"permission denied on {path}: the control socket is root-only "
                               "(run with sudo)") from None
        except OSError as exc:
            raise ControlError(f"cannot connect to {path}: {exc.strerror or exc}") from None
        try:
            s.sendall(b"stats\n" if max_sessions is None else b"stats %d\n" % max_sessions)
            chunks = []
            total = 0
            while True:
                b = s.recv(65536)
                if not b:
                    break
                chunks.append(b)
                total += len(b)
                if total > 64 << 20:
                    raise ControlError(f"{path}: answer too long")
        except socket.timeout:
            raise ControlError(f"{path}: no answer within {timeout:g}s") from None
        except OSError as exc:
            raise ControlError(f"{path}: {exc.strerror or exc}") from None
    finally:
        s.close()
    data = b"".join(chunks)
    if not data:
        raise ControlError(f"{path}: the instance closed the connection without an answer "
                           "(permission denied?)")
    try:
        reply = json.loads(data)
    except ValueError:
        raise ControlError(f"{path}: not a paqet control socket (unreadable answer)") from None
    if not isinstance(reply, dict):
        raise ControlError(f"{path}: not a paqet control socket (unexpected answer)")
    if "error" in reply:
        raise ControlError(f"{path}: {reply['error']}")
    return reply


# -- the server side ---------------------------------------------------------------------------
def _peer_uid(sock) -> int | None:
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        return struct.unpack("3i", creds)[1]
    except (OSError, AttributeError):
        return None


def _bind_unix(path: str) -> socket.socket:
    """A listening unix socket at `path`, mode 0600, replacing a stale one. Raises
    ControlError when another instance answers there or the path is unusable."""
    d = os.path.dirname(path) or "."
    try:
        os.makedirs(d, mode=0o755, exist_ok=True)
    except OSError as exc:
        raise ControlError(f"cannot create {d}: {exc.strerror or exc}") from None
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise ControlError(f"cannot use {path}: {exc.strerror or exc}") from None
    if st is not None:
        if not stat.S_ISSOCK(st.st_mode):
            raise ControlError(f"{path} exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(0.5)
        try:
            probe.connect(path)
        except OSError:
            pass  # stale: its instance is gone
        else:
            raise ControlError(f"another paqet instance is serving {path}")
        finally:
            probe.close()
        try:
            os.unlink(path)
        except OSError as exc:
            raise ControlError(f"cannot remove the stale socket {path}: {exc.strerror or exc}") from None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)  # never reachable with wider permissions, not even briefly
    try:
        sock.bind(path)
    except OSError as exc:
        sock.close()
        raise ControlError(f"cannot bind {path}: {exc.strerror or exc}") from None
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    sock.listen(16)
    sock.setblocking(False)
    return sock


def _metrics_addr(listen: str) -> tuple[str, int]:
    host, port = split_host_port(listen)
    return (host or "127.0.0.1"), port


class StatsService:
    """Owns the collector and the three outlets. `connections` returns the live
    TunnelConnections; `drop_sources` the drop dicts that outlive sessions (a server's
    listener), `process_drops` drop counts of the process itself (the packet sockets' full
    rings), `users` a server's per-user figures (tunnel.users.UserTable.figures) and
    `user_of` the user of a session (TunnelListener.user_name)."""

    def __init__(self, role: str, connections, *, socket_path: str | None = None,
                 prometheus: str = "", log_interval: float = 60.0,
                 drop_sources=None, process_drops=None, users=None, user_of=None) -> None:
        self.connections = connections
        self.collector = StatsCollector(role, start_ms=now_ms(), pid=os.getpid())
        self.collector.users = users
        self.collector.user_of = user_of
        if drop_sources:
            self.collector.drop_sources.extend(drop_sources)
        if process_drops:
            self.collector.process_drops.extend(process_drops)
        self.socket_path = socket_path
        self.prometheus = prometheus
        self.log_interval = log_interval
        self._t0 = time.monotonic()
        self._unix: asyncio.AbstractServer | None = None
        self._unix_sock: socket.socket | None = None
        self._http: asyncio.AbstractServer | None = None
        self.metrics_port: int | None = None
        self._tick: asyncio.TimerHandle | None = None
        self._last_log: dict | None = None
        self._next_log = 0.0
        self._registry = None
        self._stopped = False

    # -- snapshot ----------------------------------------------------------------------------
    def snapshot(self, max_sessions: int | None = None) -> dict:
        return self.collector.snapshot(self.connections(), now_ms(),
                                       time.monotonic() - self._t0, max_sessions)

    def session_closed(self, conn, reason: str = "") -> None:
        self.collector.session_closed(conn)

    def _on_tick(self) -> None:
        self._tick = None
        if self._stopped:
            return
        try:
            self.collector.tick(self.connections(), now_ms())
            if self.log_interval > 0 and time.monotonic() >= self._next_log:
                self._next_log = time.monotonic() + self.log_interval
                snap = self.snapshot()
                if self._last_log is not None:
                    log.info("%s", format_line(snap, self._last_log))
                self._last_log = snap
        except Exception:
            log.exception("stats tick failed")
        self._tick = asyncio.get_running_loop().call_later(TICK_S, self._on_tick)

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        """Start the tick and the outlets. A control socket or metrics endpoint that cannot
        be set up is logged as a warning; the tunnel runs on without it."""
        loop = asyncio.get_running_loop()
        self._next_log = time.monotonic()  # first tick records the baseline
        self._tick = loop.call_later(TICK_S, self._on_tick)
        if self.socket_path:
            try:
                sock = _bind_unix(self.socket_path)
                self._unix = await asyncio.start_unix_server(self._serve_control, sock=sock)
                self._unix_sock = sock
                log.info("stats: control socket %s (read it with `paqet stats`)", self.socket_path)
            except ControlError as exc:
                log.warning("stats: control socket disabled: %s", exc)
        if self.prometheus:
            try:
                await self._start_metrics()
            except ControlError as exc:
                log.warning("stats: Prometheus endpoint disabled: %s", exc)

    async def stop(self) -> None:
        self._stopped = True
        if self._tick is not None:
            self._tick.cancel()
            self._tick = None
        for srv in (self._unix, self._http):
            if srv is not None:
                srv.close()
        self._unix = self._http = None
        if self._unix_sock is not None and self.socket_path:
            try:
                if os.path.exists(self.socket_path):
                    os.unlink(self.socket_path)
            except OSError:
                log.debug("removing %s failed", self.socket_path, exc_info=True)
            self._unix_sock = None

    # -- control socket --------------------------------------------------------------------
    async def _serve_control(self, reader: asyncio.StreamReader,
                             writer: asyncio.StreamWriter) -> None:
        try:
            sock = writer.get_extra_info("socket")
            uid = _peer_uid(sock) if sock is not None else None
            if uid is not None and uid not in (0, os.getuid()):
                reply = {"error": "permission denied: root only"}
            else:
                try:
                    line = await asyncio.wait_for(reader.readline(), 5.0)
                except (asyncio.TimeoutError, ValueError):
                    line = b""
                words = line[:REQUEST_LIMIT].decode("ascii", "replace").split()
                if words[:1] in (["stats"], []) and len(words) <= 2 and \
                        (len(words) < 2 or words[1].isdigit()):
                    reply = self.snapshot(int(words[1]) if len(words) == 2 else None)
                else:
                    reply = {"error": f"unknown request {' '.join(words)[:40]!r} "
                                      "(known: stats [max sessions])"}
            writer.write(json.dumps(reply, separators=(",", ":")).encode() + b"\n")
            await asyncio.wait_for(writer.drain(), 5.0)
        except (ConnectionError, asyncio.TimeoutError, OSError):
            pass
        except Exception:
            log.exception("stats: control request failed")
        finally:
            writer.close()

    # -- Prometheus ------------------------------------------------------------------------------
    async def _start_metrics(self) -> None:
        try:
            from paqet import metrics
            self._registry = metrics.registry(
                lambda: self.snapshot(metrics.SESSION_SERIES_LIMIT))
        except ImportError as exc:
            raise ControlError(f"prometheus-client is not installed ({exc})") from None
        host, port = _metrics_addr(self.prometheus)
        try:
            self._http = await asyncio.start_server(self._serve_http, host, port)
        except OSError as exc:
            raise ControlError(f"cannot listen on {self.prometheus}: {exc.strerror or exc}") from None
        self.metrics_port = self._http.sockets[0].getsockname()[1]
        log.info("stats: Prometheus metrics on http://%s/metrics",
                 f"[{host}]:{self.metrics_port}" if ":" in host else f"{host}:{self.metrics_port}")

    async def _serve_http(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        from paqet import metrics
        try:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)
            except asyncio.LimitOverrunError:
                head = b""
            status, ctype, body = metrics.http_answer(head, self._registry)
            writer.write(f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\n"
                         f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                         + body)
            await asyncio.wait_for(writer.drain(), 5.0)
        except (ConnectionError, asyncio.TimeoutError, asyncio.IncompleteReadError, OSError):
            pass
        except Exception:
            log.exception("stats: metrics request failed")
        finally:
            writer.close()
