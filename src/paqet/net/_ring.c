/* Draining the AF_PACKET receive ring in one C call (optional; paqet.net.afpacket).
 *
 * The Python loop (afpacket.AfPacketBackend._recv_ring with wire.frame.parse_payload) costs
 * ~2 us a frame hot and ~40 us for the first frame after an idle gap (cold caches), on the
 * hop that every request and response crosses (docs/decisions.md). This is the same loop:
 * same acceptance rules as wire.frame.parse_payload (tests compare the two on the Go
 * vectors and on generated frames).
 *
 * read(ring, index, frame_size, frame_count, max_n, ether, port, names, macs, segments=False)
 *   ring: the mmap'ed TPACKET_V2 ring (writable buffer); index: the next slot;
 *   ether: frames start at the MAC header (else at the IP header); port: the TCP
 *   destination port to accept (-1: any); names: the dict caching source address bytes ->
 *   text (wire.frame._src_names); macs: None, or the dict of learned next-hop MACs
 *   (FrameBuilder.dst_macs): source MACs that differ from it are reported; segments:
 *   wire.frame.parse_segment's rules and items instead (empty payloads accepted, items
 *   (payload, (src, sport), flags, seq, ack, tsval, tsecr): network.tcp.mode handshake).
 * -> (items, next index, dropped, changed): items [(payload, (src, sport))], changed
 *   [(src, mac)] for the caller's set_dst_mac (None when macs is None).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <arpa/inet.h>
#include <stdint.h>
#include <string.h>

#define TP_STATUS_USER 1u
#define NAMES_MAX 65536

static inline uint16_t
be16(const uint8_t *p)
{
    return (uint16_t)((p[0] << 8) | p[1]);
}

/* wire.frame._locate + the checks of parse_payload: 0 and the offsets, or -1 */
static int
locate(const uint8_t *b, Py_ssize_t n, int ether, int port, int segments, Py_ssize_t *ip_off,
       int *fam, Py_ssize_t *tcp, Py_ssize_t *pay, Py_ssize_t *end, uint16_t *sport)
{
    Py_ssize_t off;
    unsigned et;
    if (ether) {
        if (n < 54)
            return -1;
        et = be16(b + 12);
        off = 14;
    }
    else {
        if (n < 40)
            return -1;
        unsigned v = b[0] >> 4;
        et = v == 4 ? 0x0800 : v == 6 ? 0x86DD : 0;
        off = 0;
    }
    Py_ssize_t t;
    if (et == 0x0800) {
        unsigned vihl = b[off], proto = b[off + 9];
        unsigned total = be16(b + off + 2), frag = be16(b + off + 6);
        if (vihl >> 4 != 4 || proto != 6 || (frag & 0x3FFF))
            return -1;
        unsigned ihl = (vihl & 0x0F) << 2;
        if (ihl < 20)
            return -1;
        *end = total ? off + (Py_ssize_t)total : n;
        if (*end > n || (total && total < ihl))
            return -1;
        *fam = 4;
        t = off + ihl;
    }
    else if (et == 0x86DD) {
        if (n < off + 60)
            return -1;
        if (b[off] >> 4 != 6)
            return -1;
        unsigned plen = be16(b + off + 4), nh = b[off + 6];
        *end = off + 40 + (Py_ssize_t)plen;
        if (*end > n)
            return -1;
        t = off + 40;
        if (nh == 0) {
            if (*end < t + 8)
                return -1;
            nh = b[t];
            t += ((Py_ssize_t)b[t + 1] + 1) * 8;
        }
        if (nh != 6)
            return -1;
        *fam = 6;
    }
    else
        return -1;
    if (*end - t < 20)
        return -1;
    *sport = be16(b + t);
    if (port >= 0 && be16(b + t + 2) != (unsigned)port)
        return -1;
    Py_ssize_t doff = (Py_ssize_t)(b[t + 12] >> 4) << 2;
    if (doff < 20 || t + doff > *end || (!segments && t + doff == *end))
        return -1;
    *ip_off = off;
    *tcp = t;
    *pay = t + doff;
    return 0;
}

static inline uint32_t
be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

/* wire.frame.tcp_timestamps: the timestamp option of the header at t (doff bytes long) */
static int
timestamps(const uint8_t *b, Py_ssize_t t, Py_ssize_t doff, long long *tsval, long long *tsecr)
{
    Py_ssize_t i = t + 20, end = t + doff;
    while (i < end) {
        uint8_t kind = b[i];
        if (kind == 0)
            return -1;
        if (kind == 1) {
            i++;
            continue;
        }
        if (i + 1 >= end)
            return -1;
        uint8_t n = b[i + 1];
        if (n < 2 || i + n > end)
            return -1;
        if (kind == 8 && n == 10) {
            *tsval = be32(b + i + 2);
            *tsecr = be32(b + i + 6);
            return 0;
        }
        i += n;
    }
    return -1;
}

/* the source address as text, through (and into) the names cache; new reference */
static PyObject *
src_name(PyObject *names, const uint8_t *raw, int fam)
{
    Py_ssize_t len = fam == 4 ? 4 : 16;
    PyObject *key = PyBytes_FromStringAndSize((const char *)raw, len);
    if (key == NULL)
        return NULL;
    PyObject *s = PyDict_GetItemWithError(names, key);
    if (s != NULL) {
        Py_INCREF(s);
        Py_DECREF(key);
        return s;
    }
    if (PyErr_Occurred()) {
        Py_DECREF(key);
        return NULL;
    }
    char text[INET6_ADDRSTRLEN];
    if (inet_ntop(fam == 4 ? AF_INET : AF_INET6, raw, text, sizeof text) == NULL) {
        Py_DECREF(key);
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    s = PyUnicode_FromString(text);
    if (s == NULL) {
        Py_DECREF(key);
        return NULL;
    }
    if (PyDict_GET_SIZE(names) >= NAMES_MAX)
        PyDict_Clear(names);
    if (PyDict_SetItem(names, key, s) < 0) {
        Py_DECREF(key);
        Py_DECREF(s);
        return NULL;
    }
    Py_DECREF(key);
    return s;
}

/* a (src, mac) pair for the caller when the learned MAC for src is not this one */
static int
note_mac(PyObject *macs, PyObject **changed, PyObject *src, const uint8_t *mac)
{
    PyObject *known = PyDict_GetItemWithError(macs, src);
    if (known == NULL && PyErr_Occurred())
        return -1;
    if (known != NULL && PyBytes_Check(known) && PyBytes_GET_SIZE(known) == 6 &&
        memcmp(PyBytes_AS_STRING(known), mac, 6) == 0)
        return 0;
    if (*changed == NULL && (*changed = PyList_New(0)) == NULL)
        return -1;
    PyObject *pair = Py_BuildValue("(Oy#)", src, (const char *)mac, (Py_ssize_t)6);
    if (pair == NULL)
        return -1;
    int r = PyList_Append(*changed, pair);
    Py_DECREF(pair);
    return r;
}

static PyObject *
ring_read(PyObject *module, PyObject *args)
{
    PyObject *ring, *names, *macs;
    Py_ssize_t index, fsize, fnum, max_n;
    int ether, port, segments = 0;
    if (!PyArg_ParseTuple(args, "OnnnnpiO!O|p", &ring, &index, &fsize, &fnum, &max_n, &ether,
                          &port, &PyDict_Type, &names, &macs, &segments))
        return NULL;
    if (macs != Py_None && !PyDict_Check(macs)) {
        PyErr_SetString(PyExc_TypeError, "macs must be a dict or None");
        return NULL;
    }
    Py_buffer buf;
    if (PyObject_GetBuffer(ring, &buf, PyBUF_WRITABLE) < 0)
        return NULL;
    if (fsize < 32 || fnum <= 0 || fsize * fnum > buf.len || index < 0 || index >= fnum) {
        PyBuffer_Release(&buf);
        PyErr_SetString(PyExc_ValueError, "ring geometry does not fit the buffer");
        return NULL;
    }
    uint8_t *base = (uint8_t *)buf.buf;
    PyObject *items = PyList_New(0), *changed = NULL;
    Py_ssize_t dropped = 0;
    if (items == NULL)
        goto fail;
    for (Py_ssize_t k = 0; k < max_n; k++) {
        uint8_t *slot = base + index * fsize;
        uint32_t status = __atomic_load_n((uint32_t *)slot, __ATOMIC_ACQUIRE);
        if (!(status & TP_STATUS_USER))
            break;
        uint32_t snap;
        uint16_t mac_off, net_off;
        memcpy(&snap, slot + 8, 4);
        memcpy(&mac_off, slot + 12, 2);
        memcpy(&net_off, slot + 14, 2);
        Py_ssize_t start = ether ? mac_off : net_off;
        PyObject *item = NULL;
        Py_ssize_t ip_off, tcp, pay, end;
        int fam;
        uint16_t sport;
        if (start + (Py_ssize_t)snap <= fsize &&
            locate(slot + start, (Py_ssize_t)snap, ether, port, segments, &ip_off, &fam, &tcp,
                   &pay, &end, &sport) == 0) {
            const uint8_t *f = slot + start;
            PyObject *src = src_name(names, f + ip_off + (fam == 4 ? 12 : 8), fam);
            if (src == NULL)
                goto fail_slot;
            if (macs != Py_None && ether && note_mac(macs, &changed, src, f + 6) < 0) {
                Py_DECREF(src);
                goto fail_slot;
            }
            if (segments) {
                const uint8_t *th = f + tcp;
                long long tsval = -1, tsecr = -1;
                timestamps(f, tcp, pay - tcp, &tsval, &tsecr);
                unsigned flags = th[13] | ((unsigned)(th[12] & 1) << 8);
                item = Py_BuildValue("(y#(NH)IkkLL)", (const char *)f + pay, end - pay, src,
                                     sport, flags, (unsigned long)be32(th + 4),
                                     (unsigned long)be32(th + 8), tsval, tsecr);
            }
            else
                item = Py_BuildValue("(y#(NH))", (const char *)f + pay, end - pay, src, sport);
            if (item == NULL)
                goto fail_slot;
        }
        else
            dropped++;
        /* hand the slot back to the kernel once its bytes are copied out */
        __atomic_store_n((uint32_t *)slot, 0u, __ATOMIC_RELEASE);
        index = index + 1 < fnum ? index + 1 : 0;
        if (item != NULL) {
            int r = PyList_Append(items, item);
            Py_DECREF(item);
            if (r < 0)
                goto fail;
        }
        continue;
    fail_slot:
        __atomic_store_n((uint32_t *)slot, 0u, __ATOMIC_RELEASE);
        goto fail;
    }
    PyBuffer_Release(&buf);
    PyObject *res = Py_BuildValue("(NnnO)", items, index, dropped, changed ? changed : Py_None);
    Py_XDECREF(changed);
    return res;
fail:
    PyBuffer_Release(&buf);
    Py_XDECREF(items);
    Py_XDECREF(changed);
    return NULL;
}

static PyMethodDef ring_methods[] = {
    {"read", ring_read, METH_VARARGS, "Drain ready frames of a TPACKET_V2 ring (see module doc)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef ring_module = {
    PyModuleDef_HEAD_INIT, "_ring", "Draining the AF_PACKET receive ring in one C call.", -1,
    ring_methods,
};

PyMODINIT_FUNC
PyInit__ring(void)
{
    PyObject *m = PyModule_Create(&ring_module);
    /* the call's shape: afpacket.py ignores a build of another one (a checkout updated
       without rebuilding: read() with the wrong arguments on every wakeup) */
    if (m != NULL && PyModule_AddIntConstant(m, "API", 2) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
