"""paqet: a packet-level proxy carrying KCP + smux inside hand-crafted TCP packets."""

__version__ = "0.1.0"
#: The upstream Go release whose wire format and configuration this package follows.
UPSTREAM_VERSION = "v1.0.0-alpha.21"
