/* Optional accelerator for struct construction (cara.runtime.struct).
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
 * Nothing here is reachable when the module is not built (CARA_PURE_PYTHON=1 at install time,
 * or no C compiler) or when CARA_PURE_PYTHON=1 is set at run time.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>

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
} Field;

/* Every object a Field holds, for clearing and for the garbage collector. */
#define FIELD_OBJECTS(X) X(key) X(name) X(cls) X(vmap) X(nmap) X(conv) X(elem_cls) \
                         X(elem_conv) X(child)

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *cls;
    PyObject *py_init;      /* generated __init__(self, d=None, /, **kw) */
    PyObject *py_convert;   /* generated convert(value) */
    PyObject *py_create;    /* generated Create(*args, **kw) */
    Py_ssize_t nfields;
    Py_ssize_t nunion;
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

/* How many structs deep one call into this module builds before it hands the whole input to
 * the generated Python code (which calls back in for nested values): the C stack stays small
 * whatever the interpreter's C recursion limit, and the depth at which input is refused as
 * "nested too deeply" is set by Python's recursion limit, as without the accelerator. */
#define MAX_DEPTH 100

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
        if (mode == BY_NUMBER && PyLong_CheckExact(v))
            member = PyDict_GetItemWithError(f->vmap, v);
        else if (mode == BY_NAME && PyUnicode_CheckExact(v))
            member = PyDict_GetItemWithError(f->nmap, v);
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
    case K_LIST: {
        PlanObject *child;
        PyObject *out;
        Py_ssize_t i, n;
        if ((PyObject *)Py_TYPE(v) == f->cls) {
            keep = 1;
            break;
        }
        if (!PyList_CheckExact(v) || f->elem_cls == Py_None)
            break;
        child = plan_of(f->elem_cls, &f->child);
        if (child == NULL)
            break;
        out = PyList_Type.tp_new((PyTypeObject *)f->cls, empty_tuple, NULL);
        if (out == NULL)
            return NULL;
        n = PyList_GET_SIZE(v);
        for (i = 0; i < n && i < PyList_GET_SIZE(v); i++) {
            PyObject *x = PyList_GET_ITEM(v, i);
            PyObject *item;
            int rc;
            Py_INCREF(x);
            item = convert_struct(f->elem_cls, f->elem_conv, &f->child, x, mode, depth);
            Py_DECREF(x);
            if (item == NULL) {
                Py_DECREF(out);
                return NULL;
            }
            rc = PyList_Append(out, item);
            Py_DECREF(item);
            if (rc < 0) {
                Py_DECREF(out);
                return NULL;
            }
        }
        return out;
    }
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
            has = PyDict_Contains(d, f->key);
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
        PyObject *v = PyDict_GetItemWithError(d, f->key);
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
        if (r != v && PyDict_SetItem(self, f->key, r) < 0) {
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

/* The value given for field f by name: from src (a dict) or, when src is NULL, from keyword
 * arguments (values[i] named kwnames[i], matched by identity: keywords written in a call are
 * interned, as are the field names). NULL when not given (with an exception on error). */
static PyObject *
named_value(Field *f, PyObject *src, PyObject *const *values, PyObject *kwnames)
{
    Py_ssize_t j, n;
    if (src != NULL)
        return PyDict_GetItemWithError(src, f->name);
    n = PyTuple_GET_SIZE(kwnames);
    for (j = 0; j < n; j++) {
        if (PyTuple_GET_ITEM(kwnames, j) == f->name)
            return values[j];
    }
    return NULL;
}

/* A new instance from values keyed by field names (see named_value), stored in the schema's
 * field order; NOT_FAST when some name is not a field's (or, for keyword arguments, not
 * matched by identity) or two members of the unnamed union are given. */
static PyObject *
build_named(PlanObject *plan, PyObject *src, PyObject *const *values, PyObject *kwnames,
            int depth)
{
    Py_ssize_t size, found = 0, members = 0, i;
    PyObject *self;
    size = src != NULL ? PyDict_GET_SIZE(src) : PyTuple_GET_SIZE(kwnames);
    if (enter_level(depth))
        return NULL;
    self = new_instance(plan->cls);
    if (self == NULL)
        goto error;
    for (i = 0; i < plan->nfields && found < size; i++) {
        Field *f = &plan->fields[i];
        PyObject *v, *r;
        int rc;
        if (!f->by_name)
            continue;  /* reaches Python's general path (found != size) */
        v = named_value(f, src, values, kwnames);
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
        rc = PyDict_SetItem(self, f->key, r);
        Py_DECREF(r);
        if (rc < 0)
            goto error;
    }
    Py_LeaveRecursiveCall();
    if (found != size || members > 1) {
        Py_DECREF(self);
        return NOT_FAST;
    }
    return self;
error:
    Py_LeaveRecursiveCall();
    Py_XDECREF(self);
    return NULL;
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
    {NULL, NULL, 0, NULL}
};

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT, "_speedups",
    "Optional accelerator for cara's struct construction (see the C source).", -1,
    module_methods
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    PyObject *m;
    if (PyType_Ready(&PlanType) < 0 || PyType_Ready(&WhichType) < 0)
        return NULL;
    plan_attr = PyUnicode_InternFromString("_cara_plan_");
    empty_tuple = PyTuple_New(0);
    if (plan_attr == NULL || empty_tuple == NULL)
        return NULL;
    Invalid = PyExc_ValueError;  /* replaced by set_invalid before any plan is used */
    Py_INCREF(Invalid);
    m = PyModule_Create(&speedups_module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&PlanType);
    if (PyModule_AddObject(m, "Plan", (PyObject *)&PlanType) < 0) {
        Py_DECREF(&PlanType);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&WhichType);
    if (PyModule_AddObject(m, "Which", (PyObject *)&WhichType) < 0) {
        Py_DECREF(&WhichType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
