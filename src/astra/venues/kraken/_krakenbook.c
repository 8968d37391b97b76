/* The compiled twin of astra.venues.kraken.book.KrakenBook (see that module for the rule).
 *
 * Built with -std=c11: ISO mode keeps GCC from contracting a * b + c into a fused
 * multiply-add, so every float operation here rounds exactly as the Python one does.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

PyDoc_STRVAR(module_doc,
"Kraken's spot book and its CRC32 checksum in C: the same API, results and exceptions as the\n"
"pure-Python ``astra.venues.kraken.book.KrakenBook`` (the reference, and the fallback where\n"
"this module is not built). ``book.py`` picks this one unless ``ASTRA_NATIVE=0``, and binds\n"
"its ``ChecksumMismatch`` and ``L2Book`` here (``_bind``) so both versions raise and build\n"
"the same classes.\n"
"\n"
"Invariants:\n"
"- Each side is two parallel C arrays, ``keys`` ascending (bids hold ``-price``, so both\n"
"  sides run best first) and ``qtys``; a level is found by a binary search with the same\n"
"  comparisons as ``bisect_left``, inserted or deleted at that index by a memmove; more than\n"
"  64 levels a side in one message are sorted and merged instead (O(m log m + n), the same\n"
"  result: the last level given for a price decides). At most ``depth`` levels a side after\n"
"  each message: the tail is cut and reported as deletes.\n"
"- Input is checked before the book changes: levels must be (price, quantity) pairs of\n"
"  floats, the price finite and > 0, the quantity finite (<= 0 deletes); anything else\n"
"  raises TypeError/ValueError with the book untouched. A snapshot is sorted (O(n log n));\n"
"  the last level given for a price wins, as in a dict.\n"
"- Integrity rule: the checksum text is, for the 10 best asks then the 10 best bids,\n"
"  ``\"%d%d\" % (price * 10**price_decimals + 0.5, qty * 10**qty_decimals + 0.5)`` with\n"
"  Python's float -> int truncation, byte for byte; beyond the int64 range the text comes\n"
"  from Python's own int (so it is identical there too), and an infinite product raises\n"
"  ValueError as the Python version does. The value is zlib's CRC32 of it (computed here,\n"
"  eight bytes a step). Each top-10 level's text is kept until that level changes or moves,\n"
"  and each side keeps the running CRC after each of its levels: a change at level i redoes\n"
"  the side's CRC from i. The two sides' CRCs are joined by CRC linearity (the asks' CRC run\n"
"  over as many zero bytes as the bids' text has, xor the bids' CRC), so a message re-reads\n"
"  only the side it touched, from the level it touched.\n"
"- ``update``/``snapshot`` read a decoded ``BookData`` (its ``BookLevel`` structs) directly:\n"
"  timestamp, then levels, then the checksum, in the order the Python version reads them\n"
"  (fields by slot offset for the exact type last seen while its version tag holds, else by\n"
"  attribute access; a snapshot's levels go to C arrays without tuples).\n"
"  Kraken's ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` is parsed here; any other form is handed to\n"
"  ``data.timestamp_ms(0)`` so its result or exception is the Python one.\n"
"- Memory: buffers grow with the input (no fixed-size buffer input can fill) and every index\n"
"  is checked against the side's length.");

#define TOP 10          /* levels a side in the checksum */
#define MAX_DECIMALS 18 /* 10**18 < 2**63: the scale itself stays an exact integer */
#define SMALL 8         /* levels parsed on the stack; more go to the heap */
#define MERGE_AT 64     /* more levels than this in one message: sort and merge them */

/* Bound by _bind() from book.py: the exception verify raises and the sink's book class. */
static PyObject *ChecksumMismatch = NULL;
static PyObject *L2BookType = NULL;
/* Interned attribute names. */
static PyObject *s_bids, *s_asks, *s_checksum, *s_timestamp, *s_price, *s_qty,
    *s_timestamp_ms, *s_reset;

typedef struct {
    double p, q;
} Level;

/* A top-10 level's checksum text, written once while the level stays: two int64 values in
 * decimal are 40 characters at most (a longer text, from a value past int64, is not kept). */
#define TEXT_MAX 40
typedef struct {
    char text[TEXT_MAX];
    unsigned char len;
    unsigned char ok; /* 0: not written since the level changed or moved in */
} Text;

typedef struct {
    double *keys; /* ascending: the price for asks, -price for bids */
    double *qtys; /* qtys[i]: the quantity at keys[i] */
    Py_ssize_t n, cap;
    Text top[TOP]; /* top[i]: the text of level i (i < min(n, TOP)) when top[i].ok */
    /* run[i]: CRC32 (from 0) of the side's texts 0..i, runlen[i] their length; valid for
     * i < crc_upto. A change at level i < TOP lowers crc_upto to i: the CRC is redone from
     * there, the levels above it are not read again. */
    uint32_t run[TOP];
    Py_ssize_t runlen[TOP];
    Py_ssize_t crc_upto;
} Side;

typedef struct {
    char *data;
    Py_ssize_t len, cap;
} Buf;

typedef struct {
    PyObject_HEAD
    Side bids, asks;
    Py_ssize_t depth;
    Py_ssize_t verified; /* checksums compared (and equal) over this book's life */
    double ps, qs;       /* 10.0 ** price_decimals, 10.0 ** qty_decimals */
    Buf scratch;         /* a level text too long to cache (a value past int64) */
    uint32_t checksum;
    int checksum_ok; /* no top-10 change since checksum was computed */
    /* crc_zeros(zeros_in, zeros_len) == zeros_out: most messages change one side, and the
     * bids' text length seldom; then the asks' part of the combination is reused. */
    uint32_t zeros_in, zeros_out;
    Py_ssize_t zeros_len;
} Book;

/* ---- small helpers ------------------------------------------------------------------ */

static int
side_reserve(Side *s, Py_ssize_t need)
{
    if (need <= s->cap)
        return 0;
    Py_ssize_t cap = s->cap ? s->cap : 16;
    while (cap < need) {
        if (cap > PY_SSIZE_T_MAX / 2 / (Py_ssize_t)sizeof(double)) {
            PyErr_NoMemory();
            return -1;
        }
        cap *= 2;
    }
    double *keys = PyMem_Realloc(s->keys, (size_t)cap * sizeof(double));
    if (keys == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    s->keys = keys;
    double *qtys = PyMem_Realloc(s->qtys, (size_t)cap * sizeof(double));
    if (qtys == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    s->qtys = qtys;
    s->cap = cap;
    return 0;
}

static void
side_free(Side *s)
{
    PyMem_Free(s->keys);
    PyMem_Free(s->qtys);
    s->keys = s->qtys = NULL;
    s->n = s->cap = 0;
}

static int
buf_reserve(Buf *b, Py_ssize_t extra)
{
    if (extra > PY_SSIZE_T_MAX - b->len) {
        PyErr_NoMemory();
        return -1;
    }
    Py_ssize_t need = b->len + extra;
    if (need <= b->cap)
        return 0;
    Py_ssize_t cap = b->cap ? b->cap : 512;
    while (cap < need) {
        if (cap > PY_SSIZE_T_MAX / 2) {
            PyErr_NoMemory();
            return -1;
        }
        cap *= 2;
    }
    char *data = PyMem_Realloc(b->data, (size_t)cap);
    if (data == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    b->data = data;
    b->cap = cap;
    return 0;
}

static const char DIGIT_PAIRS[201] =
    "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
    "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
    "8081828384858687888990919293949596979899";

/* Append ``"%d" % v`` for a float ``v``: Python's int(v) (truncation) in decimal. */
static int
buf_int_of(Buf *b, double v)
{
    /* [-2**63, 2**63): the truncated value fits a long long (the common case). */
    if (v >= -9223372036854775808.0 && v < 9223372036854775808.0) {
        long long x = (long long)v;
        unsigned long long u = x < 0 ? 0ULL - (unsigned long long)x : (unsigned long long)x;
        char tmp[24]; /* 20 digits at most for a 64-bit value; no input reaches past it */
        int i = (int)sizeof(tmp);
        while (u >= 100) {
            unsigned r = (unsigned)(u % 100);
            u /= 100;
            tmp[--i] = DIGIT_PAIRS[2 * r + 1];
            tmp[--i] = DIGIT_PAIRS[2 * r];
        }
        if (u >= 10) {
            tmp[--i] = DIGIT_PAIRS[2 * u + 1];
            tmp[--i] = DIGIT_PAIRS[2 * u];
        }
        else {
            tmp[--i] = (char)('0' + u);
        }
        if (x < 0)
            tmp[--i] = '-';
        int len = (int)sizeof(tmp) - i;
        if (buf_reserve(b, len) < 0)
            return -1;
        memcpy(b->data + b->len, tmp + i, (size_t)len);
        b->len += len;
        return 0;
    }
    if (!isfinite(v)) { /* inputs are finite: only price * scale overflowing gets here */
        PyErr_SetString(PyExc_ValueError,
                        "kraken book: a level is beyond the checksum's range");
        return -1;
    }
    /* Huge but finite: Python's own int gives the exact digits the reference writes. */
    PyObject *n = PyLong_FromDouble(v);
    if (n == NULL)
        return -1;
    PyObject *text = PyObject_Str(n);
    Py_DECREF(n);
    if (text == NULL)
        return -1;
    Py_ssize_t len;
    const char *s = PyUnicode_AsUTF8AndSize(text, &len);
    if (s == NULL || buf_reserve(b, len) < 0) {
        Py_DECREF(text);
        return -1;
    }
    memcpy(b->data + b->len, s, (size_t)len);
    b->len += len;
    Py_DECREF(text);
    return 0;
}

/* (a, b) as a new tuple of floats (Py_BuildValue parses its format every call). */
static PyObject *
float_pair(double a, double b)
{
    PyObject *x = PyFloat_FromDouble(a);
    PyObject *y = x ? PyFloat_FromDouble(b) : NULL;
    PyObject *pair = y ? PyTuple_New(2) : NULL;
    if (pair == NULL) {
        Py_XDECREF(x);
        Py_XDECREF(y);
        return NULL;
    }
    PyTuple_SET_ITEM(pair, 0, x);
    PyTuple_SET_ITEM(pair, 1, y);
    return pair;
}

/* bisect_left over doubles: the first index whose key is not < k. */
static inline Py_ssize_t
bisect(const double *keys, Py_ssize_t n, double k)
{
    Py_ssize_t lo = 0, hi = n;
    while (lo < hi) {
        Py_ssize_t mid = (Py_ssize_t)(((size_t)lo + (size_t)hi) / 2);
        if (keys[mid] < k)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* ---- reading input ------------------------------------------------------------------ */

/* Check one (price, quantity) pair as book.py's _checked does; fill *out. */
static int
check_level(PyObject *p, PyObject *q, Level *out)
{
    if (!PyFloat_CheckExact(p) || !PyFloat_CheckExact(q)) {
        PyObject *pn = PyType_GetName(Py_TYPE(p));
        PyObject *qn = pn ? PyType_GetName(Py_TYPE(q)) : NULL;
        if (qn != NULL)
            PyErr_Format(PyExc_TypeError,
                         "kraken book: price and quantity must be floats, not %U and %U", pn,
                         qn);
        Py_XDECREF(pn);
        Py_XDECREF(qn);
        return -1;
    }
    double pv = PyFloat_AS_DOUBLE(p), qv = PyFloat_AS_DOUBLE(q);
    if (!(0.0 < pv && pv < INFINITY && -INFINITY < qv && qv < INFINITY)) {
        PyErr_Format(PyExc_ValueError,
                     "kraken book: level (%R, %R): the price must be finite and > 0, "
                     "the quantity finite",
                     p, q);
        return -1;
    }
    out->p = pv;
    out->q = qv;
    return 0;
}

/* One level as the pair ``p, q = item`` unpacks it (new references on success). */
static int
unpack_pair(PyObject *item, PyObject **p, PyObject **q)
{
    if (PyTuple_CheckExact(item) || PyList_CheckExact(item)) {
        Py_ssize_t size = PySequence_Fast_GET_SIZE(item);
        if (size != 2) {
            if (size < 2)
                PyErr_Format(PyExc_ValueError,
                             "not enough values to unpack (expected 2, got %zd)", size);
            else
                PyErr_SetString(PyExc_ValueError, "too many values to unpack (expected 2)");
            return -1;
        }
        *p = Py_NewRef(PySequence_Fast_GET_ITEM(item, 0));
        *q = Py_NewRef(PySequence_Fast_GET_ITEM(item, 1));
        return 0;
    }
    PyObject *it = PyObject_GetIter(item);
    if (it == NULL) {
        if (PyErr_ExceptionMatches(PyExc_TypeError)) {
            PyErr_Clear();
            PyErr_Format(PyExc_TypeError, "cannot unpack non-iterable %.200s object",
                         Py_TYPE(item)->tp_name);
        }
        return -1;
    }
    PyObject *got[3] = {NULL, NULL, NULL};
    int n = 0;
    for (; n < 3; n++) {
        got[n] = PyIter_Next(it);
        if (got[n] == NULL)
            break;
    }
    Py_DECREF(it);
    if (PyErr_Occurred() || n != 2) {
        if (!PyErr_Occurred()) {
            if (n < 2)
                PyErr_Format(PyExc_ValueError,
                             "not enough values to unpack (expected 2, got %d)", n);
            else
                PyErr_SetString(PyExc_ValueError, "too many values to unpack (expected 2)");
        }
        for (int i = 0; i < 3; i++)
            Py_XDECREF(got[i]);
        return -1;
    }
    *p = got[0];
    *q = got[1];
    return 0;
}

/* A list of (price, quantity) pairs, checked, as C levels: *out is ``small`` when the list
 * fits it, else heap memory the caller frees (when it is not ``small``). */
static int
parse_levels(PyObject *list, Level *small, Level **out, Py_ssize_t *count)
{
    if (!PyList_CheckExact(list)) {
        PyObject *name = PyType_GetName(Py_TYPE(list));
        if (name != NULL) {
            PyErr_Format(PyExc_TypeError, "kraken book: levels must be a list, not %U", name);
            Py_DECREF(name);
        }
        return -1;
    }
    Py_ssize_t n = PyList_GET_SIZE(list);
    Level *levels = small;
    if (n > SMALL) {
        levels = PyMem_New(Level, (size_t)n);
        if (levels == NULL) {
            PyErr_NoMemory();
            return -1;
        }
    }
    Py_ssize_t i = 0;
    /* The size is read again each turn: unpacking an odd item may run Python code. */
    for (; i < n && i < PyList_GET_SIZE(list); i++) {
        PyObject *item = Py_NewRef(PyList_GET_ITEM(list, i));
        PyObject *p, *q;
        int rc = unpack_pair(item, &p, &q);
        Py_DECREF(item);
        if (rc == 0) {
            rc = check_level(p, q, &levels[i]);
            Py_DECREF(p);
            Py_DECREF(q);
        }
        if (rc < 0) {
            if (levels != small)
                PyMem_Free(levels);
            return -1;
        }
    }
    *out = levels;
    *count = i;
    return 0;
}

/* ---- the book ------------------------------------------------------------------------ */

static void
invalidate(Book *b)
{
    b->checksum_ok = 0;
    b->bids.crc_upto = b->asks.crc_upto = 0;
    for (int i = 0; i < TOP; i++)
        b->bids.top[i].ok = b->asks.top[i].ok = 0;
}

/* Keep the text cache in step with the arrays: level i changed, came or went. Entries at or
 * past the side's length are never read; one becomes a level again only by a shift from a
 * live entry, or, after a delete, at the last slot, which is marked unwritten. */
static inline void
top_changed(Side *s, Py_ssize_t i)
{
    if (i < TOP) {
        s->top[i].ok = 0;
        if (s->crc_upto > i)
            s->crc_upto = i;
    }
}

static inline void
top_inserted(Side *s, Py_ssize_t i)
{
    if (i < TOP) {
        memmove(&s->top[i + 1], &s->top[i], (size_t)(TOP - 1 - i) * sizeof(Text));
        s->top[i].ok = 0;
        if (s->crc_upto > i)
            s->crc_upto = i;
    }
}

static inline void
top_deleted(Side *s, Py_ssize_t i)
{
    if (i < TOP) {
        memmove(&s->top[i], &s->top[i + 1], (size_t)(TOP - 1 - i) * sizeof(Text));
        s->top[TOP - 1].ok = 0; /* the 11th level, if any, moves in */
        if (s->crc_upto > i)
            s->crc_upto = i;
    }
}

typedef struct {
    double k, q;
    Py_ssize_t at; /* position in the input: the last one for a price wins */
} Keyed;

static int
keyed_cmp(const void *a, const void *b)
{
    const Keyed *x = a, *y = b;
    if (x->k < y->k)
        return -1;
    if (x->k > y->k)
        return 1;
    return (x->at > y->at) - (x->at < y->at);
}

/* ``levels`` (count > 0) as keys, sorted, the last level given per price only: what applying
 * them in order leaves for each price. A new array the caller frees; its length in *m. */
static Keyed *
last_per_price(const Level *levels, Py_ssize_t count, double sign, Py_ssize_t *m)
{
    Keyed *all = PyMem_New(Keyed, (size_t)count);
    if (all == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        all[i].k = levels[i].p * sign;
        all[i].q = levels[i].q;
        all[i].at = i;
    }
    qsort(all, (size_t)count, sizeof(Keyed), keyed_cmp);
    Py_ssize_t kept = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        if (i + 1 < count && all[i + 1].k == all[i].k)
            continue; /* a later level for the same price overrides this one */
        all[kept++] = all[i];
    }
    *m = kept;
    return all;
}

/* Many levels in one message: one sort and a merge instead of an insert (a memmove) each,
 * so a huge message costs O(m log m + n), not O(m * n). The result is the one applying them
 * in order gives: for each price the last level given decides. The side's text cache is
 * dropped (the caller reports a top-10 change). */
static int
merge_side(Side *s, const Level *levels, Py_ssize_t count, double sign)
{
    Py_ssize_t m, n = s->n;
    Keyed *ch = last_per_price(levels, count, sign, &m);
    if (ch == NULL)
        return -1;
    if (n > PY_SSIZE_T_MAX / 2 - m) {
        PyMem_Free(ch);
        PyErr_NoMemory();
        return -1;
    }
    Py_ssize_t cap = n + m > 16 ? n + m : 16;
    double *keys = PyMem_New(double, (size_t)cap);
    double *qtys = keys ? PyMem_New(double, (size_t)cap) : NULL;
    if (qtys == NULL) {
        PyMem_Free(keys);
        PyMem_Free(ch);
        PyErr_NoMemory();
        return -1;
    }
    Py_ssize_t i = 0, j = 0, out = 0;
    while (i < n || j < m) {
        if (j == m || (i < n && s->keys[i] < ch[j].k)) { /* a level no change touches */
            keys[out] = s->keys[i];
            qtys[out++] = s->qtys[i++];
            continue;
        }
        if (i < n && s->keys[i] == ch[j].k)
            i++; /* changed (or deleted) by ch[j] */
        if (ch[j].q > 0) {
            keys[out] = ch[j].k;
            qtys[out++] = ch[j].q;
        }
        j++;
    }
    PyMem_Free(ch);
    PyMem_Free(s->keys);
    PyMem_Free(s->qtys);
    s->keys = keys;
    s->qtys = qtys;
    s->cap = cap;
    s->n = out;
    s->crc_upto = 0;
    for (int t = 0; t < TOP; t++)
        s->top[t].ok = 0;
    return 0;
}

/* Apply one side's levels in order, then cut it to depth, appending a (price, 0.0) delete
 * per level cut to ``changes``. Returns 1 when a change landed in the top 10, 0 if none,
 * -1 on error (only allocation can fail; the side is then consistent). */
static int
apply_side(Book *b, Side *s, const Level *levels, Py_ssize_t count, double sign,
           PyObject *changes)
{
    Py_ssize_t n = s->n;
    int top = n < TOP; /* a short side: any change is in its top 10 */
    if (count > MERGE_AT) {
        if (merge_side(s, levels, count, sign) < 0)
            return -1;
        n = s->n;
        top = 1;
        count = 0; /* (all applied) */
    }
    for (Py_ssize_t j = 0; j < count; j++) {
        double k = levels[j].p * sign, q = levels[j].q;
        Py_ssize_t i = bisect(s->keys, n, k);
        if (q > 0) {
            if (i != n && s->keys[i] == k) {
                s->qtys[i] = q;
                top_changed(s, i);
            }
            else {
                if (side_reserve(s, n + 1) < 0) {
                    s->n = n;
                    return -1;
                }
                memmove(s->keys + i + 1, s->keys + i, (size_t)(n - i) * sizeof(double));
                memmove(s->qtys + i + 1, s->qtys + i, (size_t)(n - i) * sizeof(double));
                s->keys[i] = k;
                s->qtys[i] = q;
                top_inserted(s, i);
                n++;
            }
        }
        else if (i != n && s->keys[i] == k) {
            memmove(s->keys + i, s->keys + i + 1, (size_t)(n - i - 1) * sizeof(double));
            memmove(s->qtys + i, s->qtys + i + 1, (size_t)(n - i - 1) * sizeof(double));
            top_deleted(s, i);
            n--;
        }
        else {
            continue; /* deleting an absent level: nothing changed */
        }
        if (i < TOP)
            top = 1;
    }
    s->n = n;
    if (n > b->depth) { /* the tail only: the top 10 stays as it is */
        for (Py_ssize_t i = b->depth; i < n; i++) {
            PyObject *pair = float_pair(s->keys[i] * sign, 0.0);
            if (pair == NULL)
                return -1;
            int rc = PyList_Append(changes, pair);
            Py_DECREF(pair);
            if (rc < 0)
                return -1;
        }
        s->n = b->depth;
    }
    return top;
}

/* Replace a side with a snapshot: the last level given per price, those with a positive
 * quantity, sorted, the first ``depth`` of them. */
static int
reset_side(Book *b, Side *s, const Level *levels, Py_ssize_t count, double sign)
{
    s->n = 0;
    if (count == 0)
        return 0;
    Py_ssize_t m;
    Keyed *all = last_per_price(levels, count, sign, &m);
    if (all == NULL)
        return -1;
    Py_ssize_t want = m < b->depth ? m : b->depth;
    if (side_reserve(s, want) < 0) {
        PyMem_Free(all);
        return -1;
    }
    Py_ssize_t n = 0;
    for (Py_ssize_t i = 0; i < m && n < want; i++) {
        if (all[i].q > 0) {
            s->keys[n] = all[i].k;
            s->qtys[n] = all[i].q;
            n++;
        }
    }
    s->n = n;
    PyMem_Free(all);
    return 0;
}

static int
book_reset_levels(Book *b, const Level *bl, Py_ssize_t bn, const Level *al, Py_ssize_t an)
{
    invalidate(b);
    if (reset_side(b, &b->bids, bl, bn, -1.0) < 0 || reset_side(b, &b->asks, al, an, 1.0) < 0) {
        b->bids.n = b->asks.n = 0; /* out of memory: an empty book, never a half one */
        return -1;
    }
    return 0;
}

static int
book_do_reset(Book *b, PyObject *bids, PyObject *asks)
{
    Level bsmall[SMALL], asmall[SMALL], *bl = NULL, *al = NULL;
    Py_ssize_t bn = 0, an = 0;
    int rc = -1;
    if (parse_levels(bids, bsmall, &bl, &bn) < 0)
        return -1;
    if (parse_levels(asks, asmall, &al, &an) < 0)
        goto done;
    rc = book_reset_levels(b, bl, bn, al, an);
done:
    if (bl != NULL && bl != bsmall)
        PyMem_Free(bl);
    if (al != NULL && al != asmall)
        PyMem_Free(al);
    return rc;
}

/* Apply checked level lists; bids/asks get the truncation deletes appended. */
static int
book_do_apply(Book *b, PyObject *bids, PyObject *asks)
{
    Level bsmall[SMALL], asmall[SMALL], *bl = NULL, *al = NULL;
    Py_ssize_t bn = 0, an = 0;
    int rc = -1;
    if (parse_levels(bids, bsmall, &bl, &bn) < 0)
        return -1;
    if (parse_levels(asks, asmall, &al, &an) < 0)
        goto done;
    if (bn) {
        int top = apply_side(b, &b->bids, bl, bn, -1.0, bids);
        if (top < 0) {
            invalidate(b);
            goto done;
        }
        if (top)
            b->checksum_ok = 0;
    }
    if (an) {
        int top = apply_side(b, &b->asks, al, an, 1.0, asks);
        if (top < 0) {
            invalidate(b);
            goto done;
        }
        if (top)
            b->checksum_ok = 0;
    }
    rc = 0;
done:
    if (bl != NULL && bl != bsmall)
        PyMem_Free(bl);
    if (al != NULL && al != asmall)
        PyMem_Free(al);
    return rc;
}

/* CRC-32 as zlib computes it (reflected, polynomial 0xEDB88320), eight bytes a step with
 * eight tables: the checksum is most of a message's cost, and zlib's own is byte-serial
 * for inputs this short. crc_table[0] is the classic one-byte table. */
static uint32_t crc_table[8][256];

static void
crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = c & 1 ? (c >> 1) ^ 0xEDB88320u : c >> 1;
        crc_table[0][i] = c;
    }
    for (int t = 1; t < 8; t++)
        for (int i = 0; i < 256; i++)
            crc_table[t][i] = (crc_table[t - 1][i] >> 8) ^ crc_table[0][crc_table[t - 1][i] & 0xff];
}

/* zlib's crc32(crc, p, n). */
static uint32_t
crc_update(uint32_t crc, const unsigned char *p, Py_ssize_t n)
{
    uint32_t c = ~crc;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    for (; n >= 8; p += 8, n -= 8) {
        uint32_t lo, hi;
        memcpy(&lo, p, 4);
        memcpy(&hi, p + 4, 4);
        lo ^= c;
        c = crc_table[7][lo & 0xff] ^ crc_table[6][(lo >> 8) & 0xff] ^
            crc_table[5][(lo >> 16) & 0xff] ^ crc_table[4][lo >> 24] ^
            crc_table[3][hi & 0xff] ^ crc_table[2][(hi >> 8) & 0xff] ^
            crc_table[1][(hi >> 16) & 0xff] ^ crc_table[0][hi >> 24];
    }
#endif
    for (; n > 0; p++, n--)
        c = (c >> 8) ^ crc_table[0][(c ^ *p) & 0xff];
    return ~c;
}

/* The CRC of A then B is zlib's crc32_combine(CRC(A), CRC(B), len(B)): the CRC is linear,
 * so it is CRC(A) run over len(B) zero bytes (no pre/post inversion), xor CRC(B). Each side's
 * CRC thus starts from 0 and never depends on the other side's. */
static uint32_t
crc_zeros(uint32_t c, Py_ssize_t n)
{
    /* Eight zero bytes a step: a slice whose data is zero looks up the CRC's bytes only. */
    for (; n >= 8; n -= 8)
        c = crc_table[7][c & 0xff] ^ crc_table[6][(c >> 8) & 0xff] ^
            crc_table[5][(c >> 16) & 0xff] ^ crc_table[4][c >> 24];
    for (; n > 0; n--)
        c = (c >> 8) ^ crc_table[0][c & 0xff];
    return c;
}

/* Level i's checksum text (i < min(n, TOP)): the cached one, else written and kept (or, too
 * long to keep, written into b->scratch). */
static int
level_text(Book *b, Side *s, Py_ssize_t i, double sign, const char **text, Py_ssize_t *len)
{
    Text *t = &s->top[i];
    if (!t->ok) {
        Buf *out = &b->scratch;
        out->len = 0;
        if (buf_int_of(out, s->keys[i] * sign * b->ps + 0.5) < 0 ||
            buf_int_of(out, s->qtys[i] * b->qs + 0.5) < 0)
            return -1;
        if (out->len > TEXT_MAX) {
            *text = out->data;
            *len = out->len;
            return 0;
        }
        memcpy(t->text, out->data, (size_t)out->len);
        t->len = (unsigned char)out->len;
        t->ok = 1;
    }
    *text = t->text;
    *len = t->len;
    return 0;
}

/* The side's top-10 CRC (from 0) and text length, redone from its first changed level. */
static int
side_crc(Book *b, Side *s, double sign, uint32_t *crc, Py_ssize_t *len)
{
    Py_ssize_t m = s->n < TOP ? s->n : TOP;
    Py_ssize_t i = s->crc_upto < m ? s->crc_upto : m;
    uint32_t c = i ? s->run[i - 1] : 0;
    Py_ssize_t total = i ? s->runlen[i - 1] : 0;
    for (; i < m; i++) {
        const char *text;
        Py_ssize_t n;
        if (level_text(b, s, i, sign, &text, &n) < 0) {
            s->crc_upto = i;
            return -1;
        }
        c = crc_update(c, (const unsigned char *)text, n);
        total += n;
        s->run[i] = c;
        s->runlen[i] = total;
    }
    s->crc_upto = m;
    *crc = c;
    *len = total;
    return 0;
}

static int
book_checksum(Book *b, uint32_t *value)
{
    if (!b->checksum_ok) {
        uint32_t asks, bids;
        Py_ssize_t ask_len, bid_len;
        if (side_crc(b, &b->asks, 1.0, &asks, &ask_len) < 0 ||
            side_crc(b, &b->bids, -1.0, &bids, &bid_len) < 0)
            return -1;
        /* The asks' text then the bids', as one CRC (see crc_zeros). */
        if (asks != b->zeros_in || bid_len != b->zeros_len) {
            b->zeros_in = asks;
            b->zeros_len = bid_len;
            b->zeros_out = crc_zeros(asks, bid_len);
        }
        b->checksum = b->zeros_out ^ bids;
        b->checksum_ok = 1;
    }
    *value = b->checksum;
    return 0;
}

static int
book_verify(Book *b, PyObject *expected)
{
    uint32_t got;
    if (book_checksum(b, &got) < 0)
        return -1;
    int equal;
    if (PyLong_CheckExact(expected)) {
        int overflow;
        long long v = PyLong_AsLongLongAndOverflow(expected, &overflow);
        if (v == -1 && PyErr_Occurred())
            return -1;
        equal = !overflow && v >= 0 && (unsigned long long)v == (unsigned long long)got;
    }
    else { /* whatever ``got != expected`` says in Python */
        PyObject *g = PyLong_FromUnsignedLong((unsigned long)got);
        if (g == NULL)
            return -1;
        int ne = PyObject_RichCompareBool(g, expected, Py_NE);
        Py_DECREF(g);
        if (ne < 0)
            return -1;
        equal = !ne;
    }
    if (!equal) {
        if (ChecksumMismatch == NULL)
            PyErr_SetString(PyExc_RuntimeError, "_krakenbook._bind() was not called");
        else
            PyErr_Format(ChecksumMismatch, "checksum %lu != venue's %S", (unsigned long)got,
                         expected);
        return -1;
    }
    b->verified++;
    return 0;
}

/* ---- reading a decoded BookData ------------------------------------------------------ */

static int
digits(const unsigned char *s, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 0;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (as calendar.timegm counts). */
static long long
days_from_civil(int y, int m, int d)
{
    y -= m <= 2;
    long long era = (y >= 0 ? y : y - 399) / 400;
    long long yoe = y - era * 400;
    long long doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    long long doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

/* Kraken's ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` in epoch ms, as BookData.timestamp_ms reads it
 * (only the first three fraction digits count). 1 when the text is not in that exact form
 * with in-range fields: the caller then asks Python, whose answer or error is the rule. */
static int
v2_timestamp_ms(PyObject *ts, long long *ms)
{
    if (!PyUnicode_CheckExact(ts) || !PyUnicode_IS_ASCII(ts) || PyUnicode_GET_LENGTH(ts) != 27)
        return 1;
    const unsigned char *s = PyUnicode_1BYTE_DATA(ts);
    int y, mo, d, h, mi, sec, milli;
    if (s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' || s[16] != ':' ||
        s[19] != '.' || s[26] != 'Z')
        return 1;
    if (digits(s, 4, &y) || digits(s + 5, 2, &mo) || digits(s + 8, 2, &d) ||
        digits(s + 11, 2, &h) || digits(s + 14, 2, &mi) || digits(s + 17, 2, &sec) ||
        digits(s + 20, 3, &milli))
        return 1;
    static const int mdays[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    /* Leap seconds (60, 61) and year 0 are left to strptime: rare, and its rule. */
    if (y < 1 || mo < 1 || mo > 12 || d < 1 || h > 23 || mi > 59 || sec > 59)
        return 1;
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (d > mdays[mo - 1] + (mo == 2 && leap))
        return 1;
    *ms = ((days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec) * 1000) + milli;
    return 0;
}

/* Reading a decoded message's fields. A msgspec Struct keeps each field in a slot, read by a
 * member descriptor; PyObject_GetAttr finds that descriptor (type lookup, descriptor call) on
 * every read. For the exact type seen last, the slots' offsets are kept, taken from its
 * member descriptors, and read directly while the type's version tag is unchanged (any
 * change to the type, e.g. a field replaced by a property, invalidates the tag). Anything
 * else (another type, a non-member attribute, an empty slot) takes PyObject_GetAttr, whose
 * result or error is the rule. */
#define MAX_FIELDS 4
typedef struct {
    PyTypeObject *type; /* the type last resolved (a strong reference), or NULL */
    unsigned int tag;   /* its tp_version_tag then */
    int fast;           /* 1: offsets below are its slots */
    int n;
    PyObject **names[MAX_FIELDS];
    Py_ssize_t offset[MAX_FIELDS];
} Fields;

enum { F_BIDS, F_ASKS, F_CHECKSUM, F_TIMESTAMP };
enum { F_PRICE, F_QTY };
static Fields data_fields = {NULL, 0, 0, 4, {&s_bids, &s_asks, &s_checksum, &s_timestamp}, {0}};
static Fields level_fields = {NULL, 0, 0, 2, {&s_price, &s_qty, NULL, NULL}, {0}};

static inline int
tag_is(PyTypeObject *tp, unsigned int tag)
{
#ifdef Py_TPFLAGS_VALID_VERSION_TAG
    return PyType_HasFeature(tp, Py_TPFLAGS_VALID_VERSION_TAG) && tp->tp_version_tag == tag;
#else
    return 0; /* (no such flag in this Python: every read takes PyObject_GetAttr) */
#endif
}

/* Take ``tp``'s slot offsets for f's names, when each is a plain object member. */
static void
resolve(Fields *f, PyTypeObject *tp)
{
    Py_XSETREF(f->type, (PyTypeObject *)Py_NewRef(tp));
    f->fast = 0;
    f->tag = 0;
    if (tp->tp_getattro != PyObject_GenericGetAttr)
        return; /* a custom __getattribute__ decides what a read means */
    for (int i = 0; i < f->n; i++) {
        PyObject *d = PyObject_GetAttr((PyObject *)tp, *f->names[i]);
        if (d == NULL) {
            PyErr_Clear();
            return;
        }
        int member = Py_IS_TYPE(d, &PyMemberDescr_Type) &&
                     ((PyMemberDescrObject *)d)->d_member->type == T_OBJECT_EX &&
                     PyType_IsSubtype(tp, PyDescr_TYPE(d));
        if (member)
            f->offset[i] = ((PyMemberDescrObject *)d)->d_member->offset;
        Py_DECREF(d);
        if (!member)
            return;
    }
    /* The lookups above gave the type a version tag, unless it cannot have one. */
    f->tag = tp->tp_version_tag;
    f->fast = tag_is(tp, f->tag);
}

/* obj.<f's field i>: a new reference, or NULL with the error set. */
static PyObject *
field(Fields *f, PyObject *obj, int i)
{
    PyTypeObject *tp = Py_TYPE(obj);
    if (tp != f->type || (f->fast && !tag_is(tp, f->tag)))
        resolve(f, tp);
    if (f->fast && tag_is(tp, f->tag)) {
        PyObject *value = *(PyObject **)((char *)obj + f->offset[i]);
        if (value != NULL)
            return Py_NewRef(value);
    }
    return PyObject_GetAttr(obj, *f->names[i]);
}

/* data.timestamp_ms(0), fast for Kraken's own form. New reference. */
static PyObject *
data_timestamp(PyObject *data)
{
    PyObject *ts = field(&data_fields, data, F_TIMESTAMP);
    if (ts == NULL)
        return NULL;
    long long ms;
    int rc = v2_timestamp_ms(ts, &ms);
    Py_DECREF(ts);
    if (rc == 0)
        return PyLong_FromLongLong(ms);
    PyObject *zero = PyLong_FromLong(0);
    if (zero == NULL)
        return NULL;
    PyObject *result = PyObject_CallMethodOneArg(data, s_timestamp_ms, zero);
    Py_DECREF(zero);
    return result;
}

/* ``[(lv.price, lv.qty) for lv in levels] if levels else []``, as BookData.to_changes. */
static PyObject *
changes_of(PyObject *levels)
{
    int truth = PyObject_IsTrue(levels);
    if (truth < 0)
        return NULL;
    if (!truth)
        return PyList_New(0);
    PyObject *seq = PySequence_Fast(levels, "BookData levels must be iterable");
    if (seq == NULL)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject *out = PyList_New(n);
    if (out == NULL) {
        Py_DECREF(seq);
        return NULL;
    }
    Py_ssize_t i = 0;
    /* seq is the list itself when it is one: an odd level's __getattr__ could shrink it, so
     * its size is read again each turn and the level held while it is read. */
    for (; i < n && i < PySequence_Fast_GET_SIZE(seq); i++) {
        PyObject *lv = Py_NewRef(PySequence_Fast_GET_ITEM(seq, i));
        PyObject *p = field(&level_fields, lv, F_PRICE);
        PyObject *q = p ? field(&level_fields, lv, F_QTY) : NULL;
        PyObject *pair = q ? PyTuple_New(2) : NULL;
        Py_DECREF(lv);
        if (pair == NULL) {
            Py_XDECREF(p);
            Py_XDECREF(q);
            Py_DECREF(seq);
            Py_SET_SIZE(out, i); /* the slots from i on were never filled */
            Py_DECREF(out);
            return NULL;
        }
        PyTuple_SET_ITEM(pair, 0, p);
        PyTuple_SET_ITEM(pair, 1, q);
        PyList_SET_ITEM(out, i, pair);
    }
    Py_SET_SIZE(out, i);
    Py_DECREF(seq);
    return out;
}

/* data.to_changes(): two new lists into *bids, *asks. */
static int
data_changes(PyObject *data, PyObject **bids, PyObject **asks)
{
    PyObject *b = field(&data_fields, data, F_BIDS);
    PyObject *a = b ? field(&data_fields, data, F_ASKS) : NULL;
    if (a == NULL) {
        Py_XDECREF(b);
        return -1;
    }
    *bids = changes_of(b);
    *asks = *bids ? changes_of(a) : NULL;
    Py_DECREF(b);
    Py_DECREF(a);
    if (*asks == NULL) {
        Py_CLEAR(*bids);
        return -1;
    }
    return 0;
}

/* One side of a BookData read straight into C levels (no tuples: a snapshot needs none):
 * ``lv.price``/``lv.qty`` of each, an attribute error at once (as to_changes raises it);
 * the index of the first level _checked would refuse in *bad (-1: none), for the caller to
 * raise once both sides were read. *out as in parse_levels. */
static int
read_side(PyObject *levels, Level *small, Level **out, Py_ssize_t *count, Py_ssize_t *bad)
{
    *out = small;
    *count = 0;
    *bad = -1;
    int truth = PyObject_IsTrue(levels);
    if (truth <= 0)
        return truth; /* (empty or None: no levels, as to_changes gives []) */
    PyObject *seq = PySequence_Fast(levels, "BookData levels must be iterable");
    if (seq == NULL)
        return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq), i = 0;
    Level *lv = small;
    if (n > SMALL && (lv = PyMem_New(Level, (size_t)n)) == NULL) {
        Py_DECREF(seq);
        PyErr_NoMemory();
        return -1;
    }
    /* The size is read again each turn and the level held (see changes_of). */
    for (; i < n && i < PySequence_Fast_GET_SIZE(seq); i++) {
        PyObject *level = Py_NewRef(PySequence_Fast_GET_ITEM(seq, i));
        PyObject *p = field(&level_fields, level, F_PRICE);
        PyObject *q = p ? field(&level_fields, level, F_QTY) : NULL;
        Py_DECREF(level);
        if (q == NULL) {
            Py_XDECREF(p);
            Py_DECREF(seq);
            if (lv != small)
                PyMem_Free(lv);
            return -1;
        }
        if (*bad < 0 && check_level(p, q, &lv[i]) < 0) {
            PyErr_Clear(); /* raised again, in its turn, by raise_bad */
            *bad = i;
        }
        Py_DECREF(p);
        Py_DECREF(q);
    }
    Py_DECREF(seq);
    *out = lv;
    *count = i;
    return 0;
}

/* The error _checked raises for level ``at`` of ``levels`` (read again to word it). */
static void
raise_bad(PyObject *levels, Py_ssize_t at)
{
    PyObject *seq = PySequence_Fast(levels, "BookData levels must be iterable");
    if (seq == NULL)
        return;
    if (at < PySequence_Fast_GET_SIZE(seq)) {
        PyObject *level = Py_NewRef(PySequence_Fast_GET_ITEM(seq, at));
        PyObject *p = field(&level_fields, level, F_PRICE);
        PyObject *q = p ? field(&level_fields, level, F_QTY) : NULL;
        Level unused;
        if (q != NULL && check_level(p, q, &unused) == 0)
            PyErr_SetString(PyExc_RuntimeError, "kraken book: a level changed while read");
        Py_DECREF(level);
        Py_XDECREF(p);
        Py_XDECREF(q);
    }
    else {
        PyErr_SetString(PyExc_RuntimeError, "kraken book: levels changed while read");
    }
    Py_DECREF(seq);
}

/* reset(*data.to_changes()), without the tuples. */
static int
data_reset(Book *b, PyObject *data)
{
    PyObject *bids = field(&data_fields, data, F_BIDS);
    PyObject *asks = bids ? field(&data_fields, data, F_ASKS) : NULL;
    if (asks == NULL) {
        Py_XDECREF(bids);
        return -1;
    }
    Level bsmall[SMALL], asmall[SMALL], *bl = bsmall, *al = asmall;
    Py_ssize_t bn, an, bbad = -1, abad = -1;
    int rc = read_side(bids, bsmall, &bl, &bn, &bbad);
    if (rc == 0)
        rc = read_side(asks, asmall, &al, &an, &abad);
    if (rc == 0 && (bbad >= 0 || abad >= 0)) {
        if (bbad >= 0)
            raise_bad(bids, bbad);
        else
            raise_bad(asks, abad);
        rc = -1;
    }
    if (rc == 0)
        rc = book_reset_levels(b, bl, bn, al, an);
    if (bl != bsmall)
        PyMem_Free(bl);
    if (al != asmall)
        PyMem_Free(al);
    Py_DECREF(bids);
    Py_DECREF(asks);
    return rc;
}

static int
data_verify(Book *b, PyObject *data)
{
    PyObject *expected = field(&data_fields, data, F_CHECKSUM);
    if (expected == NULL)
        return -1;
    int rc = book_verify(b, expected);
    Py_DECREF(expected);
    return rc;
}

/* ---- Python methods ------------------------------------------------------------------ */

static int
index_in(PyObject *obj, const char *name, Py_ssize_t lo, Py_ssize_t hi, Py_ssize_t *out)
{
    PyObject *n = PyNumber_Index(obj);
    if (n == NULL)
        return -1;
    Py_ssize_t v = PyLong_AsSsize_t(n);
    Py_DECREF(n);
    if (v == -1 && PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_OverflowError))
            return -1;
        PyErr_Clear();
        v = lo - 1; /* out of range either way */
    }
    if (v < lo || v > hi) {
        PyErr_Format(PyExc_ValueError, "kraken book: %s must be in %zd..%zd, not %R", name, lo,
                     hi, obj);
        return -1;
    }
    *out = v;
    return 0;
}

static int
Book_init(Book *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"depth", "price_decimals", "qty_decimals", NULL};
    PyObject *depth, *pd, *qd;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOO:KrakenBook", kwlist, &depth, &pd, &qd))
        return -1;
    Py_ssize_t dv, pv, qv;
    if (index_in(depth, "depth", 1, PY_SSIZE_T_MAX / 2, &dv) < 0 ||
        index_in(pd, "price_decimals", 0, MAX_DECIMALS, &pv) < 0 ||
        index_in(qd, "qty_decimals", 0, MAX_DECIMALS, &qv) < 0)
        return -1;
    if (ChecksumMismatch == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "_krakenbook._bind() was not called");
        return -1;
    }
    self->depth = dv;
    self->ps = pow(10.0, (double)pv); /* what 10.0 ** n gives in Python (libm's pow) */
    self->qs = pow(10.0, (double)qv);
    self->verified = 0;
    self->bids.n = self->asks.n = 0;
    invalidate(self);
    return 0;
}

static void
Book_dealloc(Book *self)
{
    side_free(&self->bids);
    side_free(&self->asks);
    PyMem_Free(self->scratch.data);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
Book_reset(Book *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "reset() takes 2 arguments (%zd given)", nargs);
        return NULL;
    }
    if (book_do_reset(self, args[0], args[1]) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *
Book_apply(Book *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "apply() takes 2 arguments (%zd given)", nargs);
        return NULL;
    }
    if (book_do_apply(self, args[0], args[1]) < 0)
        return NULL;
    return PyTuple_Pack(2, args[0], args[1]);
}

static PyObject *
Book_update(Book *self, PyObject *data)
{
    PyObject *ts = data_timestamp(data), *bids = NULL, *asks = NULL;
    if (ts == NULL)
        return NULL;
    if (data_changes(data, &bids, &asks) < 0 || book_do_apply(self, bids, asks) < 0 ||
        data_verify(self, data) < 0) {
        Py_DECREF(ts);
        Py_XDECREF(bids);
        Py_XDECREF(asks);
        return NULL;
    }
    PyObject *result = PyTuple_New(3);
    if (result == NULL) {
        Py_DECREF(ts);
        Py_DECREF(bids);
        Py_DECREF(asks);
        return NULL;
    }
    PyTuple_SET_ITEM(result, 0, bids);
    PyTuple_SET_ITEM(result, 1, asks);
    PyTuple_SET_ITEM(result, 2, ts);
    return result;
}

static PyObject *
Book_snapshot(Book *self, PyObject *data)
{
    PyObject *ts = data_timestamp(data);
    if (ts == NULL)
        return NULL;
    if (data_reset(self, data) < 0 || data_verify(self, data) < 0) {
        Py_DECREF(ts);
        return NULL;
    }
    return ts;
}

static PyObject *
Book_checksum(Book *self, PyObject *Py_UNUSED(ignored))
{
    uint32_t value;
    if (book_checksum(self, &value) < 0)
        return NULL;
    return PyLong_FromUnsignedLong((unsigned long)value);
}

static PyObject *
Book_verify(Book *self, PyObject *expected)
{
    if (book_verify(self, expected) < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* [(sign * key, qty), ...] of the first ``n`` levels. */
static PyObject *
side_pairs(const Side *s, Py_ssize_t n, double sign)
{
    if (n > s->n)
        n = s->n;
    PyObject *out = PyList_New(n);
    if (out == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *pair = float_pair(s->keys[i] * sign, s->qtys[i]);
        if (pair == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, i, pair);
    }
    return out;
}

static PyObject *
side_dict(const Side *s, double sign)
{
    PyObject *out = PyDict_New();
    if (out == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < s->n; i++) {
        PyObject *k = PyFloat_FromDouble(s->keys[i] * sign);
        PyObject *v = k ? PyFloat_FromDouble(s->qtys[i]) : NULL;
        int rc = v ? PyDict_SetItem(out, k, v) : -1;
        Py_XDECREF(k);
        Py_XDECREF(v);
        if (rc < 0) {
            Py_DECREF(out);
            return NULL;
        }
    }
    return out;
}

/* ``seq[:n]``'s length for a list of ``len`` items (n may be None or negative). */
static int
slice_stop(PyObject *n, Py_ssize_t len, Py_ssize_t *stop)
{
    if (n == Py_None) {
        *stop = len;
        return 0;
    }
    PyObject *index = PyNumber_Index(n);
    if (index == NULL)
        return -1;
    *stop = PyNumber_AsSsize_t(index, NULL); /* clipped, as a slice clips */
    Py_DECREF(index);
    if (*stop == -1 && PyErr_Occurred())
        return -1;
    if (*stop < 0) {
        *stop += len;
        if (*stop < 0)
            *stop = 0;
    }
    return 0;
}

static PyObject *
Book_top(Book *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"n", NULL};
    PyObject *n = NULL;
    Py_ssize_t given = nargs + (kwnames ? PyTuple_GET_SIZE(kwnames) : 0);
    if (given > 1 || (kwnames && PyTuple_GET_SIZE(kwnames) &&
                      PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(kwnames, 0), names[0]) != 0)) {
        PyErr_SetString(PyExc_TypeError, "top() takes at most 1 argument (n)");
        return NULL;
    }
    if (given == 1)
        n = args[0];
    Py_ssize_t bstop = TOP, astop = TOP;
    if (n != NULL && (slice_stop(n, self->bids.n, &bstop) < 0 ||
                      slice_stop(n, self->asks.n, &astop) < 0))
        return NULL;
    PyObject *bids = side_pairs(&self->bids, bstop, -1.0);
    PyObject *asks = bids ? side_pairs(&self->asks, astop, 1.0) : NULL;
    if (asks == NULL) {
        Py_XDECREF(bids);
        return NULL;
    }
    PyObject *result = PyTuple_Pack(2, bids, asks);
    Py_DECREF(bids);
    Py_DECREF(asks);
    return result;
}

static PyObject *
Book_to_l2book(Book *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_Format(PyExc_TypeError, "to_l2book() takes 3 arguments (%zd given)", nargs);
        return NULL;
    }
    if (L2BookType == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "_krakenbook._bind() was not called");
        return NULL;
    }
    PyObject *book = PyObject_CallOneArg(L2BookType, args[0]);
    if (book == NULL)
        return NULL;
    /* Lists of pairs (the Python version passes zips: the same pairs; L2Book.reset reads a
     * list fastest). */
    PyObject *bids = side_pairs(&self->bids, self->bids.n, -1.0);
    PyObject *asks = bids ? side_pairs(&self->asks, self->asks.n, 1.0) : NULL;
    PyObject *done = NULL;
    if (asks != NULL) {
        PyObject *call[5] = {book, bids, asks, args[1], args[2]};
        done = PyObject_VectorcallMethod(s_reset, call, 5, NULL);
    }
    Py_XDECREF(bids);
    Py_XDECREF(asks);
    if (done == NULL) {
        Py_DECREF(book);
        return NULL;
    }
    Py_DECREF(done);
    return book;
}

static PyObject *
Book_get_bids(Book *self, void *Py_UNUSED(closure))
{
    return side_dict(&self->bids, -1.0);
}

static PyObject *
Book_get_asks(Book *self, void *Py_UNUSED(closure))
{
    return side_dict(&self->asks, 1.0);
}

static PyObject *
Book_get_depth(Book *self, void *Py_UNUSED(closure))
{
    return PyLong_FromSsize_t(self->depth);
}

static PyMethodDef Book_methods[] = {
    {"reset", (PyCFunction)(void (*)(void))Book_reset, METH_FASTCALL,
     "reset(bids, asks): replace the book with a snapshot (levels applied in order, then "
     "truncated)."},
    {"apply", (PyCFunction)(void (*)(void))Book_apply, METH_FASTCALL,
     "apply(bids, asks) -> (bids, asks): apply one message's levels in order, then truncate "
     "to depth; the given lists come back with a delete per level truncated away."},
    {"update", (PyCFunction)Book_update, METH_O,
     "update(data) -> (bids, asks, timestamp_ms): one decoded v2 update (BookData): its "
     "timestamp (0 when absent), its levels applied, its checksum verified."},
    {"snapshot", (PyCFunction)Book_snapshot, METH_O,
     "snapshot(data) -> timestamp_ms: reset to a decoded v2 snapshot and verify it."},
    {"checksum", (PyCFunction)Book_checksum, METH_NOARGS,
     "CRC32 of the top 10 asks then bids, as Kraken computes it."},
    {"verify", (PyCFunction)Book_verify, METH_O,
     "verify(expected): raise ChecksumMismatch unless the checksum equals it."},
    {"top", (PyCFunction)(void (*)(void))Book_top, METH_FASTCALL | METH_KEYWORDS,
     "top(n=10) -> (bids, asks): the n best levels a side, best first."},
    {"to_l2book", (PyCFunction)(void (*)(void))Book_to_l2book, METH_FASTCALL,
     "to_l2book(market, update_id, timestamp) -> L2Book: a copy for the sink."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Book_getset[] = {
    {"bids", (getter)Book_get_bids, NULL, "{price: quantity} of the bids (a new dict)", NULL},
    {"asks", (getter)Book_get_asks, NULL, "{price: quantity} of the asks (a new dict)", NULL},
    {"depth", (getter)Book_get_depth, NULL, "levels kept a side", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef Book_members[] = {
    {"verified", T_PYSSIZET, offsetof(Book, verified), 0,
     "checksums compared (and equal) over this book's life"},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject BookType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "astra.venues.kraken._krakenbook.KrakenBook",
    .tp_basicsize = sizeof(Book),
    .tp_dealloc = (destructor)Book_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "KrakenBook(depth, price_decimals, qty_decimals): the venue's view of one "
              "book, at most depth levels a side (see the module docstring).",
    .tp_methods = Book_methods,
    .tp_members = Book_members,
    .tp_getset = Book_getset,
    .tp_init = (initproc)Book_init,
    .tp_new = PyType_GenericNew,
};

static PyObject *
bind(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyType_Check(args[0]) ||
        !PyType_IsSubtype((PyTypeObject *)args[0], (PyTypeObject *)PyExc_Exception) ||
        !PyCallable_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "_bind(ChecksumMismatch, L2Book)");
        return NULL;
    }
    Py_XSETREF(ChecksumMismatch, Py_NewRef(args[0]));
    Py_XSETREF(L2BookType, Py_NewRef(args[1]));
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"_bind", (PyCFunction)(void (*)(void))bind, METH_FASTCALL,
     "_bind(ChecksumMismatch, L2Book): the exception and the sink's book class (book.py)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "_krakenbook", module_doc, -1, module_methods,
    NULL, NULL, NULL, NULL,
};

static int
intern(PyObject **slot, const char *name)
{
    *slot = PyUnicode_InternFromString(name);
    return *slot == NULL ? -1 : 0;
}

PyMODINIT_FUNC
PyInit__krakenbook(void)
{
    if (intern(&s_bids, "bids") || intern(&s_asks, "asks") || intern(&s_checksum, "checksum") ||
        intern(&s_timestamp, "timestamp") || intern(&s_price, "price") ||
        intern(&s_qty, "qty") || intern(&s_timestamp_ms, "timestamp_ms") ||
        intern(&s_reset, "reset"))
        return NULL;
    crc_init();
    if (PyType_Ready(&BookType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module_def);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "KrakenBook", (PyObject *)&BookType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
