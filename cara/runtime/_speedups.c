/* Optional accelerator for structs (cara.runtime.struct): construction, field reads, msgpack.
 *
 * cara is pure Python; this module only makes the common case faster and is never required.
 * For each struct class, cara.runtime.struct builds a Plan: the class, one entry per field
 * (its number, name, what kind of value it holds and what is needed to check one) and the
 * class's generated Python functions. A Plan then serves as the class's __init__, its
 * _cara_convert_ and its Create:
 *
 *   - plain dicts keyed by field numbers (what msgpack.unpackb returns) and dicts or keyword
 *     arguments keyed by field names are checked field by field here, exactly as the generated
 *     Python code checks them: values that are already of the right type are kept, enums are
 *     looked up, nested structs and lists of structs given as plain dicts and lists are built
 *     here too, and anything else is handed to the field's Python converter;
 *   - whenever the input is not of that common shape, or a converter raises Invalid (or the
 *     nesting is too deep), the generated Python function is called with the original arguments
 *     instead. It accepts and rejects exactly what the general path does and words the error
 *     with the field path, so this module never decides what is valid on its own: it only
 *     decides faster in the cases where the answer is "kept as is".
 *
 * The same rule (decide faster, never differently; defer to Python for anything else) covers
 * the rest of the module: field attributes (Field: a read is a dict lookup, as
 * property(itemgetter(n)) does), to_msgpack (packb: msgpack's exact bytes for plain values,
 * structs and typed lists, else msgpack packs) and from_msgpack (Plan.unpackb: msgpack read
 * straight into struct instances, checked as fill_by_number checks what msgpack would have
 * built; any other input goes to msgpack and the generated code). ListBase and StructBase, the
 * C bases of cara.runtime.list.List and cara.runtime.struct.Struct, hold the attributes cara
 * sets on instances as slots (no per-instance __dict__ for them).
 *
 * Nothing here is reachable when the module is not built (CARA_PURE_PYTHON=1 at install time,
 * or no C compiler) or when CARA_PURE_PYTHON=1 is set at run time.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>
#include <stdint.h>
#include <structmember.h>

/* Dict operations with the key's hash computed once (field numbers are small ints, whose hash
 * is themselves): CPython's own _KnownHash functions where they are exported. */
#if PY_VERSION_HEX < 0x030D0000
#define GET_KNOWN(d, key, hash) _PyDict_GetItem_KnownHash((d), (key), (hash))
#define SET_KNOWN(d, key, value, hash) _PyDict_SetItem_KnownHash((d), (key), (value), (hash))
#define HAS_KNOWN(d, key, hash) _PyDict_Contains_KnownHash((d), (key), (hash))
#else
#define GET_KNOWN(d, key, hash) PyDict_GetItemWithError((d), (key))
#define SET_KNOWN(d, key, value, hash) PyDict_SetItem((d), (key), (value))
#define HAS_KNOWN(d, key, hash) PyDict_Contains((d), (key))
#endif

enum {
    K_ANY = 0,   /* AnyPointer: stored as given */
    K_TEXT,      /* exact str */
    K_DATA,      /* exact bytes */
    K_FLOAT64,   /* exact float */
    K_BOOL,      /* True or False */
    K_VOID,      /* None */
    K_INT,       /* exact int within [lo, hi] */
    K_FLOAT32,   /* exact float within [-limit, limit], rounded to single precision */
    K_ENUM,      /* a member; an int (number keys) or a name (name keys) looked up */
    K_STRUCT,    /* an instance of cls; a plain dict built with cls's plan */
    K_LIST,      /* an instance of cls; a plain list of plain dicts for a list of structs */
    K_OTHER      /* interfaces and the like: None kept (number keys), else converted */
};

enum { BY_NUMBER = 0, BY_NAME = 1 };

typedef struct {
    PyObject *key;      /* the field number (int) */
    Py_hash_t hash;     /* its hash */
    PyObject *name;     /* the field name (str) */
    int kind;
    int in_union;       /* a member of the struct's unnamed union (0 or 1) */
    int by_name;        /* found by name in keyword arguments and name-keyed dicts */
    long long lo;
    unsigned long long hi;
    double limit;
    PyObject *cls;      /* enum, struct or list class (or None) */
    PyObject *vmap;     /* enum: value -> member (or None) */
    PyObject *nmap;     /* enum: name -> member (or None) */
    PyObject *conv;     /* the field type's Python converter: raises Invalid */
    PyObject *elem_cls; /* list of structs: the element class (or None) */
    PyObject *elem_conv;/* list of structs: the element converter (or None) */
    PyObject *child;    /* the plan of the struct (or element) class, once it has one */
    PyObject *by_value; /* enum: tuple, the members numbered 0, 1, ... in vmap (or NULL) */
    PyObject *names;    /* enum: tuple, the keys of a small nmap (or NULL) ... */
    PyObject *named;    /* ... and their members */
} Field;

/* Every object a Field holds, for clearing and for the garbage collector. */
#define FIELD_OBJECTS(X) X(key) X(name) X(cls) X(vmap) X(nmap) X(conv) X(elem_cls) \
                         X(elem_conv) X(child) X(by_value) X(names) X(named)

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *cls;
    PyObject *py_init;      /* generated __init__(self, d=None, /, **kw) */
    PyObject *py_convert;   /* generated convert(value) */
    PyObject *py_create;    /* generated Create(*args, **kw) */
    Py_ssize_t nfields;
    Py_ssize_t nunion;
    int dense;              /* fields[i] is field number i (what plan.unpackb relies on) */
    Field *fields;
} PlanObject;

static PyTypeObject PlanType;
static PyObject *Invalid = NULL;          /* cara.runtime.types.Invalid */
static PyObject *plan_attr = NULL;        /* "_cara_plan_" */
static PyObject *empty_tuple = NULL;
/* Returned (borrowed, never a real value) when the input is not of the shape handled here. */
static PyObject NOT_FAST_OBJ;
#define NOT_FAST (&NOT_FAST_OBJ)

static PyObject *build_by_number(PlanObject *plan, PyObject *d, int depth);
static PyObject *build_by_name(PlanObject *plan, PyObject *src, int depth);

/* The plan of struct class cls when its fast constructors exist, else NULL (no error set);
 * remembered in *cache once found (a class gets its plan once and keeps it). */
static PlanObject *
plan_of(PyObject *cls, PyObject **cache)
{
    PyObject *p;
    if (*cache != NULL)
        return (PlanObject *)*cache;
    p = PyObject_GetAttr(cls, plan_attr);
    if (p == NULL) {
        PyErr_Clear();
        return NULL;
    }
    /* The class keeps its plan alive; a subclass may inherit its parent's: not ours then. */
    Py_DECREF(p);
    if (Py_TYPE(p) != &PlanType || ((PlanObject *)p)->cls != cls)
        return NULL;
    Py_INCREF(p);
    *cache = p;
    return (PlanObject *)p;
}

static PyObject *
new_instance(PyObject *cls)
{
    return PyDict_Type.tp_new((PyTypeObject *)cls, empty_tuple, NULL);
}

/* A new, empty instance of typed list class cls with room for n items, which the caller puts
 * in with list_put (no reallocation on the way, as PyList_Append would make). */
static PyObject *
new_list(PyObject *cls, Py_ssize_t n)
{
    PyObject *out = PyList_Type.tp_new((PyTypeObject *)cls, empty_tuple, NULL);
    if (out != NULL && n > 0) {
        PyListObject *list = (PyListObject *)out;
        list->ob_item = PyMem_New(PyObject *, n);
        if (list->ob_item == NULL) {
            Py_DECREF(out);
            return PyErr_NoMemory();
        }
        list->allocated = n;
    }
    return out;
}

/* Append item (a reference stolen) to a list from new_list, within the room it was made with
 * (it grows one item at a time, so the garbage collector only ever sees items put in). */
static void
list_put(PyObject *list, PyObject *item)
{
    Py_ssize_t n = PyList_GET_SIZE(list);
    assert(n < ((PyListObject *)list)->allocated);
    PyList_SET_ITEM(list, n, item);
    Py_SET_SIZE(list, n + 1);
}

/* How many structs deep one call into this module builds before it hands the whole input to
 * the generated Python code (which calls back in for nested values): the C stack stays small
 * whatever the interpreter's C recursion limit, and the depth at which input is refused as
 * "nested too deeply" is set by Python's recursion limit, as without the accelerator. */
#define MAX_DEPTH 100

/* How deep the msgpack reader (from_msgpack) goes before it hands the input to the Python path:
 * 32 structs (depths 0 to 31) and the lists between them are 63 levels, within the nesting
 * limit of every codec (cara/runtime/nesting.py), which the Python path enforces with its own
 * error for anything deeper. */
#define MAX_READ_DEPTH 31

/* Enter one more level of nesting: 0, or -1 with RecursionError set (which makes the entry
 * point defer to the generated Python code). */
static int
enter_level(int depth)
{
    if (depth > MAX_DEPTH) {
        PyErr_SetString(PyExc_RecursionError, "value nested too deeply for the accelerator");
        return -1;
    }
    return Py_EnterRecursiveCall(" while converting a value");
}

static int
is_fallback_error(void)
{
    return PyErr_ExceptionMatches(Invalid) || PyErr_ExceptionMatches(PyExc_RecursionError);
}

static PyObject *
call_conv(PyObject *conv, PyObject *v)
{
    return PyObject_CallOneArg(conv, v);
}

static int
int_in_range(Field *f, PyObject *v)
{
    int overflow = 0;
    long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
    if (overflow == 0) {
        if (x == -1 && PyErr_Occurred()) {
            PyErr_Clear();
            return 0;
        }
        if (x < f->lo)
            return 0;
        return x < 0 || (unsigned long long)x <= f->hi;
    }
    if (overflow < 0)
        return 0;
    {
        unsigned long long u = PyLong_AsUnsignedLongLong(v);
        if (u == (unsigned long long)-1 && PyErr_Occurred()) {
            PyErr_Clear();
            return 0;
        }
        return u <= f->hi;
    }
}

/* A struct given as a plain dict (or an instance), built by its plan when it has one. */
static PyObject *
convert_struct(PyObject *cls, PyObject *conv, PyObject **cache, PyObject *v, int mode,
               int depth)
{
    if ((PyObject *)Py_TYPE(v) == cls) {
        Py_INCREF(v);
        return v;
    }
    if (PyDict_CheckExact(v)) {
        PlanObject *child = plan_of(cls, cache);
        if (child != NULL) {
            PyObject *r = mode == BY_NUMBER ? build_by_number(child, v, depth + 1)
                                            : build_by_name(child, v, depth + 1);
            if (r != NOT_FAST)
                return r;
        }
    }
    return call_conv(conv, v);
}

/* A list of structs given as a plain list (of plain dicts), as a new instance of f's typed
 * list class. */
static PyObject *
convert_list(Field *f, PyObject *v, int mode, int depth)
{
    Py_ssize_t i, n = PyList_GET_SIZE(v);
    PyObject *out = new_list(f->cls, n);
    if (out == NULL)
        return NULL;
    for (i = 0; i < n && i < PyList_GET_SIZE(v); i++) {  /* (v may shrink meanwhile) */
        PyObject *x = PyList_GET_ITEM(v, i);
        PyObject *item;
        Py_INCREF(x);
        item = convert_struct(f->elem_cls, f->elem_conv, &f->child, x, mode, depth);
        Py_DECREF(x);
        if (item == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        list_put(out, item);
    }
    return out;
}

/* The value to store for field f given v (a new reference), or NULL with an exception. */
static PyObject *
convert_value(Field *f, PyObject *v, int mode, int depth)
{
    int keep = 0;  /* v is already what the field stores */
    switch (f->kind) {
    case K_ANY:
        keep = 1;
        break;
    case K_TEXT:
        keep = PyUnicode_CheckExact(v);
        break;
    case K_DATA:
        keep = PyBytes_CheckExact(v);
        break;
    case K_FLOAT64:
        keep = PyFloat_CheckExact(v);
        break;
    case K_BOOL:
        keep = PyBool_Check(v);
        break;
    case K_VOID:
        keep = v == Py_None;
        break;
    case K_INT:
        keep = PyLong_CheckExact(v) && int_in_range(f, v);
        break;
    case K_FLOAT32:
        if (PyFloat_CheckExact(v) && -f->limit <= PyFloat_AS_DOUBLE(v)
                && PyFloat_AS_DOUBLE(v) <= f->limit) {
            /* Stored rounded to single precision, as types.round32 does (NaN, which fails
             * the range test, goes to the Python converter). */
            double x = PyFloat_AS_DOUBLE(v);
            float single = (float)x;
            if ((double)single == x) {
                keep = 1;
                break;
            }
            return PyFloat_FromDouble((double)single);
        }
        break;
    case K_ENUM: {
        PyObject *member = NULL;
        if ((PyObject *)Py_TYPE(v) == f->cls) {
            keep = 1;
            break;
        }
        if (mode == BY_NUMBER && PyLong_CheckExact(v)) {
            /* enumerants are numbered 0, 1, ...: by_value holds what vmap maps them to */
            if (f->by_value != NULL) {
                int overflow = 0;
                long x = PyLong_AsLongAndOverflow(v, &overflow);
                if (overflow == 0 && x >= 0 && x < PyTuple_GET_SIZE(f->by_value)) {
                    member = PyTuple_GET_ITEM(f->by_value, x);
                    Py_INCREF(member);
                    return member;
                }
            }
            member = PyDict_GetItemWithError(f->vmap, v);
        }
        else if (mode == BY_NAME && PyUnicode_CheckExact(v)) {
            /* a name written in code is the very key of nmap (both are interned) */
            if (f->names != NULL) {
                Py_ssize_t j;
                for (j = 0; j < PyTuple_GET_SIZE(f->names); j++) {
                    if (PyTuple_GET_ITEM(f->names, j) == v) {
                        member = PyTuple_GET_ITEM(f->named, j);
                        Py_INCREF(member);
                        return member;
                    }
                }
            }
            member = PyDict_GetItemWithError(f->nmap, v);
        }
        if (member != NULL) {
            Py_INCREF(member);
            return member;
        }
        if (PyErr_Occurred())
            return NULL;
        break;
    }
    case K_STRUCT:
        return convert_struct(f->cls, f->conv, &f->child, v, mode, depth);
    case K_LIST:
        if ((PyObject *)Py_TYPE(v) == f->cls) {
            keep = 1;
            break;
        }
        if (PyList_CheckExact(v) && f->elem_cls != Py_None
                && plan_of(f->elem_cls, &f->child) != NULL)
            return convert_list(f, v, mode, depth);
        break;
    default: /* K_OTHER */
        keep = mode == BY_NUMBER && v == Py_None;
        break;
    }
    if (keep) {
        Py_INCREF(v);
        return v;
    }
    return call_conv(f->conv, v);
}

/* Fill self from d, an exact dict keyed by known field numbers. 1: done; 0: d is not of that
 * shape (self as it was); -1: an exception (self may hold part of d: the caller clears it,
 * as the generated Python code does). */
static int
fill_by_number(PlanObject *plan, PyObject *self, PyObject *d, int depth)
{
    Py_ssize_t size = PyDict_GET_SIZE(d), found = 0, members = 0, i;
    /* Union members, and (when self already holds something, so that it cannot simply be
     * cleared again) whether every key is a field number: checked before self changes. */
    int check_keys = PyDict_GET_SIZE(self) > 0;
    if ((plan->nunion > 1 && size > 1) || check_keys) {
        for (i = 0; i < plan->nfields; i++) {
            Field *f = &plan->fields[i];
            int has;
            if (!f->in_union && !check_keys)
                continue;
            has = HAS_KNOWN(d, f->key, f->hash);
            if (has < 0)
                return -1;
            members += has && f->in_union;
            found += has;
        }
        if (members > 1 || (check_keys && found != size))
            return 0;
        found = 0;
    }
    if (PyDict_Update(self, d) < 0)
        return -1;
    for (i = 0; i < plan->nfields && found < size; i++) {
        Field *f = &plan->fields[i];
        PyObject *v = GET_KNOWN(d, f->key, f->hash);
        PyObject *r;
        if (v == NULL) {
            if (PyErr_Occurred())
                return -1;
            continue;
        }
        found++;
        if (f->kind == K_ANY)
            continue;
        Py_INCREF(v);
        r = convert_value(f, v, BY_NUMBER, depth);
        Py_DECREF(v);
        if (r == NULL)
            return -1;
        if (r != v && SET_KNOWN(self, f->key, r, f->hash) < 0) {
            Py_DECREF(r);
            return -1;
        }
        Py_DECREF(r);
    }
    if (found != size) { /* keys that are not field numbers: not this shape (self was empty) */
        PyDict_Clear(self);
        return 0;
    }
    return 1;
}

static PyObject *
build_by_number(PlanObject *plan, PyObject *d, int depth)
{
    PyObject *self;
    int rc;
    if (enter_level(depth))
        return NULL;
    self = new_instance(plan->cls);
    if (self == NULL) {
        Py_LeaveRecursiveCall();
        return NULL;
    }
    rc = fill_by_number(plan, self, d, depth);
    Py_LeaveRecursiveCall();
    if (rc == 1)
        return self;
    Py_DECREF(self);
    return rc == 0 ? NOT_FAST : NULL;
}

/* The value given for field f by name: from src (a dict) or, when src is NULL, from n values
 * named keys[i] (matched by identity: keywords written in a call are interned, as are the field
 * names). NULL when not given (with an exception on error). */
static PyObject *
named_value(Field *f, PyObject *src, PyObject *const *values, PyObject *const *keys,
            Py_ssize_t n)
{
    Py_ssize_t j;
    if (src != NULL)
        return PyDict_GetItemWithError(src, f->name);
    for (j = 0; j < n; j++) {
        if (keys[j] == f->name)
            return values[j];
    }
    return NULL;
}

/* How many items a name-keyed dict may have to be matched by identity (see build_named). */
#define SMALL_DICT 8

/* Whether each of the n keys is the very name object of a field found by name (then they
 * can be matched by identity, without a lookup per field). */
static int
names_identical(PlanObject *plan, PyObject *const *keys, Py_ssize_t n)
{
    Py_ssize_t i, j;
    for (j = 0; j < n; j++) {
        for (i = 0; i < plan->nfields; i++) {
            if (plan->fields[i].name == keys[j] && plan->fields[i].by_name)
                break;
        }
        if (i == plan->nfields)
            return 0;
    }
    return 1;
}

/* A new instance from values keyed by field names: a dict (src) or keyword arguments (values
 * named by kwnames), stored in the schema's field order; NOT_FAST when some name is not a
 * field's (or, for keyword arguments, not matched by identity) or two members of the unnamed
 * union are given. A small dict whose keys are the field names themselves (names written in
 * code are interned, as the field names are) is matched by identity too. */
static PyObject *
build_named(PlanObject *plan, PyObject *src, PyObject *const *values, PyObject *kwnames,
            int depth)
{
    Py_ssize_t size, found = 0, members = 0, i, held = 0;
    PyObject *self = NULL;
    PyObject *keys_small[SMALL_DICT], *values_small[SMALL_DICT];
    PyObject *const *keys = NULL;
    if (src != NULL) {
        size = PyDict_GET_SIZE(src);
        if (size <= SMALL_DICT) {
            Py_ssize_t pos = 0;
            PyObject *k, *v;
            while (held < size && PyDict_Next(src, &pos, &k, &v)) {
                keys_small[held] = k;
                values_small[held] = v;
                Py_INCREF(v);  /* (a converter may run code that changes src) */
                held++;
            }
            if (held == size && names_identical(plan, keys_small, size)) {
                keys = keys_small;
                values = values_small;
                src = NULL;
            }
        }
    }
    else {
        size = PyTuple_GET_SIZE(kwnames);
        keys = &PyTuple_GET_ITEM(kwnames, 0);
    }
    if (enter_level(depth))
        goto release;
    self = new_instance(plan->cls);
    if (self == NULL)
        goto error;
    for (i = 0; i < plan->nfields && found < size; i++) {
        Field *f = &plan->fields[i];
        PyObject *v, *r;
        int rc;
        if (!f->by_name)
            continue;  /* reaches Python's general path (found != size) */
        v = named_value(f, src, values, keys, size);
        if (v == NULL) {
            if (PyErr_Occurred())
                goto error;
            continue;
        }
        found++;
        members += f->in_union;
        Py_INCREF(v);
        r = convert_value(f, v, BY_NAME, depth);
        Py_DECREF(v);
        if (r == NULL)
            goto error;
        rc = SET_KNOWN(self, f->key, r, f->hash);
        Py_DECREF(r);
        if (rc < 0)
            goto error;
    }
    Py_LeaveRecursiveCall();
    if (found != size || members > 1)
        Py_SETREF(self, NOT_FAST);
    goto release;
error:
    Py_LeaveRecursiveCall();
    Py_CLEAR(self);
release:
    for (i = 0; i < held; i++)
        Py_DECREF(values_small[i]);
    return self;
}

static PyObject *
build_by_name(PlanObject *plan, PyObject *src, int depth)
{
    return build_named(plan, src, NULL, NULL, depth);
}

/* ------------------------------------------------------------------ entry points */

/* plan(self, d=None, /, **kw): the class's __init__. */
static PyObject *
plan_vectorcall(PlanObject *plan, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    PyObject *self, *d, *built;
    int rc;
    if (nargs < 1 || nargs > 2 || (kwnames != NULL && PyTuple_GET_SIZE(kwnames) > 0))
        return PyObject_Vectorcall(plan->py_init, args, nargs, kwnames);
    self = args[0];
    d = nargs == 2 ? args[1] : Py_None;
    if (!PyDict_Check(self))
        return PyObject_Vectorcall(plan->py_init, args, nargs, NULL);
    if (d == Py_None)
        Py_RETURN_NONE;
    if (!PyDict_CheckExact(d))
        return PyObject_Vectorcall(plan->py_init, args, nargs, NULL);
    if (Py_EnterRecursiveCall(" while converting a value"))
        return NULL;
    rc = fill_by_number(plan, self, d, 0);
    Py_LeaveRecursiveCall();
    if (rc == 1)
        Py_RETURN_NONE;
    if (rc == 0) {
        built = build_by_name(plan, d, 0);
        if (built != NULL && built != NOT_FAST) {
            rc = PyDict_Update(self, built);
            Py_DECREF(built);
            if (rc < 0)
                return NULL;
            Py_RETURN_NONE;
        }
        if (built == NULL && !is_fallback_error())
            return NULL;
        PyErr_Clear();
    }
    else {
        if (!is_fallback_error())
            return NULL;
        PyErr_Clear();
        PyDict_Clear(self);
    }
    return PyObject_Vectorcall(plan->py_init, args, nargs, NULL);
}

/* plan.convert(value): the class's _cara_convert_. */
static PyObject *
plan_convert(PlanObject *plan, PyObject *v)
{
    PyObject *r;
    if ((PyObject *)Py_TYPE(v) == plan->cls) {
        Py_INCREF(v);
        return v;
    }
    if (!PyDict_CheckExact(v))
        return call_conv(plan->py_convert, v);
    r = build_by_number(plan, v, 0);
    if (r == NOT_FAST)
        r = build_by_name(plan, v, 0);
    if (r != NULL && r != NOT_FAST)
        return r;
    if (r == NULL) {
        if (!is_fallback_error())
            return NULL;
        PyErr_Clear();
    }
    return call_conv(plan->py_convert, v);
}

/* A new instance from keyword arguments; names not matched by identity (rare: a ``**mapping``
 * of strings built at run time) go through a dict. */
static PyObject *
build_by_keywords(PlanObject *plan, PyObject *const *values, PyObject *kwnames)
{
    Py_ssize_t j, n = PyTuple_GET_SIZE(kwnames);
    PyObject *r = build_named(plan, NULL, values, kwnames, 0), *kwargs;
    if (r != NOT_FAST)
        return r;
    kwargs = PyDict_New();
    if (kwargs == NULL)
        return NULL;
    for (j = 0; j < n; j++) {
        if (PyDict_SetItem(kwargs, PyTuple_GET_ITEM(kwnames, j), values[j]) < 0) {
            Py_DECREF(kwargs);
            return NULL;
        }
    }
    r = build_by_name(plan, kwargs, 0);
    Py_DECREF(kwargs);
    return r;
}

/* plan.create(**kw): the class's Create. */
static PyObject *
plan_create(PlanObject *plan, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *r;
    if (nargs > 0)
        return PyObject_Vectorcall(plan->py_create, args, nargs, kwnames);
    if (kwnames == NULL || PyTuple_GET_SIZE(kwnames) == 0)
        return new_instance(plan->cls);
    r = build_by_keywords(plan, args, kwnames);
    if (r != NULL && r != NOT_FAST)
        return r;
    if (r == NULL) {
        if (!is_fallback_error())
            return NULL;
        PyErr_Clear();
    }
    return PyObject_Vectorcall(plan->py_create, args, nargs, kwnames);
}

/* As a class attribute, the plan binds like a function (it is the class's __init__). */
static PyObject *
plan_descr_get(PyObject *self, PyObject *obj, PyObject *type)
{
    if (obj == NULL || obj == Py_None) {
        Py_INCREF(self);
        return self;
    }
    return PyMethod_New(self, obj);
}

/* ------------------------------------------------------------------ typed lists' base */

/* The base of cara.runtime.list.List when the accelerator is loaded: a list with two slots,
 * _p (the parent and field number while the list is a pending default) and _o (where it was
 * last read from, for the paths in its mutators' errors), which read as None while unset, as
 * the class attributes of the pure-Python List do. They would otherwise live in each list's
 * own __dict__, made on the first read of every list from a field. */
typedef struct {
    PyListObject list;
    PyObject *parent;  /* _p */
    PyObject *where;   /* _o */
} ListBaseObject;

static PyTypeObject ListBaseType;

static int
listbase_traverse(ListBaseObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->parent);
    Py_VISIT(self->where);
    return PyList_Type.tp_traverse((PyObject *)self, visit, arg);
}

static int
listbase_clear(ListBaseObject *self)
{
    Py_CLEAR(self->parent);
    Py_CLEAR(self->where);
    return PyList_Type.tp_clear((PyObject *)self);
}

static void
listbase_dealloc(ListBaseObject *self)
{
    PyObject_GC_UnTrack(self);
    Py_CLEAR(self->parent);
    Py_CLEAR(self->where);
    PyList_Type.tp_dealloc((PyObject *)self);
}

static PyMemberDef listbase_members[] = {
    {"_p", T_OBJECT, offsetof(ListBaseObject, parent), 0,
     "(parent, field number) while this list is a pending default, else None"},
    {"_o", T_OBJECT, offsetof(ListBaseObject, where), 0,
     "where this list was last read from (\"Person.phones\"), else None"},
    {NULL, 0, 0, 0, NULL}
};

static PyMethodDef listbase_methods[] = {
    {"__class_getitem__", Py_GenericAlias, METH_O | METH_CLASS, "See PEP 585."},
    {NULL, NULL, 0, NULL}
};

static PyTypeObject ListBaseType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "cara.runtime._speedups.ListBase",
    .tp_basicsize = sizeof(ListBaseObject),
    .tp_dealloc = (destructor)listbase_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC
                | Py_TPFLAGS_SEQUENCE,
    .tp_doc = "Base of typed lists: list with the _p and _o slots (see cara/runtime/list.py).",
    .tp_traverse = (traverseproc)listbase_traverse,
    .tp_clear = (inquiry)listbase_clear,
    .tp_members = listbase_members,
    .tp_methods = listbase_methods,
};

/* ------------------------------------------------------------------ structs' base */

/* The base of cara.runtime.struct.Struct when the accelerator is loaded: a dict with the three
 * attributes a struct may be given (_p: (parent, field number) while it is a pending default;
 * _c: the pending children it handed out; _cara_unknown_: what a newer schema's binary
 * message held beyond this one) as slots that read as None while unset, as the class
 * attributes of the pure-Python Struct do, and room for weak references. Struct classes then
 * need no __dict__ (which would cost every instance its upkeep). */
typedef struct {
    PyDictObject dict;
    PyObject *parent;    /* _p */
    PyObject *children;  /* _c */
    PyObject *unknown;   /* _cara_unknown_ */
    PyObject *weakrefs;
} StructBaseObject;

static int
structbase_traverse(StructBaseObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->parent);
    Py_VISIT(self->children);
    Py_VISIT(self->unknown);
    return PyDict_Type.tp_traverse((PyObject *)self, visit, arg);
}

static int
structbase_clear(StructBaseObject *self)
{
    Py_CLEAR(self->parent);
    Py_CLEAR(self->children);
    Py_CLEAR(self->unknown);
    return PyDict_Type.tp_clear((PyObject *)self);
}

static void
structbase_dealloc(StructBaseObject *self)
{
    PyObject_GC_UnTrack(self);
    if (self->weakrefs != NULL)
        PyObject_ClearWeakRefs((PyObject *)self);
    Py_CLEAR(self->parent);
    Py_CLEAR(self->children);
    Py_CLEAR(self->unknown);
    PyDict_Type.tp_dealloc((PyObject *)self);
}

static PyMemberDef structbase_members[] = {
    {"_p", T_OBJECT, offsetof(StructBaseObject, parent), 0,
     "(parent, field number) while this struct is a pending default, else None"},
    {"_c", T_OBJECT, offsetof(StructBaseObject, children), 0,
     "the pending children handed out by reads of unset fields ({number: child}), or None"},
    {"_cara_unknown_", T_OBJECT, offsetof(StructBaseObject, unknown), 0,
     "what a newer schema's binary message held beyond this schema, or None"},
    {NULL, 0, 0, 0, NULL}
};

static PyTypeObject StructBaseType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "cara.runtime._speedups.StructBase",
    .tp_basicsize = sizeof(StructBaseObject),
    .tp_dealloc = (destructor)structbase_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC
                | Py_TPFLAGS_MAPPING,
    .tp_doc = "Base of structs: dict with the _p, _c and _cara_unknown_ slots "
              "(see cara/runtime/struct.py).",
    .tp_traverse = (traverseproc)structbase_traverse,
    .tp_clear = (inquiry)structbase_clear,
    .tp_weaklistoffset = offsetof(StructBaseObject, weakrefs),
    .tp_members = structbase_members,
};

/* ------------------------------------------------------------------ field attributes */

/* A field's attribute on its struct class: reads like property(itemgetter(number)) (a set
 * field's value, else the struct's __missing__, which gives the default), and for a list field
 * tells the list it hands out where it lives (list._o = "Person.phones", for the paths in the
 * list mutators' errors), as cara.runtime.struct._ListField does in Python. Writes go to the
 * struct's _cara_set_/_cara_unset_ (Struct.__setattr__ normally gets there first). */
typedef struct {
    PyObject_HEAD
    PyObject *key;    /* the field number */
    PyObject *label;  /* list fields: where the list lives ("Person.phones"); else NULL */
    PyObject *doc;
    Py_hash_t hash;   /* the key's hash */
    unsigned int plain_tag;  /* version tag of the last struct class seen to read as dict does */
} FieldObject;

static PyObject *o_attr = NULL;            /* "_o" */
static PyObject *set_name = NULL;          /* "_cara_set_" */
static PyObject *unset_name = NULL;        /* "_cara_unset_" */
static PyObject *getitem_name = NULL;      /* "__getitem__" */
static binaryfunc dict_subscript = NULL;   /* dict's own d[key] (calls __missing__) */
static PyObject *dict_getitem_descr = NULL;/* dict.__getitem__ (borrowed: dict keeps it) */

/* Whether obj[key] on an instance of t is dict's own subscript (a lookup, then __missing__ on
 * a miss). A class statement gives every dict subclass the generic slot that looks
 * __getitem__ up and calls it, which finds dict's own unless the class overrides it: then a
 * read can go straight to the dict. Remembered by the class's version tag (unique to a class
 * and reset when the class changes), so it is looked up once per class. */
static int
reads_as_dict(FieldObject *self, PyTypeObject *t)
{
    if (self->plain_tag != 0 && t->tp_version_tag == self->plain_tag)
        return 1;
    if (t->tp_as_mapping == NULL
        || (t->tp_as_mapping->mp_subscript != dict_subscript
            && _PyType_Lookup(t, getitem_name) != dict_getitem_descr))
        return 0;
#ifdef Py_TPFLAGS_VALID_VERSION_TAG
    if (t->tp_flags & Py_TPFLAGS_VALID_VERSION_TAG)
#endif
        self->plain_tag = t->tp_version_tag;
    return 1;
}

/* Tell the list read from a list field where it lives (list._o = label), as _ListField does. */
static int
label_list(FieldObject *self, PyObject *value)
{
    PyObject *where;
    int rc = 0;
    if (PyObject_TypeCheck(value, &ListBaseType)) {  /* _o is its slot */
        ListBaseObject *list = (ListBaseObject *)value;
        if (list->where != self->label) {
            Py_INCREF(self->label);
            Py_XSETREF(list->where, self->label);
        }
        return 0;
    }
    where = PyObject_GetAttr(value, o_attr);
    if (where == NULL) {  /* not read from a field yet: an unset slot */
        if (PyErr_ExceptionMatches(PyExc_AttributeError)) {
            PyErr_Clear();
            rc = PyObject_GenericSetAttr(value, o_attr, self->label);
        }
        else
            rc = -1;
    }
    else {
        if (where != self->label)
            rc = PyObject_GenericSetAttr(value, o_attr, self->label);
        Py_DECREF(where);
    }
    if (rc < 0) {
        if (!PyErr_ExceptionMatches(PyExc_AttributeError))
            return -1;
        PyErr_Clear();  /* not a typed list: cannot happen through the field's checks */
    }
    return 0;
}

static PyObject *
field_descr_get(FieldObject *self, PyObject *obj, PyObject *type)
{
    PyObject *value;
    if (obj == NULL || obj == Py_None) {
        Py_INCREF(self);
        return (PyObject *)self;
    }
    if (PyDict_Check(obj) && reads_as_dict(self, Py_TYPE(obj))) {
        value = GET_KNOWN(obj, self->key, self->hash);
        if (value != NULL)
            Py_INCREF(value);
        else if (PyErr_Occurred())
            return NULL;
        else
            value = PyObject_GetItem(obj, self->key);  /* __missing__: the default */
    }
    else
        value = PyObject_GetItem(obj, self->key);
    if (value != NULL && self->label != NULL && label_list(self, value) < 0) {
        Py_DECREF(value);
        return NULL;
    }
    return value;
}

static int
field_descr_set(FieldObject *self, PyObject *obj, PyObject *value)
{
    PyObject *r = value == NULL
        ? PyObject_CallMethodObjArgs(obj, unset_name, self->key, NULL)
        : PyObject_CallMethodObjArgs(obj, set_name, self->key, value, NULL);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 0;
}

static PyObject *
field_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *key, *label, *doc;
    FieldObject *self;
    static char *names[] = {"number", "label", "doc", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!OO:Field", names, &PyLong_Type, &key,
                                     &label, &doc))
        return NULL;
    if (label != Py_None && !PyUnicode_Check(label)) {
        PyErr_SetString(PyExc_TypeError, "Field: label must be a str or None");
        return NULL;
    }
    self = (FieldObject *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->hash = PyObject_Hash(key);
    if (self->hash == -1) {
        Py_DECREF(self);
        return NULL;
    }
    Py_INCREF(key);
    self->key = key;
    if (label != Py_None) {
        Py_INCREF(label);
        self->label = label;
    }
    Py_INCREF(doc);
    self->doc = doc;
    return (PyObject *)self;
}

static void
field_dealloc(FieldObject *self)
{
    Py_XDECREF(self->key);
    Py_XDECREF(self->label);
    Py_XDECREF(self->doc);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMemberDef field_members[] = {
    {"number", T_OBJECT, offsetof(FieldObject, key), READONLY, "the field number"},
    {"label", T_OBJECT, offsetof(FieldObject, label), READONLY,
     "list fields: where the list lives (for error paths); else None"},
    {"__doc__", T_OBJECT, offsetof(FieldObject, doc), READONLY, NULL},
    {NULL, 0, 0, 0, NULL}
};

static PyTypeObject FieldType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "cara.runtime._speedups.Field",
    .tp_basicsize = sizeof(FieldObject),
    .tp_dealloc = (destructor)field_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_members = field_members,
    .tp_descr_get = (descrgetfunc)field_descr_get,
    .tp_descr_set = (descrsetfunc)field_descr_set,
    .tp_new = field_new,
};

/* ------------------------------------------------------------------ msgpack: packing */

/* packb(value): the bytes msgpack.Packer().pack(value) gives (msgpack's defaults:
 * use_bin_type, no single floats, no default hook), for values made of None, bools, ints, floats,
 * str, bytes, dicts (structs: dict subclasses that keep dict's items and len) and lists (typed
 * lists: list subclasses that keep list's iteration) and tuples; None for anything else (then
 * the caller packs with msgpack itself, which also raises msgpack's errors). Every encoding
 * choice is msgpack's (the smallest header and integer form, in msgpack's order of type checks),
 * and the differential tests compare the bytes with msgpack's. */

#define PACK_DEPTH 100

typedef struct {
    char *buf;
    Py_ssize_t len, cap;
    char small[512];
} PackBuffer;

static PyObject *dict_items_descr = NULL;  /* dict.items, to spot subclasses overriding it */
static PyObject *items_name = NULL;        /* "items" */
static PyObject *long_gt_descr = NULL;     /* int.__gt__ (enums keep it) */
static PyObject *gt_name = NULL;           /* "__gt__" */

static int
pack_reserve(PackBuffer *b, Py_ssize_t extra)
{
    Py_ssize_t cap;
    char *p;
    if (extra <= b->cap - b->len)
        return 0;
    if (extra > PY_SSIZE_T_MAX / 2 - b->len) {
        PyErr_NoMemory();
        return -1;
    }
    cap = b->cap * 2 > b->len + extra ? b->cap * 2 : b->len + extra;
    if (b->buf == b->small) {
        p = PyMem_Malloc(cap);
        if (p != NULL)
            memcpy(p, b->small, b->len);
    }
    else
        p = PyMem_Realloc(b->buf, cap);
    if (p == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    b->buf = p;
    b->cap = cap;
    return 0;
}

/* tag, then value in `width` big-endian bytes (0 to 8). */
static inline int
pack_head(PackBuffer *b, unsigned char tag, unsigned long long value, int width)
{
    int i;
    if (pack_reserve(b, 1 + width) < 0)
        return -1;
    b->buf[b->len++] = (char)tag;
    for (i = width - 1; i >= 0; i--)
        b->buf[b->len++] = (char)((value >> (8 * i)) & 0xff);
    return 0;
}

static int
pack_bytes(PackBuffer *b, const char *data, Py_ssize_t n)
{
    if (pack_reserve(b, n) < 0)
        return -1;
    memcpy(b->buf + b->len, data, n);
    b->len += n;
    return 0;
}

/* msgpack_pack_unsigned_long_long */
static int
pack_uint(PackBuffer *b, unsigned long long u)
{
    if (u < 128)
        return pack_head(b, (unsigned char)u, 0, 0);
    if (u < 256)
        return pack_head(b, 0xcc, u, 1);
    if (u < 65536)
        return pack_head(b, 0xcd, u, 2);
    if (u < 4294967296ULL)
        return pack_head(b, 0xce, u, 4);
    return pack_head(b, 0xcf, u, 8);
}

/* msgpack_pack_long_long, for x < 0 */
static int
pack_negative(PackBuffer *b, long long x)
{
    if (x >= -32)
        return pack_head(b, (unsigned char)(x & 0xff), 0, 0);
    if (x >= -128)
        return pack_head(b, 0xd0, (unsigned long long)x, 1);
    if (x >= -32768)
        return pack_head(b, 0xd1, (unsigned long long)x, 2);
    if (x >= -2147483648LL)
        return pack_head(b, 0xd2, (unsigned long long)x, 4);
    return pack_head(b, 0xd3, (unsigned long long)x, 8);
}

/* A container header: fix form below `fix` items, else 16 or 32 bits; 1 when too large. */
static int
pack_container(PackBuffer *b, Py_ssize_t n, unsigned char fixtag, unsigned char tag16)
{
    if (n < 16)
        return pack_head(b, (unsigned char)(fixtag | n), 0, 0);
    if (n < 65536)
        return pack_head(b, tag16, (unsigned long long)n, 2);
    if ((unsigned long long)n <= 0xffffffffULL)
        return pack_head(b, (unsigned char)(tag16 + 1), (unsigned long long)n, 4);
    return 1;
}

/* The values most often packed, without a call into pack_value: exact ints, str of ASCII
 * characters and None. 0: packed; 2: not one of these (pack_value packs it); -1: an error. */
static inline int
pack_simple(PackBuffer *b, PyObject *o)
{
    PyTypeObject *t = Py_TYPE(o);
    if (t == &PyLong_Type) {
        int overflow = 0;
        long long x = PyLong_AsLongLongAndOverflow(o, &overflow);
        if (overflow != 0 || (x == -1 && PyErr_Occurred())) {
            PyErr_Clear();
            return 2;
        }
        if (x >= 0 && x < 128) {
            if (b->cap - b->len < 1 && pack_reserve(b, 1) < 0)
                return -1;
            b->buf[b->len++] = (char)x;
            return 0;
        }
        return x >= 0 ? pack_uint(b, (unsigned long long)x) : pack_negative(b, x);
    }
    if (t == &PyUnicode_Type && PyUnicode_IS_COMPACT_ASCII(o)) {
        Py_ssize_t n = PyUnicode_GET_LENGTH(o);
        if (n >= 32)
            return 2;
        if (b->cap - b->len < 1 + n && pack_reserve(b, 1 + n) < 0)
            return -1;
        b->buf[b->len++] = (char)(0xa0 | n);
        memcpy(b->buf + b->len, PyUnicode_1BYTE_DATA(o), n);
        b->len += n;
        return 0;
    }
    if (o == Py_None) {
        if (b->cap - b->len < 1 && pack_reserve(b, 1) < 0)
            return -1;
        b->buf[b->len++] = (char)0xc0;
        return 0;
    }
    return 2;
}

/* Classes seen to pack as their base type packs them, by version tag (unique to a class, and
 * reset when the class changes): dict subclasses that keep dict's len and items (structs), int
 * subclasses that keep int's > (enums). Direct-mapped; a miss only costs the lookup again. */
#define TYPE_CACHE 32
static unsigned int plain_dict_tags[TYPE_CACHE];
static unsigned int plain_int_tags[TYPE_CACHE];

static int
cached_tag(unsigned int *cache, PyTypeObject *t)
{
    unsigned int tag = t->tp_version_tag;
    return tag != 0 && cache[tag % TYPE_CACHE] == tag;
}

static void
cache_tag(unsigned int *cache, PyTypeObject *t)
{
    unsigned int tag = t->tp_version_tag;
#ifdef Py_TPFLAGS_VALID_VERSION_TAG
    if (!(t->tp_flags & Py_TPFLAGS_VALID_VERSION_TAG))
        return;
#endif
    if (tag != 0)
        cache[tag % TYPE_CACHE] = tag;
}

/* msgpack packs a dict subclass as len(o) and o.items(): this one as a dict? */
static int
packs_as_dict(PyTypeObject *t)
{
    if (t == &PyDict_Type || cached_tag(plain_dict_tags, t))
        return 1;
    if (t->tp_as_mapping->mp_length != PyDict_Type.tp_as_mapping->mp_length
            || _PyType_Lookup(t, items_name) != dict_items_descr)
        return 0;
    cache_tag(plain_dict_tags, t);
    return 1;
}

/* msgpack asks o > 0 of an int subclass: this one answers as int does? */
static int
packs_as_int(PyTypeObject *t)
{
    if (t == &PyLong_Type || t->tp_richcompare == PyLong_Type.tp_richcompare
            || cached_tag(plain_int_tags, t))
        return 1;
    if (_PyType_Lookup(t, gt_name) != long_gt_descr)
        return 0;
    cache_tag(plain_int_tags, t);
    return 1;
}

/* 0: packed; 1: not a value handled here (nothing useful written); -1: an exception.
 * The tests go by the type's flags first (str, int, dict, list and tuple, bytes): no object
 * is an instance of two of the types handled here (their layouts conflict), so the order of
 * the tests cannot change which one a value packs as, and msgpack's order is kept where it
 * matters (None, True and False before int). */
static int
pack_value(PackBuffer *b, PyObject *o, int depth)
{
    PyTypeObject *t = Py_TYPE(o);
    unsigned long flags = t->tp_flags;
    if (depth > PACK_DEPTH)
        return 1;
    if (flags & Py_TPFLAGS_UNICODE_SUBCLASS) {
        Py_ssize_t n;
        const char *data = PyUnicode_AsUTF8AndSize(o, &n);
        int rc;
        if (data == NULL) {  /* e.g. lone surrogates: msgpack words the error */
            PyErr_Clear();
            return 1;
        }
        if ((unsigned long long)n > 0xffffffffULL)
            return 1;
        rc = n < 32 ? pack_head(b, (unsigned char)(0xa0 | n), 0, 0)
                    : n < 256 ? pack_head(b, 0xd9, n, 1)
                              : n < 65536 ? pack_head(b, 0xda, n, 2) : pack_head(b, 0xdb, n, 4);
        return rc < 0 ? -1 : pack_bytes(b, data, n);
    }
    if (flags & Py_TPFLAGS_LONG_SUBCLASS) {
        int overflow = 0;
        long long x;
        if (o == Py_True)
            return pack_head(b, 0xc3, 0, 0);
        if (o == Py_False)
            return pack_head(b, 0xc2, 0, 0);
        if (!packs_as_int(t))
            return 1;  /* msgpack asks o > 0: an int subclass with its own > */
        x = PyLong_AsLongLongAndOverflow(o, &overflow);
        if (overflow > 0) {
            unsigned long long u = PyLong_AsUnsignedLongLong(o);
            if (u == (unsigned long long)-1 && PyErr_Occurred()) {
                PyErr_Clear();
                return 1;
            }
            return pack_uint(b, u);
        }
        if (overflow < 0 || (x == -1 && PyErr_Occurred())) {
            PyErr_Clear();
            return 1;
        }
        return x >= 0 ? pack_uint(b, (unsigned long long)x) : pack_negative(b, x);
    }
    if (flags & Py_TPFLAGS_DICT_SUBCLASS) {
        Py_ssize_t pos = 0, n;
        PyObject *k, *v;
        int rc;
        if (!packs_as_dict(t))
            return 1;  /* msgpack packs len(o) and o.items(): overridden here */
        n = PyDict_GET_SIZE(o);
        rc = pack_container(b, n, 0x80, 0xde);
        if (rc != 0)
            return rc;
        while (PyDict_Next(o, &pos, &k, &v)) {
            /* (k and v are borrowed: pack_simple runs no Python code, pack_value may) */
            rc = pack_simple(b, k);
            if (rc == 2) {
                Py_INCREF(k);
                Py_INCREF(v);
                rc = pack_value(b, k, depth + 1);
                if (rc == 0) {
                    rc = pack_simple(b, v);
                    if (rc == 2)
                        rc = pack_value(b, v, depth + 1);
                }
                Py_DECREF(k);
                Py_DECREF(v);
            }
            else if (rc == 0) {
                rc = pack_simple(b, v);
                if (rc == 2) {
                    Py_INCREF(v);
                    rc = pack_value(b, v, depth + 1);
                    Py_DECREF(v);
                }
            }
            if (rc != 0)
                return rc;
            if (PyDict_GET_SIZE(o) != n)
                return 1;  /* changed while packing (by a str subclass?): let msgpack say */
        }
        return 0;
    }
    if (t == &PyList_Type || t == &PyTuple_Type
            || ((flags & Py_TPFLAGS_LIST_SUBCLASS) && t->tp_iter == PyList_Type.tp_iter)) {
        Py_ssize_t i, n = Py_SIZE(o);
        int is_list = t != &PyTuple_Type;
        int rc = pack_container(b, n, 0x90, 0xdc);
        if (rc != 0)
            return rc;
        for (i = 0; i < n; i++) {
            PyObject *v;
            if (Py_SIZE(o) != n)
                return 1;
            v = is_list ? PyList_GET_ITEM(o, i) : PyTuple_GET_ITEM(o, i);
            rc = pack_simple(b, v);
            if (rc == 2) {
                Py_INCREF(v);
                rc = pack_value(b, v, depth + 1);
                Py_DECREF(v);
            }
            if (rc != 0)
                return rc;
        }
        return 0;
    }
    if (o == Py_None)
        return pack_head(b, 0xc0, 0, 0);
    if (PyFloat_Check(o)) {
        double d = PyFloat_AS_DOUBLE(o);
        unsigned long long bits;
        memcpy(&bits, &d, 8);
        return pack_head(b, 0xcb, bits, 8);
    }
    if ((flags & Py_TPFLAGS_BYTES_SUBCLASS) || PyByteArray_Check(o)) {
        Py_ssize_t n = Py_SIZE(o);
        const char *data = PyBytes_Check(o) ? PyBytes_AS_STRING(o) : PyByteArray_AS_STRING(o);
        int rc;
        if ((unsigned long long)n > 0xffffffffULL)
            return 1;
        rc = n < 256 ? pack_head(b, 0xc4, n, 1)
                     : n < 65536 ? pack_head(b, 0xc5, n, 2) : pack_head(b, 0xc6, n, 4);
        return rc < 0 ? -1 : pack_bytes(b, data, n);
    }
    return 1;
}

static PyObject *
speedups_packb(PyObject *module, PyObject *value)
{
    PackBuffer b;
    PyObject *result = NULL;
    int rc;
    b.buf = b.small;
    b.len = 0;
    b.cap = (Py_ssize_t)sizeof(b.small);
    rc = pack_value(&b, value, 0);
    if (rc == 0)
        result = PyBytes_FromStringAndSize(b.buf, b.len);
    else if (rc == 1) {
        result = Py_None;
        Py_INCREF(result);
    }
    if (b.buf != b.small)
        PyMem_Free(b.buf);
    return result;
}

/* ------------------------------------------------------------------ msgpack: reading structs */

/* plan.unpackb(cls, data): what cls(msgpack.unpackb(data, strict_map_key=False)) gives, read
 * straight into struct instances (no intermediate plain dicts) for the common shape: a map keyed
 * by this struct's field numbers, nested structs and lists of structs keyed the same way, values
 * of msgpack's basic types. Each struct is checked exactly as fill_by_number checks the dict
 * msgpack would have built (values of the right type kept, enums looked up, the rest through
 * the field's converter). None when cls is not the plan's class or the input is anything else:
 * not msgpack, extra or missing bytes, ext types, names or unknown numbers as keys, two union
 * members, too deep, a value some converter rejects. The caller then runs the Python path, which
 * gives the value or words the error, so this never decides what is valid on its own. */

typedef struct {
    const unsigned char *p, *end;
} Reader;

static PyObject *read_value(Reader *r, int depth);
static PyObject *read_struct(Reader *r, PlanObject *plan, Py_ssize_t n, int depth);

/* Read `width` big-endian bytes; 0 when they are not there. */
static int
read_uint(Reader *r, int width, unsigned long long *out)
{
    unsigned long long v = 0;
    int i;
    if (r->end - r->p < width)
        return 0;
    for (i = 0; i < width; i++)
        v = (v << 8) | r->p[i];
    r->p += width;
    *out = v;
    return 1;
}

/* The header of a map (kind 'm'), array ('a'), str ('s') or bin ('b') at r (consumed), with
 * its length; 0 (r unchanged) for anything else or a truncated header. */
static int
read_header(Reader *r, char *kind, Py_ssize_t *n)
{
    const unsigned char *start = r->p;
    unsigned long long len = 0;
    int width = 0;
    unsigned char tag;
    if (r->p >= r->end)
        return 0;
    tag = *r->p++;
    if (tag >= 0x80 && tag <= 0x8f) {
        *kind = 'm'; *n = tag & 0x0f; return 1;
    }
    if (tag >= 0x90 && tag <= 0x9f) {
        *kind = 'a'; *n = tag & 0x0f; return 1;
    }
    if (tag >= 0xa0 && tag <= 0xbf) {
        *kind = 's'; *n = tag & 0x1f; return 1;
    }
    switch (tag) {
    case 0xc4: *kind = 'b'; width = 1; break;
    case 0xc5: *kind = 'b'; width = 2; break;
    case 0xc6: *kind = 'b'; width = 4; break;
    case 0xd9: *kind = 's'; width = 1; break;
    case 0xda: *kind = 's'; width = 2; break;
    case 0xdb: *kind = 's'; width = 4; break;
    case 0xdc: *kind = 'a'; width = 2; break;
    case 0xdd: *kind = 'a'; width = 4; break;
    case 0xde: *kind = 'm'; width = 2; break;
    case 0xdf: *kind = 'm'; width = 4; break;
    default:
        r->p = start;
        return 0;
    }
    if (!read_uint(r, width, &len)) {
        r->p = start;
        return 0;
    }
    *n = (Py_ssize_t)len;
    return 1;
}

/* Room for n items of at least `each` bytes: a header cannot make this allocate more than the
 * input could fill (msgpack refuses such headers too). */
static int
room_for(Reader *r, Py_ssize_t n, Py_ssize_t each)
{
    return n >= 0 && n <= (r->end - r->p) / each;
}

/* The str of n UTF-8 bytes at p (msgpack's str type), as PyUnicode_DecodeUTF8 gives it; ASCII,
 * the common case, copied straight into a new compact str. */
static PyObject *
decode_text(const unsigned char *p, Py_ssize_t n)
{
    Py_ssize_t i;
    unsigned char any = 0;
    PyObject *out;
    if (n > 64)
        return PyUnicode_DecodeUTF8((const char *)p, n, NULL);
    for (i = 0; i < n; i++)
        any |= p[i];
    if (any & 0x80)
        return PyUnicode_DecodeUTF8((const char *)p, n, NULL);
    if (n <= 1)  /* the empty string and the one-character singletons */
        return PyUnicode_DecodeUTF8((const char *)p, n, NULL);
    out = PyUnicode_New(n, 127);
    if (out != NULL)
        memcpy(PyUnicode_1BYTE_DATA(out), p, n);
    return out;
}

/* A plain value, as msgpack.unpackb(raw=False, strict_map_key=False) builds it; NOT_FAST for
 * what is not handled here (ext types, keys other than str and int, bad or truncated input). */
static PyObject *
read_value(Reader *r, int depth)
{
    unsigned char tag;
    unsigned long long u;
    char kind;
    Py_ssize_t n, i;
    if (depth > MAX_READ_DEPTH || r->p >= r->end)
        return NOT_FAST;
    tag = *r->p;
    if (tag <= 0x7f) {
        r->p++;
        return PyLong_FromLong(tag);
    }
    if (tag >= 0xe0) {
        r->p++;
        return PyLong_FromLong((long)tag - 256);
    }
    if (read_header(r, &kind, &n)) {
        PyObject *out;
        if (kind == 's' || kind == 'b') {
            if (!room_for(r, n, 1))
                return NOT_FAST;
            out = kind == 's' ? decode_text(r->p, n)
                              : PyBytes_FromStringAndSize((const char *)r->p, n);
            if (out == NULL) {
                if (!PyErr_ExceptionMatches(PyExc_UnicodeDecodeError))
                    return NULL;
                PyErr_Clear();  /* msgpack words it */
                return NOT_FAST;
            }
            r->p += n;
            return out;
        }
        if (kind == 'a') {
            if (!room_for(r, n, 1))
                return NOT_FAST;
            out = PyList_New(n);
            if (out == NULL)
                return NULL;
            for (i = 0; i < n; i++) {
                PyObject *item = read_value(r, depth + 1);
                if (item == NULL || item == NOT_FAST) {
                    Py_DECREF(out);
                    return item;
                }
                PyList_SET_ITEM(out, i, item);
            }
            return out;
        }
        /* a map */
        if (!room_for(r, n, 2))
            return NOT_FAST;
        out = PyDict_New();
        if (out == NULL)
            return NULL;
        for (i = 0; i < n; i++) {
            PyObject *k = read_value(r, depth + 1), *v;
            int rc;
            if (k == NULL || k == NOT_FAST) {
                Py_DECREF(out);
                return k;
            }
            if (!PyLong_CheckExact(k) && !PyUnicode_CheckExact(k)) {
                Py_DECREF(k);
                Py_DECREF(out);
                return NOT_FAST;
            }
            if (PyUnicode_CheckExact(k))
                PyUnicode_InternInPlace(&k);  /* as msgpack does */
            v = read_value(r, depth + 1);
            if (v == NULL || v == NOT_FAST) {
                Py_DECREF(k);
                Py_DECREF(out);
                return v;
            }
            rc = PyDict_SetItem(out, k, v);
            Py_DECREF(k);
            Py_DECREF(v);
            if (rc < 0) {
                Py_DECREF(out);
                return NULL;
            }
        }
        return out;
    }
    r->p++;
    switch (tag) {
    case 0xc0: Py_RETURN_NONE;
    case 0xc2: Py_RETURN_FALSE;
    case 0xc3: Py_RETURN_TRUE;
    case 0xca: {
        float f;
        uint32_t bits;
        if (!read_uint(r, 4, &u))
            return NOT_FAST;
        bits = (uint32_t)u;
        memcpy(&f, &bits, 4);
        return PyFloat_FromDouble((double)f);
    }
    case 0xcb: {
        double d;
        if (!read_uint(r, 8, &u))
            return NOT_FAST;
        memcpy(&d, &u, 8);
        return PyFloat_FromDouble(d);
    }
    case 0xcc: case 0xcd: case 0xce: case 0xcf:
        if (!read_uint(r, 1 << (tag - 0xcc), &u))
            return NOT_FAST;
        return PyLong_FromUnsignedLongLong(u);
    case 0xd0: case 0xd1: case 0xd2: case 0xd3: {
        int width = 1 << (tag - 0xd0);
        long long x;
        if (!read_uint(r, width, &u))
            return NOT_FAST;
        if (width < 8 && (u >> (8 * width - 1)))  /* sign-extend */
            u |= ~0ULL << (8 * width);
        memcpy(&x, &u, 8);
        return PyLong_FromLongLong(x);
    }
    default:  /* 0xc1 (never used), ext and fixext types */
        return NOT_FAST;
    }
}

/* The value of field f at r, converted as convert_value(f, ., BY_NUMBER) converts what msgpack
 * builds: a nested struct (or list of structs) given as a map is read straight into instances. */
static PyObject *
read_field(Reader *r, Field *f, int depth)
{
    char kind;
    Py_ssize_t n, i;
    const unsigned char *start = r->p;
    PyObject *v, *out;
    if (f->kind == K_STRUCT && read_header(r, &kind, &n)) {
        PlanObject *child = kind == 'm' ? plan_of(f->cls, &f->child) : NULL;
        if (child != NULL)
            return read_struct(r, child, n, depth + 1);
        r->p = start;
    }
    else if (f->kind == K_LIST && f->elem_cls != Py_None && read_header(r, &kind, &n)) {
        PlanObject *child = kind == 'a' ? plan_of(f->elem_cls, &f->child) : NULL;
        if (child != NULL) {
            if (!room_for(r, n, 1))
                return NOT_FAST;
            out = new_list(f->cls, n);
            if (out == NULL)
                return NULL;
            for (i = 0; i < n; i++) {
                const unsigned char *at = r->p;
                PyObject *item;
                Py_ssize_t m;
                if (read_header(r, &kind, &m) && kind == 'm')
                    item = read_struct(r, child, m, depth + 1);
                else {
                    r->p = at;
                    v = read_value(r, depth + 1);
                    if (v == NULL || v == NOT_FAST) {
                        Py_DECREF(out);
                        return v;
                    }
                    item = convert_struct(f->elem_cls, f->elem_conv, &f->child, v, BY_NUMBER,
                                          depth);
                    Py_DECREF(v);
                }
                if (item == NULL || item == NOT_FAST) {
                    Py_DECREF(out);
                    return item;
                }
                list_put(out, item);
            }
            return out;
        }
        r->p = start;
    }
    else if (r->p < r->end && depth + 1 <= MAX_READ_DEPTH) {  /* (as read_value checks) */
        /* The usual values of Text, integer and enum fields, taken as convert_value would keep
         * or look them up, without making a value to check first: a str for Text, a
         * positive fixint within range for an integer, or numbering an enumerant. */
        unsigned char tag = *r->p;
        if (f->kind == K_TEXT && tag >= 0xa0 && tag <= 0xbf) {
            n = tag & 0x1f;
            if (r->end - r->p - 1 >= n) {
                out = decode_text(r->p + 1, n);
                if (out != NULL)
                    r->p += 1 + n;
                else if (PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
                    PyErr_Clear();  /* msgpack words it */
                    return NOT_FAST;
                }
                return out;
            }
        }
        else if (tag <= 0x7f && f->kind == K_INT && (long long)tag >= f->lo
                 && (unsigned long long)tag <= f->hi) {
            r->p++;
            return PyLong_FromLong(tag);
        }
        else if (tag <= 0x7f && f->kind == K_ENUM && f->by_value != NULL
                 && tag < PyTuple_GET_SIZE(f->by_value)) {
            r->p++;
            out = PyTuple_GET_ITEM(f->by_value, tag);
            Py_INCREF(out);
            return out;
        }
    }
    v = read_value(r, depth + 1);
    if (v == NULL || v == NOT_FAST || f->kind == K_ANY)
        return v;
    out = convert_value(f, v, BY_NUMBER, depth);
    Py_DECREF(v);
    return out;
}

/* A struct of `plan` from the n entries of the map at r (its header read). */
static PyObject *
read_struct(Reader *r, PlanObject *plan, Py_ssize_t n, int depth)
{
    PyObject *self;
    Py_ssize_t i, members = 0;
    if (!plan->dense || !room_for(r, n, 2) || depth > MAX_READ_DEPTH)
        return NOT_FAST;
    if (enter_level(depth))
        return NULL;
    self = new_instance(plan->cls);
    if (self == NULL)
        goto error;
    for (i = 0; i < n; i++) {
        unsigned long long number;
        unsigned char tag = r->p < r->end ? *r->p : 0xc1;
        Field *f;
        PyObject *v;
        int rc;
        /* keys: field numbers as msgpack writes them (fixint, uint8, uint16) */
        if (tag <= 0x7f) {
            number = tag;
            r->p++;
        }
        else if (tag == 0xcc || tag == 0xcd) {
            r->p++;
            if (!read_uint(r, tag == 0xcc ? 1 : 2, &number))
                goto not_fast;
        }
        else
            goto not_fast;
        if (number >= (unsigned long long)plan->nfields)
            goto not_fast;  /* a number from a newer schema: the Python path keeps it */
        f = &plan->fields[number];
        v = read_field(r, f, depth);
        if (v == NULL)
            goto error;
        if (v == NOT_FAST)
            goto not_fast;
        rc = SET_KNOWN(self, f->key, v, f->hash);
        Py_DECREF(v);
        if (rc < 0)
            goto error;
    }
    if (plan->nunion > 1 && PyDict_GET_SIZE(self) > 1) {
        for (i = 0; i < plan->nfields; i++) {
            Field *f = &plan->fields[i];
            if (f->in_union) {
                int has = HAS_KNOWN(self, f->key, f->hash);
                if (has < 0)
                    goto error;
                members += has;
            }
        }
        if (members > 1)
            goto not_fast;  /* two members: the Python path words the error */
    }
    Py_LeaveRecursiveCall();
    return self;
not_fast:
    Py_LeaveRecursiveCall();
    Py_DECREF(self);
    return NOT_FAST;
error:
    Py_LeaveRecursiveCall();
    Py_XDECREF(self);
    return NULL;
}

/* plan.unpackb(cls, data) */
static PyObject *
plan_unpackb(PlanObject *plan, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer view;
    Reader r;
    char kind;
    Py_ssize_t n;
    PyObject *result = NOT_FAST;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "unpackb(cls, data)");
        return NULL;
    }
    if (args[0] != plan->cls)
        Py_RETURN_NONE;
    if (PyBytes_CheckExact(args[1])) {  /* (what a buffer of it would give, without one) */
        view.obj = NULL;
        view.buf = PyBytes_AS_STRING(args[1]);
        view.len = PyBytes_GET_SIZE(args[1]);
    }
    else if (PyObject_GetBuffer(args[1], &view, PyBUF_SIMPLE) < 0) {
        PyErr_Clear();  /* not bytes-like: msgpack words it */
        Py_RETURN_NONE;
    }
    r.p = (const unsigned char *)view.buf;
    r.end = r.p + view.len;
    if (read_header(&r, &kind, &n) && kind == 'm') {
        if (Py_EnterRecursiveCall(" while reading a message") == 0) {
            result = read_struct(&r, plan, n, 0);
            Py_LeaveRecursiveCall();
        }
        else
            result = NULL;
    }
    if (view.obj != NULL)
        PyBuffer_Release(&view);
    if (result != NULL && result != NOT_FAST && r.p != r.end) {
        Py_DECREF(result);  /* extra bytes: msgpack says how many */
        result = NOT_FAST;
    }
    if (result == NULL) {
        if (!is_fallback_error())
            return NULL;
        PyErr_Clear();
        result = NOT_FAST;
    }
    if (result == NOT_FAST)
        Py_RETURN_NONE;
    return result;
}

/* ------------------------------------------------------------------ to_msgpack / from_msgpack */

/* The struct methods to_msgpack() and from_msgpack(data) with the accelerator in front: a
 * method (binds like a function, called without a bound-method object) that packs with
 * speedups_packb, or reads with the plan, and calls `fallback` (the Python implementation) with
 * the same arguments for anything those do not take. */
typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *plan;      /* from_msgpack: the class's plan; to_msgpack: None */
    PyObject *fallback;  /* the Python function: fallback(self) / fallback(cls, data) */
    Py_ssize_t max_bytes;
    PyObject *bound;     /* from_msgpack: the method bound to the plan's class, once read */
} EntryObject;

static PyObject *
to_msgpack_vectorcall(EntryObject *e, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (nargs == 1 && (kwnames == NULL || PyTuple_GET_SIZE(kwnames) == 0)) {
        PyObject *r = speedups_packb(NULL, args[0]);
        if (r != Py_None)
            return r;
        Py_DECREF(r);
    }
    return PyObject_Vectorcall(e->fallback, args, nargsf, kwnames);
}

static PyObject *
from_msgpack_vectorcall(EntryObject *e, PyObject *const *args, size_t nargsf,
                        PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (nargs == 2 && (kwnames == NULL || PyTuple_GET_SIZE(kwnames) == 0)) {
        Py_ssize_t size = PyObject_Size(args[1]);
        if (size < 0)
            PyErr_Clear();
        else if (size <= e->max_bytes) {
            PyObject *r = plan_unpackb((PlanObject *)e->plan, args, 2);
            if (r != Py_None)
                return r;
            Py_DECREF(r);
        }
    }
    return PyObject_Vectorcall(e->fallback, args, nargsf, kwnames);
}

/* from_msgpack is a classmethod: bound to the class it is read from (the method bound to the
 * plan's own class is made once and kept: ``S.from_msgpack(b)`` then allocates nothing). */
static PyObject *
classmethod_descr_get(PyObject *self, PyObject *obj, PyObject *type)
{
    EntryObject *e = (EntryObject *)self;
    if (type == NULL || type == Py_None)
        type = (PyObject *)Py_TYPE(obj);
    if (e->plan != NULL && e->plan != Py_None && type == ((PlanObject *)e->plan)->cls) {
        if (e->bound == NULL) {
            e->bound = PyMethod_New(self, type);
            if (e->bound == NULL)
                return NULL;
        }
        Py_INCREF(e->bound);
        return e->bound;
    }
    return PyMethod_New(self, type);
}

static PyObject *
entry_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *plan = Py_None, *fallback;
    Py_ssize_t max_bytes = 0;
    EntryObject *e;
    int reading = type->tp_descr_get == classmethod_descr_get;
    if (reading) {
        if (!PyArg_ParseTuple(args, "O!On:FromMsgpack", &PlanType, &plan, &fallback, &max_bytes))
            return NULL;
    }
    else if (!PyArg_ParseTuple(args, "O:ToMsgpack", &fallback))
        return NULL;
    e = (EntryObject *)type->tp_alloc(type, 0);
    if (e == NULL)
        return NULL;
    e->vectorcall = reading ? (vectorcallfunc)from_msgpack_vectorcall
                            : (vectorcallfunc)to_msgpack_vectorcall;
    Py_INCREF(plan);
    e->plan = plan;
    Py_INCREF(fallback);
    e->fallback = fallback;
    e->max_bytes = max_bytes;
    return (PyObject *)e;
}

static int
entry_traverse(EntryObject *e, visitproc visit, void *arg)
{
    Py_VISIT(e->plan);
    Py_VISIT(e->fallback);
    Py_VISIT(e->bound);
    return 0;
}

static int
entry_clear(EntryObject *e)
{
    Py_CLEAR(e->plan);
    Py_CLEAR(e->fallback);
    Py_CLEAR(e->bound);
    return 0;
}

static void
entry_dealloc(EntryObject *e)
{
    PyObject_GC_UnTrack(e);
    entry_clear(e);
    Py_TYPE(e)->tp_free((PyObject *)e);
}

static PyTypeObject ToMsgpackType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "cara.runtime._speedups.ToMsgpack",
    .tp_basicsize = sizeof(EntryObject),
    .tp_dealloc = (destructor)entry_dealloc,
    .tp_vectorcall_offset = offsetof(EntryObject, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_METHOD_DESCRIPTOR
                | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "to_msgpack(): msgpack.packb(self) (the struct is a dict keyed by field number).",
    .tp_traverse = (traverseproc)entry_traverse,
    .tp_clear = (inquiry)entry_clear,
    .tp_descr_get = plan_descr_get,
    .tp_new = entry_new,
};

static PyTypeObject FromMsgpackType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "cara.runtime._speedups.FromMsgpack",
    .tp_basicsize = sizeof(EntryObject),
    .tp_dealloc = (destructor)entry_dealloc,
    .tp_vectorcall_offset = offsetof(EntryObject, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "from_msgpack(data): decode msgpack data (as msgpack.packb(s) wrote it) into "
              "this class.",
    .tp_traverse = (traverseproc)entry_traverse,
    .tp_clear = (inquiry)entry_clear,
    .tp_descr_get = classmethod_descr_get,
    .tp_new = entry_new,
};

/* ------------------------------------------------------------------ which() */

/* which(self): the name of the active member of a struct's unnamed union; the member with
 * discriminant 0 when none is set. Binds like a function (it is the class's ``which``). */
typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *keys;   /* tuple: field numbers of the members, discriminant order */
    PyObject *names;  /* tuple: their names */
} WhichObject;

static PyObject *
which_vectorcall(WhichObject *w, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t i, n = PyTuple_GET_SIZE(w->keys);
    PyObject *self;
    if (PyVectorcall_NARGS(nargsf) != 1 || (kwnames != NULL && PyTuple_GET_SIZE(kwnames))) {
        PyErr_SetString(PyExc_TypeError, "which() takes no arguments");
        return NULL;
    }
    self = args[0];
    if (!PyDict_Check(self)) {
        PyErr_SetString(PyExc_TypeError, "which() needs a struct");
        return NULL;
    }
    for (i = 1; i < n; i++) {
        int has = PyDict_Contains(self, PyTuple_GET_ITEM(w->keys, i));
        if (has < 0)
            return NULL;
        if (has) {
            PyObject *name = PyTuple_GET_ITEM(w->names, i);
            Py_INCREF(name);
            return name;
        }
    }
    {
        PyObject *name = PyTuple_GET_ITEM(w->names, 0);
        Py_INCREF(name);
        return name;
    }
}

static PyObject *
which_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *keys, *names;
    WhichObject *w;
    if (!PyArg_ParseTuple(args, "O!O!:Which", &PyTuple_Type, &keys, &PyTuple_Type, &names))
        return NULL;
    if (PyTuple_GET_SIZE(keys) < 1 || PyTuple_GET_SIZE(keys) != PyTuple_GET_SIZE(names)) {
        PyErr_SetString(PyExc_ValueError, "Which: keys and names of one union");
        return NULL;
    }
    w = (WhichObject *)type->tp_alloc(type, 0);
    if (w == NULL)
        return NULL;
    w->vectorcall = (vectorcallfunc)which_vectorcall;
    Py_INCREF(keys);
    w->keys = keys;
    Py_INCREF(names);
    w->names = names;
    return (PyObject *)w;
}

static void
which_dealloc(WhichObject *w)
{
    Py_XDECREF(w->keys);
    Py_XDECREF(w->names);
    Py_TYPE(w)->tp_free((PyObject *)w);
}

static PyTypeObject WhichType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "cara.runtime._speedups.Which",
    .tp_basicsize = sizeof(WhichObject),
    .tp_dealloc = (destructor)which_dealloc,
    .tp_vectorcall_offset = offsetof(WhichObject, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_METHOD_DESCRIPTOR | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "which(): the name of the active member of the struct's unnamed union.",
    .tp_descr_get = plan_descr_get,
    .tp_new = which_new,
};

/* ------------------------------------------------------------------ the Plan type */

static void
clear_fields(PlanObject *plan)
{
    Py_ssize_t i;
    if (plan->fields == NULL)
        return;
    for (i = 0; i < plan->nfields; i++) {
        Field *f = &plan->fields[i];
#define CLEAR_MEMBER(member) Py_CLEAR(f->member);
        FIELD_OBJECTS(CLEAR_MEMBER)
#undef CLEAR_MEMBER
    }
}

static int
plan_traverse(PlanObject *plan, visitproc visit, void *arg)
{
    Py_ssize_t i;
    Py_VISIT(plan->cls);
    Py_VISIT(plan->py_init);
    Py_VISIT(plan->py_convert);
    Py_VISIT(plan->py_create);
    if (plan->fields != NULL) {
        for (i = 0; i < plan->nfields; i++) {
            Field *f = &plan->fields[i];
#define VISIT_MEMBER(member) Py_VISIT(f->member);
            FIELD_OBJECTS(VISIT_MEMBER)
#undef VISIT_MEMBER
        }
    }
    return 0;
}

static int
plan_clear(PlanObject *plan)
{
    Py_CLEAR(plan->cls);
    Py_CLEAR(plan->py_init);
    Py_CLEAR(plan->py_convert);
    Py_CLEAR(plan->py_create);
    clear_fields(plan);
    return 0;
}

static void
plan_dealloc(PlanObject *plan)
{
    PyObject_GC_UnTrack(plan);
    plan_clear(plan);
    PyMem_Free(plan->fields);
    Py_TYPE(plan)->tp_free((PyObject *)plan);
}

/* The lookup tables of an enum field: by_value, the members numbered 0, 1, ... as vmap maps
 * them (a Cap'n Proto enum numbers its enumerants so: all of them), and for a small nmap, its
 * keys and members side by side (looked through by identity before nmap itself). */
#define ENUM_BY_VALUE 1024
#define ENUM_NAMES 16

static int
enum_tables(Field *f)
{
    Py_ssize_t k, pos = 0, j = 0;
    PyObject *key, *member;
    for (k = 0; k < ENUM_BY_VALUE; k++) {
        key = PyLong_FromSsize_t(k);
        if (key == NULL)
            return -1;
        member = PyDict_GetItemWithError(f->vmap, key);
        Py_DECREF(key);
        if (member == NULL) {
            if (PyErr_Occurred())
                return -1;
            break;
        }
    }
    if (k > 0) {
        f->by_value = PyTuple_New(k);
        if (f->by_value == NULL)
            return -1;
        for (j = 0; j < k; j++) {
            key = PyLong_FromSsize_t(j);
            if (key == NULL)
                return -1;
            member = PyDict_GetItemWithError(f->vmap, key);
            Py_DECREF(key);
            if (member == NULL) {
                if (!PyErr_Occurred())
                    PyErr_SetString(PyExc_RuntimeError, "enum map changed");
                return -1;
            }
            Py_INCREF(member);
            PyTuple_SET_ITEM(f->by_value, j, member);
        }
    }
    if (PyDict_GET_SIZE(f->nmap) <= ENUM_NAMES) {
        Py_ssize_t size = PyDict_GET_SIZE(f->nmap);
        f->names = PyTuple_New(size);
        f->named = PyTuple_New(size);
        if (f->names == NULL || f->named == NULL)
            return -1;
        j = 0;
        while (j < size && PyDict_Next(f->nmap, &pos, &key, &member)) {
            Py_INCREF(key);
            PyTuple_SET_ITEM(f->names, j, key);
            Py_INCREF(member);
            PyTuple_SET_ITEM(f->named, j, member);
            j++;
        }
        if (j != size) {
            PyErr_SetString(PyExc_RuntimeError, "enum map changed");
            return -1;
        }
    }
    return 0;
}

/* Plan(cls, fields, init, convert, create); fields: tuples of
 * (number, name, kind, in_union, by_name, lo, hi, limit, cls, vmap, nmap, conv, elem_cls,
 * elem_conv). */
static PyObject *
plan_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *cls, *fields, *init, *convert, *create;
    PlanObject *plan;
    Py_ssize_t i, n;
    static char *names[] = {"cls", "fields", "init", "convert", "create", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!O!OOO:Plan", names, &PyType_Type, &cls,
                                     &PyTuple_Type, &fields, &init, &convert, &create))
        return NULL;
    if (!PyType_IsSubtype((PyTypeObject *)cls, &PyDict_Type)) {
        PyErr_SetString(PyExc_TypeError, "Plan: cls must be a dict subclass");
        return NULL;
    }
    n = PyTuple_GET_SIZE(fields);
    plan = (PlanObject *)type->tp_alloc(type, 0);
    if (plan == NULL)
        return NULL;
    plan->fields = PyMem_Calloc(n ? n : 1, sizeof(Field));
    if (plan->fields == NULL) {
        Py_DECREF(plan);
        return PyErr_NoMemory();
    }
    plan->nfields = n;
    plan->vectorcall = (vectorcallfunc)plan_vectorcall;
    Py_INCREF(cls);
    plan->cls = cls;
    Py_INCREF(init);
    plan->py_init = init;
    Py_INCREF(convert);
    plan->py_convert = convert;
    Py_INCREF(create);
    plan->py_create = create;
    for (i = 0; i < n; i++) {
        Field *f = &plan->fields[i];
        PyObject *spec = PyTuple_GET_ITEM(fields, i);
        if (!PyArg_ParseTuple(spec, "O!UiiiLKdOOOOOO:Plan field", &PyLong_Type, &f->key,
                              &f->name, &f->kind, &f->in_union, &f->by_name, &f->lo, &f->hi, &f->limit,
                              &f->cls, &f->vmap, &f->nmap, &f->conv, &f->elem_cls,
                              &f->elem_conv)) {
            memset(f, 0, sizeof(Field));
            Py_DECREF(plan);
            return NULL;
        }
#define REFERENCE_MEMBER(member) Py_XINCREF(f->member);
        FIELD_OBJECTS(REFERENCE_MEMBER)
#undef REFERENCE_MEMBER
        PyUnicode_InternInPlace(&f->name);
        f->hash = PyObject_Hash(f->key);
        if (f->hash == -1) {
            Py_DECREF(plan);
            return NULL;
        }
        if (f->kind < K_ANY || f->kind > K_OTHER
            || (f->kind == K_ENUM && (!PyDict_Check(f->vmap) || !PyDict_Check(f->nmap)))
            || ((f->kind == K_STRUCT || f->kind == K_LIST) && !PyType_Check(f->cls))
            || (f->kind == K_LIST && f->elem_cls != Py_None && !PyType_Check(f->elem_cls))
            || (f->kind == K_LIST && !PyType_IsSubtype((PyTypeObject *)f->cls, &PyList_Type))) {
            PyErr_Format(PyExc_ValueError, "Plan: bad field spec %R", spec);
            Py_DECREF(plan);
            return NULL;
        }
        if (f->in_union)
            plan->nunion++;
        if (f->kind == K_ENUM && enum_tables(f) < 0) {
            Py_DECREF(plan);
            return NULL;
        }
    }
    plan->dense = 1;
    for (i = 0; i < n; i++) {
        if (PyLong_AsSsize_t(plan->fields[i].key) != i) {
            PyErr_Clear();
            plan->dense = 0;
        }
    }
    return (PyObject *)plan;
}

static PyMethodDef plan_methods[] = {
    {"convert", (PyCFunction)plan_convert, METH_O,
     "convert($self, value, /)\n--\n\n"
     "The value as an instance of the class (the class's _cara_convert_)."},
    {"create", (PyCFunction)(void (*)(void))plan_create, METH_FASTCALL | METH_KEYWORDS,
     "create($self, /, *values, **fields)\n--\n\n"
     "A new instance: values in field order, or fields by name (the class's Create)."},
    {"unpackb", (PyCFunction)(void (*)(void))plan_unpackb, METH_FASTCALL,
     "unpackb($self, cls, data, /)\n--\n\n"
     "cls(msgpack.unpackb(data, strict_map_key=False)) read straight into instances, or None\n"
     "(then the caller takes that Python path: other shapes, errors)."},
    {NULL, NULL, 0, NULL}
};

static PyTypeObject PlanType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "cara.runtime._speedups.Plan",
    .tp_basicsize = sizeof(PlanObject),
    .tp_dealloc = (destructor)plan_dealloc,
    .tp_vectorcall_offset = offsetof(PlanObject, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_METHOD_DESCRIPTOR
                | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "How one struct class checks its fields (see cara/runtime/_speedups.c).",
    .tp_traverse = (traverseproc)plan_traverse,
    .tp_clear = (inquiry)plan_clear,
    .tp_methods = plan_methods,
    .tp_descr_get = plan_descr_get,
    .tp_new = plan_new,
};

static PyObject *
set_invalid(PyObject *module, PyObject *cls)
{
    if (!PyType_Check(cls) || !PyType_IsSubtype((PyTypeObject *)cls,
                                                (PyTypeObject *)PyExc_Exception)) {
        PyErr_SetString(PyExc_TypeError, "set_invalid: an exception class is needed");
        return NULL;
    }
    Py_INCREF(cls);
    Py_XSETREF(Invalid, cls);
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"set_invalid", set_invalid, METH_O,
     "set_invalid(cls): the exception that makes the accelerator defer to Python."},
    {"packb", speedups_packb, METH_O,
     "packb(value, /)\n--\n\n"
     "msgpack.Packer().pack(value) for plain values, structs and typed lists; None for\n"
     "anything else (then the caller packs with msgpack)."},
    {NULL, NULL, 0, NULL}
};

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT, "_speedups",
    "Optional accelerator for cara's struct construction (see the C source).", -1,
    module_methods
};

static int
add_type(PyObject *m, const char *name, PyTypeObject *type)
{
    Py_INCREF(type);
    if (PyModule_AddObject(m, name, (PyObject *)type) < 0) {
        Py_DECREF(type);
        return -1;
    }
    return 0;
}

PyMODINIT_FUNC
PyInit__speedups(void)
{
    PyObject *m;
    ListBaseType.tp_base = &PyList_Type;
    StructBaseType.tp_base = &PyDict_Type;
    if (PyType_Ready(&ListBaseType) < 0 || PyType_Ready(&StructBaseType) < 0
            || PyType_Ready(&PlanType) < 0
            || PyType_Ready(&WhichType) < 0
            || PyType_Ready(&FieldType) < 0 || PyType_Ready(&ToMsgpackType) < 0
            || PyType_Ready(&FromMsgpackType) < 0)
        return NULL;
    plan_attr = PyUnicode_InternFromString("_cara_plan_");
    o_attr = PyUnicode_InternFromString("_o");
    set_name = PyUnicode_InternFromString("_cara_set_");
    unset_name = PyUnicode_InternFromString("_cara_unset_");
    items_name = PyUnicode_InternFromString("items");
    gt_name = PyUnicode_InternFromString("__gt__");
    getitem_name = PyUnicode_InternFromString("__getitem__");
    empty_tuple = PyTuple_New(0);
    if (plan_attr == NULL || o_attr == NULL || set_name == NULL || unset_name == NULL
            || items_name == NULL || gt_name == NULL || getitem_name == NULL
            || empty_tuple == NULL)
        return NULL;
    dict_subscript = PyDict_Type.tp_as_mapping->mp_subscript;
    dict_items_descr = _PyType_Lookup(&PyDict_Type, items_name);  /* borrowed; dict keeps it */
    long_gt_descr = _PyType_Lookup(&PyLong_Type, gt_name);  /* borrowed; int keeps it */
    dict_getitem_descr = _PyType_Lookup(&PyDict_Type, getitem_name);  /* borrowed */
    if (dict_items_descr == NULL || long_gt_descr == NULL || dict_getitem_descr == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "dict.items not found");
        return NULL;
    }
    Invalid = PyExc_ValueError;  /* replaced by set_invalid before any plan is used */
    Py_INCREF(Invalid);
    m = PyModule_Create(&speedups_module);
    if (m == NULL)
        return NULL;
    if (add_type(m, "Plan", &PlanType) < 0 || add_type(m, "Which", &WhichType) < 0
            || add_type(m, "Field", &FieldType) < 0 || add_type(m, "ToMsgpack", &ToMsgpackType) < 0
            || add_type(m, "FromMsgpack", &FromMsgpackType) < 0
            || add_type(m, "ListBase", &ListBaseType) < 0
            || add_type(m, "StructBase", &StructBaseType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
