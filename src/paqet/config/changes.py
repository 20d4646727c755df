"""What a reload (SIGHUP) may change in a running instance: the keys that differ between
two loaded configurations, which of them take effect live, and the configuration then in
force (the old one with the new live parts)."""

from __future__ import annotations

import msgspec

from paqet.config.schema import Config

#: keys (and sections, ending in ".") that change live; everything else needs a restart
LIVE = {
    "client": ("log.level", "limits.", "socks5", "http", "forward"),
    "server": ("log.level", "limits.", "users", "transport.kcp.key"),
}
_NOT_YAML = ("warnings", "source")


def _flatten(value, path: str, out: dict) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(v, f"{path}.{k}" if path else k, out)
    else:
        out[path] = value  # lists are one value: socks5, forward, users, flags ...


def _values(cfg: Config) -> dict:
    raw = msgspec.to_builtins(cfg)
    for k in _NOT_YAML:
        raw.pop(k, None)
    out: dict = {}
    _flatten(raw, "", out)
    return out


def changed_keys(old: Config, new: Config) -> list[str]:
    """The YAML key paths whose values differ (a list is one key), in schema order."""
    a, b = _values(old), _values(new)
    keys = list(a) + [k for k in b if k not in a]
    return [k for k in keys if a.get(k) != b.get(k)]


def is_live(key: str, role: str) -> bool:
    return any(key == p or (p.endswith(".") and key.startswith(p)) for p in LIVE[role])


def split(old: Config, new: Config) -> tuple[list[str], list[str]]:
    """(keys that change live, keys that need a restart). A new role needs a restart and
    nothing else is taken."""
    keys = changed_keys(old, new)
    if old.role != new.role:
        return [], keys
    live = [k for k in keys if is_live(k, old.role)]
    return live, [k for k in keys if k not in live]


def applied(old: Config, new: Config) -> Config:
    """The configuration in force after a reload: `old` with the parts of `new` that
    change live (the rest keeps its running values until a restart)."""
    rep = msgspec.structs.replace
    kw = dict(log=rep(old.log, level=new.log.level), limits=new.limits)
    if old.role == "client":
        kw.update(socks5=new.socks5, http=new.http, forward=new.forward)
    else:
        kcp = rep(old.transport.kcp, key=new.transport.kcp.key)
        kw.update(users=new.users, transport=rep(old.transport, kcp=kcp))
    cfg = rep(old, **kw)
    cfg.warnings = new.warnings
    cfg.source = new.source
    return cfg
