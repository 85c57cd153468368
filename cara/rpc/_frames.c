/* Optional C fast path of cara frames (cara/rpc/wire_cara.py) for the commonest traffic.
 *
 * Most frames a connection moves are plain calls and their final returns: a call on an
 * imported capability whose params can hold no capability, and the RETURN_FINAL answering it.
 * In Python each costs a handful of frames (proxy, capability, connection, encoding, question),
 * which is most of a call's cost once asyncio's own share is paid. Here:
 *
 *   PlainMethod                      a runtime proxy's method: boxes a one-argument call and
 *                                    sends it with send_plain (else cap.call(), else the
 *                                    Python method it wraps);
 *   send_plain(cap, method, params)  sends such a call and returns its Question, or None when
 *                                    anything is not the plain case (the caller then runs
 *                                    cap.call(), the reference, with nothing done yet);
 *   process(conn, view, limit, deadline, now)
 *                                    is the transport's frame loop (asyncio_transport's
 *                                    _process): it settles a plain final return in place, runs
 *                                    a plain call on a local object (and sends its final return
 *                                    when the handler answers at once), passes a Finish or a
 *                                    Release decoded to conn._receive_control(), and hands
 *                                    every other frame to conn.receive().
 *
 * They only *take* the plain case and decide nothing else: every check happens before the
 * first side effect, so a frame or call they decline goes through the Python path whole, which
 * gives the result or the error with its wording. The Python twins stay the reference;
 * tests/rpc/test_frames_accel.py runs both over the same traffic.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* set by configure() */
static PyObject *Question, *ImportCap, *PipelineCap, *LocalCap, *HOLDS, *ProtocolError, *packb,
    *get_running_loop;
static PyObject *loop_kwnames;
/* send_plain()'s answer for a call made outside the connection's loop thread */
static PyObject *FOREIGN;

static PyObject *s_resolution, *s_entry, *s_conn, *s_closed, *s_fast, *s_timeout, *s_param_cls,
    *s_interface_id, *s_index, *s_questions, *s_free_questions, *s_next_question, *s_loop,
    *s_send_call, *s_called, *s_id, *s_result_cls, *s_done, *s_set_result, *s_set_exception,
    *s_receive, *s_plan, *s_unpackb, *s_unbox, *s_wire, *s_max_objects, *s_thread_id,
    *s_exports, *s_cap, *s_resolved, *s_running, *s_max_answers, *s_queued, *s_answers,
    *s_impl, *s_handler, *s_method_attr, *s_run, *s_handler_failed, *s_handled, *s_send,
    *s_cache, *s_direct, *s_unbox_field;

#define CALL 0x00
#define FINISH 0x03
#define RELEASE 0x04
#define RETURN_FINAL 0x0b

/* ------------------------------------------------------------------ msgpack helpers */

/* Bytes msgpack's packer uses for the unsigned int v (the smallest form). */
static int
uint_size(uint64_t v)
{
    if (v < 0x80) return 1;
    if (v <= 0xff) return 2;
    if (v <= 0xffff) return 3;
    if (v <= 0xffffffffULL) return 5;
    return 9;
}

static unsigned char *
put_uint(unsigned char *p, uint64_t v)
{
    if (v < 0x80) { *p++ = (unsigned char)v; return p; }
    if (v <= 0xff) { *p++ = 0xcc; *p++ = (unsigned char)v; return p; }
    if (v <= 0xffff) { *p++ = 0xcd; *p++ = (unsigned char)(v >> 8); *p++ = (unsigned char)v;
                       return p; }
    if (v <= 0xffffffffULL) {
        *p++ = 0xce;
        for (int s = 24; s >= 0; s -= 8) *p++ = (unsigned char)(v >> s);
        return p;
    }
    *p++ = 0xcf;
    for (int s = 56; s >= 0; s -= 8) *p++ = (unsigned char)(v >> s);
    return p;
}

/* Read an unsigned int in any msgpack form; 0 when it is not one (or runs past end). */
static int
read_uint(const unsigned char **pp, const unsigned char *end, uint64_t *out)
{
    const unsigned char *p = *pp;
    int width;
    if (p >= end) return 0;
    if (*p < 0x80) { *out = *p; *pp = p + 1; return 1; }
    switch (*p) {
    case 0xcc: width = 1; break;
    case 0xcd: width = 2; break;
    case 0xce: width = 4; break;
    case 0xcf: width = 8; break;
    default: return 0;
    }
    if (end - p < 1 + width) return 0;
    uint64_t v = 0;
    for (int i = 1; i <= width; i++) v = (v << 8) | p[i];
    *out = v;
    *pp = p + 1 + width;
    return 1;
}

/* An attribute as an unsigned 64-bit value; 0 (no error set) when it is not a plain int in
 * range. */
static int
attr_uint(PyObject *obj, PyObject *name, uint64_t max, uint64_t *out)
{
    PyObject *v = PyObject_GetAttr(obj, name);
    if (v == NULL) { PyErr_Clear(); return 0; }
    int ok = 0;
    if (PyLong_CheckExact(v)) {
        unsigned long long u = PyLong_AsUnsignedLongLong(v);
        if (u == (unsigned long long)-1 && PyErr_Occurred()) PyErr_Clear();
        else if (u <= max) { *out = u; ok = 1; }
    }
    Py_DECREF(v);
    return ok;
}

/* Whether obj.name is exactly `expected` (an identity test); -1 on error. */
static int
attr_is(PyObject *obj, PyObject *name, PyObject *expected)
{
    PyObject *v = PyObject_GetAttr(obj, name);
    if (v == NULL) return -1;
    int r = v == expected;
    Py_DECREF(v);
    return r;
}

/* Whether obj.name is false (bool(obj.name) is False); -1 on error. */
static int
attr_false(PyObject *obj, PyObject *name)
{
    PyObject *v = PyObject_GetAttr(obj, name);
    if (v == NULL) return -1;
    int t = PyObject_IsTrue(v);
    Py_DECREF(v);
    return t < 0 ? -1 : !t;
}

/* ------------------------------------------------------------------ sending a frame */

static PyObject *s_send_framed;

/* The frame's 4-byte big-endian length at p; returns where the frame goes. */
static unsigned char *
put_length(unsigned char *p, Py_ssize_t size)
{
    p[0] = (unsigned char)(size >> 24);
    p[1] = (unsigned char)(size >> 16);
    p[2] = (unsigned char)(size >> 8);
    p[3] = (unsigned char)size;
    return p + 4;
}

/* Send `framed` (a frame behind its 4-byte length) as conn.<send>(frame) would: through
 * conn._send_framed when the transport frames that way (the asyncio one), else through
 * conn.<send> with the frame alone. */
static PyObject *
send_framed(PyObject *conn, PyObject *send, PyObject *framed)
{
    PyObject *by_transport = PyObject_GetAttr(conn, s_send_framed);
    if (by_transport == NULL) return NULL;
    if (by_transport != Py_None) {
        PyObject *sent = PyObject_CallOneArg(by_transport, framed);
        Py_DECREF(by_transport);
        return sent;
    }
    Py_DECREF(by_transport);
    PyObject *frame = PyBytes_FromStringAndSize(PyBytes_AS_STRING(framed) + 4,
                                                PyBytes_GET_SIZE(framed) - 4);
    if (frame == NULL) return NULL;
    PyObject *sent = PyObject_CallMethodOneArg(conn, send, frame);
    Py_DECREF(frame);
    return sent;
}

/* ------------------------------------------------------------------ configure */

/* A Question's slots (connection.py: Question.__slots__), read and written in place: where
 * each lives in the object. A question made by send_plain has every one set. */
static Py_ssize_t off_method, off_results, off_unbox, off_conn, off_finished,
    off_param_exports, off_pipes, off_qid, off_returned, off_timer;
static PyObject *NO_PIPES;  /* connection._NO_PIPES: a question's pipes before it has any */

#define SLOT(obj, off) (*(PyObject **)((char *)(obj) + (off)))

static void
set_slot(PyObject *obj, Py_ssize_t off, PyObject *value)
{
    PyObject *old = SLOT(obj, off);
    SLOT(obj, off) = Py_NewRef(value);
    Py_XDECREF(old);
}

static int
slot_offset(PyObject *type, const char *name, Py_ssize_t *out)
{
    PyObject *d = PyDict_GetItemString(((PyTypeObject *)type)->tp_dict, name);
    if (d == NULL || !Py_IS_TYPE(d, &PyMemberDescr_Type)
            || ((PyMemberDescrObject *)d)->d_member->type != T_OBJECT_EX) {
        PyErr_Format(PyExc_TypeError, "Question.%s must be a slot", name);
        return -1;
    }
    *out = ((PyMemberDescrObject *)d)->d_member->offset;
    return 0;
}

static PyObject *
frames_configure(PyObject *module, PyObject *args)
{
    PyObject *q, *ic, *pc, *lc, *holds, *perr, *pk, *no_pipes, *grl;
    if (!PyArg_ParseTuple(args, "O!OOOO!OOO!O:configure", &PyType_Type, &q, &ic, &pc, &lc,
                          &PyDict_Type, &holds, &perr, &pk, &PyDict_Type, &no_pipes, &grl))
        return NULL;
    if (slot_offset(q, "_method", &off_method) < 0 || slot_offset(q, "_results", &off_results) < 0
            || slot_offset(q, "_unbox", &off_unbox) < 0 || slot_offset(q, "conn", &off_conn) < 0
            || slot_offset(q, "finished", &off_finished) < 0
            || slot_offset(q, "param_exports", &off_param_exports) < 0
            || slot_offset(q, "pipes", &off_pipes) < 0 || slot_offset(q, "qid", &off_qid) < 0
            || slot_offset(q, "returned", &off_returned) < 0
            || slot_offset(q, "timer", &off_timer) < 0)
        return NULL;
    Py_XSETREF(NO_PIPES, Py_NewRef(no_pipes));
    Py_XSETREF(get_running_loop, Py_NewRef(grl));
    Py_XSETREF(LocalCap, Py_NewRef(lc));
    Py_XSETREF(Question, Py_NewRef(q));
    Py_XSETREF(ImportCap, Py_NewRef(ic));
    Py_XSETREF(PipelineCap, Py_NewRef(pc));
    Py_XSETREF(HOLDS, Py_NewRef(holds));
    Py_XSETREF(ProtocolError, Py_NewRef(perr));
    Py_XSETREF(packb, Py_NewRef(pk));
    Py_RETURN_NONE;
}

#define READY() (Question != NULL)

static PyObject *one;  /* the int 1 */

/* The raised exception as an instance (a new reference), the error indicator cleared: what an
 * `except BaseException as exc` gets. */
static PyObject *
take_exception(void)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL && value != NULL) PyException_SetTraceback(value, tb);
    Py_XDECREF(type);
    Py_XDECREF(tb);
    return value;
}

/* Question q fails with the raised exception (q.set_exception(exc)), as an `except` clause of
 * the Python path would: `any` for `except BaseException`, else only an Exception is caught
 * and anything else stays raised. 0, or -1 with an exception raised. */
static int
fail_question(PyObject *q, int any)
{
    if (!any && !PyErr_ExceptionMatches(PyExc_Exception)) return -1;
    PyObject *exc = take_exception();
    if (exc == NULL) return -1;
    PyObject *set = PyObject_CallMethodOneArg(q, s_set_exception, exc);
    Py_DECREF(exc);
    if (set == NULL) return -1;
    Py_DECREF(set);
    return 0;
}

/* ------------------------------------------------------------------ sending a plain call */

/* Drop question q (id qid) from conn's table, as Connection._drop_question does. */
static int
drop_question(PyObject *conn, PyObject *questions, PyObject *qid, PyObject *q)
{
    PyObject *found = PyDict_GetItemWithError(questions, qid);
    if (found == NULL) return PyErr_Occurred() ? -1 : 0;
    if (found != q) return 0;
    if (PyDict_DelItem(questions, qid) < 0) return -1;
    PyObject *free_ids = PyObject_GetAttr(conn, s_free_questions);
    if (free_ids == NULL) return -1;
    int r = PyList_Check(free_ids) ? PyList_Append(free_ids, qid) : 0;
    Py_DECREF(free_ids);
    return r;
}

/* ------------------------------------------------------------------ the running loop */

/* asyncio._get_running_loop() makes a getpid() system call on Python 3.11 (it refuses a loop
 * inherited through fork), and a call made on a capability of this process asks it once or
 * twice. running_loop() answers the same from the loop it last saw (a weak reference): that
 * loop is still the one running in this thread while its _thread_id (set by run_forever for
 * as long as it runs) names this thread. A fork forgets it (forget_loop, registered with
 * os.register_at_fork by cara.rpc.accel), as asyncio's pid check would. */
static PyObject *seen_loop;  /* weakref to the loop last returned, or NULL */

static int
ask_asyncio_ready(void)
{
    if (get_running_loop != NULL) return 0;
    PyObject *asyncio = PyImport_ImportModule("asyncio");
    if (asyncio == NULL) return -1;
    get_running_loop = PyObject_GetAttrString(asyncio, "_get_running_loop");
    Py_DECREF(asyncio);
    return get_running_loop == NULL ? -1 : 0;
}

/* The running loop of this thread (new reference), None if none, NULL on error. */
static PyObject *
running_loop(void)
{
    if (seen_loop != NULL) {
        PyObject *loop;
#if PY_VERSION_HEX >= 0x030D0000
        if (PyWeakref_GetRef(seen_loop, &loop) < 0) {
            PyErr_Clear();
            loop = NULL;
        }
#else
        loop = PyWeakref_GetObject(seen_loop);
        loop = loop == Py_None ? NULL : Py_NewRef(loop);
#endif
        if (loop != NULL) {
            PyObject *tid = PyObject_GetAttr(loop, s_thread_id);
            int here = 0;
            if (tid == NULL) {
                PyErr_Clear();
            } else {
                if (PyLong_CheckExact(tid)) {
                    unsigned long ident = PyLong_AsUnsignedLong(tid);
                    if (ident == (unsigned long)-1 && PyErr_Occurred()) PyErr_Clear();
                    else here = ident == PyThread_get_thread_ident();
                }
                Py_DECREF(tid);
            }
            if (here) return loop;
            Py_DECREF(loop);
        }
    }
    if (ask_asyncio_ready() < 0) return NULL;
    PyObject *loop = PyObject_CallNoArgs(get_running_loop);
    if (loop != NULL && loop != Py_None) {
        PyObject *ref = PyWeakref_NewRef(loop, NULL);
        if (ref == NULL) PyErr_Clear();  /* (a loop that takes no weak reference: ask) */
        else Py_XSETREF(seen_loop, ref);
    }
    return loop;
}

static PyObject *
frames_running_loop(PyObject *module, PyObject *unused)
{
    return running_loop();
}

static PyObject *
frames_forget_loop(PyObject *module, PyObject *unused)
{
    Py_CLEAR(seen_loop);
    Py_RETURN_NONE;
}

/* Whether connection conn's loop runs in this thread: 1 yes, 0 no, -1 error. What
 * check_loop asks, without asyncio._get_running_loop()'s getpid() per call (Python 3.11). */
static int
on_loop_thread(PyObject *conn)
{
    PyObject *loop = PyObject_GetAttr(conn, s_loop);
    if (loop == NULL) return -1;
    PyObject *tid = PyObject_GetAttr(loop, s_thread_id);
    if (tid == NULL) {  /* a loop that does not say (uvloop's): the running loop, asked */
        PyErr_Clear();
        PyObject *running = running_loop();
        int r = running == loop;
        Py_XDECREF(running);
        Py_DECREF(loop);
        return running == NULL ? -1 : r;
    }
    Py_DECREF(loop);
    unsigned long ident = PyLong_Check(tid) ? PyLong_AsUnsignedLong(tid) : 0;
    Py_DECREF(tid);
    if (ident == (unsigned long)-1 && PyErr_Occurred()) PyErr_Clear();
    return ident != 0 && ident == PyThread_get_thread_ident();
}

/* send_plain(cap, method, params): Connection.send_call for a call on an imported capability
 * whose params type holds no capability, on a connection using stock cara frames with no
 * default timeout. Returns the Question, or None (nothing done) for anything else. */
static PyObject *
send_plain(PyObject *cap, PyObject *method, PyObject *params)
{
    PyObject *conn = NULL, *frame_params = NULL, *questions = NULL, *qid = NULL, *q = NULL;
    PyObject *frame = NULL, *sent = NULL;
    Py_INCREF(cap);
    /* follow resolutions (PipelineCap.call / ImportCap.call do the same) */
    for (int hops = 0;; hops++) {
        PyTypeObject *t = Py_TYPE(cap);
        if (hops > 64 || ((PyObject *)t != ImportCap && (PyObject *)t != PipelineCap))
            goto decline;
        PyObject *res = PyObject_GetAttr(cap, s_resolution);
        if (res == NULL) goto error;
        if (res == Py_None) {
            Py_DECREF(res);
            if ((PyObject *)t != ImportCap) goto decline;
            break;
        }
        Py_SETREF(cap, res);
    }
    int r = attr_is(cap, s_entry, Py_None);
    if (r != 0) { if (r < 0) goto error; goto decline; }  /* released: Python says so */
    conn = PyObject_GetAttr(cap, s_conn);
    if (conn == NULL) goto error;
    if ((r = attr_is(conn, s_fast, Py_True)) != 1) { if (r < 0) goto error; goto decline; }
    /* on the connection's loop, running in this thread; else the Python path checks */
    if ((r = on_loop_thread(conn)) != 1) { if (r < 0) goto error; goto foreign; }
    if ((r = attr_is(conn, s_closed, Py_False)) != 1) { if (r < 0) goto error; goto decline; }
    if ((r = attr_is(conn, s_timeout, Py_None)) != 1) { if (r < 0) goto error; goto decline; }
    uint64_t target, iid, mid, next;
    if (!attr_uint(cap, s_id, 0xffffffffULL, &target)
            || !attr_uint(method, s_interface_id, UINT64_MAX, &iid)
            || !attr_uint(method, s_index, 0xffff, &mid))
        goto decline;
    {
        PyObject *param_cls = PyObject_GetAttr(method, s_param_cls);
        if (param_cls == NULL) goto error;
        PyObject *holds = PyDict_GetItemWithError(HOLDS, param_cls);
        Py_DECREF(param_cls);
        if (holds != Py_False) { if (PyErr_Occurred()) goto error; goto decline; }
    }
    frame_params = PyObject_CallOneArg(packb, params);
    if (frame_params == NULL) goto error;
    if (!PyBytes_CheckExact(frame_params)) goto decline;  /* None: msgpack's packer decides */
    questions = PyObject_GetAttr(conn, s_questions);
    if (questions == NULL) goto error;
    if (!PyDict_CheckExact(questions)) goto decline;

    /* ---- from here on, the call is ours: the question id */
    {
        PyObject *free_ids = PyObject_GetAttr(conn, s_free_questions);
        if (free_ids == NULL) goto error;
        Py_ssize_t n = PyList_Check(free_ids) ? PyList_GET_SIZE(free_ids) : -1;
        if (n > 0) {
            qid = PyList_GET_ITEM(free_ids, n - 1);
            Py_INCREF(qid);
            r = PyList_SetSlice(free_ids, n - 1, n, NULL);
            Py_DECREF(free_ids);
            if (r < 0) goto error;
        }
        else {
            Py_DECREF(free_ids);
            qid = PyObject_GetAttr(conn, s_next_question);
            if (qid == NULL) goto error;
            PyObject *after = PyNumber_Add(qid, one);
            if (after == NULL) goto error;
            r = PyObject_SetAttr(conn, s_next_question, after);
            Py_DECREF(after);
            if (r < 0) goto error;
        }
    }
    next = PyLong_AsUnsignedLongLong(qid);
    if (next == (uint64_t)-1 && PyErr_Occurred()) goto error;
    {
        PyObject *loop = PyObject_GetAttr(conn, s_loop);
        if (loop == NULL) goto error;
        q = PyObject_Vectorcall(Question, &loop, 0, loop_kwnames);
        Py_DECREF(loop);
        if (q == NULL) goto error;
    }
    if (Py_TYPE(q) != (PyTypeObject *)Question) {
        PyErr_SetString(PyExc_TypeError, "Question() made another type");
        goto error;
    }
    /* (Connection._new_question's values, in the slots of the new question) */
    set_slot(q, off_conn, conn);
    set_slot(q, off_qid, qid);
    set_slot(q, off_method, method);
    set_slot(q, off_unbox, Py_True);
    set_slot(q, off_results, Py_None);
    set_slot(q, off_returned, Py_False);
    set_slot(q, off_finished, Py_False);
    set_slot(q, off_timer, Py_None);
    set_slot(q, off_pipes, NO_PIPES);
    set_slot(q, off_param_exports, Py_None);
    if (PyDict_SetItem(questions, qid, q) < 0)
        goto error;
    if (PyObject_SetAttr(cap, s_called, Py_True) < 0) goto error;

    /* ---- the frame: [CALL, qid, target, iid, mid, params, []] */
    {
        Py_ssize_t psize = PyBytes_GET_SIZE(frame_params);
        Py_ssize_t size = 2 + uint_size(next) + uint_size(target) + uint_size(iid)
            + uint_size(mid) + psize + 1;
        frame = PyBytes_FromStringAndSize(NULL, 4 + size);
        if (frame == NULL) goto error;
        unsigned char *p = put_length((unsigned char *)PyBytes_AS_STRING(frame), size);
        *p++ = 0x97;
        *p++ = CALL;
        p = put_uint(p, next);
        p = put_uint(p, target);
        p = put_uint(p, iid);
        p = put_uint(p, mid);
        memcpy(p, PyBytes_AS_STRING(frame_params), psize);
        p[psize] = 0x90;
    }
    sent = send_framed(conn, s_send_call, frame);
    if (sent == NULL) {
        /* as send_call: the question is dropped and fails with what the transport raised */
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        r = drop_question(conn, questions, qid, q);
        if (r < 0) {
            Py_XDECREF(type);
            Py_XDECREF(value);
            Py_XDECREF(tb);
            goto error;
        }
        PyErr_Restore(type, value, tb);
        if (fail_question(q, 1) < 0) goto error;
    }
    Py_XDECREF(sent);
    Py_DECREF(frame);
    Py_DECREF(qid);
    Py_DECREF(questions);
    Py_DECREF(frame_params);
    Py_DECREF(conn);
    Py_DECREF(cap);
    return q;

decline:
    Py_XDECREF(frame_params);
    Py_XDECREF(questions);
    Py_XDECREF(conn);
    Py_DECREF(cap);
    Py_RETURN_NONE;

foreign:
    Py_DECREF(conn);
    Py_DECREF(cap);
    return Py_NewRef(FOREIGN);

error:
    if (q != NULL && questions != NULL && qid != NULL) {
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        if (drop_question(conn, questions, qid, q) < 0) PyErr_Clear();
        PyErr_Restore(type, value, tb);
    }
    Py_XDECREF(q);
    Py_XDECREF(qid);
    Py_XDECREF(frame);
    Py_XDECREF(frame_params);
    Py_XDECREF(questions);
    Py_XDECREF(conn);
    Py_DECREF(cap);
    return NULL;
}

static PyObject *
frames_send_plain(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "send_plain(cap, method, params)");
        return NULL;
    }
    if (!READY()) Py_RETURN_NONE;
    PyObject *q = send_plain(args[0], args[1], args[2]);
    if (q == FOREIGN) {  /* (the caller has checked its loop: cap.call() decides) */
        Py_DECREF(q);
        Py_RETURN_NONE;
    }
    return q;
}

/* ------------------------------------------------------------------ proxy methods */

/* PlainMethod(fallback, spec, method_of, positional_box): a runtime proxy class's method
 * (proxies._runtime_proxy_method's `method`, which is `fallback`) that sends a call with one
 * positional argument itself: boxed as {number: arg} by the params class's converter
 * (positional_box(spec), asked once), sent by send_plain(), else by cap.call() on a running
 * loop. Anything else (keywords, other counts, a call from outside the connection's loop
 * thread or with no loop running, a value the converter refuses) is fallback's, which gives
 * the result or the error with its wording. */
typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *fallback, *spec, *method_of, *positional_box;
    PyObject *method;   /* method_of(spec), once asked */
    PyObject *box;      /* positional_box(spec): (convert, number) or None, once asked */
    int asked;
} PlainMethodObject;

static PyObject *s_cara_rpc_cap, *s_call;

static PyObject *
plain_method_call(PlainMethodObject *pm, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (nargs != 2 || (kwnames != NULL && PyTuple_GET_SIZE(kwnames)) || !READY())
        goto fallback;
    if (!pm->asked) {
        PyObject *m = PyObject_CallOneArg(pm->method_of, pm->spec);
        if (m == NULL) return NULL;
        PyObject *b = PyObject_CallOneArg(pm->positional_box, pm->spec);
        if (b == NULL) { Py_DECREF(m); return NULL; }
        if (b != Py_None && !(PyTuple_CheckExact(b) && PyTuple_GET_SIZE(b) == 2)) {
            Py_DECREF(m);
            Py_DECREF(b);
            PyErr_SetString(PyExc_TypeError, "positional_box() must give (convert, number)");
            return NULL;
        }
        pm->method = m;
        pm->box = b;
        pm->asked = 1;
    }
    if (pm->box == Py_None) goto fallback;
    PyObject *data = PyDict_New();
    if (data == NULL) return NULL;
    if (PyDict_SetItem(data, PyTuple_GET_ITEM(pm->box, 1), args[1]) < 0) {
        Py_DECREF(data);
        return NULL;
    }
    PyObject *params = PyObject_CallOneArg(PyTuple_GET_ITEM(pm->box, 0), data);
    Py_DECREF(data);
    if (params == NULL) {  /* refused: the Python path words it */
        PyErr_Clear();
        goto fallback;
    }
    PyObject *cap = PyObject_GetAttr(args[0], s_cara_rpc_cap);
    if (cap == NULL) { Py_DECREF(params); return NULL; }
    PyObject *q = send_plain(cap, pm->method, params);
    if (q == FOREIGN) {  /* not on the connection's loop thread: the Python path checks */
        Py_DECREF(q);
        Py_DECREF(cap);
        Py_DECREF(params);
        goto fallback;
    }
    if (q == Py_None) {  /* not a plain call: cap.call(), once a loop is known to run */
        Py_DECREF(q);
        PyObject *running = running_loop();
        if (running == NULL) {
            Py_DECREF(cap);
            Py_DECREF(params);
            return NULL;
        }
        Py_DECREF(running);
        if (running == Py_None) {  /* (the Python method checks the thread: check_loop) */
            Py_DECREF(cap);
            Py_DECREF(params);
            goto fallback;
        }
        PyObject *call_args[4] = {cap, pm->method, params, Py_None};
        q = PyObject_VectorcallMethod(s_call, call_args, 4 | PY_VECTORCALL_ARGUMENTS_OFFSET,
                                      NULL);
    }
    Py_DECREF(cap);
    Py_DECREF(params);
    return q;
fallback:
    return PyObject_Vectorcall(pm->fallback, args, nargsf, kwnames);
}

static PyObject *
plain_method_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *fallback, *spec, *method_of, *positional_box;
    if (kwargs != NULL && PyDict_GET_SIZE(kwargs)) {
        PyErr_SetString(PyExc_TypeError, "PlainMethod() takes no keyword arguments");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "OOOO:PlainMethod", &fallback, &spec, &method_of,
                          &positional_box))
        return NULL;
    PlainMethodObject *pm = (PlainMethodObject *)type->tp_alloc(type, 0);
    if (pm == NULL) return NULL;
    pm->vectorcall = (vectorcallfunc)plain_method_call;
    pm->fallback = Py_NewRef(fallback);
    pm->spec = Py_NewRef(spec);
    pm->method_of = Py_NewRef(method_of);
    pm->positional_box = Py_NewRef(positional_box);
    return (PyObject *)pm;
}

static int
plain_method_traverse(PlainMethodObject *pm, visitproc visit, void *arg)
{
    Py_VISIT(pm->fallback);
    Py_VISIT(pm->spec);
    Py_VISIT(pm->method_of);
    Py_VISIT(pm->positional_box);
    Py_VISIT(pm->method);
    Py_VISIT(pm->box);
    return 0;
}

static int
plain_method_clear(PlainMethodObject *pm)
{
    Py_CLEAR(pm->fallback);
    Py_CLEAR(pm->spec);
    Py_CLEAR(pm->method_of);
    Py_CLEAR(pm->positional_box);
    Py_CLEAR(pm->method);
    Py_CLEAR(pm->box);
    return 0;
}

static void
plain_method_dealloc(PlainMethodObject *pm)
{
    PyObject_GC_UnTrack(pm);
    plain_method_clear(pm);
    Py_TYPE(pm)->tp_free((PyObject *)pm);
}

static PyObject *
plain_method_get(PyObject *self, PyObject *obj, PyObject *type)
{
    if (obj == NULL || obj == Py_None) return Py_NewRef(self);
    return PyMethod_New(self, obj);
}

/* Everything else (__name__, __doc__, __wrapped__, ...) is the Python method's. */
static PyObject *
plain_method_getattro(PlainMethodObject *pm, PyObject *name)
{
    PyObject *found = PyObject_GenericGetAttr((PyObject *)pm, name);
    if (found != NULL || !PyErr_ExceptionMatches(PyExc_AttributeError)) return found;
    PyErr_Clear();
    return PyObject_GetAttr(pm->fallback, name);
}

static PyObject *
plain_method_repr(PlainMethodObject *pm)
{
    return PyObject_Repr(pm->fallback);
}

static PyTypeObject PlainMethodType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "cara.rpc._frames.PlainMethod",
    .tp_basicsize = sizeof(PlainMethodObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL
        | Py_TPFLAGS_METHOD_DESCRIPTOR,
    .tp_doc = "A proxy method that sends plain one-argument calls in C (see _frames.c).",
    .tp_new = plain_method_new,
    .tp_traverse = (traverseproc)plain_method_traverse,
    .tp_clear = (inquiry)plain_method_clear,
    .tp_dealloc = (destructor)plain_method_dealloc,
    .tp_vectorcall_offset = offsetof(PlainMethodObject, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_descr_get = plain_method_get,
    .tp_getattro = (getattrofunc)plain_method_getattro,
    .tp_repr = (reprfunc)plain_method_repr,
};

/* ------------------------------------------------------------------ a plain final return */

/* What the caller of a question on `method` gets for `results` when it unboxes: the single
 * result (Method.unbox_field), else method.unbox(results), else the results themselves. */
static PyObject *
unboxed(PyObject *method, PyObject *results)
{
    PyObject *field = PyObject_GetAttr(method, s_unbox_field);
    if (field == NULL) return NULL;
    if (PyLong_CheckExact(field)) {
        PyObject *value = PyObject_GetItem(results, field);
        Py_DECREF(field);
        return value;
    }
    Py_DECREF(field);
    PyObject *unbox = PyObject_GetAttr(method, s_unbox);
    if (unbox == NULL) return NULL;
    if (unbox == Py_None) {
        Py_DECREF(unbox);
        return Py_NewRef(results);
    }
    PyObject *value = PyObject_CallOneArg(unbox, results);
    Py_DECREF(unbox);
    return value;
}

/* Connection._on_plain_return for frame f (size bytes: [RETURN_FINAL, answer_id, content, []])
 * when its question takes the short way and the results class reads the content in C.
 * 1: settled; 0: declined (nothing done); -1: error. */
static int
plain_return(PyObject *conn, const unsigned char *f, Py_ssize_t size)
{
    const unsigned char *p = f + 2, *end = f + size - 1;  /* end: the empty cap table */
    uint64_t aid;
    int r, out = 0;
    PyObject *key = NULL, *questions = NULL, *q = NULL, *method = NULL, *cls = NULL;
    PyObject *plan = NULL, *content = NULL, *results = NULL, *value = NULL;
    if (!read_uint(&p, end, &aid) || aid > 0xffffffffULL || p >= end || *p == 0xc0)
        return 0;  /* (a nil content: the Python path makes the empty struct) */
    questions = PyObject_GetAttr(conn, s_questions);
    if (questions == NULL) goto error;
    if (!PyDict_CheckExact(questions)) goto done;
    key = PyLong_FromUnsignedLongLong(aid);
    if (key == NULL) goto error;
    q = PyDict_GetItemWithError(questions, key);
    if (q == NULL) { if (PyErr_Occurred()) goto error; goto done; }
    Py_INCREF(q);
    if (Py_TYPE(q) != (PyTypeObject *)Question) goto done;
    {   /* nobody cancelled, timed or pipelined on it (the slots as _new_question set them) */
        PyObject *pipes = SLOT(q, off_pipes);
        if (SLOT(q, off_returned) != Py_False || SLOT(q, off_finished) != Py_False
                || pipes == NULL || !PyDict_Check(pipes) || PyDict_GET_SIZE(pipes) != 0
                || SLOT(q, off_timer) != Py_None || SLOT(q, off_param_exports) != Py_None
                || SLOT(q, off_method) == NULL || SLOT(q, off_unbox) == NULL)
            goto done;
    }
    method = Py_NewRef(SLOT(q, off_method));
    cls = PyObject_GetAttr(method, s_result_cls);
    if (cls == NULL) goto error;
    {
        PyObject *holds = PyDict_GetItemWithError(HOLDS, cls);
        if (holds != Py_False) { if (PyErr_Occurred()) goto error; goto done; }
    }
    plan = PyObject_GetAttr(cls, s_plan);
    if (plan == NULL) { PyErr_Clear(); goto done; }
    if (plan == Py_None) goto done;
    content = PyBytes_FromStringAndSize((const char *)p, end - p);
    if (content == NULL) goto error;
    {
        PyObject *call_args[3] = {plan, cls, content};
        results = PyObject_VectorcallMethod(s_unpackb, call_args,
                                            3 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    }
    if (results == NULL) { PyErr_Clear(); goto done; }  /* the Python path says what failed */
    if (results == Py_None) goto done;

    /* ---- ours: as _on_plain_return, from `q.returned = q.finished = True` on */
    out = 1;
    set_slot(q, off_returned, Py_True);
    set_slot(q, off_finished, Py_True);
    if (PyDict_DelItem(questions, key) < 0)
        goto error;
    {
        PyObject *free_ids = PyObject_GetAttr(conn, s_free_questions);
        if (free_ids == NULL) goto error;
        r = PyList_Check(free_ids) ? PyList_Append(free_ids, key) : 0;
        Py_DECREF(free_ids);
        if (r < 0) goto error;
    }
    set_slot(q, off_results, results);
    {
        PyObject *is_done = PyObject_CallMethodNoArgs(q, s_done);
        if (is_done == NULL) goto error;
        r = is_done == Py_True;
        Py_DECREF(is_done);
        if (r) goto done;
    }
    r = PyObject_IsTrue(SLOT(q, off_unbox));
    if (r < 0) goto error;
    value = r ? unboxed(method, results) : Py_NewRef(results);
    if (value == NULL) {  /* as the Python path: the caller gets the error */
        if (fail_question(q, 0) < 0) goto error;
        goto done;
    }
    {
        PyObject *set = PyObject_CallMethodOneArg(q, s_set_result, value);
        if (set == NULL) goto error;
        Py_DECREF(set);
    }
done:
    Py_XDECREF(value);
    Py_XDECREF(results);
    Py_XDECREF(content);
    Py_XDECREF(plan);
    Py_XDECREF(cls);
    Py_XDECREF(method);
    Py_XDECREF(q);
    Py_XDECREF(key);
    Py_XDECREF(questions);
    return out;
error:
    out = -1;
    goto done;
}

/* ------------------------------------------------------------------ a plain call */

/* Read `cls` from the msgpack map in [p, end) with its plan: the struct, None (the plan
 * declines, or the class has none: the Python path reads it), or NULL (error). */
static PyObject *
read_struct(PyObject *cls, const unsigned char *p, const unsigned char *end)
{
    PyObject *plan = PyObject_GetAttr(cls, s_plan);
    if (plan == NULL) { PyErr_Clear(); Py_RETURN_NONE; }
    if (plan == Py_None) return plan;
    PyObject *content = PyBytes_FromStringAndSize((const char *)p, end - p);
    if (content == NULL) { Py_DECREF(plan); return NULL; }
    PyObject *call_args[3] = {plan, cls, content};
    PyObject *found = PyObject_VectorcallMethod(s_unpackb, call_args,
                                                3 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    Py_DECREF(content);
    Py_DECREF(plan);
    if (found == NULL) { PyErr_Clear(); Py_RETURN_NONE; }  /* the Python path says what */
    return found;
}

/* Whether HOLDS_INTERFACES says `cls` can hold no capability; -1 on error. */
static int
holds_none(PyObject *cls)
{
    PyObject *holds = PyDict_GetItemWithError(HOLDS, cls);
    if (holds == NULL) return PyErr_Occurred() ? -1 : 0;
    return holds == Py_False;
}

/* handler.run(params), with the steps of handler.direct done here when it has them (see
 * dispatch.Handler): fn(params[number]), then a scalar value boxed by convert({single: value})
 * and anything else (or a value convert refuses) by finish(value). */
static PyObject *
run_handler(PyObject *handler, PyObject *params)
{
    PyObject *direct = PyObject_GetAttr(handler, s_direct);
    if (direct == NULL) return NULL;
    if (!PyTuple_CheckExact(direct) || PyTuple_GET_SIZE(direct) != 5) {
        Py_DECREF(direct);
        return PyObject_CallMethodOneArg(handler, s_run, params);
    }
    PyObject *fn = PyTuple_GET_ITEM(direct, 0), *number = PyTuple_GET_ITEM(direct, 1);
    PyObject *finish = PyTuple_GET_ITEM(direct, 2), *convert = PyTuple_GET_ITEM(direct, 3);
    PyObject *single = PyTuple_GET_ITEM(direct, 4);
    PyObject *arg = PyObject_GetItem(params, number);  /* (params[number], as run reads it) */
    PyObject *value = arg != NULL ? PyObject_CallOneArg(fn, arg) : NULL;
    Py_XDECREF(arg);
    PyObject *result = NULL;
    if (value != NULL) {
        if (convert != Py_None && (PyUnicode_CheckExact(value) || PyLong_CheckExact(value)
                                   || PyFloat_CheckExact(value) || PyBool_Check(value)
                                   || PyBytes_CheckExact(value))) {
            PyObject *data = PyDict_New();
            if (data != NULL && PyDict_SetItem(data, single, value) == 0)
                result = PyObject_CallOneArg(convert, data);
            Py_XDECREF(data);
            if (result == NULL) PyErr_Clear();  /* refused: finish words it */
        }
        if (result == NULL) result = PyObject_CallOneArg(finish, value);
        Py_DECREF(value);
    }
    Py_DECREF(direct);
    return result;
}

/* conn._handler_failed(qid, method, exc) for the raised exception, as _run_local's `except
 * Exception` does (anything else stays raised): its result, or NULL. */
static PyObject *
handler_failed(PyObject *conn, PyObject *qid, PyObject *method)
{
    if (!PyErr_ExceptionMatches(PyExc_Exception)) return NULL;
    PyObject *exc = take_exception();
    if (exc == NULL) return NULL;
    PyObject *call_args[4] = {conn, qid, method, exc};
    PyObject *done = PyObject_VectorcallMethod(s_handler_failed, call_args,
                                               4 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    Py_DECREF(exc);
    return done;
}

/* Connection._on_plain_call + _run_local for frame f ([CALL, qid, export_id, interface_id,
 * method_id, params, []]) when the export is a local object that may run now and the params
 * class reads the content in C; the results of a handler that answers at once are sent from
 * here too, in a final return. 1: taken; 0: declined (nothing done); -1: error. */
static int
plain_call(PyObject *conn, const unsigned char *f, Py_ssize_t size)
{
    const unsigned char *p = f + 2, *end = f + size - 1;  /* end: the empty cap table */
    uint64_t qid, target, iid, mid;
    int r, out = 0;
    PyObject *exports, *export = NULL, *key = NULL, *local = NULL, *handler = NULL;
    PyObject *method = NULL, *cls = NULL, *params = NULL, *result = NULL, *packed = NULL;
    PyObject *qkey = NULL, *frame = NULL, *sent = NULL;
    if (!read_uint(&p, end, &qid) || qid > 0xffffffffULL || !read_uint(&p, end, &target)
            || target > 0xffffffffULL || !read_uint(&p, end, &iid) || !read_uint(&p, end, &mid)
            || mid > 0xffff || p >= end || *p == 0xc0)
        return 0;
    exports = PyObject_GetAttr(conn, s_exports);
    if (exports == NULL) return -1;
    if (!PyDict_CheckExact(exports)) goto done;
    if ((key = PyLong_FromUnsignedLongLong(target)) == NULL) goto error;
    export = PyDict_GetItemWithError(exports, key);
    if (export == NULL) { if (PyErr_Occurred()) goto error; goto done; }
    Py_INCREF(export);
    {
        PyObject *cap = PyObject_GetAttr(export, s_cap);
        if (cap == NULL) goto error;
        local = PyObject_CallMethodNoArgs(cap, s_resolved);
        Py_DECREF(cap);
        if (local == NULL) goto error;
    }
    if ((PyObject *)Py_TYPE(local) != LocalCap) goto done;
    {
        PyObject *running = PyObject_GetAttr(conn, s_running);
        if (running == NULL) goto error;
        PyObject *most = PyObject_GetAttr(conn, s_max_answers);
        if (most == NULL) { Py_DECREF(running); goto error; }
        r = PyObject_RichCompareBool(running, most, Py_LT);
        Py_DECREF(running);
        Py_DECREF(most);
        if (r != 1) { if (r < 0) goto error; goto done; }
    }
    if ((r = attr_false(conn, s_queued)) != 1) { if (r < 0) goto error; goto done; }
    if ((qkey = PyLong_FromUnsignedLongLong(qid)) == NULL) goto error;
    {
        PyObject *answers = PyObject_GetAttr(conn, s_answers);
        if (answers == NULL) goto error;
        r = PySequence_Contains(answers, qkey);
        Py_DECREF(answers);
        if (r != 0) { if (r < 0) goto error; goto done; }
    }
    {
        PyObject *impl = PyObject_GetAttr(local, s_impl);
        if (impl == NULL) goto error;
        PyObject *iid_obj = PyLong_FromUnsignedLongLong(iid);
        PyObject *mid_obj = PyLong_FromUnsignedLongLong(mid);
        if (iid_obj != NULL && mid_obj != NULL) {
            /* the handler made already (Implementation.cache), else impl.handler() makes it */
            PyObject *cache = PyObject_GetAttr(impl, s_cache);
            PyObject *key2 = cache != NULL && PyDict_CheckExact(cache)
                ? PyTuple_Pack(2, iid_obj, mid_obj) : NULL;
            if (key2 != NULL) {
                handler = PyDict_GetItemWithError(cache, key2);
                Py_XINCREF(handler);
                Py_DECREF(key2);
            }
            Py_XDECREF(cache);
            PyErr_Clear();
            if (handler == NULL) {
                PyObject *call_args[3] = {impl, iid_obj, mid_obj};
                handler = PyObject_VectorcallMethod(s_handler, call_args,
                                                    3 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
            }
        }
        Py_XDECREF(iid_obj);
        Py_XDECREF(mid_obj);
        Py_DECREF(impl);
        if (handler == NULL) { PyErr_Clear(); goto done; }  /* the Python path answers it */
    }
    if ((method = PyObject_GetAttr(handler, s_method_attr)) == NULL) goto error;
    if ((cls = PyObject_GetAttr(method, s_param_cls)) == NULL) goto error;
    if ((r = holds_none(cls)) != 1) { if (r < 0) goto error; goto done; }
    params = read_struct(cls, p, end);
    if (params == NULL) goto error;
    if (params == Py_None) goto done;

    /* ---- ours: the handler runs */
    out = 1;
    result = run_handler(handler, params);
    if (result == NULL) {
        sent = handler_failed(conn, qkey, method);
        if (sent == NULL) goto error;
        goto done;
    }
    if (PyDict_Check(result)) {
        PyObject *result_cls = PyObject_GetAttr(method, s_result_cls);
        if (result_cls == NULL) goto error;
        r = holds_none(result_cls);
        Py_DECREF(result_cls);
        if (r < 0) goto error;
        if (r) {
            packed = PyObject_CallOneArg(packb, result);
            if (packed == NULL) goto error;
        }
    }
    if (packed == NULL || !PyBytes_CheckExact(packed)) {  /* later, or not in C */
        PyObject *call_args[4] = {conn, qkey, method, result};
        sent = PyObject_VectorcallMethod(s_handled, call_args,
                                         4 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
        if (sent == NULL) goto error;
        goto done;
    }
    {   /* [RETURN_FINAL, qid, results, []] */
        Py_ssize_t psize = PyBytes_GET_SIZE(packed);
        Py_ssize_t size = 2 + uint_size(qid) + psize + 1;
        frame = PyBytes_FromStringAndSize(NULL, 4 + size);
        if (frame == NULL) goto error;
        unsigned char *w = put_length((unsigned char *)PyBytes_AS_STRING(frame), size);
        *w++ = 0x94;
        *w++ = RETURN_FINAL;
        w = put_uint(w, qid);
        memcpy(w, PyBytes_AS_STRING(packed), psize);
        w[psize] = 0x90;
    }
    sent = send_framed(conn, s_send, frame);
    if (sent == NULL) {  /* as _run_local: the call fails with it */
        sent = handler_failed(conn, qkey, method);
        if (sent == NULL) goto error;
    }
done:
    Py_XDECREF(sent);
    Py_XDECREF(frame);
    Py_XDECREF(qkey);
    Py_XDECREF(packed);
    Py_XDECREF(result);
    Py_XDECREF(params);
    Py_XDECREF(cls);
    Py_XDECREF(method);
    Py_XDECREF(handler);
    Py_XDECREF(local);
    Py_XDECREF(key);
    Py_XDECREF(export);
    Py_DECREF(exports);
    return out;
error:
    out = -1;
    goto done;
}

/* ------------------------------------------------------------------ Finish, Release */

/* A `[FINISH, question_id]`, `[FINISH, question_id, 1]` or `[RELEASE, export_id, count]` frame
 * (ids and counts 32-bit), handed to conn._receive_control(kind, id, n) as receive() would
 * handle the message; 1 if so, 0 when it is not such a frame (Python decodes it), -1 on an
 * error other than the ProtocolError after which the connection has closed itself. */
static int
control_frame(PyObject *conn, const unsigned char *f, Py_ssize_t size)
{
    const unsigned char *p = f + 2, *end = f + size;
    uint64_t id, n = 0;
    if (!read_uint(&p, end, &id) || id > 0xffffffffULL) return 0;
    if (f[1] == RELEASE) {
        if (f[0] != 0x93 || !read_uint(&p, end, &n) || n > 0xffffffffULL) return 0;
    } else if (f[0] == 0x93) {  /* [FINISH, id, 1]: releaseResultCaps */
        if (p >= end || *p != 0x01) return 0;
        n = 1;
        p++;
    } else if (f[0] != 0x92) {
        return 0;
    }
    if (p != end) return 0;
    PyObject *r = PyObject_CallMethod(conn, "_receive_control", "iKK", (int)f[1],
                                      (unsigned long long)id, (unsigned long long)n);
    if (r == NULL) {
        if (!PyErr_ExceptionMatches(ProtocolError)) return -1;
        PyErr_Clear();  /* the connection has sent Abort and closed itself */
    }
    Py_XDECREF(r);
    return 1;
}

/* ------------------------------------------------------------------ the frame loop */

/* process(conn, view, limit, deadline, now): asyncio_transport's _process loop. Hands each
 * complete frame of `view` (behind its 4-byte big-endian length) to the connection, plain
 * final returns settled here, plain calls run, Finish and Release passed decoded; stops
 * before a frame over `limit` bytes (the caller aborts), at an incomplete one, or once now()
 * passes `deadline` (checked after each frame when it is finite). Returns the bytes used, or
 * -1 once the connection closed. A ProtocolError from conn.receive() is swallowed as
 * _process swallows it (the connection has sent Abort and closed itself). */
static PyObject *
frames_process(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "process(conn, view, limit, deadline, now)");
        return NULL;
    }
    PyObject *conn = args[0], *view = args[1], *now = args[4];
    Py_ssize_t limit = PyLong_AsSsize_t(args[2]);
    if (limit == -1 && PyErr_Occurred()) return NULL;
    double deadline = PyFloat_AsDouble(args[3]);
    if (deadline == -1.0 && PyErr_Occurred()) return NULL;
    int timed = deadline < Py_HUGE_VAL;
    Py_buffer buf;
    if (PyObject_GetBuffer(view, &buf, PyBUF_SIMPLE) < 0) return NULL;
    const unsigned char *data = (const unsigned char *)buf.buf;
    Py_ssize_t pos = 0, n = buf.len, max_objects = -1;
    int fast = READY() ? attr_is(conn, s_fast, Py_True) : 0;
    if (fast < 0) goto error;
    if (fast) {
        PyObject *wire = PyObject_GetAttr(conn, s_wire);
        if (wire == NULL) goto error;
        PyObject *mo = PyObject_GetAttr(wire, s_max_objects);
        Py_DECREF(wire);
        if (mo == NULL) goto error;
        max_objects = PyLong_AsSsize_t(mo);
        Py_DECREF(mo);
        if (max_objects == -1 && PyErr_Occurred()) goto error;
    }
    while (n - pos >= 4) {
        const unsigned char *h = data + pos;
        Py_ssize_t size = ((Py_ssize_t)h[0] << 24) | (h[1] << 16) | (h[2] << 8) | h[3];
        if (size > limit) break;
        Py_ssize_t end = pos + 4 + size;
        if (end > n) break;
        int handled = 0;
        /* (frames over max_objects bytes are counted as they decode: Python's) */
        if (fast && size >= 3 && size <= max_objects) {
            if (size <= 12 && (h[5] == FINISH || h[5] == RELEASE))
                handled = control_frame(conn, h + 4, size);
            else if (size >= 4 && data[end - 1] == 0x90 && h[4] == 0x94 && h[5] == RETURN_FINAL)
                handled = plain_return(conn, h + 4, size);
            else if (size >= 4 && data[end - 1] == 0x90 && h[4] == 0x97 && h[5] == CALL)
                handled = plain_call(conn, h + 4, size);
            if (handled < 0) goto error;
        }
        if (!handled) {
            PyObject *frame = PySequence_GetSlice(view, pos + 4, end);
            if (frame == NULL) goto error;
            PyObject *r = PyObject_CallMethodOneArg(conn, s_receive, frame);
            Py_DECREF(frame);
            if (r == NULL) {
                if (!PyErr_ExceptionMatches(ProtocolError)) goto error;
                PyErr_Clear();  /* the connection has sent Abort and closed itself */
            }
            Py_XDECREF(r);
        }
        int open = attr_is(conn, s_closed, Py_False);
        if (open < 0) goto error;
        if (!open) {
            PyBuffer_Release(&buf);
            return PyLong_FromLong(-1);
        }
        pos = end;
        if (timed) {
            PyObject *t = PyObject_CallNoArgs(now);
            if (t == NULL) goto error;
            double d = PyFloat_AsDouble(t);
            Py_DECREF(t);
            if (d == -1.0 && PyErr_Occurred()) goto error;
            if (d > deadline) break;
        }
    }
    PyBuffer_Release(&buf);
    return PyLong_FromSsize_t(pos);
error:
    PyBuffer_Release(&buf);
    return NULL;
}

/* ------------------------------------------------------------------ module */

static PyMethodDef frames_methods[] = {
    {"configure", frames_configure, METH_VARARGS,
     "configure(Question, ImportCap, PipelineCap, LocalCap, HOLDS_INTERFACES, ProtocolError, "
     "packb, NO_PIPES, asyncio._get_running_loop)"},
    {"running_loop", frames_running_loop, METH_NOARGS,
     "running_loop(): asyncio._get_running_loop(), without its getpid() while the loop it "
     "gave last still runs in this thread"},
    {"forget_loop", frames_forget_loop, METH_NOARGS,
     "forget_loop(): forget that loop (after a fork)"},
    {"send_plain", (PyCFunction)(void (*)(void))frames_send_plain, METH_FASTCALL,
     "send_plain(cap, method, params): the Question of a plain call sent, or None"},
    {"process", (PyCFunction)(void (*)(void))frames_process, METH_FASTCALL,
     "process(conn, view, limit, deadline, now): bytes used, or -1 once conn closed"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef frames_module = {
    PyModuleDef_HEAD_INIT, "_frames", "C fast path of cara frames (see _frames.c).", -1,
    frames_methods,
};

#define INTERN(var, text) if ((var = PyUnicode_InternFromString(text)) == NULL) return NULL

PyMODINIT_FUNC
PyInit__frames(void)
{
    INTERN(s_resolution, "resolution");
    INTERN(s_entry, "entry");
    INTERN(s_conn, "conn");
    INTERN(s_closed, "closed");
    INTERN(s_fast, "_fast_frames");
    INTERN(s_timeout, "timeout");
    INTERN(s_param_cls, "param_cls");
    INTERN(s_interface_id, "interface_id");
    INTERN(s_index, "index");
    INTERN(s_questions, "_questions");
    INTERN(s_free_questions, "_free_questions");
    INTERN(s_next_question, "_next_question");
    INTERN(s_loop, "loop");
    INTERN(s_send_call, "_send_call");
    INTERN(s_called, "called");
    INTERN(s_id, "id");
    INTERN(s_result_cls, "result_cls");
    INTERN(s_done, "done");
    INTERN(s_set_result, "set_result");
    INTERN(s_set_exception, "set_exception");
    INTERN(s_receive, "receive");
    INTERN(s_plan, "_cara_plan_");
    INTERN(s_unpackb, "unpackb");
    INTERN(s_unbox, "unbox");
    INTERN(s_wire, "wire");
    INTERN(s_max_objects, "max_objects");
    one = PyLong_FromLong(1);
    if (one == NULL) return NULL;
    loop_kwnames = Py_BuildValue("(s)", "loop");
    if (loop_kwnames == NULL) return NULL;
    INTERN(s_cara_rpc_cap, "_cara_rpc_cap_");
    INTERN(s_call, "call");
    INTERN(s_thread_id, "_thread_id");
    INTERN(s_send_framed, "_send_framed");
    INTERN(s_exports, "_exports");
    INTERN(s_cap, "cap");
    INTERN(s_resolved, "resolved");
    INTERN(s_running, "_running");
    INTERN(s_max_answers, "max_answers");
    INTERN(s_queued, "_queued");
    INTERN(s_answers, "_answers");
    INTERN(s_impl, "impl");
    INTERN(s_handler, "handler");
    INTERN(s_method_attr, "method");
    INTERN(s_run, "run");
    INTERN(s_handler_failed, "_handler_failed");
    INTERN(s_handled, "_handled");
    INTERN(s_send, "_send");
    INTERN(s_cache, "cache");
    INTERN(s_direct, "direct");
    INTERN(s_unbox_field, "unbox_field");
    FOREIGN = PyObject_CallNoArgs((PyObject *)&PyBaseObject_Type);
    if (FOREIGN == NULL) return NULL;
    if (PyType_Ready(&PlainMethodType) < 0) return NULL;
    PyObject *m = PyModule_Create(&frames_module);
    if (m == NULL) return NULL;
    Py_INCREF(&PlainMethodType);
    if (PyModule_AddObject(m, "PlainMethod", (PyObject *)&PlainMethodType) < 0) {
        Py_DECREF(&PlainMethodType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
