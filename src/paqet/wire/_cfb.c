/* One C call per datagram for Nettle's CFB (optional; paqet.wire._crypto_nettle).
 *
 * _crypto_nettle loads libnettle with ctypes and sets up the key schedule; a ctypes call per
 * datagram then costs ~2 us hot and tens of us on a cold cache (argument objects, libffi),
 * measured on each hop of the fetch benchmark. This module takes the addresses ctypes
 * resolved (nettle's cfb_encrypt/cfb_decrypt, the block function, the key schedule) and
 * makes the same call from C. It links nothing and includes no Nettle header: the
 * addresses come from the library ctypes already loaded.
 *
 * Cfb(encrypt_fn, decrypt_fn, ctx, block_fn, block_size, iv)
 *   .encrypt(data) -> bytes      .decrypt(data) -> bytes
 * Every call starts from `iv` (kcp-go restarts CFB per datagram from a fixed IV).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

typedef void block_fn_t(const void *ctx, size_t length, uint8_t *dst, const uint8_t *src);
typedef void cfb_fn_t(const void *ctx, block_fn_t *f, size_t block_size, uint8_t *iv,
                      size_t length, uint8_t *dst, const uint8_t *src);

#define MAX_BLOCK 32

typedef struct {
    PyObject_HEAD
    cfb_fn_t *enc;
    cfb_fn_t *dec;
    const void *ctx;
    block_fn_t *block;
    size_t bs;
    uint8_t iv[MAX_BLOCK];
    PyObject *keep; /* the ctypes buffer holding the key schedule */
} CfbObject;

static void *
address(PyObject *o)
{
    return PyLong_AsVoidPtr(o);
}

static int
Cfb_init(CfbObject *self, PyObject *args, PyObject *kwds)
{
    PyObject *enc, *dec, *ctx, *block, *keep = Py_None;
    Py_ssize_t bs;
    Py_buffer iv;
    static char *kw[] = {"encrypt_fn", "decrypt_fn", "ctx", "block_fn", "block_size", "iv",
                         "keep", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOOny*|O", kw, &enc, &dec, &ctx, &block,
                                     &bs, &iv, &keep))
        return -1;
    if (bs <= 0 || bs > MAX_BLOCK || iv.len != bs) {
        PyBuffer_Release(&iv);
        PyErr_SetString(PyExc_ValueError, "block size and IV length must agree (<= 32)");
        return -1;
    }
    self->enc = (cfb_fn_t *)address(enc);
    self->dec = (cfb_fn_t *)address(dec);
    self->ctx = address(ctx);
    self->block = (block_fn_t *)address(block);
    if (PyErr_Occurred()) {
        PyBuffer_Release(&iv);
        return -1;
    }
    if (!self->enc || !self->dec || !self->ctx || !self->block) {
        PyBuffer_Release(&iv);
        PyErr_SetString(PyExc_ValueError, "null address");
        return -1;
    }
    self->bs = (size_t)bs;
    memcpy(self->iv, iv.buf, (size_t)bs);
    PyBuffer_Release(&iv);
    Py_INCREF(keep);
    Py_XSETREF(self->keep, keep);
    return 0;
}

static PyObject *
run(CfbObject *self, cfb_fn_t *fn, PyObject *arg)
{
    Py_buffer in;
    if (PyObject_GetBuffer(arg, &in, PyBUF_SIMPLE) < 0)
        return NULL;
    PyObject *out = PyBytes_FromStringAndSize(NULL, in.len);
    if (out != NULL && in.len > 0) {
        uint8_t iv[MAX_BLOCK];
        memcpy(iv, self->iv, self->bs);
        fn(self->ctx, self->block, self->bs, iv, (size_t)in.len,
           (uint8_t *)PyBytes_AS_STRING(out), (const uint8_t *)in.buf);
    }
    PyBuffer_Release(&in);
    return out;
}

static PyObject *
Cfb_encrypt(CfbObject *self, PyObject *arg)
{
    return run(self, self->enc, arg);
}

static PyObject *
Cfb_decrypt(CfbObject *self, PyObject *arg)
{
    return run(self, self->dec, arg);
}

static void
Cfb_dealloc(CfbObject *self)
{
    Py_XDECREF(self->keep);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef Cfb_methods[] = {
    {"encrypt", (PyCFunction)Cfb_encrypt, METH_O, "CFB-encrypt from the fixed IV."},
    {"decrypt", (PyCFunction)Cfb_decrypt, METH_O, "CFB-decrypt from the fixed IV."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject CfbType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "paqet.wire._cfb.Cfb",
    .tp_basicsize = sizeof(CfbObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Nettle CFB through addresses resolved by ctypes.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Cfb_init,
    .tp_dealloc = (destructor)Cfb_dealloc,
    .tp_methods = Cfb_methods,
};

static struct PyModuleDef cfb_module = {
    PyModuleDef_HEAD_INIT, "_cfb", "One C call per datagram for Nettle's CFB.", -1, NULL,
};

PyMODINIT_FUNC
PyInit__cfb(void)
{
    if (PyType_Ready(&CfbType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&cfb_module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&CfbType);
    if (PyModule_AddObject(m, "Cfb", (PyObject *)&CfbType) < 0) {
        Py_DECREF(&CfbType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
