"""The subset of Go's encoding/gob that paqet alpha.6–19 put on its streams.

Encoding: paqet's Go encoder sends, for every message, four type definitions (Proto, Addr,
[]TCPF, TCPF: a fixed 202-byte prefix) and one value message. We emit the same bytes.
Decoding is general enough for what any Go encoder sends for these types: type definitions
with any ids, struct fields matched by name, unknown fields skipped, the alpha.6–10
UDPAddr form; every size is bounded.
"""

from __future__ import annotations
MAX_MESSAGE = 1 << 16
MAX_MESSAGES = 16
MAX_DEPTH = 8
MAX_ITEMS = 1024


class GobError(ValueError):
    pass


class Incomplete(Exception):
    """More bytes are needed: `need` is how many the stream must hold at least before
    decoding can get further (the same call with fewer bytes raises Incomplete again)."""

    def __init__(self, need: int = 0) -> None:
        super().__init__(need)
        self.need = need


# -- primitives ------------------------------------------------------------------------------
def enc_uint(v: int) -> bytes:
    if v < 0x80:
        return bytes((v,))
    b = v.to_bytes((v.bit_length() + 7) // 8, "big")
    return bytes((256 - len(b),)) + b


def enc_int(v: int) -> bytes:
    return enc_uint((v << 1) if v >= 0 else ((~v) << 1) | 1)


def enc_string(s: bytes) -> bytes:
    return enc_uint(len(s)) + s


def enc_struct(fields: list[tuple[int, bytes]]) -> bytes:
    """Fields as (field number, encoded value), ascending; zero values already left out."""
    out, last = [], -1
    for num, value in fields:
        out.append(enc_uint(num - last))
        out.append(value)
        last = num
    out.append(b"\0")
    return b"".join(out)


def message(body: bytes) -> bytes:
    return enc_uint(len(body)) + body


def _common(name: bytes, tid: int) -> bytes:
    return enc_struct([(0, enc_string(name)), (1, enc_int(tid))])


def _struct_def(tid: int, name: bytes, fields: list[tuple[bytes, int]]) -> bytes:
    flist = enc_uint(len(fields)) + b"".join(
        enc_struct([(0, enc_string(n)), (1, enc_int(i))]) for n, i in fields)
    struct_type = enc_struct([(0, _common(name, tid)), (1, flist)])
    return message(enc_int(-tid) + enc_struct([(2, struct_type)]))


def _slice_def(tid: int, name: bytes, elem: int) -> bytes:
    slice_type = enc_struct([(0, _common(name, tid)), (1, enc_int(elem))])
    return message(enc_int(-tid) + enc_struct([(1, slice_type)]))


FIRST_USER_ID = 64
PROTO_ID, ADDR_ID, TCPF_ID, TCPF_SLICE_ID = 64, 65, 66, 67
FLAG_FIELDS = ("FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR", "NS")

#: The four type definitions every paqet alpha.11-19 gob message starts with.
TYPEDEFS = (
    _struct_def(PROTO_ID, b"Proto", [(b"Type", 3), (b"Addr", ADDR_ID), (b"TCPF", TCPF_SLICE_ID)])
    + _struct_def(ADDR_ID, b"Addr", [(b"Host", 6), (b"Port", 2)])
    + _slice_def(TCPF_SLICE_ID, b"[]conf.TCPF", TCPF_ID)
    + _struct_def(TCPF_ID, b"TCPF", [(f.encode(), 1) for f in FLAG_FIELDS]))


class _Reader:
    __slots__ = ("buf", "pos", "end")

    def __init__(self, buf, pos: int = 0, end: int | None = None) -> None:
        self.buf = buf
        self.pos = pos
        self.end = len(buf) if end is None else end

    def uint(self) -> int:
        if self.pos >= self.end:
            raise GobError("unexpected EOF")
        b = self.buf[self.pos]
        self.pos += 1
        if b < 0x80:
            return b
        n = 256 - b
        if n > 8:
            raise GobError("gob: encoded unsigned integer out of range")
        if self.pos + n > self.end:
            raise GobError("unexpected EOF")
        v = int.from_bytes(self.buf[self.pos:self.pos + n], "big")
        self.pos += n
        return v

    def int(self) -> int:
        u = self.uint()
        return ~(u >> 1) if u & 1 else u >> 1

    def bytes(self) -> bytes:
        n = self.uint()
        if n > self.end - self.pos:
            raise GobError("unexpected EOF")
        v = bytes(self.buf[self.pos:self.pos + n])
        self.pos += n
        return v


# -- schemas ---------------------------------------------------------------------------------
# A schema is "bool" | "int" | "uint" | "string" | "bytes" | ("struct", [(name, schema)...])
# | ("slice", schema) | ("ref", type id) resolved against the definitions seen.
BUILTIN = {1: "bool", 2: "int", 3: "uint", 4: "float", 5: "bytes", 6: "string", 7: "complex"}
_COMMON = ("struct", [("Name", "string"), ("Id", "int")])
_FIELD = ("struct", [("Name", "string"), ("Id", "int")])
WIRETYPE = ("struct", [
    ("ArrayT", ("struct", [("CommonType", _COMMON), ("Elem", "int"), ("Len", "int")])),
    ("SliceT", ("struct", [("CommonType", _COMMON), ("Elem", "int")])),
    ("StructT", ("struct", [("CommonType", _COMMON), ("Field", ("slice", _FIELD))])),
    ("MapT", ("struct", [("CommonType", _COMMON), ("Key", "int"), ("Elem", "int")])),
    ("GobEncoderT", ("struct", [("CommonType", _COMMON)])),
    ("BinaryMarshalerT", ("struct", [("CommonType", _COMMON)])),
    ("TextMarshalerT", ("struct", [("CommonType", _COMMON)])),
])


def _decode(r: _Reader, schema, types: dict, depth: int = 0):
    """Decode one value. Every branch consumes at least one byte of a bounded message,
    so the work is bounded by the message length (and nesting by MAX_DEPTH)."""
    if depth > MAX_DEPTH:
        raise GobError("gob: nesting too deep")
    if isinstance(schema, tuple) and schema[0] == "ref":
        tid = schema[1]
        schema = BUILTIN.get(tid) or types.get(tid)
        if schema is None:
            raise GobError(f"gob: unknown type id {tid}")
    if schema == "bool":
        v = r.uint()
        if v > 1:
            raise GobError(f"gob: invalid bool {v}")
        return v == 1
    if schema == "int":
        return r.int()
    if schema in ("uint", "float"):   # a float is its byte-reversed IEEE bits, as a uint
        return r.uint()
    if schema == "complex":
        return (r.uint(), r.uint())
    if schema in ("string", "bytes", "opaque"):  # opaque: GobEncoder & co, length + bytes
        return r.bytes()
    kind = schema[0]
    if kind in ("slice", "array"):
        n = r.uint()
        if n > MAX_ITEMS or n > r.end - r.pos:
            raise GobError("gob: slice too long")
        if kind == "array" and n != schema[2]:
            raise GobError(f"gob: array length {n}, want {schema[2]}")
        return [_decode(r, schema[1], types, depth + 1) for _ in range(n)]
    if kind == "map":
        n = r.uint()
        if n > MAX_ITEMS or 2 * n > r.end - r.pos:
            raise GobError("gob: map too long")
        return [(_decode(r, schema[1], types, depth + 1), _decode(r, schema[2], types, depth + 1))
                for _ in range(n)]
    if kind == "struct":
        fields = schema[1]
        out = {}
        idx = -1
        while True:
            delta = r.uint()
            if delta == 0:
                return out
            if delta > len(fields) - idx - 1:
                raise GobError("gob: field number out of range")
            idx += delta
            name, sub = fields[idx]
            out[name] = _decode(r, sub, types, depth + 1)
    raise GobError("gob: unsupported type")


def _schema_from_wire(wt: dict) -> object:
    def ref(tid):
        if not isinstance(tid, int) or tid <= 0 or tid == 8 or 9 <= tid < 16:
            # 8 = interface: never part of paqet's types; skipping it would need
            # type definitions nested in the value.
            raise GobError(f"gob: unsupported type id {tid}")
        return ("ref", tid)

    if len(wt) != 1:
        raise GobError("gob: type definition must have exactly one kind")
    if "StructT" in wt:
        st = wt["StructT"]
        return ("struct", [(f.get("Name", b"").decode("latin-1"), ref(f.get("Id", 0)))
                           for f in st.get("Field", [])])
    if "SliceT" in wt:
        return ("slice", ref(wt["SliceT"].get("Elem", 0)))
    if "ArrayT" in wt:
        a = wt["ArrayT"]
        return ("array", ref(a.get("Elem", 0)), a.get("Len", 0))
    if "MapT" in wt:
        m = wt["MapT"]
        return ("map", ref(m.get("Key", 0)), ref(m.get("Elem", 0)))
    return "opaque"  # GobEncoderT, BinaryMarshalerT, TextMarshalerT


def _stream_uint(buf, pos: int, n: int) -> tuple[int, int]:
    """A message length at buf[pos:]: (value, new pos); Incomplete if cut short."""
    if pos >= n:
        raise Incomplete(pos + 1)
    b = buf[pos]
    if b < 0x80:
        return b, pos + 1
    k = 256 - b
    if k > 8:
        raise GobError("gob: encoded unsigned integer out of range")
    if pos + 1 + k > n:
        raise Incomplete(pos + 1 + k)
    return int.from_bytes(buf[pos + 1:pos + 1 + k], "big"), pos + 1 + k


def decode_stream(buf) -> tuple[dict, int]:
    """Decode one gob value from the start of `buf` (type definitions first, as many as
    sent). Returns (value as a dict of field names, bytes consumed). Raises Incomplete
    when more bytes are needed, GobError when the bytes cannot be a gob value."""
    types: dict[int, object] = {}
    pos = 0
    n = len(buf)
    for _ in range(MAX_MESSAGES):
        length, start = _stream_uint(buf, pos, n)
        if length == 0 or length > MAX_MESSAGE:
            raise GobError(f"gob: invalid message length {length}")
        end = start + length
        if end > n:
            raise Incomplete(end)
        body = _Reader(buf, start, end)
        tid = body.int()
        if tid < 0:
            if -tid < FIRST_USER_ID or -tid in types:
                raise GobError(f"gob: bad or duplicate type id {-tid}")
            wt = _decode(body, WIRETYPE, {})
            types[-tid] = _schema_from_wire(wt)
            pos = end
            continue
        schema = BUILTIN.get(tid) or types.get(tid)
        if schema is None:
            raise GobError(f"gob: unknown type id {tid}")
        if not (isinstance(schema, tuple) and schema[0] == "struct"):
            raise GobError(f"gob: remote type id {tid} is not a struct")
        return _decode(body, schema, types), end
    raise GobError("gob: too many type definitions")
