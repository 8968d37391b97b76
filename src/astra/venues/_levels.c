/* astra.venues._levels: the per-level loops of L2Book (venues/book.py) in C.
 *
 * Invariants (the same as the pure-Python loops in book.py, which stay the reference):
 * - apply_side(side, pairs): for each (price, qty) pair in order, qty > 0 sets side[price] =
 *   qty, anything else (0, negative, NaN) removes price from side if present; a later pair
 *   for the same price wins. Deleting an absent price is not an error.
 * - fill_side(side, pairs): for each pair with qty > 0, side[price] = qty; pairs with qty <= 0
 *   are skipped (a snapshot holds no deletes), so a later positive pair wins.
 * - A pair is any sequence of exactly two items (tuples and lists on the fast path); anything
 *   else raises ValueError/TypeError as Python's unpacking does, after the pairs before it
 *   were applied (as the Python loop leaves them). `pairs` is read as the loop reads it: a
 *   list or tuple by index (its length re-read each step), any other iterable one item at a
 *   time, so an error it raises also leaves the pairs before it applied.
 * - qty is compared with 0 as Python's `qty > 0` does: floats directly, other objects by
 *   rich comparison (an int, a Decimal: never coerced).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static PyObject *zero; /* the int 0, for `qty > 0` on non-float quantities */

/* 1 if qty > 0, 0 if not, -1 on error (as `qty > 0` raising). */
static inline int positive(PyObject *qty) {
    if (PyFloat_CheckExact(qty))
        return PyFloat_AS_DOUBLE(qty) > 0.0;
    return PyObject_RichCompareBool(qty, zero, Py_GT);
}

/* Borrowed references to the two items of one pair; 0 on success, -1 with an error set. */
static int unpack(PyObject *pair, PyObject **price, PyObject **qty, PyObject **owned) {
    *owned = NULL;
    if (PyTuple_CheckExact(pair) && PyTuple_GET_SIZE(pair) == 2) {
        *price = PyTuple_GET_ITEM(pair, 0);
        *qty = PyTuple_GET_ITEM(pair, 1);
        return 0;
    }
    if (PyList_CheckExact(pair) && PyList_GET_SIZE(pair) == 2) {
        *price = PyList_GET_ITEM(pair, 0);
        *qty = PyList_GET_ITEM(pair, 1);
        return 0;
    }
    /* Anything else: unpack as Python would, with its errors. */
    PyObject *seq = PySequence_Fast(pair, "cannot unpack non-iterable object");
    if (seq == NULL)
        return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (n != 2) {
        Py_DECREF(seq);
        PyErr_Format(PyExc_ValueError,
                     n < 2 ? "not enough values to unpack (expected 2, got %zd)"
                           : "too many values to unpack (expected 2, got %zd)",
                     n);
        return -1;
    }
    *price = PySequence_Fast_GET_ITEM(seq, 0);
    *qty = PySequence_Fast_GET_ITEM(seq, 1);
    *owned = seq; /* keeps the items alive until the caller is done with them */
    return 0;
}

/* One pair, as the Python loop's body; 0, or -1 with an error set. */
static int one(PyObject *side, PyObject *pair, int deletes) {
    PyObject *price, *qty, *owned;
    Py_INCREF(pair);
    int rc = unpack(pair, &price, &qty, &owned);
    if (rc == 0) {
        Py_INCREF(price);
        Py_INCREF(qty);
        int gt = positive(qty);
        if (gt > 0) {
            rc = PyDict_SetItem(side, price, qty);
        } else if (gt == 0) {
            if (deletes) {
                /* side.pop(price, None): an absent price is no error */
                if (PyDict_DelItem(side, price) < 0) {
                    if (PyErr_ExceptionMatches(PyExc_KeyError))
                        PyErr_Clear();
                    else
                        rc = -1;
                }
            }
        } else {
            rc = -1;
        }
        Py_DECREF(price);
        Py_DECREF(qty);
        Py_XDECREF(owned);
    }
    Py_DECREF(pair);
    return rc;
}

static PyObject *run(PyObject *args, int deletes) {
    PyObject *side, *pairs;
    if (!PyArg_ParseTuple(args, "O!O:apply_side", &PyDict_Type, &side, &pairs))
        return NULL;
    if (PyList_CheckExact(pairs) || PyTuple_CheckExact(pairs)) {
        PyObject *seq = Py_NewRef(pairs);
        for (Py_ssize_t i = 0;; i++) {
            /* The list may change under a __gt__ written in Python: re-read it each time. */
            if (i >= PySequence_Fast_GET_SIZE(seq))
                break;
            if (one(side, PySequence_Fast_GET_ITEM(seq, i), deletes) < 0) {
                Py_DECREF(seq);
                return NULL;
            }
        }
        Py_DECREF(seq);
        Py_RETURN_NONE;
    }
    /* Any other iterable one item at a time, as the Python loop takes it: an error from the
     * iterator leaves the pairs before it applied (PySequence_Fast would read it all first). */
    PyObject *it = PyObject_GetIter(pairs), *pair;
    if (it == NULL)
        return NULL;
    while ((pair = PyIter_Next(it)) != NULL) {
        int rc = one(side, pair, deletes);
        Py_DECREF(pair);
        if (rc < 0) {
            Py_DECREF(it);
            return NULL;
        }
    }
    Py_DECREF(it);
    if (PyErr_Occurred())
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *apply_side(PyObject *module, PyObject *args) { return run(args, 1); }

static PyObject *fill_side(PyObject *module, PyObject *args) { return run(args, 0); }

static PyMethodDef methods[] = {
    {"apply_side", apply_side, METH_VARARGS,
     "apply_side(side: dict, pairs) -> None\n\nApply absolute (price, qty) levels in order: "
     "qty > 0 sets, anything else deletes (an absent price is no error)."},
    {"fill_side", fill_side, METH_VARARGS,
     "fill_side(side: dict, pairs) -> None\n\nSet every (price, qty) with qty > 0 (a "
     "snapshot: the others are skipped)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    .m_base = PyModuleDef_HEAD_INIT,
    .m_name = "astra.venues._levels",
    .m_doc = "L2Book's per-level loops in C (see the source's header for the invariants).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__levels(void) {
    if (zero == NULL && (zero = PyLong_FromLong(0)) == NULL)
        return NULL;
    return PyModule_Create(&module);
}
