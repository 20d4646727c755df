"""Fuzz target: paqet.config.loader.load_config_text on random YAML text and on random
structures (a minimal valid client or server config with values replaced at random key
paths, or a tree built from the schema's own key names).

Input: a mode byte then the text (text mode) or the bytes that steer the structure builder.
Property: the loader returns a Config or raises ConfigError - never anything else, so a
user's mistake never ends as a traceback; the error message is one bounded line."""

import json
import logging
import marshal
import os

import msgspec.inspect as mi
import yaml

from _common import instrumented, main

with instrumented(__name__, ("paqet.config",)):
    from paqet.config.loader import ConfigError, load_config_text
    from paqet.config.schema import Config


HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLES = [open(os.path.join(HERE, "..", "..", "examples", f), encoding="utf-8").read()
            for f in ("client.yaml", "server.yaml")]
# minimal valid configs to edit (the full examples are 3x slower to load; they are seeds of
# the text mode)
BASES = [{"role": "client", "socks5": [{"listen": "127.0.0.1:1080"}],
          "network": {"interface": "eth0", "ipv4": {"addr": "198.18.0.1:0",
                                                    "router_mac": "02:00:00:00:00:01"}},
          "server": {"addr": "198.18.0.2:9999"},
          "transport": {"protocol": "kcp", "kcp": {"key": "k"}}},
         {"role": "server", "listen": {"addr": ":9999"},
          "network": {"interface": "eth0", "ipv4": {"addr": "198.18.0.2:9999",
                                                    "router_mac": "02:00:00:00:00:02"}},
          "transport": {"protocol": "kcp", "kcp": {"key": "k", "dshard": 10, "pshard": 3}}}]
BASES_M = [marshal.dumps(b) for b in BASES]
DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def _schema_keys(info, out: set) -> set:
    """Every key name of the schema (walked through msgspec's type info)."""
    if isinstance(info, mi.StructType):
        for f in info.fields:
            if f.encode_name not in out:
                out.add(f.encode_name)
                _schema_keys(f.type, out)
    for attr in ("types", "item_type", "value_type"):
        sub = getattr(info, attr, None)
        for t in (sub if isinstance(sub, tuple) else (sub,) if sub is not None else ()):
            _schema_keys(t, out)
    return out


KEYS = sorted(_schema_keys(mi.type_info(Config), set()) | {"role", "addr", "listen", "key", "block", "mode",
                                              "interface", "ipv4", "ipv6", "kcp", "limits"})
SCALARS = ["client", "server", "aes", "none", "null", "fast3", "manual", "198.18.0.1:0",
           "198.18.0.2:9999", "[2001:2::1]:0", "02:00:00:00:00:01", "eth0", "PA", "SA", "x",
           "", "4MB", "-1", "1e9", 0, 1, -1, 2 ** 31, 2 ** 64, 1.5, float("nan"), True, False,
           None, "\u00fc", "127.0.0.1:1080", "udp", "kcp", "debug"]


class _Bytes:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self) -> int:
        if self.pos >= len(self.data):
            return 0
        self.pos += 1
        return self.data[self.pos - 1]


def _value(b: _Bytes, depth: int):
    c = b.take()
    kind = c % 8
    if depth > 3 or kind < 4:
        return SCALARS[b.take() % len(SCALARS)]
    if kind == 4:
        return b.take() * 1000003 - 2 ** 20
    if kind == 5:
        return [_value(b, depth + 1) for _ in range(b.take() % 4)]
    if kind == 6:
        return "".join(chr(32 + b.take() % 95) for _ in range(b.take() % 12))
    return {KEYS[b.take() % len(KEYS)]: _value(b, depth + 1) for _ in range(b.take() % 5)}


def _mutate(tree, b: _Bytes):
    """Replace the value at a random path of `tree` (or add a key there)."""
    node = tree
    for _ in range(4):
        if isinstance(node, dict) and node:
            keys = sorted(node, key=str)
            k = keys[b.take() % len(keys)]
            if b.take() % 3 == 0 or not isinstance(node[k], (dict, list)):
                node[k] = _value(b, 1)
                return
            node = node[k]
        elif isinstance(node, list) and node:
            i = b.take() % len(node)
            if not isinstance(node[i], (dict, list)):
                node[i] = _value(b, 1)
                return
            node = node[i]
        else:
            return
    if isinstance(node, dict):
        node[KEYS[b.take() % len(KEYS)]] = _value(b, 1)


def _load(text: str) -> None:
    try:
        cfg = load_config_text(text, "fuzz.yaml")
    except ConfigError as exc:
        msg = str(exc)
        assert msg and "\n" not in msg.strip() and len(msg) <= 600 + len(text), msg
        return
    assert isinstance(cfg, Config)


def one_input(data: bytes) -> None:
    if not data:
        return
    mode, body = data[0] % 4, data[1:]
    if mode == 0:
        _load(body.decode("utf-8", "replace"))
        return
    b = _Bytes(body)
    if mode == 3:
        tree = _value(b, 0)
        if isinstance(tree, dict):
            tree.setdefault("role", ("client", "server")[b.take() & 1])
    else:
        tree = marshal.loads(BASES_M[mode - 1])  # a fast deep copy
        for _ in range(1 + b.take() % 4):
            _mutate(tree, b)
    # JSON is YAML's flow style and json.dumps is C: the dump is not what is being tested
    # (a tenth of the cost of yaml.dump); the random trees of mode 3 use block style
    if mode != 3:
        text = json.dumps(tree, ensure_ascii=False)
    else:
        try:
            text = yaml.dump(tree, Dumper=DUMPER, allow_unicode=True)
        except yaml.YAMLError:
            return
    _load(text)


def seeds() -> list[bytes]:
    out = [b"\x00" + t.encode() for t in EXAMPLES]
    out += [bytes((m,)) + bytes(range(i, i + 40)) for m in (1, 2, 3) for i in (0, 7, 100)]
    return out


if __name__ == "__main__":
    # warnings for unknown keys would flood the run; only here, not on import: the default
    # suite imports this module (tests/fuzz/test_targets.py), and a process-wide
    # logging.disable broke every later test that reads log output
    logging.disable(logging.CRITICAL)
    main(one_input, seeds)
