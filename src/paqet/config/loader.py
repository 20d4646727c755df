"""Loading a paqet YAML file: parse, warn about unknown keys, apply upstream's defaults
(zero means default; client and server differ), validate with the msgspec schema and the
value parsers, and report the first problem as one line naming its YAML path."""

from __future__ import annotations

import functools
import ipaddress
import logging
import os
import re
import typing

import msgspec
import msgspec.inspect as mi
import yaml

from paqet.config import schema, values
from paqet.config.schema import (ROLE_DEFAULTS, SMUXBUF_DEFAULT, STREAMBUF_DEFAULT,
                                 ZERO_MEANS_DEFAULT, Config)

log = logging.getLogger("paqet.config")


class ConfigError(Exception):
    """A configuration problem; `path` is the YAML key path (e.g. transport.kcp.mtu)."""

    def __init__(self, path: str, message: str, source: str = "") -> None:
        # one line whatever the user's values hold (a multi-line YAML scalar quoted in the
        # message put its line breaks there)
        message = message.replace("\r", "\\r").replace("\n", "\\n")
        path = path.replace("\r", "\\r").replace("\n", "\\n")
        self.path = path
        self.message = message
        self.source = source
        super().__init__(f"{path}: {message}" if path else message)


class _UniqueKeyLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # libyaml when present
    pass


def _construct_mapping(loader, node, deep=False):
    seen = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            hash(key)
        except TypeError:  # a mapping or list as key: PyYAML's own error says so
            break
        if key in seen:
            m = key_node.start_mark
            raise yaml.constructor.ConstructorError(
                None, None, f"mapping key {key!r} already defined at line {seen[key] + 1}",
                m)
        seen[key] = key_node.start_mark.line
    return yaml.constructor.SafeConstructor.construct_mapping(loader, node, deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
                                 _construct_mapping)


def _yaml_error(exc: yaml.YAMLError, source: str, text: str = "") -> ConfigError:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    if isinstance(exc, yaml.reader.ReaderError):
        # a character YAML does not allow: str(exc) would be two lines about "<unicode string>"
        pos = exc.position
        col = pos - text.rfind("\n", 0, pos)
        where = f" at line {text.count(chr(10), 0, pos) + 1}, column {col}"
        ch = exc.character
        code = ord(ch) if isinstance(ch, str) else ch
        problem = f"{exc.reason} (#x{code:04x})" if isinstance(code, int) else str(exc.reason)
    return ConfigError("", f"invalid YAML in {source}{where}: {problem}", source)


@functools.lru_cache(maxsize=None)
def _config_info():
    return mi.type_info(Config)


# -- unknown keys ----------------------------------------------------------------------------
def _struct_info(t):
    while isinstance(t, mi.UnionType):
        t = next((x for x in t.types if not isinstance(x, mi.NoneType)), None)
    return t


def _unknown_keys(raw, info, path: str, out: list[str]) -> None:
    info = _struct_info(info)
    if isinstance(info, mi.StructType) and isinstance(raw, dict):
        fields = {f.encode_name: f.type for f in info.fields}
        for k, v in raw.items():
            p = f"{path}.{k}" if path else str(k)
            if k not in fields or k in ("warnings", "source"):
                out.append(p)
            else:
                _unknown_keys(v, fields[k], p, out)
    elif isinstance(info, mi.ListType) and isinstance(raw, list):
        for i, v in enumerate(raw):
            _unknown_keys(v, info.item_type, f"{path}[{i}]", out)


def _non_bools(raw, info, path: list, out: list) -> None:
    """Paths of bool keys given something else: upstream (goccy/go-yaml) accepts only YAML
    booleans there, while msgspec's lax mode would also take 0/1 and "true"."""
    info = _struct_info(info)
    if isinstance(info, mi.BoolType):
        if raw is not None and not isinstance(raw, bool):
            out.append(path)
    elif isinstance(info, mi.StructType) and isinstance(raw, dict):
        fields = {f.encode_name: f.type for f in info.fields}
        for k, v in raw.items():
            if k in fields:
                _non_bools(v, fields[k], path + [k], out)
    elif isinstance(info, mi.ListType) and isinstance(raw, list):
        for i, v in enumerate(raw):
            _non_bools(v, info.item_type, path + [i], out)


def _type_at(path: list) -> object:
    t = _config_info()
    for part in path:
        t = _struct_info(t)
        if isinstance(part, int):
            t = t.item_type if isinstance(t, mi.ListType) else None
        elif isinstance(t, mi.StructType):
            owner = t.cls
            t = next((f.type for f in t.fields if f.encode_name == part), None)
            if isinstance(t, mi.LiteralType):
                # msgspec sorts literal values; show them in the schema's (upstream's) order
                hint = typing.get_type_hints(owner).get(part)
                if typing.get_origin(hint) is typing.Literal:
                    return mi.LiteralType(values=typing.get_args(hint))
        else:
            return None
    return _struct_info(t)


def _allowed(t) -> str:
    if isinstance(t, mi.LiteralType):
        return "allowed: " + ", ".join(str(v) for v in t.values)
    if isinstance(t, mi.IntType):
        if t.ge is not None and t.le is not None:
            return f"allowed: {t.ge}-{t.le}"
        if t.ge is not None:
            return f"allowed: >= {t.ge}"
        return "allowed: an integer"
    if isinstance(t, mi.FloatType):
        bounds = [f"{op} {v:g}" for op, v in ((">=", t.ge), (">", t.gt), ("<=", t.le),
                                               ("<", t.lt)) if v is not None]
        return "allowed: a number" + (" " + " and ".join(bounds) if bounds else "")
    if isinstance(t, mi.BoolType):
        return "allowed: true or false"
    if isinstance(t, mi.StrType):
        return f"allowed: a string of at most {t.max_length} characters" if t.max_length \
            else "allowed: a string"
    if isinstance(t, mi.ListType):
        return (f"allowed: a list of at most {t.max_length} entries" if t.max_length
                else "allowed: a list")
    if isinstance(t, mi.StructType):
        return "allowed: a mapping"
    return ""


def _lookup(raw, path: list):
    for part in path:
        try:
            raw = raw[part]
        except (KeyError, IndexError, TypeError):
            return None
    return raw


_PATH_RE = re.compile(r" - at `\$((?:\.[A-Za-z_0-9]+|\[\d+\])*)`$")


def _from_validation(exc: msgspec.ValidationError, raw: dict, source: str) -> ConfigError:
    text = str(exc)
    m = _PATH_RE.search(text)
    parts: list = []
    if m:
        for tok in re.findall(r"\.([A-Za-z_0-9]+)|\[(\d+)\]", m.group(1)):
            parts.append(int(tok[1]) if tok[1] else tok[0])
        text = text[:m.start()]
    missing = re.match(r"Object missing required field `(\w+)`", text)
    if missing:
        parts.append(missing.group(1))
        path = _fmt(parts)
        return ConfigError(path, f"required key is missing ({_allowed(_type_at(parts))})", source)
    path = _fmt(parts)
    shown = _short_repr(_lookup(raw, parts))
    allowed = _allowed(_type_at(parts))
    if text.startswith("Invalid enum value"):  # the allowed list says it all
        return ConfigError(path, f"invalid value {shown} ({allowed})", source)
    return ConfigError(path, f"invalid value {shown}: {text[0].lower() + text[1:]} ({allowed})",
                       source)


def _short_repr(value, limit: int = 60) -> str:
    r = repr(value)
    return r if len(r) <= limit else r[:limit - 5] + " ...]" if r[0] == "[" else r[:limit - 4] + " ..."


def _fmt(parts: list) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else p)
    return out


def _drop_nulls(raw) -> None:
    """A YAML null is Go's zero value, i.e. the key's default: drop it."""
    if isinstance(raw, dict):
        for k in [k for k, v in raw.items() if v is None]:
            del raw[k]
        for v in raw.values():
            _drop_nulls(v)
    elif isinstance(raw, list):
        for v in raw:
            _drop_nulls(v)


def _apply_zero_defaults(raw: dict) -> None:
    _drop_nulls(raw)
    for path in ZERO_MEANS_DEFAULT:
        d = raw
        for k in path[:-1]:
            d = d.get(k) if isinstance(d, dict) else None
            if d is None:
                break
        if isinstance(d, dict) and path[-1] in d and d[path[-1]] in (0, "", None, []) \
                and d[path[-1]] is not False:
            del d[path[-1]]


def _check(cfg: Config) -> list[tuple[str, str]]:
    """Rules msgspec cannot express; (path, message) pairs in upstream's order."""
    errs: list[tuple[str, str]] = []
    role = cfg.role
    for i, s in enumerate(cfg.socks5):
        try:
            values.parse_addr(s.listen)
        except values.ValueProblem as exc:
            errs.append((f"socks5[{i}].listen", f"{exc} (allowed: host:port, port 1-65535)"))
    for i, s in enumerate(cfg.http):
        try:
            values.parse_addr(s.listen)
        except values.ValueProblem as exc:
            errs.append((f"http[{i}].listen", f"{exc} (allowed: host:port, port 1-65535)"))
    for i, f in enumerate(cfg.forward):
        for key in ("listen", "target"):
            try:
                values.parse_addr(getattr(f, key))
            except values.ValueProblem as exc:
                errs.append((f"forward[{i}].{key}", f"{exc} (allowed: host:port, port 1-65535)"))
        if f.protocol not in ("tcp", "udp"):
            errs.append((f"forward[{i}].protocol",
                         f"invalid value {f.protocol!r} (allowed: tcp, udp)"))
    net = cfg.network
    ports = {}
    for fam in ("ipv4", "ipv6"):
        fc = getattr(net, fam)
        if fc is None:
            continue
        if fc.addr:
            try:
                # an empty IP (":9999", "[]:9999") is detected, like a missing addr
                host, port = values.parse_addr(fc.addr, need_port=False, need_ip=True,
                                               empty_host=True)
                ports[fam] = port
                want4 = fam == "ipv4"
                if host and (":" not in host) != want4:
                    errs.append((f"network.{fam}.addr",
                                 f"'{fc.addr}' is not an {'IPv4' if want4 else 'IPv6'} address"))
            except values.ValueProblem as exc:
                errs.append((f"network.{fam}.addr", f"{exc} (allowed: ip:port, port 0 = random)"))
        if fc.router_mac:
            try:
                values.parse_mac(fc.router_mac)
            except values.ValueProblem as exc:
                errs.append((f"network.{fam}.router_mac", str(exc)))
    if len(ports) == 2 and ports["ipv4"] != ports["ipv6"]:
        errs.append(("network.ipv6.addr", f"IPv4 port ({ports['ipv4']}) and IPv6 port "
                                          f"({ports['ipv6']}) must match when both are configured"))
    for key in ("local_flag", "remote_flag"):
        for i, f in enumerate(getattr(net.tcp, key)):
            try:
                values.parse_flags(f)
            except values.ValueProblem as exc:
                errs.append((f"network.tcp.{key}[{i}]", str(exc)))
    if net.tcp.mode == "handshake" and net.driver == "udp":
        errs.append(("network.tcp.mode", "handshake needs raw TCP frames: network.driver "
                                         "afpacket, pcap or auto (not udp)"))
    k = cfg.transport.kcp
    if k.block not in ("none", "null") and not k.key and not (role == "server" and cfg.users):
        errs.append(("transport.kcp.key",
                     f"a key is required with block '{k.block}' (generate one with `paqet secret`; "
                     "only 'none' and 'null' need none" + ("; or list users: with a key each"
                                                           if role == "server" else "") + ")"))
    errs.extend(_check_users(cfg))
    if k.dshard + k.pshard > 256:
        errs.append(("transport.kcp.pshard", f"dshard + pshard must be at most 256 "
                                             f"(got {k.dshard} + {k.pshard})"))
    if (k.dshard == 0) != (k.pshard == 0):
        errs.append(("transport.kcp.pshard" if k.pshard == 0 else "transport.kcp.dshard",
                     "FEC needs both dshard and pshard > 0 (or both 0 to turn it off)"))
    if k.streambuf > k.smuxbuf:
        errs.append(("transport.kcp.streambuf", f"{k.streambuf} must not be larger than "
                                                f"transport.kcp.smuxbuf ({k.smuxbuf})"))
    if k.smuxktimeout < k.smuxkalive:
        errs.append(("transport.kcp.smuxktimeout", f"{k.smuxktimeout} must not be smaller than "
                                                   f"transport.kcp.smuxkalive ({k.smuxkalive})"))
    if role == "server":
        if not cfg.listen.addr:
            errs.append(("listen.addr", "required for role server (allowed: host:port)"))
        else:
            try:
                values.parse_addr(cfg.listen.addr)
            except values.ValueProblem as exc:
                errs.append(("listen.addr", f"{exc} (allowed: host:port, port 1-65535)"))
        # without network.*.addr the server receives on listen.addr's port (beyond upstream)
    else:
        if not cfg.server.addr:
            errs.append(("server.addr", "required for role client (allowed: host:port)"))
        else:
            try:
                values.parse_addr(cfg.server.addr)
            except values.ValueProblem as exc:
                errs.append(("server.addr", f"{exc} (allowed: host:port, port 1-65535)"))
        for i, b in enumerate(cfg.server.backup):
            try:
                values.parse_addr(b)
            except values.ValueProblem as exc:
                errs.append((f"server.backup[{i}]", f"{exc} (allowed: host:port, port 1-65535)"))
        if cfg.transport.conn > 1 and cfg.local_port:
            errs.append(("transport.conn", "only one connection is allowed when a client port "
                                           "is explicitly set (use port 0 in network.*.addr)"))
    if cfg.stats.prometheus:
        try:
            host, _ = values.parse_addr(cfg.stats.prometheus, need_port=False)
            if host and host != "localhost":
                ipaddress.ip_address(host)
        except (values.ValueProblem, ValueError) as exc:
            errs.append(("stats.prometheus", f"{exc} (allowed: ip:port or localhost:port, "
                                             "empty = off)"))
    return errs


_USER_NAME = re.compile(r"[A-Za-z0-9_.@+-]{1,64}")


def _check_users(cfg: Config) -> list[tuple[str, str]]:
    """`users:` (beyond upstream, server): names, keys and limits. Turns the sizes into
    integers; key_file was read into key already (_read_key_files)."""
    errs: list[tuple[str, str]] = []
    if not cfg.users:
        return errs
    if cfg.role != "server":
        return [("users", "only a server has users (a client has one transport.kcp.key)")]
    block = cfg.transport.kcp.block
    if block in ("none", "null"):
        return [("users", f"block '{block}' has no key, so users cannot be told apart "
                          "(choose a cipher in transport.kcp.block)")]
    names: dict[str, int] = {}
    keys: dict[str, str] = {cfg.transport.kcp.key: "transport.kcp.key"} \
        if cfg.transport.kcp.key else {}
    for i, u in enumerate(cfg.users):
        at = f"users[{i}]"
        if not _USER_NAME.fullmatch(u.name):
            errs.append((f"{at}.name", f"invalid name {_short_repr(u.name)} (allowed: 1-64 of "
                                       "letters, digits and _ . @ + -)"))
        elif u.name in names:
            errs.append((f"{at}.name", f"'{u.name}' is also users[{names[u.name]}]'s name"))
        else:
            names[u.name] = i
        if not u.key and u.key_file:
            pass  # _read_key_files said why
        elif not u.key:
            errs.append((f"{at}.key", "required: the user's key (or key_file; generate one "
                                      "with `paqet secret`)"))
        elif u.key in keys:
            errs.append((f"{at}.key", f"the same key as {keys[u.key]}: each user needs a key "
                                      "of their own"))
        else:
            keys[u.key] = at
        for field, rate in (("rate_limit", True), ("daily_quota", False)):
            try:
                setattr(u, field, values.parse_size(getattr(u, field), rate=rate))
            except values.ValueProblem as exc:
                errs.append((f"{at}.{field}", str(exc)))
    return errs


def _read_key_files(cfg: Config, base_dir: str) -> list[tuple[str, str]]:
    """users[].key_file: the key is the file's first line (relative paths: from the
    config file's directory)."""
    errs = []
    for i, u in enumerate(cfg.users):
        if not u.key_file:
            continue
        if u.key:
            errs.append((f"users[{i}].key_file", "give key or key_file, not both"))
            continue
        path = os.path.join(base_dir, u.key_file)
        try:
            with open(path, encoding="utf-8") as f:
                u.key = f.readline().strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            errs.append((f"users[{i}].key_file", f"cannot read '{path}': {reason}"))
            continue
        if not u.key:
            errs.append((f"users[{i}].key_file", f"'{path}' holds no key on its first line"))
    return errs


def _stats_exposed(cfg: Config) -> str:
    """A warning when the Prometheus endpoint listens beyond loopback."""
    if not cfg.stats.prometheus:
        return ""
    host = values.split_host_port(cfg.stats.prometheus)[0]
    if not host or host == "localhost" or ipaddress.ip_address(host).is_loopback:
        return ""
    return (f"stats.prometheus listens on {host}: the metrics (peer addresses, traffic) are "
            "reachable from other hosts")


def _listen_port_mismatch(cfg: Config) -> str:
    net_port = cfg.local_port
    listen_port = values.split_host_port(cfg.listen.addr)[1]
    if net_port == listen_port:
        return ""
    fam = "ipv6" if cfg.network.ipv6 and cfg.network.ipv6.addr else "ipv4"
    return (f"listen.addr port ({listen_port}) differs from network.{fam}.addr port "
            f"({net_port}): the server receives on {net_port}; listen.addr only names it in logs")


def load_config_text(text: str, source: str = "<config>") -> Config:
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, source, text) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError("", f"{source}: the top level must be a mapping of keys", source)
    role = raw.get("role")
    if role not in ("client", "server"):
        raise ConfigError("role", f"invalid value {role!r} (allowed: client, server)", source)
    warnings: list[str] = []
    unknown: list[str] = []
    _unknown_keys(raw, _config_info(), "", unknown)
    for key in unknown:
        msg = f"unknown key '{key}' in {source} is ignored"
        warnings.append(msg)
        log.warning(msg)
    raw.pop("warnings", None)  # fields of ours, not YAML keys (msgspec ignores the rest)
    raw.pop("source", None)
    _apply_zero_defaults(raw)
    not_bool: list = []
    _non_bools(raw, _config_info(), [], not_bool)
    if not_bool:
        parts = not_bool[0]
        value = _lookup(raw, parts)
        raise ConfigError(_fmt(parts), f"invalid value {_short_repr(value)}: expected `bool`, got "
                                       f"`{type(value).__name__}` (allowed: true or false)", source)
    try:
        cfg = msgspec.convert(raw, Config, strict=False)
    except msgspec.ValidationError as exc:
        raise _from_validation(exc, raw, source) from None
    d = ROLE_DEFAULTS[role]
    if cfg.network.pcap.sockbuf is None:
        cfg.network.pcap.sockbuf = d["sockbuf"]
    k = cfg.transport.kcp
    defaulted = []
    for key, value in (("rcvwnd", d["rcvwnd"]), ("sndwnd", d["sndwnd"]),
                       ("smuxbuf", SMUXBUF_DEFAULT), ("streambuf", STREAMBUF_DEFAULT)):
        if getattr(k, key) is None:
            setattr(k, key, value)
            defaulted.append(f"transport.kcp.{key}")
    if not cfg.network.tcp.local_flag:
        cfg.network.tcp.local_flag = ["PA"]
    if not cfg.network.tcp.remote_flag:
        cfg.network.tcp.remote_flag = ["PA"]
    sb = cfg.network.pcap.sockbuf
    if sb & (sb - 1):
        msg = (f"network.pcap.sockbuf ({sb} bytes) is not a power of 2 - consider values like "
               "4MB, 8MB, or 16MB")
        warnings.append(msg)
        log.warning(msg)
    if role == "client" and not cfg.socks5 and not cfg.forward and not cfg.http:
        msg = "client mode enabled but no SOCKS5 or forward configurations found"
        warnings.append(msg)
        log.warning(msg)
    errs = _read_key_files(cfg, os.path.dirname(source) if source and not source.startswith("<")
                           else ".")
    errs += _check(cfg)
    if not errs and role == "client" and cfg.network.tcp.mode == "handshake" and \
            (cfg.network.tcp.local_flag != ["PA"] or cfg.network.tcp.remote_flag != ["PA"]):
        msg = ("network.tcp.local_flag and remote_flag are not used with network.tcp.mode "
               "handshake: the flow's frames carry ACK (PSH+ACK with data)")
        warnings.append(msg)
        log.warning(msg)
    if not errs and _stats_exposed(cfg):
        msg = _stats_exposed(cfg)
        warnings.append(msg)
        log.warning(msg)
    if not errs and role == "server":
        msg = _listen_port_mismatch(cfg)
        if msg:
            warnings.append(msg)
            log.warning(msg)
    if errs:
        path, msg = errs[0]
        more = f" (and {len(errs) - 1} more problem{'s' if len(errs) > 2 else ''})" \
            if len(errs) > 1 else ""
        raise ConfigError(path, msg + more, source)
    cfg.warnings = warnings
    cfg.source = source
    cfg.defaulted = defaulted
    return cfg


def load_config(path: str) -> Config:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise ConfigError("", f"cannot read config file '{path}': no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError("", f"cannot read config file '{path}': {reason}") from None
    return load_config_text(text, path)


__all__ = ["ConfigError", "load_config", "load_config_text", "schema"]
