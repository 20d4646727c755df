"""The beyond-upstream keys `http` (HTTP proxy listeners) and `server.backup` /
`server.failback` (failover): defaults, parsing, and one-line errors naming the key."""

import copy

import pytest
import yaml

from paqet.config import ConfigError, load_config_text

CLIENT = {"role": "client",
          "network": {"interface": "eth0",
                      "ipv4": {"addr": "198.18.0.1:0", "router_mac": "02:00:00:00:00:01"}},
          "server": {"addr": "198.18.0.2:9999"},
          "transport": {"protocol": "kcp", "kcp": {"key": "k"}}}


def load(d):
    return load_config_text(yaml.safe_dump(d))


def test_upstream_server_shape_unchanged():
    cfg = load(dict(CLIENT, socks5=[{"listen": "127.0.0.1:1080"}]))
    assert cfg.server.addr == "198.18.0.2:9999"
    assert cfg.server.backup == [] and cfg.server.failback == 30.0
    assert cfg.http == []


def test_http_and_backups_parse(caplog):
    d = copy.deepcopy(CLIENT)
    d["http"] = [{"listen": "127.0.0.1:8080", "username": "u", "password": "p"}]
    d["server"] = {"addr": "198.18.0.2:9999", "backup": ["198.18.1.2:9999", "[2001:2::2]:9999"],
                   "failback": 5}
    cfg = load(d)
    assert [(h.listen, h.username, h.password) for h in cfg.http] == [("127.0.0.1:8080", "u", "p")]
    assert cfg.server.backup == ["198.18.1.2:9999", "[2001:2::2]:9999"]
    assert cfg.server.failback == 5
    # an http listener alone is a complete client: no "no SOCKS5 or forward" warning
    assert not any("no SOCKS5" in w for w in cfg.warnings)


@pytest.mark.parametrize("path,value,want", [
    ("http", [{"listen": "nope"}], "http[0].listen"),
    ("http", [{"listen": "127.0.0.1:70000"}], "http[0].listen"),
    ("server", {"addr": "198.18.0.2:9999", "backup": ["198.18.1.2"]}, "server.backup[0]"),
    ("server", {"addr": "198.18.0.2:9999", "backup": "198.18.1.2:9999"}, "server.backup"),
    ("server", {"addr": "198.18.0.2:9999", "failback": -1}, "server.failback"),
])
def test_bad_values_name_their_key(path, value, want):
    d = copy.deepcopy(CLIENT)
    d[path] = value
    with pytest.raises(ConfigError) as exc:
        load(d)
    assert exc.value.path == want
    assert "\n" not in str(exc.value)
