"""Property tests for the config loader: random YAML text, random structures built from the
schema's own key names, and the examples with values replaced at random key paths all end
as a Config or as one ConfigError line - never another exception (a user's mistake must not
end as a traceback). The long coverage-guided run is tests/fuzz/fuzz_config.py."""

import contextlib
import copy
import logging
import os

import msgspec.inspect as mi
import yaml
from hypothesis import HealthCheck, given, settings, strategies as st

from paqet.config import ConfigError, load_config_text
from paqet.config.schema import Config

ROOT = os.path.join(os.path.dirname(__file__), "..", "..", "..")
EXAMPLES = [yaml.safe_load(open(os.path.join(ROOT, "examples", f), encoding="utf-8"))
            for f in ("client.yaml", "server.yaml")]
SETTINGS = settings(max_examples=50, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def _keys(info, out: set) -> set:
    if isinstance(info, mi.StructType):
        for f in info.fields:
            if f.encode_name not in out:
                out.add(f.encode_name)
                _keys(f.type, out)
    for attr in ("types", "item_type", "value_type"):
        sub = getattr(info, attr, None)
        for t in (sub if isinstance(sub, tuple) else (sub,) if sub is not None else ()):
            _keys(t, out)
    return out


KEYS = sorted(_keys(mi.type_info(Config), set()))

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-2 ** 70, 2 ** 70), st.floats(allow_nan=True),
    st.text(max_size=20),
    st.sampled_from(["client", "server", "aes", "none", "fast3", "manual", "198.18.0.1:0",
                     "[2001:2::1]:0", "02:00:00:00:00:01", "eth0", "PA", "4MB", "udp", "kcp"]))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4),
    st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=8)), inner, max_size=5)),
    max_leaves=12)


def _load(text: str) -> None:
    try:
        with _quiet():
            cfg = load_config_text(text, "prop.yaml")
    except ConfigError as exc:
        msg = str(exc)
        assert msg and "\n" not in msg.strip(), msg
        return
    assert isinstance(cfg, Config)


def _dump(tree) -> str:
    return yaml.dump(tree, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper), allow_unicode=True)


@contextlib.contextmanager
def _quiet():
    """Unknown-key warnings off while one example loads; the level is restored, so later
    tests that read log output are not affected."""
    log = logging.getLogger("paqet")
    old = log.level
    log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        log.setLevel(old)


def test_schema_keys_are_found():
    assert {"role", "transport", "kcp", "block", "dshard", "router_mac", "limits"} <= set(KEYS)


@SETTINGS
@given(st.text(max_size=300))
def test_random_text(text):
    _load(text)


@SETTINGS
@given(st.dictionaries(st.sampled_from(KEYS), values, max_size=6), st.sampled_from(["client", "server"]))
def test_random_structures(tree, role):
    tree.setdefault("role", role)
    _load(_dump(tree))


@SETTINGS
@given(st.sampled_from([0, 1]), st.lists(st.tuples(st.lists(st.integers(0, 50), min_size=1, max_size=4),
                                                   values), min_size=1, max_size=4))
def test_examples_with_values_replaced(which, edits):
    """One of the examples with a value replaced (or a key added) at random key paths."""
    tree = copy.deepcopy(EXAMPLES[which])
    for path, value in edits:
        node = tree
        for step in path[:-1]:
            if isinstance(node, dict) and node:
                nxt = node[sorted(node)[step % len(node)]]
            elif isinstance(node, list) and node:
                nxt = node[step % len(node)]
            else:
                break
            if not isinstance(nxt, (dict, list)):
                break
            node = nxt
        if isinstance(node, dict):
            keys = sorted(node) + KEYS
            node[keys[path[-1] % len(keys)]] = value
        elif isinstance(node, list) and node:
            node[path[-1] % len(node)] = value
    _load(_dump(tree))
