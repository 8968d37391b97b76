/* astra.venues._levels: L2Book's sides (venues/book.py) in C: the `Side` type (a hash table of
 * doubles behind a dict-like mapping, described where it is defined below) and the per-level
 * loops that fill and update a side, a Side or a dict.
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
 * - A NaN price raises ValueError before anything of its pair is stored, on a dict too (as
 *   the Python loops check `price != price`): it could never be found again, nor sorted.
 * - qty is compared with 0 as Python's `qty > 0` does: floats directly, other objects by
 *   rich comparison (an int, a Decimal: not coerced for the comparison). A dict keeps the
 *   objects; a Side stores float(price) and float(qty).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static PyObject *zero; /* the int 0, for `qty > 0` on non-float quantities */

/* 1 if qty > 0, 0 if not, -1 on error (as `qty > 0` raising). */
static inline int positive(PyObject *qty) {
    if (PyFloat_CheckExact(qty))
        return PyFloat_AS_DOUBLE(qty) > 0.0;
    return PyObject_RichCompareBool(qty, zero, Py_GT);
}

/* 0 if price is not NaN (as `price != price` is false), -1 with ValueError if it is, or
 * with the error `!=` raised. A NaN price would break the book's order: refused. */
static int not_nan(PyObject *price) {
    int ne;
    if (PyFloat_CheckExact(price)) {
        ne = PyFloat_AS_DOUBLE(price) != PyFloat_AS_DOUBLE(price);
    } else {
        PyObject *r = PyObject_RichCompare(price, price, Py_NE);
        if (r == NULL)
            return -1;
        ne = PyObject_IsTrue(r);
        Py_DECREF(r);
        if (ne < 0)
            return -1;
    }
    if (ne) {
        PyErr_SetString(PyExc_ValueError, "a book level's price is NaN");
        return -1;
    }
    return 0;
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
        int gt = not_nan(price) < 0 ? -1 : positive(qty);
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

/* ---- Side: one side of an L2Book, price -> quantity, in an open-addressing hash table ----
 *
 * Why a hash table and not a sorted array: a venue's changes land all over the book (OKX's
 * recorded session: 64% inserts and deletes, a median 48 levels from the top), so keeping an
 * array sorted moves ~1-2 KB per change; a table of doubles costs one probe, touches no
 * Python object, and the sorted view readers want is built when they read (`top`).
 *
 * Invariants:
 * - A slot is empty iff its qty is 0: every stored qty is > 0 (`qty > 0` decides, and the
 *   double stored must be > 0 too: a quantity whose float() is 0.0 or NaN is that float, a
 *   delete), so applying 0 (or less, or NaN) deletes. Prices are unique as a dict's float
 *   keys are (1 == 1.0, 0.0 == -0.0: the hash of 0 is the same for both signs).
 * - Linear probing, at most half full; a delete shifts the following run back (no
 *   tombstones), so a lookup stops at the first empty slot. The table halves when it falls
 *   under 1/8 full, so memory follows the book down after a huge snapshot.
 * - The hash mixes a per-process random seed into the price's bits: a venue cannot pick
 *   prices that all collide (probing would become linear in the book's size).
 * - Reads never change the side; it holds no Python object, so it needs no GC support.
 *   Iteration (keys/values/items/iter) is in table order; `top` is sorted, best first.
 * Integrity rule: a NaN price is refused with ValueError before anything of its pair is
 * stored (the Python reference in book.py refuses it too): it could never be found again.
 */
typedef struct {
    double price;
    double qty; /* 0: the slot is empty */
} Level;

typedef struct {
    PyObject_HEAD
    Level *slot;
    Py_ssize_t n;
    size_t mask; /* capacity - 1 (a power of two) when slot != NULL */
    int bids;    /* 1: bids (best = highest price), 0: asks (best = lowest) */
} SideObject;

static PyTypeObject SideType;
#define Side_Check(o) Py_IS_TYPE((o), &SideType)
#define MIN_CAPACITY 64

static uint64_t seed;

static inline size_t slot_of(const SideObject *s, double price) {
    uint64_t x;
    price = price == 0.0 ? 0.0 : price; /* -0.0 is the same key as 0.0 */
    memcpy(&x, &price, sizeof x);
    x ^= seed; /* splitmix64's finalizer: every input bit reaches the low bits */
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return (size_t)x & s->mask;
}

/* The slot holding price (*found = 1), else the empty slot where it would go. */
static inline size_t probe(const SideObject *s, double price, int *found) {
    size_t i = slot_of(s, price);
    while (s->slot[i].qty != 0.0) {
        if (s->slot[i].price == price) {
            *found = 1;
            return i;
        }
        i = (i + 1) & s->mask;
    }
    *found = 0;
    return i;
}

/* Rehash into a table of `capacity` slots (a power of two, > 2 * n). */
static int resize(SideObject *s, size_t capacity) {
    if (capacity > PY_SSIZE_T_MAX / sizeof(Level)) {
        PyErr_NoMemory();
        return -1;
    }
    Level *old = s->slot;
    size_t old_capacity = old == NULL ? 0 : s->mask + 1;
    Level *slot = PyMem_Calloc(capacity, sizeof(Level));
    if (slot == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    s->slot = slot;
    s->mask = capacity - 1;
    for (size_t j = 0; j < old_capacity; j++) {
        if (old[j].qty != 0.0) {
            int found;
            slot[probe(s, old[j].price, &found)] = old[j];
        }
    }
    PyMem_Free(old);
    return 0;
}

static int side_set(SideObject *s, double price, double qty) {
    int found;
    if (s->slot == NULL || (size_t)(s->n + 1) * 2 > s->mask + 1) {
        size_t capacity = s->slot == NULL ? MIN_CAPACITY : (s->mask + 1) * 2;
        if (resize(s, capacity) < 0)
            return -1;
    }
    size_t i = probe(s, price, &found);
    if (!found) {
        s->slot[i].price = price;
        s->n++;
    }
    s->slot[i].qty = qty;
    return 0;
}

/* 1 if removed, 0 if absent. */
static int side_del(SideObject *s, double price) {
    int found;
    if (s->slot == NULL)
        return 0;
    size_t i = probe(s, price, &found);
    if (!found)
        return 0;
    /* Shift back every entry of the run after i whose home is not between i and it. */
    for (size_t j = (i + 1) & s->mask; s->slot[j].qty != 0.0; j = (j + 1) & s->mask) {
        size_t home = slot_of(s, s->slot[j].price);
        int stays = i <= j ? (i < home && home <= j) : (i < home || home <= j);
        if (!stays) {
            s->slot[i] = s->slot[j];
            i = j;
        }
    }
    s->slot[i].qty = 0.0;
    s->n--;
    if (s->mask + 1 > MIN_CAPACITY && (size_t)s->n * 8 < s->mask + 1 &&
        resize(s, (s->mask + 1) / 2) < 0)
        PyErr_Clear(); /* no memory to shrink: the larger table stays valid */
    return 1;
}

/* A price as a double: floats directly, anything else through float(); NaN refused. */
static int read_price(PyObject *o, double *out) {
    double v = PyFloat_CheckExact(o) ? PyFloat_AS_DOUBLE(o) : PyFloat_AsDouble(o);
    if (v == -1.0 && PyErr_Occurred())
        return -1;
    if (v != v) {
        PyErr_SetString(PyExc_ValueError, "a book level's price is NaN");
        return -1;
    }
    *out = v;
    return 0;
}

/* A quantity `qty > 0` accepted, as the double the Side stores: 1 when that double is > 0,
 * 0 when it is not (an object above 0 whose float() is 0.0, e.g. Decimal("1e-400"), or NaN),
 * -1 on error. Stored, such a 0 would mark its slot empty in the middle of a probe run (the
 * levels after it lost, `n` counting a level no slot holds): the side treats it as the float
 * it becomes, a 0 (a delete, or skipped in a snapshot). */
static int read_qty(PyObject *o, double *out) {
    double v = PyFloat_CheckExact(o) ? PyFloat_AS_DOUBLE(o) : PyFloat_AsDouble(o);
    if (v == -1.0 && PyErr_Occurred())
        return -1;
    *out = v;
    return v > 0.0;
}

/* One (price, qty) pair into a Side, as `one` does for a dict. */
static int side_one(SideObject *s, PyObject *pair, int deletes) {
    PyObject *price, *qty, *owned;
    double p, q;
    if (PyTuple_CheckExact(pair) && PyTuple_GET_SIZE(pair) == 2 &&
        PyFloat_CheckExact(PyTuple_GET_ITEM(pair, 0)) &&
        PyFloat_CheckExact(PyTuple_GET_ITEM(pair, 1))) {
        /* What every feed sends: no object is touched beyond reading two doubles. */
        p = PyFloat_AS_DOUBLE(PyTuple_GET_ITEM(pair, 0));
        q = PyFloat_AS_DOUBLE(PyTuple_GET_ITEM(pair, 1));
        if (p != p) {
            PyErr_SetString(PyExc_ValueError, "a book level's price is NaN");
            return -1;
        }
        if (q > 0.0)
            return side_set(s, p, q);
        if (deletes)
            side_del(s, p);
        return 0;
    }
    Py_INCREF(pair);
    int rc = unpack(pair, &price, &qty, &owned);
    if (rc == 0) {
        Py_INCREF(price);
        Py_INCREF(qty);
        int gt = read_price(price, &p) < 0 ? -1 : positive(qty);
        if (gt > 0)
            gt = read_qty(qty, &q); /* 0 if its float is not > 0: see read_qty */
        if (gt < 0)
            rc = -1;
        else if (gt > 0)
            rc = side_set(s, p, q);
        else if (deletes)
            side_del(s, p);
        Py_DECREF(price);
        Py_DECREF(qty);
        Py_XDECREF(owned);
    }
    Py_DECREF(pair);
    return rc;
}

static PyObject *side_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"bids", NULL};
    int bids;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "p:Side", kwlist, &bids))
        return NULL;
    SideObject *s = (SideObject *)type->tp_alloc(type, 0);
    if (s != NULL)
        s->bids = bids;
    return (PyObject *)s;
}

static void side_dealloc(SideObject *s) {
    PyMem_Free(s->slot);
    Py_TYPE(s)->tp_free((PyObject *)s);
}

static Py_ssize_t side_len(SideObject *s) { return s->n; }

/* The slot of a Python price: 1 found (*at set), 0 absent, -1 error. A key that is not a
 * number (or NaN, or too large for a float) is simply absent, as in a dict of floats; so is
 * a number no float equals (2**53 + 1, Decimal("0.1")): a dict finds a key only by `==`, and
 * float() alone would round such a key onto a stored price. */
static int lookup(SideObject *s, PyObject *price, size_t *at) {
    double p;
    if (PyFloat_CheckExact(price)) {
        p = PyFloat_AS_DOUBLE(price);
    } else if (PyNumber_Check(price)) {
        p = PyFloat_AsDouble(price);
        if (p == -1.0 && PyErr_Occurred()) {
            if (!PyErr_ExceptionMatches(PyExc_TypeError) &&
                !PyErr_ExceptionMatches(PyExc_OverflowError))
                return -1;
            PyErr_Clear();
            return 0;
        }
        if (!PyFloat_Check(price) && p == p) {
            /* int, Decimal, Fraction: their `==` with a float is exact */
            PyObject *f = PyFloat_FromDouble(p);
            int eq = f == NULL ? -1 : PyObject_RichCompareBool(price, f, Py_EQ);
            Py_XDECREF(f);
            if (eq <= 0)
                return eq;
        }
    } else {
        return 0;
    }
    if (p != p || s->slot == NULL)
        return 0;
    int found;
    *at = probe(s, p, &found);
    return found;
}

static PyObject *side_getitem(SideObject *s, PyObject *price) {
    size_t i;
    int found = lookup(s, price, &i);
    if (found > 0)
        return PyFloat_FromDouble(s->slot[i].qty);
    if (found == 0)
        PyErr_SetObject(PyExc_KeyError, price);
    return NULL;
}

static int side_ass(SideObject *s, PyObject *price, PyObject *qty) {
    double p, q;
    if (read_price(price, &p) < 0)
        return -1;
    if (qty == NULL) {
        if (side_del(s, p))
            return 0;
        PyErr_SetObject(PyExc_KeyError, price);
        return -1;
    }
    int gt = positive(qty);
    if (gt > 0)
        gt = read_qty(qty, &q);
    if (gt < 0)
        return -1;
    if (!gt) {
        PyErr_SetString(PyExc_ValueError, "a book level's quantity must be > 0");
        return -1;
    }
    return side_set(s, p, q);
}

static int side_contains(SideObject *s, PyObject *price) {
    size_t i;
    return lookup(s, price, &i);
}

/* Is level a better than level b (higher bid, lower ask)? */
static inline int better(const SideObject *s, const Level *a, const Level *b) {
    return s->bids ? a->price > b->price : a->price < b->price;
}

static int by_price_desc(const void *a, const void *b) {
    double x = ((const Level *)a)->price, y = ((const Level *)b)->price;
    return (x < y) - (x > y);
}

static int by_price_asc(const void *a, const void *b) {
    double x = ((const Level *)a)->price, y = ((const Level *)b)->price;
    return (x > y) - (x < y);
}

/* The levels best first, at most `limit` (< 0: all), as a list of (price, qty) tuples. A
 * short top is selected in one pass (most levels lose to the kept worst at once); a long
 * one is copied out and sorted. */
static PyObject *top_levels(SideObject *s, Py_ssize_t limit) {
    Py_ssize_t n = limit < 0 || limit > s->n ? s->n : limit, k = 0;
    Level *best = n ? PyMem_Malloc((size_t)(limit >= 0 && limit <= 64 ? n : s->n) * sizeof(Level))
                    : NULL;
    if (n && best == NULL)
        return PyErr_NoMemory();
    if (n && limit >= 0 && limit <= 64) {
        for (size_t j = 0; j <= s->mask; j++) {
            const Level *l = &s->slot[j];
            if (l->qty == 0.0 || (k == n && !better(s, l, &best[n - 1])))
                continue;
            Py_ssize_t at = k < n ? k++ : n - 1; /* insert, the worst kept falling off */
            while (at > 0 && better(s, l, &best[at - 1])) {
                best[at] = best[at - 1];
                at--;
            }
            best[at] = *l;
        }
    } else if (n) {
        for (size_t j = 0; j <= s->mask; j++)
            if (s->slot[j].qty != 0.0)
                best[k++] = s->slot[j];
        qsort(best, (size_t)k, sizeof(Level), s->bids ? by_price_desc : by_price_asc);
    }
    PyObject *out = PyList_New(n);
    for (Py_ssize_t j = 0; out != NULL && j < n; j++) {
        PyObject *p = PyFloat_FromDouble(best[j].price);
        PyObject *q = p == NULL ? NULL : PyFloat_FromDouble(best[j].qty);
        PyObject *item = q == NULL ? NULL : PyTuple_Pack(2, p, q);
        Py_XDECREF(p);
        Py_XDECREF(q);
        if (item == NULL)
            Py_CLEAR(out);
        else
            PyList_SET_ITEM(out, j, item);
    }
    PyMem_Free(best);
    return out;
}

/* Every level in table order: 0 prices, 1 quantities, 2 (price, qty) tuples. */
static PyObject *levels(SideObject *s, int what) {
    PyObject *out = PyList_New(s->n);
    Py_ssize_t k = 0;
    for (size_t j = 0; out != NULL && s->slot != NULL && j <= s->mask; j++) {
        const Level *l = &s->slot[j];
        if (l->qty == 0.0)
            continue;
        PyObject *item;
        if (what == 0) {
            item = PyFloat_FromDouble(l->price);
        } else if (what == 1) {
            item = PyFloat_FromDouble(l->qty);
        } else {
            PyObject *p = PyFloat_FromDouble(l->price);
            PyObject *q = p == NULL ? NULL : PyFloat_FromDouble(l->qty);
            item = q == NULL ? NULL : PyTuple_Pack(2, p, q);
            Py_XDECREF(p);
            Py_XDECREF(q);
        }
        if (item == NULL)
            Py_CLEAR(out);
        else
            PyList_SET_ITEM(out, k++, item);
    }
    return out;
}

static PyObject *side_iter(SideObject *s) {
    PyObject *keys = levels(s, 0);
    if (keys == NULL)
        return NULL;
    PyObject *it = PyObject_GetIter(keys);
    Py_DECREF(keys);
    return it;
}

static PyObject *side_keys(SideObject *s, PyObject *unused) { return levels(s, 0); }
static PyObject *side_values(SideObject *s, PyObject *unused) { return levels(s, 1); }
static PyObject *side_items(SideObject *s, PyObject *unused) { return levels(s, 2); }

static PyObject *side_top(SideObject *s, PyObject *const *args, Py_ssize_t nargs) {
    Py_ssize_t limit = -1;
    if (nargs > 1) {
        PyErr_SetString(PyExc_TypeError, "top() takes at most one argument (depth)");
        return NULL;
    }
    if (nargs == 1 && args[0] != Py_None) {
        /* clipped, as a slice clips: top(10**30) is every level, not OverflowError */
        limit = PyNumber_AsSsize_t(args[0], NULL);
        if (limit == -1 && PyErr_Occurred())
            return NULL;
        if (limit < 0) {
            PyErr_SetString(PyExc_ValueError, "depth must be >= 0");
            return NULL;
        }
    }
    return top_levels(s, limit);
}

/* The best level as (price, qty), None when the side is empty: one pass, no sort. */
static PyObject *side_best(SideObject *s, PyObject *unused) {
    const Level *b = NULL;
    for (size_t j = 0; s->slot != NULL && j <= s->mask; j++)
        if (s->slot[j].qty != 0.0 && (b == NULL || better(s, &s->slot[j], b)))
            b = &s->slot[j];
    if (b == NULL)
        Py_RETURN_NONE;
    return Py_BuildValue("(dd)", b->price, b->qty);
}

static PyObject *side_get(SideObject *s, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "get() takes a price and an optional default");
        return NULL;
    }
    size_t i;
    int found = lookup(s, args[0], &i);
    if (found > 0)
        return PyFloat_FromDouble(s->slot[i].qty);
    if (found < 0)
        return NULL;
    return Py_NewRef(nargs == 2 ? args[1] : Py_None);
}

static PyObject *side_pop(SideObject *s, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "pop() takes a price and an optional default");
        return NULL;
    }
    size_t i;
    int found = lookup(s, args[0], &i);
    if (found < 0)
        return NULL;
    if (!found) {
        if (nargs == 2)
            return Py_NewRef(args[1]);
        PyErr_SetObject(PyExc_KeyError, args[0]);
        return NULL;
    }
    PyObject *qty = PyFloat_FromDouble(s->slot[i].qty);
    if (qty != NULL)
        side_del(s, s->slot[i].price);
    return qty;
}

static PyObject *side_clear(SideObject *s, PyObject *unused) {
    PyMem_Free(s->slot);
    s->slot = NULL;
    s->n = 0;
    s->mask = 0;
    Py_RETURN_NONE;
}

/* A plain dict price -> quantity, best level first. */
static PyObject *side_copy(SideObject *s, PyObject *unused) {
    PyObject *top = top_levels(s, -1);
    if (top == NULL)
        return NULL;
    PyObject *d = PyDict_New();
    for (Py_ssize_t j = 0; d != NULL && j < PyList_GET_SIZE(top); j++) {
        PyObject *pair = PyList_GET_ITEM(top, j);
        if (PyDict_SetItem(d, PyTuple_GET_ITEM(pair, 0), PyTuple_GET_ITEM(pair, 1)) < 0)
            Py_CLEAR(d);
    }
    Py_DECREF(top);
    return d;
}

/* update(mapping or pairs): set each level as side[price] = qty does. */
static PyObject *side_update(SideObject *s, PyObject *other) {
    PyObject *pairs = PyMapping_Check(other) && !PyList_Check(other) && !PyTuple_Check(other)
                          ? PyMapping_Items(other)
                          : PySequence_List(other);
    if (pairs == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(pairs); i++) {
        PyObject *price, *qty, *owned;
        PyObject *pair = PyList_GET_ITEM(pairs, i);
        if (unpack(pair, &price, &qty, &owned) < 0 || side_ass(s, price, qty) < 0) {
            Py_XDECREF(owned);
            Py_DECREF(pairs);
            return NULL;
        }
        Py_XDECREF(owned);
    }
    Py_DECREF(pairs);
    Py_RETURN_NONE;
}

static PyObject *side_richcompare(SideObject *s, PyObject *other, int op) {
    if (op != Py_EQ && op != Py_NE)
        Py_RETURN_NOTIMPLEMENTED;
    if (Side_Check(other)) {
        /* Equal mappings: the same size, and each of our levels there with our qty. */
        SideObject *o = (SideObject *)other;
        int equal = s->n == o->n;
        for (size_t j = 0; equal && s->slot != NULL && j <= s->mask; j++) {
            if (s->slot[j].qty == 0.0)
                continue;
            int found;
            size_t at = o->slot == NULL ? 0 : probe(o, s->slot[j].price, &found);
            equal = o->slot != NULL && found && o->slot[at].qty == s->slot[j].qty;
        }
        return PyBool_FromLong(op == Py_EQ ? equal : !equal);
    }
    if (!PyDict_Check(other))
        Py_RETURN_NOTIMPLEMENTED;
    PyObject *mine = side_copy(s, NULL);
    PyObject *r = mine == NULL ? NULL : PyObject_RichCompare(mine, other, op);
    Py_XDECREF(mine);
    return r;
}

static PyObject *side_repr(SideObject *s) {
    PyObject *d = side_copy(s, NULL);
    if (d == NULL)
        return NULL;
    PyObject *r = PyUnicode_FromFormat("Side(bids=%s, %R)", s->bids ? "True" : "False", d);
    Py_DECREF(d);
    return r;
}

static PyObject *side_get_bids(SideObject *s, void *unused) { return PyBool_FromLong(s->bids); }

static PyMappingMethods side_as_mapping = {
    .mp_length = (lenfunc)side_len,
    .mp_subscript = (binaryfunc)side_getitem,
    .mp_ass_subscript = (objobjargproc)side_ass,
};

static PySequenceMethods side_as_sequence = {
    .sq_contains = (objobjproc)side_contains,
};

static PyMethodDef side_methods[] = {
    {"top", (PyCFunction)(void (*)(void))side_top, METH_FASTCALL,
     "top(depth=None) -> list[tuple[float, float]]\n\nThe levels best first, at most depth."},
    {"get", (PyCFunction)(void (*)(void))side_get, METH_FASTCALL,
     "get(price, default=None): the quantity at price, else default."},
    {"pop", (PyCFunction)(void (*)(void))side_pop, METH_FASTCALL,
     "pop(price[, default]): remove the level and return its quantity."},
    {"best", (PyCFunction)side_best, METH_NOARGS,
     "best() -> (price, qty) | None: the best level, in one pass."},
    {"keys", (PyCFunction)side_keys, METH_NOARGS, "The prices (a list, in no set order)."},
    {"values", (PyCFunction)side_values, METH_NOARGS, "The quantities (a list, in no order)."},
    {"items", (PyCFunction)side_items, METH_NOARGS, "(price, qty) pairs (a list, in no order)."},
    {"clear", (PyCFunction)side_clear, METH_NOARGS, "Remove every level."},
    {"copy", (PyCFunction)side_copy, METH_NOARGS, "A plain dict price -> quantity."},
    {"update", (PyCFunction)side_update, METH_O, "Set levels from a mapping or pairs."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef side_getset[] = {
    {"bids", (getter)side_get_bids, NULL, "True for a bid side (best = highest).", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject SideType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "astra.venues._levels.Side",
    .tp_basicsize = sizeof(SideObject),
    .tp_dealloc = (destructor)side_dealloc,
    .tp_repr = (reprfunc)side_repr,
    .tp_as_sequence = &side_as_sequence,
    .tp_as_mapping = &side_as_mapping,
    .tp_hash = PyObject_HashNotImplemented,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_MAPPING,
    .tp_doc = "Side(bids: bool): one side of a book, price -> quantity; top() is sorted.",
    .tp_richcompare = (richcmpfunc)side_richcompare,
    .tp_iter = (getiterfunc)side_iter,
    .tp_methods = side_methods,
    .tp_getset = side_getset,
    .tp_new = side_new,
};

/* Every pair of `pairs` into `side` (a Side or a dict), as the Python loops do: 0, or -1 with
 * an error set (the pairs before the failing one stay applied). */
static int pairs_into(PyObject *side, PyObject *pairs, int deletes) {
    int (*step)(PyObject *, PyObject *, int);
    if (Side_Check(side)) {
        step = (int (*)(PyObject *, PyObject *, int))side_one;
    } else if (PyDict_Check(side)) {
        step = one;
    } else {
        PyErr_Format(PyExc_TypeError, "side must be a dict or a Side, not %.100s",
                     Py_TYPE(side)->tp_name);
        return -1;
    }
    if (PyList_CheckExact(pairs) || PyTuple_CheckExact(pairs)) {
        PyObject *seq = Py_NewRef(pairs);
        for (Py_ssize_t i = 0;; i++) {
            /* The list may change under a __gt__ written in Python: re-read it each time. */
            if (i >= PySequence_Fast_GET_SIZE(seq))
                break;
            if (step(side, PySequence_Fast_GET_ITEM(seq, i), deletes) < 0) {
                Py_DECREF(seq);
                return -1;
            }
        }
        Py_DECREF(seq);
        return 0;
    }
    /* Any other iterable one item at a time, as the Python loop takes it: an error from the
     * iterator leaves the pairs before it applied (PySequence_Fast would read it all first). */
    PyObject *it = PyObject_GetIter(pairs), *pair;
    if (it == NULL)
        return -1;
    while ((pair = PyIter_Next(it)) != NULL) {
        int rc = step(side, pair, deletes);
        Py_DECREF(pair);
        if (rc < 0) {
            Py_DECREF(it);
            return -1;
        }
    }
    Py_DECREF(it);
    return PyErr_Occurred() ? -1 : 0;
}

static PyObject *run(PyObject *const *args, Py_ssize_t nargs, int deletes, const char *name) {
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "%s() takes 2 arguments (side, pairs), %zd given", name,
                     nargs);
        return NULL;
    }
    if (pairs_into(args[0], args[1], deletes) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *apply_side(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    return run(args, nargs, 1, "apply_side");
}

static PyObject *fill_side(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    return run(args, nargs, 0, "fill_side");
}

/* ---- BookState: L2Book's fields and its per-update `apply`, the base L2Book extends ----
 *
 * The same fields and the same `apply` as book.py's Python `BookState` (the reference): one C
 * call per update where the Python method took a frame and two calls. A side's cached sorted
 * view is dropped before that side changes, so a failure part way never leaves a stale view.
 */
typedef struct {
    PyObject_HEAD
    PyObject *bids, *asks, *update_id, *timestamp, *bids_view, *asks_view;
} BookState;

static int state_traverse(BookState *b, visitproc visit, void *arg) {
    Py_VISIT(b->bids);
    Py_VISIT(b->asks);
    Py_VISIT(b->update_id);
    Py_VISIT(b->timestamp);
    Py_VISIT(b->bids_view);
    Py_VISIT(b->asks_view);
    return 0;
}

static int state_clear(BookState *b) {
    Py_CLEAR(b->bids);
    Py_CLEAR(b->asks);
    Py_CLEAR(b->update_id);
    Py_CLEAR(b->timestamp);
    Py_CLEAR(b->bids_view);
    Py_CLEAR(b->asks_view);
    return 0;
}

static void state_dealloc(BookState *b) {
    PyObject_GC_UnTrack(b);
    state_clear(b);
    Py_TYPE(b)->tp_free((PyObject *)b);
}

static PyObject *state_apply(BookState *b, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4) {
        PyErr_Format(PyExc_TypeError,
                     "apply() takes 4 arguments (bids, asks, update_id, timestamp), %zd given",
                     nargs);
        return NULL;
    }
    for (int k = 0; k < 2; k++) {
        int any = PyObject_IsTrue(args[k]);
        if (any < 0)
            return NULL;
        if (!any)
            continue;
        PyObject **view = k ? &b->asks_view : &b->bids_view;
        Py_XSETREF(*view, Py_NewRef(Py_None));
        PyObject *side = k ? b->asks : b->bids;
        if (side == NULL) {
            PyErr_SetString(PyExc_AttributeError, k ? "asks" : "bids");
            return NULL;
        }
        Py_INCREF(side); /* a Python __gt__ could rebind the attribute meanwhile */
        int rc = pairs_into(side, args[k], 1);
        Py_DECREF(side);
        if (rc < 0)
            return NULL;
    }
    Py_XSETREF(b->update_id, Py_NewRef(args[2]));
    Py_XSETREF(b->timestamp, Py_NewRef(args[3]));
    Py_RETURN_NONE;
}

static PyMemberDef state_members[] = {
    {"bids", T_OBJECT_EX, offsetof(BookState, bids), 0, NULL},
    {"asks", T_OBJECT_EX, offsetof(BookState, asks), 0, NULL},
    {"update_id", T_OBJECT_EX, offsetof(BookState, update_id), 0, NULL},
    {"timestamp", T_OBJECT_EX, offsetof(BookState, timestamp), 0, NULL},
    {"_bids_view", T_OBJECT, offsetof(BookState, bids_view), 0, NULL},
    {"_asks_view", T_OBJECT, offsetof(BookState, asks_view), 0, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyMethodDef state_methods[] = {
    {"apply", (PyCFunction)(void (*)(void))state_apply, METH_FASTCALL,
     "apply(bids, asks, update_id, timestamp): absolute level quantities (0 deletes)."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject BookStateType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "astra.venues._levels.BookState",
    .tp_basicsize = sizeof(BookState),
    .tp_dealloc = (destructor)state_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "L2Book's fields and apply() (book.py's BookState, in C).",
    .tp_traverse = (traverseproc)state_traverse,
    .tp_clear = (inquiry)state_clear,
    .tp_methods = state_methods,
    .tp_members = state_members,
    .tp_new = PyType_GenericNew,
};

static PyMethodDef methods[] = {
    {"apply_side", (PyCFunction)(void (*)(void))apply_side, METH_FASTCALL,
     "apply_side(side: dict, pairs) -> None\n\nApply absolute (price, qty) levels in order: "
     "qty > 0 sets, anything else deletes (an absent price is no error)."},
    {"fill_side", (PyCFunction)(void (*)(void))fill_side, METH_FASTCALL,
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
    if (PyType_Ready(&SideType) < 0 || PyType_Ready(&BookStateType) < 0)
        return NULL;
    if (seed == 0) {
        /* Per process: where this module was loaded (ASLR) and when. */
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        seed = ((uint64_t)(uintptr_t)&seed * 0x9e3779b97f4a7c15ULL) ^
               ((uint64_t)now.tv_nsec << 20) ^ (uint64_t)now.tv_sec ^ (uint64_t)getpid();
    }
    PyObject *m = PyModule_Create(&module);
    if (m != NULL && (PyModule_AddObjectRef(m, "Side", (PyObject *)&SideType) < 0 ||
                      PyModule_AddObjectRef(m, "BookState", (PyObject *)&BookStateType) < 0))
        Py_CLEAR(m);
    return m;
}
