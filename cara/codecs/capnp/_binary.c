/* Optional C fast path of the Cap'n Proto binary codec for cara's runtime structs.
 *
 * A Plan mirrors one StructPlan of the sparse, index-keyed instance codec
 * (cara/codecs/capnp/schema_codec.py): where each field lives and how it is stored. With it,
 * encode() writes a runtime struct straight into one segment and decode() reads a
 * single-segment message straight into struct instances, typed lists and enum members.
 *
 * The Python codec stays the reference: this code only takes the plain cases and *bails out*
 * (returns the BAIL sentinel, no exception) on anything else: a value of an unexpected type or
 * out of range, a message with far pointers or more than one segment, any malformed pointer,
 * a traversal or nesting limit reached, bits or pointers the schema does not know (unknown
 * data), an unknown union discriminant. The caller then runs the Python codec on the same
 * input, which gives the result, or the error with its wording and byte offset. So both
 * builds accept and reject exactly the same messages and values; this file only has to
 * charge the traversal budget exactly as reader.py does and never read out of bounds.
 *
 * For the RPC encoding (cara/rpc/wire_capnp.py) it also writes a payload behind an envelope
 * and reads one inside a received frame (encode/decode's longer forms), recognizes the
 * commonest rpc.capnp envelopes (rpc_hot) and cuts one-segment messages from a stream (split);
 * wire_capnp's tests hold each against its Python twin.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

enum { K_VOID, K_BOOL, K_INT, K_FLOAT32, K_FLOAT64, K_ENUM, K_TEXT, K_DATA, K_STRUCT,
       K_LIST, K_GROUP, K_CAP };

/* The pointer kinds (a field of one is stored behind its pointer, null allowed). */
#define IS_POINTER_KIND(k) ((k) == K_TEXT || (k) == K_DATA || (k) == K_STRUCT || (k) == K_LIST \
                            || (k) == K_CAP)

#define NEST_LIMIT 64
#define TRAVERSAL_LIMIT (8 * 1024 * 1024)
#define ZERO_SIZE_ELEMENT_WORDS 64

typedef struct PlanObject PlanObject;

typedef struct {
    PyObject *key;          /* the field's index (an int): its key in the instance dict */
    int kind;
    int size;               /* scalar: bytes; list: element bytes */
    int is_signed;
    Py_ssize_t offset;      /* data section: bytes (bits for Bool) */
    int ptr;                /* pointer index */
    uint64_t defbits;       /* default as stored bits (XOR mask) */
    int disc;               /* -1: outside the union */
    PlanObject *sub;        /* struct, group, list of structs: the plan */
    PyObject *ev, *ec;      /* enum (or enum list): value -> member map, converter;
                             * capability: the converter of what the cap table holds (NULL:
                             * stored as it is) */
    PyObject *lcls;         /* list: the typed list class, when C builds it */
    PyObject *lmaker;       /* list: the maker called on a plain list otherwise */
    int ekind;              /* list element kind (K_*) */
    uint64_t *inactive;     /* union member: data bits of the other members (dw words) */
    uint64_t inactive_ptrs;
} Field;

struct PlanObject {
    PyObject_HEAD
    PyObject *cls;
    int ready;
    int dw, pc, is_group, disc_off;   /* disc_off: byte offset, -1 none */
    uint64_t *pad;                    /* dw words of bits no field uses */
    uint64_t pad_ptrs;
    Py_ssize_t nfields;
    Field *fields;
    Py_ssize_t nfull, nchecked, nmembers;
    int *full, *checked, *members;    /* field indexes, in the Python decoder's key order */
};

static PyTypeObject PlanType;
static PyObject *BAIL;               /* the sentinel: "the Python codec decides" */
static PyObject *seen_list;          /* unknown.SEEN: [True] once any Unknown record exists */
static PyObject *unknown_name;       /* "_cara_unknown_" */
static PyObject *empty_tuple;
static PyObject *cap_kinds;          /* CapDescriptor kind -> its number (set_cap_kinds) */
static PyObject *s_kind, *s_id, *s_answer, *s_question_id, *s_transform;

/* ------------------------------------------------------------------------------ helpers */

static inline uint64_t rd(const uint8_t *p, int n) {
    uint64_t v = 0;
    memcpy(&v, p, (size_t)n);  /* little-endian host assumed (checked at import) */
    return v;
}

static inline int64_t sext(uint64_t v, int n) {
    if (n == 8) return (int64_t)v;
    int sh = 64 - 8 * n;
    return (int64_t)(v << sh) >> sh;
}

static inline uint64_t mask_of(int n) { return n == 8 ? ~(uint64_t)0 : (((uint64_t)1 << (8 * n)) - 1); }

static void free_fields(PlanObject *p) {
    if (p->fields) {
        for (Py_ssize_t i = 0; i < p->nfields; i++) {
            Field *f = &p->fields[i];
            Py_XDECREF(f->key); Py_XDECREF(f->sub); Py_XDECREF(f->ev); Py_XDECREF(f->ec);
            Py_XDECREF(f->lcls); Py_XDECREF(f->lmaker);
            PyMem_Free(f->inactive);
        }
        PyMem_Free(p->fields);
        p->fields = NULL;
    }
    PyMem_Free(p->pad); p->pad = NULL;
    PyMem_Free(p->full); p->full = NULL;
    PyMem_Free(p->checked); p->checked = NULL;
    PyMem_Free(p->members); p->members = NULL;
    p->nfields = 0;
}

/* ---------------------------------------------------------------------------- decoding */

typedef struct {
    const uint8_t *buf;
    Py_ssize_t start, end;   /* the segment, in bytes of buf */
    Py_ssize_t left;         /* traversal budget, words */
    PyObject *caps;          /* the payload's capabilities by cap-table index (a list), or
                              * NULL: a capability pointer bails */
} Dec;

#define BAILED NULL          /* (an internal NULL return: bail, an exception may be set) */

static PyObject *decode_struct(Dec *d, PlanObject *p, Py_ssize_t dpos, Py_ssize_t dbytes,
                               Py_ssize_t ppos, Py_ssize_t nptrs, int nest);

/* A data word of a section that may be shorter (0 beyond its end). */
static inline uint64_t word_at(Dec *d, Py_ssize_t dpos, Py_ssize_t dbytes, Py_ssize_t i) {
    Py_ssize_t s = 8 * i;
    if (dbytes <= s) return 0;
    Py_ssize_t n = dbytes - s < 8 ? dbytes - s : 8;
    return rd(d->buf + dpos + s, (int)n);
}

static inline int ptr_set(Dec *d, Py_ssize_t ppos, Py_ssize_t nptrs, int j) {
    return nptrs > j && rd(d->buf + ppos + 8 * j, 8) != 0;
}

/* Whether any of the bits in `data` (dw words) or pointers in `ptrs` is set. */
static int any_bits(Dec *d, PlanObject *p, const uint64_t *data, uint64_t ptrs,
                    Py_ssize_t dpos, Py_ssize_t dbytes, Py_ssize_t ppos, Py_ssize_t nptrs) {
    for (int i = 0; i < p->dw; i++)
        if (data[i] && (word_at(d, dpos, dbytes, i) & data[i])) return 1;
    for (int j = 0; j < p->pc && j < 64; j++)
        if ((ptrs >> j & 1) && ptr_set(d, ppos, nptrs, j)) return 1;
    return 0;
}

static inline int charge(Dec *d, Py_ssize_t words) {
    d->left -= words;
    return d->left >= 0;
}

/* A near struct pointer at pos: 1 with the location, 0 null, -1 bail. */
static int struct_at(Dec *d, Py_ssize_t pos, int nest, Py_ssize_t *dpos, Py_ssize_t *dbytes,
                     Py_ssize_t *ppos, Py_ssize_t *nptrs) {
    int32_t lo = (int32_t)rd(d->buf + pos, 4);
    uint32_t hi = (uint32_t)rd(d->buf + pos + 4, 4);
    if (lo == 0 && hi == 0) return 0;
    if ((lo & 3) != 0 || nest <= 0) return -1;
    Py_ssize_t target = pos + 8 + (Py_ssize_t)(lo >> 2) * 8;
    Py_ssize_t data = (Py_ssize_t)(hi & 0xFFFF) * 8, ptrs = hi >> 16;
    if (target < d->start || target + data + ptrs * 8 > d->end) return -1;
    Py_ssize_t w = (data >> 3) + ptrs;
    if (!charge(d, w ? w : 1)) return -1;
    *dpos = target; *dbytes = data; *ppos = target + data; *nptrs = ptrs;
    return 1;
}

typedef struct { Py_ssize_t start, count, step, dbytes, nptrs; int size; } ListLoc;

/* A near list pointer at pos: 1 with the location, 0 null, -1 bail (reader.list_at). */
static int list_at(Dec *d, Py_ssize_t pos, int nest, ListLoc *l) {
    int32_t lo = (int32_t)rd(d->buf + pos, 4);
    uint32_t hi = (uint32_t)rd(d->buf + pos + 4, 4);
    if (lo == 0 && hi == 0) return 0;
    if ((lo & 3) != 1 || nest <= 0) return -1;
    Py_ssize_t target = pos + 8 + (Py_ssize_t)(lo >> 2) * 8;
    int size = hi & 7;
    Py_ssize_t count = hi >> 3, nbytes, words;
    if (size == 7) {
        words = count;
        if (target < d->start || target + 8 + words * 8 > d->end) return -1;
        int32_t tlo = (int32_t)rd(d->buf + target, 4);
        uint32_t thi = (uint32_t)rd(d->buf + target + 4, 4);
        if (tlo & 3) return -1;
        count = tlo >> 2;
        if (count < 0) return -1;
        l->dbytes = (Py_ssize_t)(thi & 0xFFFF) * 8;
        l->nptrs = thi >> 16;
        l->step = l->dbytes + l->nptrs * 8;
        if (l->step * count > words * 8) return -1;
        Py_ssize_t c = l->step ? (words > count ? words : count) : count * ZERO_SIZE_ELEMENT_WORDS;
        if (!charge(d, c ? c : 1)) return -1;
        l->start = target + 8; l->count = count; l->size = 7;
        return 1;
    }
    static const int bits[7] = {0, 1, 8, 16, 32, 64, 0};
    if (size == 1) {
        nbytes = (count + 7) >> 3; l->step = -1; l->dbytes = 0; l->nptrs = 0;
    } else if (size == 6) {
        l->step = 8; nbytes = 8 * count; l->dbytes = 0; l->nptrs = 1;
    } else {
        l->step = bits[size] >> 3; nbytes = l->step * count; l->dbytes = l->step; l->nptrs = 0;
    }
    if (target < d->start || target + nbytes > d->end) return -1;
    if (size > 1) words = (nbytes + 7) >> 3;
    else if (size) words = (count + 7) >> 3;
    else words = count * ZERO_SIZE_ELEMENT_WORDS;
    if (!charge(d, words)) return -1;
    l->start = target; l->count = count; l->size = size;
    return 1;
}

/* Text or Data at pos: a new object, Py_None for null, NULL to bail. */
static PyObject *blob_at(Dec *d, Py_ssize_t pos, int text) {
    int32_t lo = (int32_t)rd(d->buf + pos, 4);
    uint32_t hi = (uint32_t)rd(d->buf + pos + 4, 4);
    if (lo == 0 && hi == 0) Py_RETURN_NONE;
    if ((lo & 3) != 1 || (hi & 7) != 2) return BAILED;
    Py_ssize_t target = pos + 8 + (Py_ssize_t)(lo >> 2) * 8, count = hi >> 3;
    if (target < d->start || target + count > d->end) return BAILED;
    if (!charge(d, (count + 7) >> 3)) return BAILED;
    if (!text) return PyBytes_FromStringAndSize((const char *)d->buf + target, count);
    if (count == 0 || d->buf[target + count - 1] != 0) return BAILED;
    return PyUnicode_DecodeUTF8((const char *)d->buf + target, count - 1, NULL);
}

static PyObject *enum_value(Field *f, uint64_t v) {
    PyObject *n = PyLong_FromUnsignedLongLong(v);
    if (!n) return NULL;
    PyObject *e = PyDict_GetItemWithError(f->ev, n);
    if (e) { Py_DECREF(n); Py_INCREF(e); return e; }
    if (PyErr_Occurred()) { Py_DECREF(n); return NULL; }
    e = PyObject_CallOneArg(f->ec, n);
    Py_DECREF(n);
    return e;
}

static PyObject *scalar_value(Field *f, uint64_t raw) {
    uint64_t v = raw ^ f->defbits;
    switch (f->kind) {
    case K_BOOL: return PyBool_FromLong(!f->defbits ? 1 : 0);
    case K_INT:
        if (f->is_signed) return PyLong_FromLongLong(sext(v, f->size));
        return PyLong_FromUnsignedLongLong(v);
    case K_ENUM: return enum_value(f, v);
    case K_FLOAT32: { uint32_t b = (uint32_t)v; return PyFloat_FromDouble(PyFloat_Unpack4((const char *)&b, 1)); }
    case K_FLOAT64: return PyFloat_FromDouble(PyFloat_Unpack8((const char *)&v, 1));
    }
    return BAILED;
}

static PyObject *new_typed_list(PyObject *lcls, PyObject *plain) {
    PyObject *out = PyList_Type.tp_new((PyTypeObject *)lcls, empty_tuple, NULL);
    if (!out) return NULL;
    if (PyList_SetSlice(out, 0, 0, plain) < 0) { Py_DECREF(out); return NULL; }
    return out;
}

/* A list field at pos: a new object (the field's runtime list), Py_None for null, NULL bail. */
static PyObject *decode_list(Dec *d, Field *f, Py_ssize_t pos, int nest) {
    ListLoc l;
    int r = list_at(d, pos, nest, &l);
    if (r <= 0) { if (r == 0) Py_RETURN_NONE; return BAILED; }
    PyObject *items = PyList_New(l.count);
    if (!items) return NULL;
    Py_ssize_t i;
    int ek = f->ekind;
    if (ek == K_STRUCT) {
        PlanObject *sp = f->sub;
        if (l.size == 1) goto bail;
        Py_ssize_t each = sp->dw + sp->pc;
        if (l.step < each * 8) {
            Py_ssize_t already = l.step ? (l.count * l.step + 7) >> 3 : l.count * ZERO_SIZE_ELEMENT_WORDS;
            Py_ssize_t extra = l.count * (each > 1 ? each : 1) - already;
            if (extra > 0 && !charge(d, extra)) goto bail;
        }
        for (i = 0; i < l.count; i++) {
            Py_ssize_t b = l.start + i * l.step;
            PyObject *v = l.step ? decode_struct(d, sp, b, l.dbytes, b + l.dbytes, l.nptrs, nest - 1)
                                 : decode_struct(d, sp, l.start, 0, l.start, 0, nest - 1);
            if (!v) goto bail;
            PyList_SET_ITEM(items, i, v);
        }
    } else if (ek == K_TEXT || ek == K_DATA) {
        if (l.nptrs == 0) goto bail;
        for (i = 0; i < l.count; i++) {
            PyObject *v = blob_at(d, l.start + i * l.step + l.dbytes, ek == K_TEXT);
            if (!v) goto bail;
            PyList_SET_ITEM(items, i, v);
            if (v == Py_None) goto bail;  /* a null element: the general constructor decides */
        }
    } else if (ek == K_VOID) {
        for (i = 0; i < l.count; i++) { Py_INCREF(Py_None); PyList_SET_ITEM(items, i, Py_None); }
    } else if (ek == K_BOOL) {
        if (l.size != 1) goto bail;
        for (i = 0; i < l.count; i++) {
            PyObject *v = (d->buf[l.start + (i >> 3)] >> (i & 7) & 1) ? Py_True : Py_False;
            Py_INCREF(v);
            PyList_SET_ITEM(items, i, v);
        }
    } else {  /* scalars and enums */
        int size = f->size;
        if (l.size == 1 || l.dbytes < size) goto bail;
        for (i = 0; i < l.count; i++) {
            uint64_t raw = rd(d->buf + l.start + i * l.step, size);
            PyObject *v;
            if (ek == K_INT) v = f->is_signed ? PyLong_FromLongLong(sext(raw, size))
                                             : PyLong_FromUnsignedLongLong(raw);
            else if (ek == K_FLOAT32) { uint32_t b = (uint32_t)raw; v = PyFloat_FromDouble(PyFloat_Unpack4((const char *)&b, 1)); }
            else if (ek == K_FLOAT64) v = PyFloat_FromDouble(PyFloat_Unpack8((const char *)&raw, 1));
            else v = PyLong_FromUnsignedLongLong(raw);  /* an enum list: the maker converts */
            if (!v) goto bail;
            PyList_SET_ITEM(items, i, v);
        }
    }
    PyObject *out;
    if (f->lcls) out = new_typed_list(f->lcls, items);
    else out = PyObject_CallOneArg(f->lmaker, items);
    Py_DECREF(items);
    return out;
bail:
    Py_DECREF(items);
    return BAILED;
}

/* The value of a pointer field, Py_None for null, NULL to bail. */
static PyObject *decode_pointer(Dec *d, Field *f, Py_ssize_t pos, int nest) {
    switch (f->kind) {
    case K_TEXT: return blob_at(d, pos, 1);
    case K_DATA: return blob_at(d, pos, 0);
    case K_LIST: return decode_list(d, f, pos, nest);
    case K_STRUCT: {
        Py_ssize_t dpos, dbytes, ppos, nptrs;
        int r = struct_at(d, pos, nest, &dpos, &dbytes, &ppos, &nptrs);
        if (r <= 0) { if (r == 0) Py_RETURN_NONE; return BAILED; }
        return decode_struct(d, f->sub, dpos, dbytes, ppos, nptrs, nest - 1);
    }
    }
    return BAILED;
}

static PyObject *new_instance(PyObject *cls) {
    return PyDict_Type.tp_new((PyTypeObject *)cls, empty_tuple, NULL);
}

/* Store field f of the struct at (dpos, dbytes, ppos, nptrs) in s when it is not at its zero
 * bits (always, when keep: a union member other than the discriminant-0 one). 0 ok, -1 bail. */
static int decode_field(Dec *d, PlanObject *p, Field *f, PyObject *s, Py_ssize_t dpos,
                        Py_ssize_t dbytes, Py_ssize_t ppos, Py_ssize_t nptrs, int nest, int keep) {
    PyObject *v = NULL;
    int r;
    switch (f->kind) {
    case K_VOID:
        if (!keep) return 0;
        return PyDict_SetItem(s, f->key, Py_None);
    case K_GROUP:
        v = decode_struct(d, f->sub, dpos, dbytes, ppos, nptrs, nest);
        if (!v) return -1;
        if (!keep && PyDict_GET_SIZE(v) == 0) { Py_DECREF(v); return 0; }
        break;
    case K_TEXT: case K_DATA: case K_LIST: case K_STRUCT:
        if (nptrs > f->ptr) {
            v = decode_pointer(d, f, ppos + 8 * f->ptr, nest);
            if (!v) return -1;
        } else {
            v = Py_None; Py_INCREF(v);
        }
        if (v == Py_None) {
            Py_DECREF(v);
            if (!keep) return 0;
            if (f->kind == K_TEXT) v = PyUnicode_New(0, 0);
            else if (f->kind == K_DATA) v = PyBytes_FromStringAndSize(NULL, 0);
            else if (f->kind == K_STRUCT) v = new_instance(f->sub->cls);
            else {
                PyObject *e = PyList_New(0);
                if (!e) return -1;
                v = f->lcls ? new_typed_list(f->lcls, e) : PyObject_CallOneArg(f->lmaker, e);
                Py_DECREF(e);
            }
            if (!v) return -1;
        }
        break;
    case K_CAP: {
        /* (a null capability is no value, even for a chosen union member, as in Python) */
        if (nptrs <= f->ptr) return 0;
        Py_ssize_t at = ppos + 8 * f->ptr;
        uint32_t lo = (uint32_t)rd(d->buf + at, 4), hi = (uint32_t)rd(d->buf + at + 4, 4);
        if (lo == 0 && hi == 0) return 0;
        if (lo != 3 || d->caps == NULL || (Py_ssize_t)hi >= PyList_GET_SIZE(d->caps)) return -1;
        v = PyList_GET_ITEM(d->caps, hi);
        if (f->ec) {
            v = PyObject_CallOneArg(f->ec, v);
            if (!v) return -1;
        } else {
            Py_INCREF(v);
        }
        break;
    }
    case K_BOOL: {
        Py_ssize_t byte = f->offset >> 3;
        int bit = dbytes > byte ? (d->buf[dpos + byte] >> (f->offset & 7) & 1) : 0;
        if (!bit && !keep) return 0;
        v = PyBool_FromLong(bit ? !f->defbits : (int)f->defbits);
        break;
    }
    default: {
        uint64_t raw = dbytes >= f->offset + f->size ? rd(d->buf + dpos + f->offset, f->size) : 0;
        if (!raw && !keep) return 0;
        v = scalar_value(f, raw);
        if (!v) return -1;
    }
    }
    r = PyDict_SetItem(s, f->key, v);
    Py_DECREF(v);
    return r;
}

static PyObject *decode_struct(Dec *d, PlanObject *p, Py_ssize_t dpos, Py_ssize_t dbytes,
                               Py_ssize_t ppos, Py_ssize_t nptrs, int nest) {
    int full = dbytes >= (Py_ssize_t)p->dw * 8 && nptrs >= p->pc;
    if (!p->is_group) {
        /* unknown data: bits or pointers no field uses, or sections larger than the schema's
         * holding anything (the Python decoder keeps those: see unknown.py) */
        if (any_bits(d, p, p->pad, p->pad_ptrs, dpos, dbytes, ppos, nptrs)) return BAILED;
        for (Py_ssize_t i = (Py_ssize_t)p->dw * 8; i < dbytes; i++)
            if (d->buf[dpos + i]) return BAILED;
        for (Py_ssize_t j = p->pc; j < nptrs; j++)
            if (rd(d->buf + ppos + 8 * j, 8)) return BAILED;
    }
    PyObject *s = new_instance(p->cls);
    if (!s) return NULL;
    Py_ssize_t n = full ? p->nfull : p->nchecked;
    int *order = full ? p->full : p->checked;
    for (Py_ssize_t i = 0; i < n; i++)
        if (decode_field(d, p, &p->fields[order[i]], s, dpos, dbytes, ppos, nptrs, nest, 0) < 0)
            goto bail;
    if (p->nmembers) {
        Py_ssize_t off = p->disc_off;
        int disc = dbytes >= off + 2 ? (int)rd(d->buf + dpos + off, 2) : 0;
        Field *m = NULL;
        for (Py_ssize_t i = 0; i < p->nmembers; i++)
            if (p->fields[p->members[i]].disc == disc) { m = &p->fields[p->members[i]]; break; }
        if (!m) goto bail;  /* an unknown member */
        if (decode_field(d, p, m, s, dpos, dbytes, ppos, nptrs, nest, disc != 0) < 0) goto bail;
        if (any_bits(d, p, m->inactive, m->inactive_ptrs, dpos, dbytes, ppos, nptrs)) goto bail;
    }
    return s;
bail:
    Py_DECREF(s);
    return BAILED;
}

/* The plan of a call (plan, x), or NULL with a TypeError. */
static PlanObject *plan_arg(PyObject *const *args, Py_ssize_t nargs, const char *usage) {
    if (nargs != 2 || !PyObject_TypeCheck(args[0], &PlanType)) {
        PyErr_SetString(PyExc_TypeError, usage);
        return NULL;
    }
    return (PlanObject *)args[0];
}

/* decode(plan, data[, traversal_limit_in_words, nesting_limit[, ptr_pos[, caps]]]) ->
 * instance, or BAIL. With the limits (the RPC encoding, for a payload inside a message: it passes what the
 * envelope left), data's first word is a root pointer put in front of the message's segment
 * and lies outside that segment's bounds, so every pointer is judged as in the message. With
 * ptr_pos too, data is the framed one-segment message itself (the segment: every byte after
 * the 8-byte table) and the payload's struct pointer is the word at byte ptr_pos (a null one
 * bails; None: the short form's layout). With caps (a list: the payload's cap table made into
 * objects), capability pointer i reads as caps[i] through its field's converter; without, a
 * capability bails. */
static PyObject *binary_decode(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    Py_ssize_t traversal = TRAVERSAL_LIMIT, nesting = NEST_LIMIT, start = 8, at = 8;
    PyObject *caps = NULL;
    if (nargs >= 4 && nargs <= 6) {
        start = 16;
        traversal = PyLong_AsSsize_t(args[2]);
        nesting = PyLong_AsSsize_t(args[3]);
        if (nargs >= 5 && args[4] != Py_None) {
            start = 8;
            at = PyLong_AsSsize_t(args[4]);
            if (at == -1 && PyErr_Occurred()) return NULL;
        }
        if (nargs == 6) {
            caps = args[5];
            if (!PyList_CheckExact(caps)) goto bail;
        }
        if ((traversal == -1 || nesting == -1) && PyErr_Occurred()) return NULL;
        if (nesting > NEST_LIMIT || nesting < 1 || traversal < 0) goto bail;
        nargs = 2;
    }
    PlanObject *p = plan_arg(args, nargs,
                             "decode(plan, data[, traversal, nesting[, ptr_pos[, caps]]])");
    if (!p) return NULL;
    PyObject *data = args[1];
    if (!p->ready || !PyBytes_CheckExact(data)) goto bail;
    Py_ssize_t n = PyBytes_GET_SIZE(data);
    const uint8_t *buf = (const uint8_t *)PyBytes_AS_STRING(data);
    if (n < 16 || rd(buf, 4) != 0 || (Py_ssize_t)rd(buf + 4, 4) * 8 + 8 != n) goto bail;
    if (at < 8 || at > n - 8 || (at & 7)) goto bail;
    Dec d = {buf, start, n, traversal, caps};
    Py_ssize_t dpos, dbytes, ppos, nptrs;
    int r = struct_at(&d, at, (int)nesting, &dpos, &dbytes, &ppos, &nptrs);
    PyObject *out;
    if (r < 0 || (r == 0 && at != 8)) goto bail;
    if (r == 0) out = decode_struct(&d, p, 0, 0, 0, 0, (int)nesting);
    else out = decode_struct(&d, p, dpos, dbytes, ppos, nptrs, (int)nesting - 1);
    if (out) return out;
bail:
    PyErr_Clear();
    Py_INCREF(BAIL);
    return BAIL;
}

/* ---------------------------------------------------------------------------- encoding */

typedef struct {
    uint8_t *buf;
    Py_ssize_t len, cap;
    int describing;          /* whether a capability may be met (else one bails) */
    PyObject *caps;          /* the capabilities met, in order (a list, made at the first) */
    Py_ssize_t *cap_at;      /* where each one's pointer goes */
    Py_ssize_t ncap_at;
} Enc;

/* Append n zero bytes; their position, or -1 (no memory). */
static Py_ssize_t alloc(Enc *e, Py_ssize_t n) {
    Py_ssize_t pos = e->len;
    if (e->len + n >= ((Py_ssize_t)1 << 31)) return -1;  /* (offsets must fit a pointer) */
    if (e->len + n > e->cap) {
        Py_ssize_t cap = e->cap * 2;
        while (cap < e->len + n) cap *= 2;
        uint8_t *b = PyMem_Realloc(e->buf, (size_t)cap);
        if (!b) return -1;
        e->buf = b;
        e->cap = cap;
    }
    memset(e->buf + pos, 0, (size_t)n);
    e->len += n;
    return pos;
}

static inline void put_ptr(Enc *e, Py_ssize_t at, int32_t lo, uint32_t hi) {
    memcpy(e->buf + at, &lo, 4);
    memcpy(e->buf + at + 4, &hi, 4);
}

static inline int32_t near(Py_ssize_t target, Py_ssize_t at, int kind) {
    return (int32_t)(((target - at - 8) >> 1) | kind);
}

/* A Python value as the stored bits of scalar kind f (before the default's XOR): 0 ok, -1
 * bail. The checks are struct.pack's: ints in range, floats representable. */
static int scalar_bits(int kind, int size, int is_signed, PyObject *v, uint64_t *out) {
    if (kind == K_INT || kind == K_ENUM) {
        if (!PyLong_Check(v)) return -1;
        if (size == 8 && !is_signed) {
            unsigned long long x = PyLong_AsUnsignedLongLong(v);
            if (x == (unsigned long long)-1 && PyErr_Occurred()) return -1;
            *out = x;
            return 0;
        }
        int overflow;
        long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
        if (overflow || (x == -1 && PyErr_Occurred())) return -1;
        if (is_signed) {
            if (size < 8) {
                long long lim = 1LL << (8 * size - 1);
                if (x < -lim || x >= lim) return -1;
            }
        } else if (x < 0 || x >= (1LL << (8 * size))) {
            return -1;
        }
        *out = (uint64_t)x & mask_of(size);
        return 0;
    }
    double x;
    if (PyFloat_Check(v)) x = PyFloat_AS_DOUBLE(v);
    else if (PyLong_Check(v)) {
        x = PyLong_AsDouble(v);
        if (x == -1.0 && PyErr_Occurred()) return -1;
    } else return -1;
    if (kind == K_FLOAT32) {
        uint32_t b;
        if (PyFloat_Pack4(x, (char *)&b, 1) < 0) return -1;
        *out = b;
    } else {
        uint64_t b;
        if (PyFloat_Pack8(x, (char *)&b, 1) < 0) return -1;
        *out = b;
    }
    return 0;
}

static int encode_struct(Enc *e, PlanObject *p, PyObject *v, Py_ssize_t dpos, Py_ssize_t ppos);

/* Whether a struct value may carry unknown data (then the Python codec writes it). */
static int carries_unknown(PyObject *v) {
    if (!PyList_GET_SIZE(seen_list) || !PyObject_IsTrue(PyList_GET_ITEM(seen_list, 0))
            || Py_IS_TYPE(v, &PyDict_Type))
        return 0;
    PyObject *u = PyObject_GetAttr(v, unknown_name);
    if (!u) { PyErr_Clear(); return 0; }
    int has = u != Py_None;
    Py_DECREF(u);
    return has;
}

static int encode_blob(Enc *e, Py_ssize_t at, PyObject *v, int text) {
    const char *s;
    Py_ssize_t n;
    PyObject *utf8 = NULL;  /* (non-ASCII text: encoded into a temporary, as str.encode() does,
                             * rather than cached in the str by PyUnicode_AsUTF8AndSize) */
    if (text) {
        if (!PyUnicode_Check(v)) return -1;
        if (PyUnicode_IS_ASCII(v)) {
            s = (const char *)PyUnicode_DATA(v);
            n = PyUnicode_GET_LENGTH(v);
        } else {
            utf8 = PyUnicode_AsUTF8String(v);
            if (!utf8) return -1;
            s = PyBytes_AS_STRING(utf8);
            n = PyBytes_GET_SIZE(utf8);
        }
    } else {
        if (!PyBytes_Check(v)) return -1;
        s = PyBytes_AS_STRING(v);
        n = PyBytes_GET_SIZE(v);
    }
    Py_ssize_t pos = -1;
    if ((text ? n + 1 : n) < ((Py_ssize_t)1 << 29)) {  /* (its size must fit a pointer) */
        pos = alloc(e, text ? n + 8 - (n & 7) : n + (-n & 7));
        if (pos >= 0) {
            memcpy(e->buf + pos, s, (size_t)n);
            put_ptr(e, at, near(pos, at, 1), (uint32_t)((text ? n + 1 : n) << 3 | 2));
        }
    }
    Py_XDECREF(utf8);
    return pos < 0 ? -1 : 0;
}

static int encode_sub_struct(Enc *e, PlanObject *sp, Py_ssize_t at, PyObject *v) {
    if (!PyDict_Check(v) || carries_unknown(v)) return -1;
    if (sp->dw + sp->pc == 0) {
        put_ptr(e, at, -4, 0);
        return encode_struct(e, sp, v, e->len, e->len);
    }
    Py_ssize_t pos = alloc(e, (Py_ssize_t)(sp->dw + sp->pc) * 8);
    if (pos < 0) return -1;
    put_ptr(e, at, near(pos, at, 0), (uint32_t)(sp->dw | sp->pc << 16));
    return encode_struct(e, sp, v, pos, pos + sp->dw * 8);
}

static int encode_items(Enc *e, Field *f, Py_ssize_t at, PyObject *seq);

static int encode_list(Enc *e, Field *f, Py_ssize_t at, PyObject *v) {
    /* (a tuple copy of a list: a Bool's __bool__ or a struct's attribute lookup could run
     * code that changes the list under us) */
    PyObject *seq;
    if (PyList_Check(v)) seq = PyList_AsTuple(v);
    else if (PyTuple_Check(v)) { seq = v; Py_INCREF(seq); }
    else return -1;
    if (!seq) return -1;
    int r = encode_items(e, f, at, seq);
    Py_DECREF(seq);
    return r;
}

static int encode_items(Enc *e, Field *f, Py_ssize_t at, PyObject *seq) {
    Py_ssize_t count = PyTuple_GET_SIZE(seq), i;
    PyObject **items = &PyTuple_GET_ITEM(seq, 0);
    if (count >= (1 << 29)) return -1;
    int ek = f->ekind;
    if (ek == K_STRUCT) {
        PlanObject *sp = f->sub;
        Py_ssize_t each = sp->dw + sp->pc, words = count * each;
        for (i = 0; i < count; i++)
            if (!PyDict_Check(items[i]) || carries_unknown(items[i])) return -1;
        if (words >= (1 << 29)) return -1;
        Py_ssize_t pos = alloc(e, 8 + words * 8);
        if (pos < 0) return -1;
        put_ptr(e, at, near(pos, at, 1), (uint32_t)(words << 3 | 7));
        put_ptr(e, pos, (int32_t)(count << 2), (uint32_t)(sp->dw | sp->pc << 16));
        Py_ssize_t base = pos + 8;
        for (i = 0; i < count; i++) {
            if (encode_struct(e, sp, items[i], base, base + sp->dw * 8) < 0) return -1;
            base += each * 8;
        }
        return 0;
    }
    if (ek == K_TEXT || ek == K_DATA) {
        Py_ssize_t pos = alloc(e, 8 * count);
        if (pos < 0) return -1;
        put_ptr(e, at, near(pos, at, 1), (uint32_t)(count << 3 | 6));
        for (i = 0; i < count; i++)
            if (items[i] != Py_None && encode_blob(e, pos + 8 * i, items[i], ek == K_TEXT) < 0)
                return -1;
        return 0;
    }
    if (ek == K_VOID) {
        put_ptr(e, at, near(e->len, at, 1), (uint32_t)(count << 3));
        return 0;
    }
    if (ek == K_BOOL) {
        Py_ssize_t pos = alloc(e, ((count + 63) >> 6) * 8);
        if (pos < 0) return -1;
        for (i = 0; i < count; i++) {
            int t = PyObject_IsTrue(items[i]);
            if (t < 0) return -1;
            if (t) e->buf[pos + (i >> 3)] |= (uint8_t)(1 << (i & 7));
        }
        put_ptr(e, at, near(pos, at, 1), (uint32_t)(count << 3 | 1));
        return 0;
    }
    int size = f->size;
    static const int code_of[9] = {0, 2, 3, 0, 4, 0, 0, 0, 5};
    Py_ssize_t pos = alloc(e, (count * size + 7) & ~(Py_ssize_t)7);
    if (pos < 0) return -1;
    for (i = 0; i < count; i++) {
        uint64_t b;
        if (scalar_bits(ek, size, f->is_signed, items[i], &b) < 0) return -1;
        memcpy(e->buf + pos + i * size, &b, (size_t)size);
    }
    put_ptr(e, at, near(pos, at, 1), (uint32_t)(count << 3 | code_of[size]));
    return 0;
}

static int encode_field(Enc *e, Field *f, PyObject *x, Py_ssize_t dpos, Py_ssize_t ppos) {
    switch (f->kind) {
    case K_VOID: return 0;
    case K_BOOL: {
        int t = PyObject_IsTrue(x);
        if (t < 0) return -1;
        if (f->defbits ? !t : t) e->buf[dpos + (f->offset >> 3)] |= (uint8_t)(1 << (f->offset & 7));
        return 0;
    }
    case K_GROUP:
        if (x == Py_None) return 0;
        if (!PyDict_Check(x)) return -1;
        return encode_struct(e, f->sub, x, dpos, ppos);
    case K_TEXT: case K_DATA:
        if (x == Py_None) return 0;
        return encode_blob(e, ppos + 8 * f->ptr, x, f->kind == K_TEXT);
    case K_STRUCT:
        if (x == Py_None) return 0;
        return encode_sub_struct(e, f->sub, ppos + 8 * f->ptr, x);
    case K_LIST:
        if (x == Py_None) return 0;
        return encode_list(e, f, ppos + 8 * f->ptr, x);
    case K_CAP: {
        /* noted, described once the whole struct is written (describing exports it: a bail
         * after that would export it again on the Python path) */
        if (x == Py_None) return 0;
        if (!e->describing) return -1;
        if (e->caps == NULL && (e->caps = PyList_New(0)) == NULL) return -1;
        Py_ssize_t n = PyList_GET_SIZE(e->caps);
        if ((n & (n - 1)) == 0) {  /* (0, 1, 2, 4, ...: grow) */
            Py_ssize_t *grown = PyMem_Realloc(e->cap_at, sizeof(Py_ssize_t) * (size_t)(n ? 2 * n : 1));
            if (!grown) return -1;
            e->cap_at = grown;
        }
        if (PyList_Append(e->caps, x) < 0) return -1;
        e->cap_at[n] = ppos + 8 * f->ptr;
        e->ncap_at = n + 1;
        return 0;
    }
    default: {
        uint64_t b;
        if (scalar_bits(f->kind, f->size, f->is_signed, x, &b) < 0) return -1;
        b ^= f->defbits;
        memcpy(e->buf + dpos + f->offset, &b, (size_t)f->size);
        return 0;
    }
    }
}

static int encode_struct(Enc *e, PlanObject *p, PyObject *v, Py_ssize_t dpos, Py_ssize_t ppos) {
    /* (dpos/ppos are offsets: the buffer may move as it grows) */
    for (Py_ssize_t i = 0; i < p->nchecked; i++) {
        Field *f = &p->fields[p->checked[i]];
        PyObject *x = PyDict_GetItemWithError(v, f->key);
        if (!x) {
            if (PyErr_Occurred()) return -1;
            continue;  /* unset: the zero bits already written */
        }
        if (f->kind != K_GROUP && !IS_POINTER_KIND(f->kind) && f->kind != K_BOOL &&
                f->kind != K_VOID && x == Py_None)
            return -1;
        Py_INCREF(x);  /* (a __bool__ could take it out of the dict) */
        int r = encode_field(e, f, x, dpos, ppos);
        Py_DECREF(x);
        if (r < 0) return -1;
    }
    for (Py_ssize_t i = 0; i < p->nmembers; i++) {
        Field *f = &p->fields[p->members[i]];
        PyObject *x = PyDict_GetItemWithError(v, f->key);
        if (!x) {
            if (PyErr_Occurred()) return -1;
            continue;
        }
        if (f->disc) {
            uint16_t dv = (uint16_t)f->disc;
            memcpy(e->buf + dpos + p->disc_off, &dv, 2);
        }
        if (x == Py_None && f->kind != K_VOID && f->kind != K_GROUP && !IS_POINTER_KIND(f->kind))
            return -1;
        Py_INCREF(x);
        int r = encode_field(e, f, x, dpos, ppos);
        Py_DECREF(x);
        return r;
    }
    return 0;
}

/* ------------------------------------------------------------------ cap tables */

/* A descriptor's parts as an rpc.capnp CapDescriptor takes them: 1 with *number, *id and (a
 * receiverAnswer) *qid and *steps (a new reference: a tuple of ints below 2**16), 0 when this
 * file does not write it (an unknown kind, a value out of range: wire_capnp's Python writer
 * then words the error), -1 on an error. */
static int descriptor_parts(PyObject *desc, long *number, unsigned long *id, unsigned long *qid,
                            PyObject **steps) {
    *steps = NULL;
    if (!cap_kinds) return 0;
    PyObject *kind = PyObject_GetAttr(desc, s_kind);
    if (!kind) return -1;
    PyObject *n = PyDict_GetItemWithError(cap_kinds, kind);
    Py_DECREF(kind);
    if (!n) return PyErr_Occurred() ? -1 : 0;
    *number = PyLong_AsLong(n);
    if (*number < 0 || *number > 4) { PyErr_Clear(); return 0; }
    if (*number >= 1 && *number <= 3) {
        PyObject *v = PyObject_GetAttr(desc, s_id);
        if (!v) return -1;
        *id = PyLong_Check(v) ? PyLong_AsUnsignedLong(v) : (unsigned long)-1;
        Py_DECREF(v);
        if (*id > 0xFFFFFFFFUL) { PyErr_Clear(); return 0; }
    } else if (*number == 4) {
        PyObject *answer = PyObject_GetAttr(desc, s_answer);
        if (!answer) return -1;
        if (answer == Py_None) { Py_DECREF(answer); return 0; }
        PyObject *q = PyObject_GetAttr(answer, s_question_id);
        PyObject *t = q ? PyObject_GetAttr(answer, s_transform) : NULL;
        Py_DECREF(answer);
        if (!t) { Py_XDECREF(q); return -1; }
        *qid = PyLong_Check(q) ? PyLong_AsUnsignedLong(q) : (unsigned long)-1;
        Py_DECREF(q);
        int ok = *qid <= 0xFFFFFFFFUL && PyTuple_CheckExact(t) && PyTuple_GET_SIZE(t) < (1 << 20);
        for (Py_ssize_t i = 0; ok && i < PyTuple_GET_SIZE(t); i++) {
            PyObject *x = PyTuple_GET_ITEM(t, i);
            unsigned long step = PyLong_Check(x) ? PyLong_AsUnsignedLong(x) : (unsigned long)-1;
            ok = step <= 0xFFFFUL;
        }
        PyErr_Clear();
        if (!ok) { Py_DECREF(t); return 0; }
        *steps = t;
    }
    return 1;
}

/* A PromisedAnswer (question qid, transform steps) at pointer at, as wire_capnp's
 * _write_promised writes it: 0 ok, -1 no memory. */
static int write_promised(Enc *e, Py_ssize_t at, unsigned long qid, PyObject *steps) {
    Py_ssize_t count = PyTuple_GET_SIZE(steps);
    Py_ssize_t pos = alloc(e, 16);
    if (pos < 0) return -1;
    put_ptr(e, at, near(pos, at, 0), 1 | 1 << 16);
    uint32_t q = (uint32_t)qid;
    memcpy(e->buf + pos, &q, 4);
    Py_ssize_t list = alloc(e, 8 + 8 * count);
    if (list < 0) return -1;
    put_ptr(e, pos + 8, near(list, pos + 8, 1), (uint32_t)(count << 3 | 7));
    put_ptr(e, list, (int32_t)(count << 2), 1);
    for (Py_ssize_t i = 0; i < count; i++) {
        uint16_t op[2] = {1, (uint16_t)PyLong_AsUnsignedLong(PyTuple_GET_ITEM(steps, i))};
        memcpy(e->buf + list + 8 + 8 * i, op, 4);
    }
    return 0;
}

/* The cap table (a list of CapDescriptors) at pointer at, as wire_capnp's _write_cap_table
 * writes it: 1 written, 0 not (a descriptor this file does not write: nothing is), -1 on an
 * error. Each descriptor's parts are read once, all of them before anything is written. */
typedef struct { long number; unsigned long id, qid; PyObject *steps; } DescParts;

static int write_cap_table(Enc *e, Py_ssize_t at, PyObject *table) {
    Py_ssize_t count = PyList_GET_SIZE(table);
    DescParts *parts = PyMem_Calloc((size_t)(count ? count : 1), sizeof(DescParts));
    if (!parts) return -1;
    int r = 1;
    for (Py_ssize_t i = 0; i < count && r > 0; i++)
        r = descriptor_parts(PyList_GET_ITEM(table, i), &parts[i].number, &parts[i].id,
                             &parts[i].qid, &parts[i].steps);
    Py_ssize_t pos = r > 0 ? alloc(e, 8 + 16 * count) : 0;
    if (pos < 0) r = -1;
    if (r > 0) {
        put_ptr(e, at, near(pos, at, 1), (uint32_t)((2 * count) << 3 | 7));
        put_ptr(e, pos, (int32_t)(count << 2), 1 | 1 << 16);
    }
    for (Py_ssize_t i = 0; i < count && r > 0; i++) {
        Py_ssize_t d = pos + 8 + 16 * i;
        uint16_t w = (uint16_t)parts[i].number;
        memcpy(e->buf + d, &w, 2);
        if (parts[i].number == 4) {
            if (write_promised(e, d + 8, parts[i].qid, parts[i].steps) < 0) r = -1;
        } else if (parts[i].number) {
            uint32_t v = (uint32_t)parts[i].id;
            memcpy(e->buf + d + 4, &v, 4);
        }
    }
    for (Py_ssize_t i = 0; i < count; i++) Py_XDECREF(parts[i].steps);
    PyMem_Free(parts);
    return r;
}

/* encode(plan, value[, head, ptr_pos[, describe, table]]) -> the framed message's bytes, or
 * BAIL. With head (bytes, a multiple of 8 long, at least 16) and ptr_pos (a word of head after
 * the segment table), the message is head's bytes followed by the struct, the word at ptr_pos
 * a pointer to it and the segment table's size word set (the RPC encoding writes a whole Call
 * or Return this way, its envelope as head). With describe and table (an empty list), a
 * capability met is described once the rest is written: describe(capability) is appended to
 * table and its pointer names that entry (the RPC encoding's cap table; an exception describe
 * raises goes to the caller as it is), and when the word after ptr_pos lies in head (a
 * Payload's capTable pointer), the table is written there too where every descriptor is of a
 * kind this file writes (else that pointer stays null and the caller writes it). Without
 * them a capability bails. */
static PyObject *binary_encode(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    PyObject *head = NULL, *describe = NULL, *table = NULL;
    Py_ssize_t at = 8, hlen = 16;  /* (no head: the segment table and the root pointer) */
    if (nargs == 6) {
        describe = args[4];
        table = args[5];
        if (!PyList_CheckExact(table) || PyList_GET_SIZE(table)) goto bail;
        nargs = 4;
    }
    if (nargs == 4) {
        head = args[2];
        if (!PyBytes_CheckExact(head)) goto bail;
        hlen = PyBytes_GET_SIZE(head);
        at = PyLong_AsSsize_t(args[3]);
        if (at == -1 && PyErr_Occurred()) return NULL;
        if (hlen < 16 || (hlen & 7) || at < 8 || at > hlen - 8 || (at & 7)) goto bail;
        nargs = 2;
    }
    PlanObject *p = plan_arg(args, nargs,
                             "encode(plan, value[, head, ptr_pos[, describe, table]])");
    if (!p) return NULL;
    PyObject *v = args[1];
    if (!p->ready || !PyDict_Check(v) || carries_unknown(v)) goto bail;
    Py_ssize_t words = p->dw + p->pc, size = hlen + words * 8;
    Py_ssize_t cap = size > 256 ? size : 256;
    Enc e = {PyMem_Malloc((size_t)cap), 0, cap, describe != NULL, NULL, NULL, 0};
    if (!e.buf) goto bail;
    if (alloc(&e, hlen) < 0) goto fail;
    if (head) memcpy(e.buf, PyBytes_AS_STRING(head), (size_t)hlen);
    Py_ssize_t pos = alloc(&e, words * 8);
    if (pos < 0) goto fail;
    if (words == 0) put_ptr(&e, at, -4, 0);
    else put_ptr(&e, at, near(pos, at, 0), (uint32_t)(p->dw | p->pc << 16));
    if (encode_struct(&e, p, v, pos, pos + p->dw * 8) < 0) goto fail;
    for (Py_ssize_t i = 0; i < e.ncap_at; i++) {  /* the capabilities met, described */
        PyObject *desc = PyObject_CallOneArg(describe, PyList_GET_ITEM(e.caps, i));
        if (!desc || PyList_Append(table, desc) < 0) {
            Py_XDECREF(desc);
            goto raise;
        }
        Py_DECREF(desc);
        put_ptr(&e, e.cap_at[i], 3, (uint32_t)i);
    }
    if (e.ncap_at && at + 16 <= hlen && write_cap_table(&e, at + 8, table) < 0) goto raise;
    uint32_t zero = 0, seg_words = (uint32_t)((e.len - 8) >> 3);
    memcpy(e.buf, &zero, 4);
    memcpy(e.buf + 4, &seg_words, 4);
    PyObject *out = PyBytes_FromStringAndSize((const char *)e.buf, e.len);
    PyMem_Free(e.buf);
    PyMem_Free(e.cap_at);
    Py_XDECREF(e.caps);
    if (out) return out;
    goto bail;
raise:
    PyMem_Free(e.buf);
    PyMem_Free(e.cap_at);
    Py_XDECREF(e.caps);
    return NULL;
fail:
    PyMem_Free(e.buf);
    PyMem_Free(e.cap_at);
    Py_XDECREF(e.caps);
bail:
    PyErr_Clear();
    Py_INCREF(BAIL);
    return BAIL;
}

/* ------------------------------------------------------------------ RPC envelopes, framing */

/* The words of rpc.capnp envelopes as cara.rpc.wire_capnp writes them (struct pointers as
 * little-endian u64: offset 0, the sizes in the upper half; wire_capnp's tests check these
 * against its own constants and this function against its Python twin). */
#define W_ROOT    ((uint64_t)(1 | 1 << 16) << 32)        /* -> Message (1 word, 1 pointer) */
#define W_CALL    ((uint64_t)(3 | 3 << 16) << 32)        /* -> Call (3 words, 3 pointers) */
#define W_TARGET  ((uint64_t)2 << 2 | (uint64_t)(1 | 1 << 16) << 32)  /* 2 words on */
#define W_PARAMS  ((uint64_t)3 << 2 | (uint64_t)(2 << 16) << 32)      /* 3 words on */
#define W_RETURN  ((uint64_t)(2 | 1 << 16) << 32)        /* -> Return (2 words, 1 pointer) */
#define W_RESULTS ((uint64_t)(2 << 16) << 32)            /* -> Payload (0 words, 2 pointers) */
#define W_FINISH  ((uint64_t)1 << 32)                    /* -> Finish (1 word) */

/* The bytes of frame (n of them) when it is a one-segment framed message of at least min
 * bytes whose root pointer points to a Message struct right after it, as wire_capnp writes
 * every message; else NULL. */
static const uint8_t *framed_message(PyObject *frame, Py_ssize_t min, Py_ssize_t *n) {
    if (!PyBytes_CheckExact(frame)) return NULL;
    *n = PyBytes_GET_SIZE(frame);
    const uint8_t *b = (const uint8_t *)PyBytes_AS_STRING(frame);
    if (*n < min || rd(b, 4) != 0 || (Py_ssize_t)rd(b + 4, 4) * 8 + 8 != *n ||
            rd(b + 8, 8) != W_ROOT)
        return NULL;
    return b;
}

/* rpc_hot(frame) -> what CapnpWire.decode_hot makes of the commonest messages, laid out
 * exactly as wire_capnp writes them in one segment: a Call to an imported capability with
 * results to the caller and no cap table -> (question_id, export_id, interface_id, method_id,
 * frame); a Return of results without a cap table -> (answer_id, frame, release_param_caps),
 * or (answer_id, frame) when it says noFinishNeeded and not releaseParamCaps (as both cara and
 * libcapnp write it); a Finish -> (question_id, flags byte);
 * anything else None (the Python path decides). */
static PyObject *binary_rpc_hot(PyObject *self, PyObject *frame) {
    Py_ssize_t n;
    const uint8_t *b = framed_message(frame, 40, &n);
    if (!b) Py_RETURN_NONE;
    uint64_t which = rd(b + 16, 8), ptr = rd(b + 24, 8);
    if (which == 2 && ptr == W_CALL && n >= 112 && rd(b + 56, 8) == W_TARGET &&
            rd(b + 64, 8) == W_PARAMS && rd(b + 104, 8) == 0 && rd(b + 38, 2) == 0 &&
            rd(b + 84, 2) == 0)
        return Py_BuildValue("(kkKkO)", (unsigned long)rd(b + 32, 4),
                             (unsigned long)rd(b + 80, 4), (unsigned long long)rd(b + 40, 8),
                             (unsigned long)rd(b + 36, 2), frame);
    if (which == 3 && ptr == W_RETURN && n >= 72 && rd(b + 48, 8) == W_RESULTS &&
            rd(b + 64, 8) == 0 && rd(b + 38, 2) == 0) {
        if ((b[36] & 3) == 3)  /* noFinishNeeded (and not releaseParamCaps): final */
            return Py_BuildValue("(kO)", (unsigned long)rd(b + 32, 4), frame);
        if (b[36] & 2) Py_RETURN_NONE;  /* (the rarer flags: the message itself) */
        return Py_BuildValue("(kOO)", (unsigned long)rd(b + 32, 4), frame,
                             (b[36] & 1) ? Py_False : Py_True);
    }
    if (which == 4 && ptr == W_FINISH && n == 40)
        return Py_BuildValue("(kk)", (unsigned long)rd(b + 32, 4), (unsigned long)b[36]);
    Py_RETURN_NONE;
}

/* The PromisedAnswer struct the (non-null) pointer at pos points to, read as wire_capnp's
 * _promised_answer reads it (charged alike, nest for the struct): (question_id, steps), or
 * NULL to bail (a null pointer, far pointers, a transform that is not a list of Op structs,
 * an Op of another kind, a limit reached: the Python path decides, and words any error). */
static PyObject *promised_answer(Dec *d, Py_ssize_t pos, int nest) {
    Py_ssize_t dpos, dbytes, ppos, nptrs;
    if (struct_at(d, pos, nest, &dpos, &dbytes, &ppos, &nptrs) != 1 || dbytes < 8) return NULL;
    unsigned long qid = (unsigned long)rd(d->buf + dpos, 4);
    PyObject *steps;
    if (nptrs == 0 || rd(d->buf + ppos, 8) == 0) {
        steps = Py_NewRef(empty_tuple);
    } else {
        ListLoc l;
        if (list_at(d, ppos, nest - 1, &l) != 1 || l.size != 7 || (l.count && l.dbytes < 8))
            return NULL;
        Py_ssize_t kept = 0;
        for (Py_ssize_t i = 0; i < l.count; i++) {
            uint64_t which = rd(d->buf + l.start + i * l.step, 2);
            if (which > 1) return NULL;
            kept += which == 1;
        }
        steps = PyTuple_New(kept);
        if (!steps) return NULL;
        for (Py_ssize_t i = 0, k = 0; i < l.count; i++) {
            const uint8_t *op = d->buf + l.start + i * l.step;
            if (rd(op, 2) != 1) continue;  /* (noop) */
            PyObject *index = PyLong_FromUnsignedLong((unsigned long)rd(op + 2, 2));
            if (!index) { Py_DECREF(steps); return NULL; }
            PyTuple_SET_ITEM(steps, k++, index);
        }
    }
    return Py_BuildValue("(kN)", qid, steps);
}

/* The Payload.capTable the (non-null) pointer at pos points to, read as wire_capnp's
 * _cap_table reads it: a tuple of (kind number, id) and (4, question_id, steps) for a
 * receiverAnswer, or NULL to bail. */
static PyObject *cap_table(Dec *d, Py_ssize_t pos, int nest) {
    ListLoc l;
    if (list_at(d, pos, nest, &l) != 1 || l.size != 7 || (l.count && l.dbytes < 8)) return NULL;
    PyObject *caps = PyTuple_New(l.count);
    if (!caps) return NULL;
    for (Py_ssize_t i = 0; i < l.count; i++) {
        Py_ssize_t at = l.start + i * l.step;
        unsigned long which = (unsigned long)rd(d->buf + at, 2);
        PyObject *item;
        if (which < 4) {
            item = Py_BuildValue("(kk)", which, which ? (unsigned long)rd(d->buf + at + 4, 4) : 0UL);
        } else if (which == 4 && l.nptrs > 0 && rd(d->buf + at + l.dbytes, 8) != 0) {
            PyObject *answer = promised_answer(d, at + l.dbytes, nest - 1);
            if (!answer) { Py_DECREF(caps); return NULL; }
            item = Py_BuildValue("(kOO)", which, PyTuple_GET_ITEM(answer, 0),
                                 PyTuple_GET_ITEM(answer, 1));
            Py_DECREF(answer);
        } else {
            item = NULL;
        }
        if (!item) { Py_DECREF(caps); return NULL; }
        PyTuple_SET_ITEM(caps, i, item);
    }
    return caps;
}

/* rpc_envelope(frame, call_budget, return_budget, nest) -> the envelope of a Call or a Return
 * of results that rpc_hot does not take (a cap table, a promised answer as the target), laid
 * out as wire_capnp writes it in one segment, read as CapnpWire._fast_decode reads it:
 * (question_id, target, interface_id, method_id, caps, left) for a Call with results to the
 * caller, target an export id or (question_id, steps); (answer_id, flags byte, caps, left)
 * for a Return; caps as cap_table gives them; left the traversal budget left for the content
 * (the budget given, less what the envelope's pointers took, charged in the same order); nest
 * the nesting the content's pointer starts with. None: the Python path decides. */
static PyObject *binary_rpc_envelope(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "rpc_envelope(frame, call_budget, return_budget, nest)");
        return NULL;
    }
    PyObject *frame = args[0];
    Py_ssize_t budget_c = PyLong_AsSsize_t(args[1]), budget_r = PyLong_AsSsize_t(args[2]);
    long nest = PyLong_AsLong(args[3]);
    if (((budget_c == -1 || budget_r == -1 || nest == -1) && PyErr_Occurred())) return NULL;
    Py_ssize_t n;
    const uint8_t *b = framed_message(frame, 72, &n);
    if (!b || nest < 1 || nest > NEST_LIMIT) Py_RETURN_NONE;
    uint64_t which = rd(b + 16, 8), ptr = rd(b + 24, 8);
    PyObject *target = NULL, *caps = NULL;
    Dec d = {b, 8, n, 0, NULL};
    if (which == 2 && ptr == W_CALL && n >= 112 && rd(b + 56, 8) == W_TARGET &&
            rd(b + 64, 8) == W_PARAMS && rd(b + 38, 2) == 0) {
        uint64_t kind = rd(b + 84, 2);
        if (kind == 0) {
            d.left = budget_c;
            target = PyLong_FromUnsignedLong((unsigned long)rd(b + 80, 4));
        } else if (kind == 1 && rd(b + 88, 8) != 0) {
            d.left = budget_c + 2;  /* (the Payload struct's words, charged after the target) */
            target = promised_answer(&d, 88, (int)nest);
            if (target && !charge(&d, 2)) Py_CLEAR(target);
        }
        if (!target) goto bail;
        caps = rd(b + 104, 8) ? cap_table(&d, 104, (int)nest) : Py_NewRef(empty_tuple);
        if (!caps) goto bail;
        return Py_BuildValue("(kNKkNn)", (unsigned long)rd(b + 32, 4), target,
                             (unsigned long long)rd(b + 40, 8), (unsigned long)rd(b + 36, 2),
                             caps, d.left);
    }
    if (which == 3 && ptr == W_RETURN && rd(b + 48, 8) == W_RESULTS && rd(b + 38, 2) == 0) {
        d.left = budget_r;
        caps = rd(b + 64, 8) ? cap_table(&d, 64, (int)nest) : Py_NewRef(empty_tuple);
        if (!caps) goto bail;
        return Py_BuildValue("(kkNn)", (unsigned long)rd(b + 32, 4), (unsigned long)b[36], caps,
                             d.left);
    }
    Py_RETURN_NONE;
bail:
    Py_XDECREF(target);
    PyErr_Clear();
    Py_RETURN_NONE;
}

/* split(data, max_message_size) -> (messages, used): the complete one-segment framed messages
 * at the start of buffer `data`, each as bytes, and how many bytes they took. It stops at
 * anything else: an incomplete message, a segment table of more than one segment, an empty
 * first segment, a size over the limit (CapnpFramer's Python code then goes on from `used`,
 * and words any error). */
static PyObject *binary_split(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "split(data, max_message_size)");
        return NULL;
    }
    Py_ssize_t limit = PyLong_AsSsize_t(args[1]);
    if (limit == -1 && PyErr_Occurred()) return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0) return NULL;
    const uint8_t *b = (const uint8_t *)view.buf;
    Py_ssize_t n = view.len, pos = 0;
    PyObject *out = PyList_New(0);
    if (!out) goto fail;
    while (n - pos >= 8) {
        uint32_t count = (uint32_t)rd(b + pos, 4), first = (uint32_t)rd(b + pos + 4, 4);
        if (count != 0 || first == 0) break;
        Py_ssize_t size = 8 + 8 * (Py_ssize_t)first;
        if (size > limit || n - pos < size) break;
        PyObject *msg = PyBytes_FromStringAndSize((const char *)b + pos, size);
        if (!msg) goto fail;
        int r = PyList_Append(out, msg);
        Py_DECREF(msg);
        if (r < 0) goto fail;
        pos += size;
    }
    PyBuffer_Release(&view);
    PyObject *result = Py_BuildValue("(Nn)", out, pos);
    return result;
fail:
    Py_XDECREF(out);
    PyBuffer_Release(&view);
    return NULL;
}

/* -------------------------------------------------------------------------- Plan type */

static PyObject *plan_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    PyObject *cls;
    int dw, pc, is_group, disc_off;
    if (!PyArg_ParseTuple(args, "Oiiii", &cls, &dw, &pc, &is_group, &disc_off)) return NULL;
    if (dw < 0 || pc < 0 || pc > 64 || dw > 0xFFFF) {
        PyErr_SetString(PyExc_ValueError, "unsupported section sizes");
        return NULL;
    }
    PlanObject *p = (PlanObject *)type->tp_alloc(type, 0);
    if (!p) return NULL;
    Py_INCREF(cls);
    p->cls = cls;
    p->dw = dw; p->pc = pc; p->is_group = is_group; p->disc_off = disc_off;
    return (PyObject *)p;
}

static int read_words(PyObject *b, int dw, uint64_t **out) {
    if (!PyBytes_Check(b) || PyBytes_GET_SIZE(b) != (Py_ssize_t)dw * 8) {
        PyErr_SetString(PyExc_ValueError, "a mask must have the section's size");
        return -1;
    }
    *out = PyMem_Calloc((size_t)(dw ? dw : 1), 8);
    if (!*out) { PyErr_NoMemory(); return -1; }
    memcpy(*out, PyBytes_AS_STRING(b), (size_t)dw * 8);
    return 0;
}

static int read_order(PyObject *t, Py_ssize_t nfields, int **out, Py_ssize_t *n) {
    if (!PyTuple_Check(t)) { PyErr_SetString(PyExc_TypeError, "an order is a tuple"); return -1; }
    *n = PyTuple_GET_SIZE(t);
    *out = PyMem_Calloc((size_t)(*n ? *n : 1), sizeof(int));
    if (!*out) { PyErr_NoMemory(); return -1; }
    for (Py_ssize_t i = 0; i < *n; i++) {
        long k = PyLong_AsLong(PyTuple_GET_ITEM(t, i));
        if (k < 0 || k >= nfields) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "bad field index");
            return -1;
        }
        (*out)[i] = (int)k;
    }
    return 0;
}

/* plan.setup(pad, pad_ptrs, fields, full, checked, members): each field is
 * (key, kind, size, signed, offset, ptr, defbits, disc, sub, ev, ec, lcls, lmaker, ekind,
 *  inactive, inactive_ptrs) */
static PyObject *plan_setup(PlanObject *p, PyObject *args) {
    PyObject *pad, *fields, *full, *checked, *members;
    unsigned long long pad_ptrs;
    if (!PyArg_ParseTuple(args, "OKO!OOO", &pad, &pad_ptrs, &PyTuple_Type, &fields, &full,
                          &checked, &members))
        return NULL;
    free_fields(p);
    p->ready = 0;
    if (read_words(pad, p->dw, &p->pad) < 0) return NULL;
    p->pad_ptrs = pad_ptrs;
    Py_ssize_t n = PyTuple_GET_SIZE(fields);
    p->fields = PyMem_Calloc((size_t)(n ? n : 1), sizeof(Field));
    if (!p->fields) return PyErr_NoMemory();
    p->nfields = n;
    for (Py_ssize_t i = 0; i < n; i++) {
        Field *f = &p->fields[i];
        PyObject *key, *sub, *ev, *ec, *lcls, *lmaker, *inactive;
        unsigned long long defbits, iptrs;
        Py_ssize_t offset;
        if (!PyArg_ParseTuple(PyTuple_GET_ITEM(fields, i), "OiiiniKiOOOOOiOK", &key, &f->kind,
                              &f->size, &f->is_signed, &offset, &f->ptr, &defbits, &f->disc,
                              &sub, &ev, &ec, &lcls, &lmaker, &f->ekind, &inactive, &iptrs))
            return NULL;
        f->offset = offset;
        f->defbits = defbits;
        f->inactive_ptrs = iptrs;
        Py_INCREF(key); f->key = key;
        if (sub != Py_None) {
            if (!PyObject_TypeCheck(sub, &PlanType)) {
                PyErr_SetString(PyExc_TypeError, "sub must be a Plan");
                return NULL;
            }
            Py_INCREF(sub); f->sub = (PlanObject *)sub;
        }
        if (ev != Py_None) { Py_INCREF(ev); f->ev = ev; }
        if (ec != Py_None) { Py_INCREF(ec); f->ec = ec; }
        if (lcls != Py_None) { Py_INCREF(lcls); f->lcls = lcls; }
        if (lmaker != Py_None) { Py_INCREF(lmaker); f->lmaker = lmaker; }
        if (f->kind < K_VOID || f->kind > K_CAP || f->size < 0 || f->size > 8 || offset < 0 ||
                f->ptr < 0 || f->ptr >= 64 ||
                ((f->kind == K_STRUCT || f->kind == K_GROUP ||
                  (f->kind == K_LIST && f->ekind == K_STRUCT)) && !f->sub) ||
                ((f->kind == K_ENUM) && (!f->ev || !PyDict_Check(f->ev) || !f->ec)) ||
                (f->kind == K_LIST && !f->lcls && !f->lmaker)) {
            PyErr_SetString(PyExc_ValueError, "inconsistent field spec");
            return NULL;
        }
        if (f->kind != K_GROUP && !IS_POINTER_KIND(f->kind) && f->kind != K_VOID) {
            Py_ssize_t end = f->kind == K_BOOL ? (offset >> 3) + 1 : offset + f->size;
            if (end > (Py_ssize_t)p->dw * 8 || (f->kind != K_BOOL && f->size == 0)) {
                PyErr_SetString(PyExc_ValueError, "a field outside its data section");
                return NULL;
            }
        }
        if (IS_POINTER_KIND(f->kind) && f->ptr >= p->pc) {
            PyErr_SetString(PyExc_ValueError, "a pointer outside its section");
            return NULL;
        }
        if (inactive == Py_None) inactive = PyBytes_FromStringAndSize(NULL, 0);
        else Py_INCREF(inactive);
        if (!inactive) return NULL;
        int r = PyBytes_GET_SIZE(inactive) == 0 ? 0 : read_words(inactive, p->dw, &f->inactive);
        Py_DECREF(inactive);
        if (r < 0) return NULL;
        if (!f->inactive) {
            f->inactive = PyMem_Calloc((size_t)(p->dw ? p->dw : 1), 8);
            if (!f->inactive) return PyErr_NoMemory();
        }
    }
    if (read_order(full, n, &p->full, &p->nfull) < 0 ||
            read_order(checked, n, &p->checked, &p->nchecked) < 0 ||
            read_order(members, n, &p->members, &p->nmembers) < 0)
        return NULL;
    if (p->nmembers && (p->disc_off < 0 || p->disc_off + 2 > p->dw * 8)) {
        PyErr_SetString(PyExc_ValueError, "a discriminant outside its data section");
        return NULL;
    }
    p->ready = 1;
    Py_RETURN_NONE;
}

static int plan_traverse(PlanObject *p, visitproc visit, void *arg) {
    Py_VISIT(p->cls);
    for (Py_ssize_t i = 0; i < p->nfields; i++) {
        Field *f = &p->fields[i];
        Py_VISIT(f->sub); Py_VISIT(f->ev); Py_VISIT(f->ec); Py_VISIT(f->lcls); Py_VISIT(f->lmaker);
    }
    return 0;
}

static int plan_clear(PlanObject *p) {
    p->ready = 0;
    free_fields(p);
    Py_CLEAR(p->cls);
    return 0;
}

static void plan_dealloc(PlanObject *p) {
    PyObject_GC_UnTrack(p);
    plan_clear(p);
    Py_TYPE(p)->tp_free((PyObject *)p);
}

static PyMethodDef plan_methods[] = {
    {"setup", (PyCFunction)plan_setup, METH_VARARGS, "Set the plan's fields (see _binary.c)."},
    {NULL}
};

static PyTypeObject PlanType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "cara.codecs.capnp._binary.Plan",
    .tp_basicsize = sizeof(PlanObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "One struct's layout for the C fast path of the binary codec.",
    .tp_new = plan_new,
    .tp_dealloc = (destructor)plan_dealloc,
    .tp_traverse = (traverseproc)plan_traverse,
    .tp_clear = (inquiry)plan_clear,
    .tp_methods = plan_methods,
};

/* ----------------------------------------------------------- entry points on a class */

/* ToBytes(plan, fallback): a struct class's to_bytes(); FromBytes(plan, fallback): its
 * from_bytes(data) classmethod. The plain call on an instance of exactly the plan's class
 * (no keywords) runs encode()/decode(); every other call, and whatever those decline, goes to
 * fallback (the Python method) with the original arguments. */
typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PlanObject *plan;
    PyObject *fallback;
} EntryObject;

static PyObject *to_bytes_vectorcall(EntryObject *e, PyObject *const *args, size_t nargsf,
                                     PyObject *kwnames) {
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (nargs == 1 && (kwnames == NULL || PyTuple_GET_SIZE(kwnames) == 0)
            && (PyObject *)Py_TYPE(args[0]) == e->plan->cls) {
        PyObject *pair[2] = {(PyObject *)e->plan, args[0]};
        PyObject *r = binary_encode(NULL, pair, 2);
        if (r != BAIL) return r;
        Py_DECREF(r);
    }
    return PyObject_Vectorcall(e->fallback, args, nargsf, kwnames);
}

static PyObject *from_bytes_vectorcall(EntryObject *e, PyObject *const *args, size_t nargsf,
                                       PyObject *kwnames) {
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (nargs == 2 && (kwnames == NULL || PyTuple_GET_SIZE(kwnames) == 0)
            && args[0] == e->plan->cls) {
        PyObject *pair[2] = {(PyObject *)e->plan, args[1]};
        PyObject *r = binary_decode(NULL, pair, 2);
        if (r != BAIL) return r;
        Py_DECREF(r);
    }
    return PyObject_Vectorcall(e->fallback, args, nargsf, kwnames);
}

static PyObject *method_descr_get(PyObject *self, PyObject *obj, PyObject *type) {
    if (obj == NULL || obj == Py_None) { Py_INCREF(self); return self; }
    return PyMethod_New(self, obj);
}

static PyObject *classmethod_descr_get(PyObject *self, PyObject *obj, PyObject *type) {
    if (type == NULL || type == Py_None) type = (PyObject *)Py_TYPE(obj);
    return PyMethod_New(self, type);
}

static PyObject *entry_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    PyObject *plan, *fallback;
    if (!PyArg_ParseTuple(args, "O!O", &PlanType, &plan, &fallback)) return NULL;
    EntryObject *e = (EntryObject *)type->tp_alloc(type, 0);
    if (!e) return NULL;
    e->vectorcall = type->tp_descr_get == classmethod_descr_get
        ? (vectorcallfunc)from_bytes_vectorcall : (vectorcallfunc)to_bytes_vectorcall;
    Py_INCREF(plan); e->plan = (PlanObject *)plan;
    Py_INCREF(fallback); e->fallback = fallback;
    return (PyObject *)e;
}

static int entry_traverse(EntryObject *e, visitproc visit, void *arg) {
    Py_VISIT(e->plan); Py_VISIT(e->fallback);
    return 0;
}

static int entry_clear(EntryObject *e) {
    Py_CLEAR(e->plan); Py_CLEAR(e->fallback);
    return 0;
}

static void entry_dealloc(EntryObject *e) {
    PyObject_GC_UnTrack(e);
    entry_clear(e);
    Py_TYPE(e)->tp_free((PyObject *)e);
}

static PyObject *entry_get_fallback(EntryObject *e, void *closure) {
    Py_INCREF(e->fallback);
    return e->fallback;
}

static PyGetSetDef entry_getset[] = {
    {"fallback", (getter)entry_get_fallback, NULL, "the Python method", NULL},
    {NULL}
};

/* (the two entry types differ in their binding, and only ToBytes is a method descriptor:
 * an instance's obj.to_bytes() calls it without a bound method) */
#define ENTRY_TYPE(NAME, FLAGS, DOC, DESCR_GET) {                                     \
    PyVarObject_HEAD_INIT(NULL, 0)                                                   \
    .tp_name = NAME,                                                                 \
    .tp_basicsize = sizeof(EntryObject),                                             \
    .tp_dealloc = (destructor)entry_dealloc,                                         \
    .tp_vectorcall_offset = offsetof(EntryObject, vectorcall),                       \
    .tp_call = PyVectorcall_Call,                                                    \
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL  \
                | (FLAGS),                                                           \
    .tp_doc = DOC,                                                                   \
    .tp_traverse = (traverseproc)entry_traverse,                                     \
    .tp_clear = (inquiry)entry_clear,                                                \
    .tp_descr_get = DESCR_GET,                                                       \
    .tp_getset = entry_getset,                                                       \
    .tp_new = entry_new,                                                             \
}

static PyTypeObject ToBytesType = ENTRY_TYPE(
    "cara.codecs.capnp._binary.ToBytes", Py_TPFLAGS_METHOD_DESCRIPTOR,
    "to_bytes(*, packed=False): the struct as a Cap'n Proto message.", method_descr_get);

static PyTypeObject FromBytesType = ENTRY_TYPE(
    "cara.codecs.capnp._binary.FromBytes", 0,
    "from_bytes(data, *, packed=False, traversal_limit_in_words=None, nesting_limit=None): a "
    "Cap'n Proto message as an instance of this class.", classmethod_descr_get);

static PyObject *binary_set_seen(PyObject *self, PyObject *seen) {
    if (!PyList_Check(seen)) {
        PyErr_SetString(PyExc_TypeError, "set_seen(list)");
        return NULL;
    }
    Py_INCREF(seen);
    Py_XSETREF(seen_list, seen);
    Py_RETURN_NONE;
}

static PyObject *binary_set_cap_kinds(PyObject *self, PyObject *kinds) {
    if (!PyDict_Check(kinds)) {
        PyErr_SetString(PyExc_TypeError, "set_cap_kinds(dict)");
        return NULL;
    }
    Py_INCREF(kinds);
    Py_XSETREF(cap_kinds, kinds);
    Py_RETURN_NONE;
}

static PyMethodDef binary_methods[] = {
    {"decode", (PyCFunction)(void (*)(void))binary_decode, METH_FASTCALL,
     "decode(plan, data[, traversal, nesting[, ptr_pos[, caps]]]): the runtime struct, or BAIL (the "
     "Python codec decides)."},
    {"encode", (PyCFunction)(void (*)(void))binary_encode, METH_FASTCALL,
     "encode(plan, value[, head, ptr_pos[, describe, table]]): the framed message, or BAIL (the Python codec "
     "decides)."},
    {"set_seen", binary_set_seen, METH_O, "The unknown-data flag list (unknown.SEEN)."},
    {"set_cap_kinds", binary_set_cap_kinds, METH_O,
     "The CapDescriptor kinds by number (the RPC encoding's cap tables)."},
    {"rpc_hot", binary_rpc_hot, METH_O,
     "rpc_hot(frame): the commonest rpc.capnp messages as tuples, or None (see _binary.c)."},
    {"rpc_envelope", (PyCFunction)(void (*)(void))binary_rpc_envelope, METH_FASTCALL,
     "rpc_envelope(frame, call_budget, return_budget, nest): a Call's or a Return's envelope "
     "with its cap table, as tuples, or None (see _binary.c)."},
    {"split", (PyCFunction)(void (*)(void))binary_split, METH_FASTCALL,
     "split(data, max_message_size): (the complete one-segment messages at the start, "
     "bytes used)."},
    {NULL}
};

static struct PyModuleDef binary_module = {
    PyModuleDef_HEAD_INIT, "_binary",
    "C fast path of cara's Cap'n Proto binary codec (see _binary.c).", -1, binary_methods,
};

PyMODINIT_FUNC PyInit__binary(void) {
    uint16_t probe = 1;
    if (*(uint8_t *)&probe != 1) {
        PyErr_SetString(PyExc_ImportError, "the binary fast path needs a little-endian host");
        return NULL;
    }
    if (PyType_Ready(&PlanType) < 0 || PyType_Ready(&ToBytesType) < 0
            || PyType_Ready(&FromBytesType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&binary_module);
    if (!m) return NULL;
    empty_tuple = PyTuple_New(0);
    unknown_name = PyUnicode_InternFromString("_cara_unknown_");
    BAIL = PyObject_CallNoArgs((PyObject *)&PyBaseObject_Type);
    seen_list = PyList_New(0);
    if (!empty_tuple || !unknown_name || !BAIL || !seen_list) return NULL;
    if (!(s_kind = PyUnicode_InternFromString("kind")) ||
            !(s_id = PyUnicode_InternFromString("id")) ||
            !(s_answer = PyUnicode_InternFromString("answer")) ||
            !(s_question_id = PyUnicode_InternFromString("question_id")) ||
            !(s_transform = PyUnicode_InternFromString("transform")))
        return NULL;
    Py_INCREF(&PlanType);
    if (PyModule_AddObject(m, "Plan", (PyObject *)&PlanType) < 0) return NULL;
    Py_INCREF(BAIL);
    if (PyModule_AddObject(m, "BAIL", BAIL) < 0) return NULL;
    Py_INCREF(&ToBytesType);
    if (PyModule_AddObject(m, "ToBytes", (PyObject *)&ToBytesType) < 0) return NULL;
    Py_INCREF(&FromBytesType);
    if (PyModule_AddObject(m, "FromBytes", (PyObject *)&FromBytesType) < 0) return NULL;
    return m;
}
