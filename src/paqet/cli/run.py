"""`paqet run -c FILE`: the client or server, until SIGINT/SIGTERM."""

from __future__ import annotations

from paqet import logs
from paqet.cli.exits import EXIT_OK, load_or_exit


def _user_text(u) -> str:
    from paqet.tunnel.stats import human_bytes, human_rate
    limits = [f"at most {u.max_sessions} sessions" if u.max_sessions else "",
              f"{human_rate(u.rate_limit)} each way" if u.rate_limit else "",
              f"{human_bytes(u.daily_quota)} a day" if u.daily_quota else ""]
    limits = [x for x in limits if x]
    return u.name + (f" ({', '.join(limits)})" if limits else "")


def summary(cfg) -> str:
    k = cfg.transport.kcp
    nd, iv, rs, nc, wd, an = k.effective_mode()
    lines = [f"{cfg.source}: valid {cfg.role} configuration",
             f"  transport: kcp mode {k.mode} (nodelay {nd}, interval {iv} ms, resend {rs}, "
             f"nc {nc}, wdelay {str(wd).lower()}, acknodelay {str(an).lower()}), mtu {k.mtu}, "
             f"sndwnd {k.sndwnd}, rcvwnd {k.rcvwnd}, block {k.block}, "
             f"FEC {'%d/%d' % (k.dshard, k.pshard) if k.dshard else 'off'}, conn {cfg.transport.conn}, "
             f"dialect {cfg.transport.dialect}",
             f"  network: interface {cfg.network.interface or '(auto)'}, port "
             f"{cfg.local_port or 'random'}, flags {cfg.network.tcp.local_flag}, "
             f"firewall {cfg.network.firewall}, driver {cfg.network.driver}"]
    if cfg.role == "client":
        lines.append(f"  server {cfg.server.addr}; socks5 {[_listener(s) for s in cfg.socks5]}; "
                     f"forward {[f'{f.listen}->{f.target}/{f.protocol}' for f in cfg.forward]}")
        if cfg.server.backup:
            lines.append(f"  backup servers {cfg.server.backup}, failback every "
                         f"{cfg.server.failback:g} s" if cfg.server.failback else
                         f"  backup servers {cfg.server.backup}, no failback")
        if cfg.http:
            lines.append(f"  http proxy {[_listener(h) for h in cfg.http]}")
    else:
        lines.append(f"  listen {cfg.listen.addr}")
        if cfg.users:
            lines.append("  users: " + ", ".join(_user_text(u) for u in cfg.users)
                         + ("; and the unnamed user of transport.kcp.key"
                            if cfg.transport.kcp.key else ""))
    from paqet.control import socket_path
    st = cfg.stats
    lines.append(f"  stats: control socket {socket_path(cfg) or 'off'}, prometheus "
                 f"{st.prometheus or 'off'}, log line every "
                 f"{f'{st.log_interval:g} s' if st.log_interval else 'never (off)'}")
    for w in cfg.warnings:
        lines.append(f"  warning: {w}")
    return "\n".join(lines)


def _listener(s) -> str:
    """A SOCKS5 or HTTP proxy listener: its address, and wait_dial when set."""
    return s.listen + (" (wait_dial)" if s.wait_dial else "")


def run(args) -> int:
    cfg = load_or_exit(args.config)
    if args.check:
        print(summary(cfg))
        return EXIT_OK
    logs.setup(cfg.log.level)
    from paqet.tunnel.stream import StreamClosed
    logs.add_benign(StreamClosed)  # upstream's io.ErrClosedPipe: hidden above debug
    from paqet.runtime import run as run_runtime
    return run_runtime(cfg)
