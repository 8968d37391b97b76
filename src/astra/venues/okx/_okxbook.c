/* astra.venues.okx._okxbook: one OKX book (both sides) and its checksum, in C.
 *
 * The same behaviour as PyBook / PyBookSide / py_checksum in okx/book.py, which stay the
 * reference (tests/venues/okx/test_okx_native.py compares the two value for value, errors
 * and the state after an error included). Book is what the feed uses (one call per message);
 * BookSide and checksum() are the per-side API, as in Python.
 *
 * Input: a side's levels as the JSON text OKX sent (a msgspec.Raw, or any bytes-like):
 *   [["px","sz",...], ...]. Strict JSON (whitespace allowed); px and sz must be strings
 *   (a missing one is "", which then fails its float parse); elements after the second are
 *   any JSON value, skipped; a backslash anywhere is refused (OKX sends no escapes, and the
 *   checksum text must be the bytes as sent). Structural errors raise ValueError before any
 *   level is applied; nesting beyond the interpreter's recursion limit raises RecursionError,
 *   as msgspec does (the skipper is iterative: input cannot grow the C stack). OKX's own
 *   level shape is read by a straight-line path (okx_level); anything else by the general
 *   parser, which decides every error.
 * Numbers: price and size are exactly Python's float(text), bit for bit: a correctly rounded
 *   fast path (at most 19 digits, mantissa <= 2**53, one exact division by 10**k, k <= 22),
 *   and float() itself (PyFloat_FromString) for every other text, so every accepted form
 *   (exponents, "nan", "inf", underscores, whitespace) and every error message are Python's.
 * Apply: levels in message order; size > 0 sets the level's text "px:sz", anything else
 *   (0, negative, NaN) deletes it; deleting an absent level is not an error. A level is found
 *   where Python's bisect_left finds it (the same steps once a NaN price was stored). A float
 *   error at level k leaves levels 0..k-1 applied, as the Python loop does. load() applies a
 *   snapshot to an emptied side; on any error but MemoryError the side is left unchanged.
 * Invariants: the logical order is Python's `prices` list (ascending, one level per price
 *   unless a NaN was sent); storage keeps the best level last on both sides (bids ascending,
 *   asks descending) so changes near the top, the usual case, move few entries; lv holds
 *   exactly n levels (16 bytes each), each owning its heap block: its text and a reference
 *   to its price float, the object handed to the sink when the level appeared (floats only: no reference cycle, so
 *   the types need no GC support). Changes reuse that float only when its bits equal the
 *   message's (0.0 and -0.0 are one level, two floats).
 * Checksum (OKX's integrity rule): CRC32 (zlib's) of the best CHECKSUM_LEVELS texts of each
 *   side interleaved bid1:ask1:bid2:ask2:... (a shorter side simply ends), as a signed int32;
 *   computed here by carry-less multiplication where the CPU has it (checked against zlib at
 *   import, see "checksum"), else by zlib-ng or zlib: the same number either way.
 *   Book.update(data, verify) is PyBook.update: both sides, then, when verify and
 *   data.checksum != 0, that rule (ChecksumMismatch, the sides left applied; `verified`
 *   counts the equal ones): one call per message.
 * Changes: each stored level keeps the (price, size) tuple it last handed out and hands it out
 *   again, its size replaced, when that cache holds the only reference (as CPython's zip()
 *   reuses its result tuple): nobody can see the change, and a tuple a consumer kept is
 *   never touched.
 * Push frames (parse_push / decode_push, the "books push frames" section): a books push
 *   parsed here, its levels tokenised once for Book.update, or left to msgspec whenever it
 *   is not fully understood; so a parse is msgspec's result or none.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <zlib.h>

#define CHECKSUM_LEVELS 25

/* Text bytes copied at once when a text is no longer: every Text holds at least this many
 * (text_new), so the checksum's fixed-size copy (a few vector moves instead of a memcpy call)
 * stays in the block; the checksum buffer keeps as much room after its end. */
#define TEXT_COPY 32

/* Exact powers of ten: each is a double without rounding up to 1e22. */
static const double POW10[23] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                 1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

static PyObject *ZERO; /* 0.0: the size of every delete, shared instead of made each time */

/* A stored level's heap part: its price as the float object first handed to the sink (so
 * the sink's dict meets the same key object again: no new float, an identity hit), and its
 * "px:sz" text as sent; cap >= len, so a resize of the same width reuses the block. */
typedef struct {
    PyObject *key;
    PyObject *change; /* NULL, or the (key, size) tuple last handed out for this level */
    Py_ssize_t len, cap;
    char data[];
} Text;

/* A stored level: 16 bytes, what an insert or delete moves and a search reads. */
typedef struct {
    double px;
    Text *tx;
} Level;

/* One level of a message while it is applied: where px/sz are in the input, their floats. */
typedef struct {
    const char *px, *sz;
    Py_ssize_t pxlen, szlen;
    double price, size;
    int exact; /* bit 0: price, bit 1: size already parsed by the fast path */
} Tok;

typedef struct {
    PyObject_HEAD
    int descending;
    int nan;            /* a NaN price was stored (since the last clear): see bisect */
    Py_ssize_t n, cap;  /* levels, allocated slots of lv */
    Level *lv;          /* storage order: best last */
    /* One flat array, not chunks: an unrolled list (chunks of 32..256 levels) measured on the
     * recorded session was 3-6% slower per message. The memmove a change pays here (~2 KB,
     * ~20 ns; ~0.2 us a message) is less than what the chunk bookkeeping adds to every
     * search, insert and delete. */
    Tok *toks;          /* scratch for one message's levels, reused across calls */
    Py_ssize_t tokcap;
} Side;

static PyTypeObject SideType;

/* ---- storage ------------------------------------------------------------------------ */

/* Storage index of logical (Python `prices`) index i: bids are stored in logical order,
 * asks reversed, so both keep the best level last. */
static inline Py_ssize_t slot(const Side *s, Py_ssize_t i) {
    return s->descending ? i : s->n - 1 - i;
}

/* bisect_left over the logical order, step for step as Python's (same mid, same `<`): what
 * decides where a level goes once a NaN price is in the side (a NaN compares false with
 * everything, so the list is no longer ordered and only the same steps give the same index). */
static Py_ssize_t bisect_exact(const Side *s, double x) {
    size_t lo = 0, hi = (size_t)s->n, last = (size_t)s->n - 1;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (s->lv[s->descending ? mid : last - mid].px < x)
            lo = mid + 1;
        else
            hi = mid;
    }
    return (Py_ssize_t)lo;
}

/* In storage order, how many levels come before x's place: those below x (bids: ascending
 * storage) or at or above it (asks: descending storage); a prefix, as the side is ordered. */
#define BEFORE(level) (ascending ? (level).px < x : (level).px >= x)

/* The length of that prefix. Most changes land near the best level (storage's end), so the
 * search gallops from there first (probes at 1, 3, 7, 15, ... from the end, on levels every
 * message touches: cached), then finishes with a binary search in the bracket found, one
 * without a data-dependent branch (a conditional add per step: a book search's probes are
 * unpredictable, and mispredicted branches cost more than the search itself). */
static inline size_t before(const Level *lv, size_t n, double x, int ascending) {
    size_t lo = 0, hi = n, step = 1; /* BEFORE holds below lo and fails from hi on */
    while (step <= hi) {
        size_t j = hi - step;
        if (BEFORE(lv[j])) {
            lo = j + 1;
            break;
        }
        hi = j;
        step <<= 1;
    }
    size_t m = hi - lo;
    if (m == 0)
        return lo;
    const Level *base = lv + lo;
    while (m > 1) {
        size_t half = m / 2;
        base += (size_t)BEFORE(base[half - 1]) * half;
        m -= half;
    }
    return (size_t)(base - lv) + (size_t)BEFORE(*base);
}

/* bisect_left when the side is ordered (no NaN ever stored) and x is a number: then every
 * correct search finds the same index, the first logical level not below x. */
static Py_ssize_t bisect(const Side *s, double x) {
    if (s->nan || x != x)
        return bisect_exact(s, x);
    if (s->descending) /* bids: storage is the logical order */
        return (Py_ssize_t)before(s->lv, (size_t)s->n, x, 1);
    return s->n - (Py_ssize_t)before(s->lv, (size_t)s->n, x, 0);
}

static inline int same_bits(double a, double b) {
    return memcmp(&a, &b, sizeof(double)) == 0;
}

static Text *text_new(const Tok *t) {
    Py_ssize_t len = t->pxlen + 1 + t->szlen;
    /* At least TEXT_COPY (see there), which also leaves room for a later size a few digits
     * longer. */
    Py_ssize_t cap = len < TEXT_COPY ? TEXT_COPY : len;
    Text *x = PyMem_Malloc(sizeof(Text) + (size_t)cap);
    if (x == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    x->key = NULL; /* the caller's to set */
    x->change = NULL;
    x->len = len;
    x->cap = cap;
    memcpy(x->data, t->px, (size_t)t->pxlen);
    x->data[t->pxlen] = ':';
    memcpy(x->data + t->pxlen + 1, t->sz, (size_t)t->szlen);
    return x;
}

/* Replace *slotp's text by t's; reuses the block when it fits. */
static int text_set(Text **slotp, const Tok *t) {
    Text *x = *slotp;
    Py_ssize_t len = t->pxlen + 1 + t->szlen;
    if (len > x->cap) {
        Text *y = text_new(t);
        if (y == NULL)
            return -1;
        y->key = x->key;
        y->change = x->change;
        PyMem_Free(x);
        *slotp = y;
        return 0;
    }
    x->len = len;
    memcpy(x->data, t->px, (size_t)t->pxlen);
    x->data[t->pxlen] = ':';
    memcpy(x->data + t->pxlen + 1, t->sz, (size_t)t->szlen);
    return 0;
}

static int reserve(Side *s, Py_ssize_t want) {
    if (want <= s->cap)
        return 0;
    Py_ssize_t cap = s->cap ? s->cap : 64;
    while (cap < want) {
        if (cap > PY_SSIZE_T_MAX / 2 / (Py_ssize_t)sizeof(Level)) {
            PyErr_NoMemory();
            return -1;
        }
        cap *= 2;
    }
    Level *lv = PyMem_Realloc(s->lv, (size_t)cap * sizeof(Level));
    if (lv == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    s->lv = lv;
    s->cap = cap;
    return 0;
}

static void clear(Side *s) {
    for (Py_ssize_t k = 0; k < s->n; k++) {
        Py_DECREF(s->lv[k].tx->key);
        Py_XDECREF(s->lv[k].tx->change);
        PyMem_Free(s->lv[k].tx);
    }
    s->n = 0;
    s->nan = 0;
}

static PyObject *size_object(double size) {
    if (size == 0 && !signbit(size)) {
        Py_INCREF(ZERO);
        return ZERO;
    }
    return PyFloat_FromDouble(size);
}

/* (key, size) with the key's reference passed on to the tuple; NULL (key released) on error. */
static PyObject *pair(PyObject *key, double size) {
    PyObject *q = size_object(size);
    PyObject *t = q == NULL ? NULL : PyTuple_New(2);
    if (t == NULL) {
        Py_XDECREF(q);
        Py_DECREF(key);
        return NULL;
    }
    PyTuple_SET_ITEM(t, 0, key);
    PyTuple_SET_ITEM(t, 1, q);
    return t;
}

/* A stored level's change (key, size): its cached tuple again, the size replaced, when the
 * cache holds the only reference (the consumer let go of it: nobody can see the change, the
 * idiom of CPython's own zip() and enumerate()), else a new tuple, cached. What it saves is
 * a tuple's allocation and release per level a message; the contents are those of a new
 * tuple. The items are floats, so the tuple never needs to be (re)tracked by the GC. */
static PyObject *level_change(Text *x, double size) {
    PyObject *q = size_object(size), *t = x->change;
    if (q == NULL)
        return NULL;
    if (t != NULL && Py_REFCNT(t) == 1) {
        PyObject *old = PyTuple_GET_ITEM(t, 1);
        PyTuple_SET_ITEM(t, 1, q);
        Py_DECREF(old); /* a float: releasing it runs no code */
        return Py_NewRef(t);
    }
    if ((t = PyTuple_New(2)) == NULL) {
        Py_DECREF(q);
        return NULL;
    }
    PyTuple_SET_ITEM(t, 0, Py_NewRef(x->key));
    PyTuple_SET_ITEM(t, 1, q);
    Py_XSETREF(x->change, Py_NewRef(t)); /* the old tuple holds floats only: no code runs */
    return t;
}

/* One level, as BookSide.apply's loop body (set, insert or delete); returns its change,
 * (price, size), as a tuple, or NULL with an error set. The stored float serves as the
 * change's price only when it is the very same number (0.0 and -0.0 are one level but two
 * floats): then the level's cached change tuple is used (level_change). */
static PyObject *apply_level(Side *s, const Tok *t) {
    double price = t->price;
    Py_ssize_t n = s->n, i = bisect(s, price);
    Level *hit = i != n && s->lv[slot(s, i)].px == price ? &s->lv[slot(s, i)] : NULL;
    int same = hit != NULL && same_bits(hit->px, price);
    if (t->size > 0) {
        if (hit != NULL) {
            if (text_set(&hit->tx, t) < 0)
                return NULL;
            if (same)
                return level_change(hit->tx, t->size);
        } else {
            Text *x;
            PyObject *key;
            if (reserve(s, n + 1) < 0 || (key = PyFloat_FromDouble(price)) == NULL)
                return NULL;
            if ((x = text_new(t)) == NULL) {
                Py_DECREF(key);
                return NULL;
            }
            /* Storage position that becomes logical i once n grows by one. */
            Py_ssize_t at = s->descending ? i : n - i;
            memmove(s->lv + at + 1, s->lv + at, (size_t)(n - at) * sizeof(Level));
            x->key = key;
            s->lv[at] = (Level){price, x};
            s->n = n + 1;
            s->nan |= price != price;
            return level_change(x, t->size);
        }
    } else if (hit != NULL) {
        /* The change first: a MemoryError leaves the level in place. */
        PyObject *change = same ? level_change(hit->tx, t->size) : NULL;
        if (same && change == NULL)
            return NULL;
        Py_ssize_t at = hit - s->lv;
        Py_DECREF(hit->tx->key); /* floats (and a tuple of floats): no code that could touch s */
        Py_XDECREF(hit->tx->change);
        PyMem_Free(hit->tx);
        memmove(s->lv + at, s->lv + at + 1, (size_t)(n - 1 - at) * sizeof(Level));
        s->n = n - 1;
        if (same)
            return change;
    }
    PyObject *key = PyFloat_FromDouble(price);
    return key == NULL ? NULL : pair(key, t->size);
}

/* ---- numbers -------------------------------------------------------------------------- */

/* Python's float(text) for a text plain_number did not take: float() itself,
 * so every accepted form and every error message are Python's. */
static int slow_double(const char *s, Py_ssize_t len, double *out) {
    /* Validated as UTF-8 while parsing, so this decode cannot fail on the text. */
    PyObject *u = PyUnicode_DecodeUTF8(s, len, NULL);
    if (u == NULL)
        return -1;
    PyObject *f = PyFloat_FromString(u);
    Py_DECREF(u);
    if (f == NULL)
        return -1;
    *out = PyFloat_AS_DOUBLE(f);
    Py_DECREF(f);
    return 0;
}

/* ---- the levels' JSON ----------------------------------------------------------------- */

typedef struct {
    const unsigned char *start, *p, *end;
} Cursor;

static int fail(const Cursor *c, const char *what) {
    PyErr_Format(PyExc_ValueError, "book levels: %s at byte %zd", what,
                 (Py_ssize_t)(c->p - c->start));
    return -1;
}

static inline void skip_ws(Cursor *c) {
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\n' || *c->p == '\r' || *c->p == '\t'))
        c->p++;
}

/* A string at c->p (the opening quote); its contents in [*s, *s + *len). Control
 * characters are refused (as JSON and msgspec do); with `utf8`, non-ASCII text must be
 * valid UTF-8 (msgspec checks the strings it decodes, px and sz, not the ones it skips). */
static int scan_string(Cursor *c, const char **s, Py_ssize_t *len, int utf8) {
    const unsigned char *p = ++c->p, *end = c->end;
    unsigned char high = 0;
    while (p < end && *p != '"') {
        if (*p < 0x20 || *p == '\\') {
            c->p = p;
            return fail(c, *p == '\\' ? "an escape in a string" : "a control character");
        }
        high |= *p++;
    }
    if (p == end) {
        c->p = p;
        return fail(c, "an unterminated string");
    }
    *s = (const char *)c->p;
    *len = p - c->p;
    if (utf8 && (high & 0x80)) {
        PyObject *u = PyUnicode_DecodeUTF8(*s, *len, NULL);
        if (u == NULL) {
            PyErr_Clear();
            return fail(c, "invalid UTF-8 in a string");
        }
        Py_DECREF(u);
    }
    c->p = p + 1;
    return 0;
}

/* The number text starting at p, up to a closing quote, when it is -?D+(.D+)? with at most
 * 19 digits, mantissa <= 2**53 and at most 22 decimals: then m / 10**k is one correctly
 * rounded IEEE division of two exact doubles, the value float() gives. Returns the closing
 * quote's position with *value set, or NULL (nothing read past end) when float() must
 * decide. (frac <= 19 < 23 entries of POW10, by the 20-character bound.) */
static inline const unsigned char *plain_number(const unsigned char *p, const unsigned char *end,
                                                double *value) {
    int neg = p < end && *p == '-';
    p += neg;
    /* 20 characters bound both loops (19 digits and a dot at most), so they need no digit
     * counter; a longer text stops short of its quote and goes to float(). m may wrap on a
     * 20-digit text: that text is refused below anyway. */
    const unsigned char *lim = end - p > 20 ? p + 20 : end, *start = p;
    uint64_t m = 0;
    while (p < lim && (unsigned)(*p - '0') < 10)
        m = m * 10 + (uint64_t)(*p++ - '0');
    Py_ssize_t digits = p - start, frac = 0;
    if (digits == 0)
        return NULL;
    if (p < lim && *p == '.') {
        const unsigned char *f = ++p;
        while (p < lim && (unsigned)(*p - '0') < 10)
            m = m * 10 + (uint64_t)(*p++ - '0');
        frac = p - f;
        if (frac == 0)
            return NULL;
        digits += frac;
    }
    if (p == end || *p != '"' || digits > 19 || m > (UINT64_C(1) << 53))
        return NULL;
    double v = frac ? (double)m / POW10[frac] : (double)m;
    *value = neg ? -v : v;
    return p;
}

/* A price or size string at c->p (the opening quote), as scan_string with `utf8`, and its
 * float when plain_number takes it. Returns 1 with *value set, 0 when float() must decide
 * (phase two), -1 on error. */
static int scan_field(Cursor *c, const char **s, Py_ssize_t *len, double *value) {
    const unsigned char *start = c->p + 1;
    const unsigned char *q = plain_number(start, c->end, value);
    if (q != NULL) {
        *s = (const char *)start;
        *len = q - start;
        c->p = q + 1;
        return 1;
    }
    return scan_string(c, s, len, 1) < 0 ? -1 : 0;
}

/* OKX's own level, ["px","sz","0","n"] with plain numbers, digit-only extras and no
 * whitespace, read in one straight pass. Anything else returns 0 with the cursor unmoved,
 * and the general parser (which decides every error) reads the level instead. */
static inline int okx_level(Cursor *c, Tok *t) {
    const unsigned char *p = c->p, *end = c->end, *q; /* just past the level's '[' */
    if (p == end || *p != '"' || (q = plain_number(p + 1, end, &t->price)) == NULL)
        return 0;
    t->px = (const char *)p + 1;
    t->pxlen = q - (p + 1);
    p = q + 1;
    if (end - p < 2 || p[0] != ',' || p[1] != '"' || (q = plain_number(p + 2, end, &t->size)) == NULL)
        return 0;
    t->sz = (const char *)p + 2;
    t->szlen = q - (p + 2);
    p = q + 1;
    for (;;) {
        if (p == end)
            return 0;
        if (*p == ']')
            break;
        if (end - p < 2 || p[0] != ',' || p[1] != '"')
            return 0;
        p += 2;
        while (p < end && (unsigned)(*p - '0') < 10)
            p++;
        if (p == end || *p != '"')
            return 0;
        p++;
    }
    t->exact = 3;
    c->p = p + 1;
    return 1;
}

static int skip_literal(Cursor *c, const char *word, size_t len) {
    if ((size_t)(c->end - c->p) < len || memcmp(c->p, word, len) != 0)
        return fail(c, "an invalid value");
    c->p += len;
    return 0;
}

/* A JSON number: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? */
static int skip_number(Cursor *c) {
    const unsigned char *p = c->p, *end = c->end;
    if (p < end && *p == '-')
        p++;
    if (p == end || (unsigned)(*p - '0') >= 10) {
        c->p = p;
        return fail(c, "an invalid number");
    }
    if (*p == '0')
        p++;
    else
        while (p < end && (unsigned)(*p - '0') < 10)
            p++;
    if (p < end && *p == '.') {
        p++;
        if (p == end || (unsigned)(*p - '0') >= 10) {
            c->p = p;
            return fail(c, "an invalid number");
        }
        while (p < end && (unsigned)(*p - '0') < 10)
            p++;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < end && (*p == '+' || *p == '-'))
            p++;
        if (p == end || (unsigned)(*p - '0') >= 10) {
            c->p = p;
            return fail(c, "an invalid number");
        }
        while (p < end && (unsigned)(*p - '0') < 10)
            p++;
    }
    c->p = p;
    return 0;
}

/* Skip any JSON value (a level's elements after px and sz). Iterative, so input cannot
 * grow the C stack; every open container counts against the interpreter's recursion limit
 * (Py_EnterRecursiveCall), which is how msgspec bounds the same input. `stack` remembers
 * which bracket closes each open container: a growing heap array, no fixed bound. */
static int skip_value(Cursor *c) {
    char small[64], *stack = small;
    Py_ssize_t depth = 0, cap = (Py_ssize_t)sizeof(small);
    int rc = -1;
    for (;;) {
        /* A value is expected here. */
        skip_ws(c);
        if (c->p == c->end) {
            fail(c, "truncated input");
            goto done;
        }
        unsigned char ch = *c->p;
        int opened = 0;
        if (ch == '"') {
            const char *s;
            Py_ssize_t len;
            if (scan_string(c, &s, &len, 0) < 0)
                goto done;
        } else if (ch == '[' || ch == '{') {
            if (Py_EnterRecursiveCall(" while skipping JSON in book levels"))
                goto done;
            if (depth == cap) {
                char *grown = PyMem_Malloc((size_t)cap * 2);
                if (grown == NULL) {
                    Py_LeaveRecursiveCall();
                    PyErr_NoMemory();
                    goto done;
                }
                memcpy(grown, stack, (size_t)cap);
                if (stack != small)
                    PyMem_Free(stack);
                stack = grown;
                cap *= 2;
            }
            stack[depth++] = (char)(ch == '[' ? ']' : '}');
            c->p++;
            skip_ws(c);
            if (c->p < c->end && *c->p == stack[depth - 1]) {
                c->p++; /* an empty container is a whole value */
                depth--;
                Py_LeaveRecursiveCall();
            } else {
                opened = 1;
            }
        } else if (ch == 't') {
            if (skip_literal(c, "true", 4) < 0)
                goto done;
        } else if (ch == 'f') {
            if (skip_literal(c, "false", 5) < 0)
                goto done;
        } else if (ch == 'n') {
            if (skip_literal(c, "null", 4) < 0)
                goto done;
        } else if (ch == '-' || (unsigned)(ch - '0') < 10) {
            if (skip_number(c) < 0)
                goto done;
        } else {
            fail(c, "an invalid character");
            goto done;
        }
        if (opened) {
            if (stack[depth - 1] == '}')
                goto key;
            continue; /* the array's first value */
        }
        /* After a value: close containers, or move on to the next element. */
        for (;;) {
            if (depth == 0) {
                rc = 0;
                goto done;
            }
            skip_ws(c);
            if (c->p == c->end) {
                fail(c, "truncated input");
                goto done;
            }
            if (*c->p == (unsigned char)stack[depth - 1]) {
                c->p++;
                depth--;
                Py_LeaveRecursiveCall();
                continue;
            }
            if (*c->p != ',') {
                fail(c, stack[depth - 1] == ']' ? "expected ',' or ']'" : "expected ',' or '}'");
                goto done;
            }
            c->p++;
            if (stack[depth - 1] == '}')
                goto key;
            break; /* the array's next value */
        }
        continue;
    key:
        /* An object member: "key" : value. */
        skip_ws(c);
        if (c->p == c->end || *c->p != '"') {
            fail(c, c->p == c->end ? "truncated input" : "expected an object key");
            goto done;
        }
        {
            const char *s;
            Py_ssize_t len;
            if (scan_string(c, &s, &len, 0) < 0)
                goto done;
        }
        skip_ws(c);
        if (c->p == c->end || *c->p != ':') {
            fail(c, c->p == c->end ? "truncated input" : "expected ':'");
            goto done;
        }
        c->p++;
    }
done:
    while (depth-- > 0)
        Py_LeaveRecursiveCall();
    if (stack != small)
        PyMem_Free(stack);
    return rc;
}

/* After an array element: 1 at its closing ']' (consumed), 0 after a ',' (consumed, and the
 * whitespace after it), -1 with an error set on anything else. */
static inline int array_next(Cursor *c) {
    skip_ws(c);
    if (c->p == c->end)
        return fail(c, "truncated input");
    if (*c->p == ']') {
        c->p++;
        return 1;
    }
    if (*c->p != ',')
        return fail(c, "expected ',' or ']'");
    c->p++;
    skip_ws(c);
    return 0;
}

static Tok *next_tok(Side *s, Py_ssize_t count) {
    if (count == s->tokcap) {
        Py_ssize_t cap = s->tokcap ? s->tokcap * 2 : 64;
        if (cap > PY_SSIZE_T_MAX / (Py_ssize_t)sizeof(Tok)) {
            PyErr_NoMemory();
            return NULL;
        }
        Tok *t = PyMem_Realloc(s->toks, (size_t)cap * sizeof(Tok));
        if (t == NULL) {
            PyErr_NoMemory();
            return NULL;
        }
        s->toks = t;
        s->tokcap = cap;
    }
    return &s->toks[count];
}

/* The token scratch kept between calls: a usual message's (OKX sends up to 400 levels a
 * snapshot); one huge message's (a hostile frame of a few MB: ~56 bytes a level) is released
 * after it, so the input of one message does not stay allocated for the process's life. */
#define TOKS_KEPT 1024

static void trim_toks(Side *s) {
    if (s->tokcap > TOKS_KEPT) {
        PyMem_Free(s->toks);
        s->toks = NULL;
        s->tokcap = 0;
    }
}

/* One levels array at c->p (its '['; whitespace before it already skipped) into s->toks
 * from index `count` on (no level applied yet); leaves c->p just past its ']'. The new
 * token count, or -1. The caller has refused a backslash anywhere in the input. */
static Py_ssize_t parse_array(Cursor *cp, Side *s, Py_ssize_t count) {
    Cursor c = *cp;
    if (c.p == c.end)
        return fail(&c, "truncated input");
    if (*c.p != '[')
        return fail(&c, "expected an array of levels");
    c.p++;
    skip_ws(&c);
    if (c.p < c.end && *c.p == ']') {
        c.p++;
        goto tail;
    }
    for (;;) {
        if (c.p == c.end)
            return fail(&c, "truncated input");
        if (*c.p != '[')
            return fail(&c, "a level is not an array");
        c.p++;
        Tok *t = next_tok(s, count);
        if (t == NULL)
            return -1;
        if (okx_level(&c, t)) {
            count++;
            goto next;
        }
        t->px = t->sz = "";
        t->pxlen = t->szlen = 0;
        t->exact = 0;
        skip_ws(&c);
        if (c.p < c.end && *c.p == ']') {
            c.p++;
        } else {
            for (int k = 0;; k++) {
                if (k < 2) {
                    if (c.p == c.end)
                        return fail(&c, "truncated input");
                    if (*c.p != '"')
                        return fail(&c, k == 0 ? "a price is not a string" : "a size is not a string");
                    int fast = k == 0 ? scan_field(&c, &t->px, &t->pxlen, &t->price)
                                      : scan_field(&c, &t->sz, &t->szlen, &t->size);
                    if (fast < 0)
                        return -1;
                    t->exact |= fast << k;
                } else if (c.p < c.end && *c.p == '"') {
                    /* OKX's two trailing strings: skipped without skip_value's setup. */
                    const char *str;
                    Py_ssize_t n;
                    if (scan_string(&c, &str, &n, 0) < 0)
                        return -1;
                } else if (skip_value(&c) < 0) {
                    return -1;
                }
                int end = array_next(&c);
                if (end < 0)
                    return -1;
                if (end)
                    break;
            }
        }
        count++;
    next:; /* (a label needs a statement before the declaration) */
        int last = array_next(&c);
        if (last < 0)
            return -1;
        if (last)
            break;
    }
tail:
    *cp = c;
    return count;
}

/* Parse the whole levels array into s->toks (no level applied yet); the count, or -1. */
static Py_ssize_t parse_levels(Side *s, const char *buf, Py_ssize_t len) {
    Cursor c = {(const unsigned char *)buf, (const unsigned char *)buf,
                (const unsigned char *)buf + len};
    /* Checked first, as the Python reference does, so both refuse an escape before
     * anything else the input might hold. */
    if (memchr(buf, '\\', (size_t)len) != NULL) {
        PyErr_SetString(PyExc_ValueError, "book levels: an escape in a string");
        return -1;
    }
    skip_ws(&c);
    Py_ssize_t count = parse_array(&c, s, 0);
    if (count < 0)
        return -1;
    skip_ws(&c);
    if (c.p != c.end)
        return fail(&c, "trailing characters");
    return count;
}

/* ---- the Python types ----------------------------------------------------------------- */

/* Parse `levels` (bytes, a msgspec.Raw or any C-contiguous buffer) into s->toks. The tokens
 * point into the input: the caller releases *view (PyBuffer_Release: a no-op for bytes)
 * only after the last token is used. Raw and bytes are immutable, and no Python code runs
 * while the tokens are in use. */
static Py_ssize_t parse_arg(Side *s, PyObject *levels, Py_buffer *view) {
    view->obj = NULL;
    if (PyBytes_CheckExact(levels))
        return parse_levels(s, PyBytes_AS_STRING(levels), PyBytes_GET_SIZE(levels));
    if (PyObject_GetBuffer(levels, view, PyBUF_SIMPLE) < 0) {
        view->obj = NULL;
        return -1;
    }
    return parse_levels(s, view->buf, view->len);
}

/* The floats of a token the fast path did not parse: Python's float() on the text. */
static inline int finish_tok(Tok *t) {
    if (!(t->exact & 1) && slow_double(t->px, t->pxlen, &t->price) < 0)
        return -1;
    if (!(t->exact & 2) && slow_double(t->sz, t->szlen, &t->size) < 0)
        return -1;
    return 0;
}

/* Apply `count` parsed levels in order (BookSide.apply's loop); the changes, or NULL. */
static PyObject *apply_toks(Side *self, Tok *toks, Py_ssize_t count) {
    PyObject *changes = PyList_New(count);
    for (Py_ssize_t k = 0; changes != NULL && k < count; k++) {
        Tok *t = &toks[k];
        PyObject *item = finish_tok(t) < 0 ? NULL : apply_level(self, t);
        if (item == NULL)
            Py_CLEAR(changes); /* the levels before k stay applied, as in Python's loop */
        else
            PyList_SET_ITEM(changes, k, item);
    }
    return changes;
}

static PyObject *side_apply(Side *self, PyObject *levels) {
    Py_buffer view;
    Py_ssize_t count = parse_arg(self, levels, &view);
    PyObject *changes = count < 0 ? NULL : apply_toks(self, self->toks, count);
    PyBuffer_Release(&view);
    trim_toks(self);
    return changes;
}

static PyObject *side_load(Side *self, PyObject *levels) {
    Py_buffer view;
    Py_ssize_t count = parse_arg(self, levels, &view);
    PyObject *changes = NULL;
    if (count < 0)
        goto out;
    /* Every float first: an error leaves the side as it was (Python's comprehension). */
    for (Py_ssize_t k = 0; k < count; k++)
        if (finish_tok(&self->toks[k]) < 0)
            goto out;
    /* OKX's own order (best first, strictly, sizes positive): the message reversed is the
     * storage order. The comparisons are Python's: NaN fails them and takes the slow path. */
    int best_first = 1;
    for (Py_ssize_t k = 0; k < count && best_first; k++) {
        const Tok *t = &self->toks[k];
        if (!(t->size > 0))
            best_first = 0;
        else if (k + 1 < count)
            best_first = self->descending ? self->toks[k + 1].price < t->price
                                          : t->price < self->toks[k + 1].price;
    }
    changes = PyList_New(count);
    if (changes == NULL)
        goto out;
    clear(self);
    if (!best_first) {
        for (Py_ssize_t k = 0; k < count; k++) {
            PyObject *item = apply_level(self, &self->toks[k]);
            if (item == NULL)
                goto fail;
            PyList_SET_ITEM(changes, k, item);
        }
        goto out;
    }
    if (reserve(self, count) < 0)
        goto fail;
    /* Storage is filled from its start (so n always counts what a failure must free); the
     * changes list in message order: slot `at` holds message level count - 1 - at. */
    for (Py_ssize_t at = 0; at < count; at++) {
        Py_ssize_t k = count - 1 - at;
        const Tok *t = &self->toks[k];
        PyObject *key = PyFloat_FromDouble(t->price);
        if (key == NULL)
            goto fail;
        Text *x = text_new(t);
        if (x == NULL) {
            Py_DECREF(key);
            goto fail;
        }
        x->key = key;
        self->lv[at] = (Level){t->price, x};
        self->n = at + 1;
        Py_INCREF(key);
        PyObject *item = pair(key, t->size);
        if (item == NULL)
            goto fail;
        x->change = Py_NewRef(item); /* reused by a later change of the level (level_change) */
        PyList_SET_ITEM(changes, k, item);
    }
    goto out;
fail:
    Py_CLEAR(changes);
out:
    PyBuffer_Release(&view);
    trim_toks(self);
    return changes;
}

static PyObject *Side_apply(Side *self, PyObject *levels) {
    return side_apply(self, levels);
}

static PyObject *Side_load(Side *self, PyObject *levels) {
    return side_load(self, levels);
}

static PyObject *text_str(const Text *x) {
    return PyUnicode_DecodeUTF8(x->data, x->len, NULL);
}

static PyObject *Side_top(Side *self, PyObject *unused) {
    Py_ssize_t m = self->n < CHECKSUM_LEVELS ? self->n : CHECKSUM_LEVELS;
    PyObject *out = PyList_New(m);
    for (Py_ssize_t k = 0; out != NULL && k < m; k++) {
        PyObject *s = text_str(self->lv[self->n - 1 - k].tx);
        if (s == NULL)
            Py_CLEAR(out);
        else
            PyList_SET_ITEM(out, k, s);
    }
    return out;
}

static PyObject *Side_levels(Side *self, PyObject *unused) {
    PyObject *out = PyList_New(self->n);
    for (Py_ssize_t k = 0; out != NULL && k < self->n; k++) {
        const Level *l = &self->lv[self->n - 1 - k];
        PyObject *s = text_str(l->tx);
        PyObject *t = s == NULL ? NULL : PyTuple_Pack(2, l->tx->key, s);
        Py_XDECREF(s);
        if (t == NULL)
            Py_CLEAR(out);
        else
            PyList_SET_ITEM(out, k, t);
    }
    return out;
}

/* `prices` / `texts` in Python's logical order (ascending), for tests and diagnostics. */
static PyObject *Side_prices(Side *self, void *unused) {
    PyObject *out = PyList_New(self->n);
    for (Py_ssize_t i = 0; out != NULL && i < self->n; i++) {
        PyObject *key = self->lv[slot(self, i)].tx->key;
        Py_INCREF(key);
        PyList_SET_ITEM(out, i, key);
    }
    return out;
}

static PyObject *Side_texts(Side *self, void *unused) {
    PyObject *out = PyList_New(self->n);
    for (Py_ssize_t i = 0; out != NULL && i < self->n; i++) {
        PyObject *s = text_str(self->lv[slot(self, i)].tx);
        if (s == NULL)
            Py_CLEAR(out);
        else
            PyList_SET_ITEM(out, i, s);
    }
    return out;
}

static PyObject *Side_descending(Side *self, void *unused) {
    return PyBool_FromLong(self->descending);
}

static Py_ssize_t Side_len(Side *self) {
    return self->n;
}

static int Side_init(Side *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"descending", NULL};
    int descending;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "p:BookSide", kwlist, &descending))
        return -1;
    clear(self);
    self->descending = descending;
    return 0;
}

static void Side_dealloc(Side *self) {
    clear(self);
    PyMem_Free(self->lv);
    PyMem_Free(self->toks);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* ---- checksum ------------------------------------------------------------------------- */

/* The best CHECKSUM_LEVELS texts of a side, best first, into out; their count. */
static Py_ssize_t top_texts(const Side *s, const Text **out) {
    Py_ssize_t m = s->n < CHECKSUM_LEVELS ? s->n : CHECKSUM_LEVELS;
    for (Py_ssize_t k = 0; k < m; k++)
        out[k] = s->lv[s->n - 1 - k].tx;
    return m;
}

/* zlib_ng.crc32 when zlib-ng is installed (a dependency; it is the same CRC-32), else NULL
 * and the system zlib's crc32 runs. Used only where the folding CRC below is unavailable. */
static PyObject *crc_function;

/* CRC-32 by carry-less multiplication (x86-64 with PCLMULQDQ), written for this text: the
 * checksum text is built right-aligned to 16 bytes after zero padding (leading zeros do not
 * change a CRC computed from a zero register), folded 64 bytes a step into four 128-bit lanes,
 * those into one, and the last lane's CRC is read from 16 tables of 256 entries. No Python
 * call on the way: zlib-ng through a memoryview cost ~0.2 us more a message (the call, its
 * argument parsing, and two GC-tracked objects a message that bring the young collection
 * nearer); the whole checksum is now ~0.15 us, about half of it gathering the 50 texts.
 *
 * The arithmetic (reflected bit order, P = 0x104C11DB7): a 16-byte little-endian lane X is
 * the polynomial whose x^127 coefficient is bit 0. X followed by n more bits is congruent to
 * lo64(X) * x^(n+64) + hi64(X) * x^n (mod P); a carry-less product of two reflected 64-bit
 * operands is the reflected 128-bit product times x, so the multipliers are x^(n+63) mod P and
 * x^(n-1) mod P in a 64-bit operand's top half (fold_constant, made at start-up). A lane
 * congruent to the text so far leaves the same CRC register as the text. zlib's CRC is that
 * register's complement with the text's first four bytes complemented (its ~0 start).
 * Checked against zlib at start-up over every length 64..320 and padding (crc_fast_init): on
 * any difference zlib-ng (or zlib) runs instead. */
#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#include <immintrin.h>
#define HAVE_FOLD 1

static uint64_t FOLD512[2], FOLD128[2]; /* {multiplier of lo64, of hi64} */
static uint32_t LANE[16][256]; /* LANE[i][b]: CRC (zero register) of a lane holding only b at i */
static int crc_fast_ok;

/* x^n mod P in the reflected 64-bit operand layout: coefficient of x^j at bit 63 - j. */
static uint64_t fold_constant(unsigned n) {
    uint64_t r = 1; /* normal order: coefficient of x^j at bit j */
    for (unsigned k = 0; k < n; k++) {
        r <<= 1;
        if (r & (UINT64_C(1) << 32))
            r ^= UINT64_C(0x104C11DB7);
    }
    uint64_t out = 0;
    for (unsigned j = 0; j < 32; j++)
        if (r >> j & 1)
            out |= UINT64_C(1) << (63 - j);
    return out;
}

__attribute__((target("pclmul,sse2"))) static inline __m128i fold(__m128i x, __m128i k) {
    return _mm_xor_si128(_mm_clmulepi64_si128(x, k, 0x00), _mm_clmulepi64_si128(x, k, 0x11));
}

/* zlib's crc32 of the text at buf + pad (len bytes, len >= 64, pad + len a multiple of 16,
 * buf[0, pad) zero); complements the text's first four bytes in place. */
__attribute__((target("pclmul,sse2"))) static uint32_t crc_fold(unsigned char *buf, size_t pad,
                                                                  size_t len) {
    for (size_t k = pad; k < pad + 4; k++)
        buf[k] ^= 0xFF;
    size_t end = pad + len, at = 64;
    const __m128i k512 = _mm_set_epi64x((long long)FOLD512[1], (long long)FOLD512[0]);
    const __m128i k128 = _mm_set_epi64x((long long)FOLD128[1], (long long)FOLD128[0]);
    __m128i a = _mm_loadu_si128((const __m128i *)buf);
    __m128i b = _mm_loadu_si128((const __m128i *)(buf + 16));
    __m128i c = _mm_loadu_si128((const __m128i *)(buf + 32));
    __m128i d = _mm_loadu_si128((const __m128i *)(buf + 48));
    for (; end - at >= 64; at += 64) {
        a = _mm_xor_si128(fold(a, k512), _mm_loadu_si128((const __m128i *)(buf + at)));
        b = _mm_xor_si128(fold(b, k512), _mm_loadu_si128((const __m128i *)(buf + at + 16)));
        c = _mm_xor_si128(fold(c, k512), _mm_loadu_si128((const __m128i *)(buf + at + 32)));
        d = _mm_xor_si128(fold(d, k512), _mm_loadu_si128((const __m128i *)(buf + at + 48)));
    }
    a = _mm_xor_si128(fold(a, k128), b);
    a = _mm_xor_si128(fold(a, k128), c);
    a = _mm_xor_si128(fold(a, k128), d);
    for (; at < end; at += 16)
        a = _mm_xor_si128(fold(a, k128), _mm_loadu_si128((const __m128i *)(buf + at)));
    unsigned char lane[16];
    _mm_storeu_si128((__m128i *)lane, a);
    uint32_t crc = 0;
    for (int i = 0; i < 16; i++)
        crc ^= LANE[i][lane[i]];
    return ~crc;
}

static void crc_fast_init(void) {
    unsigned eax, ebx, ecx, edx;
    if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx) || !(ecx & bit_PCLMUL))
        return;
    FOLD512[0] = fold_constant(512 + 63);
    FOLD512[1] = fold_constant(512 - 1);
    FOLD128[0] = fold_constant(128 + 63);
    FOLD128[1] = fold_constant(128 - 1);
    for (unsigned v = 0; v < 256; v++) { /* one byte then nothing: the byte at lane[15] */
        uint32_t r = v;
        for (int k = 0; k < 8; k++)
            r = r & 1 ? (r >> 1) ^ 0xEDB88320u : r >> 1;
        LANE[15][v] = r;
    }
    for (int i = 14; i >= 0; i--) /* one zero byte more after the byte */
        for (unsigned v = 0; v < 256; v++) {
            uint32_t r = LANE[i + 1][v];
            LANE[i][v] = (r >> 8) ^ LANE[15][r & 0xFF];
        }
    unsigned char probe[320], buf[336];
    for (size_t k = 0; k < sizeof(probe); k++)
        probe[k] = (unsigned char)(k * 131 + (k >> 3) * 7 + 1);
    for (size_t n = 64; n <= sizeof(probe); n++) {
        size_t pad = (16 - n % 16) % 16;
        memset(buf, 0, pad);
        memcpy(buf + pad, probe, n);
        if (crc_fold(buf, pad, n) != (uint32_t)crc32(0L, probe, (uInt)n))
            return;
    }
    crc_fast_ok = 1;
}
#endif

static inline char *put_text(char *w, const Text *x) {
    if (x->len <= TEXT_COPY)
        memcpy(w, x->data, TEXT_COPY);
    else
        memcpy(w, x->data, (size_t)x->len);
    w += x->len;
    *w++ = ':';
    return w;
}

/* OKX's checksum of the two sides' best CHECKSUM_LEVELS texts: the whole text in one buffer
 * (on the stack for the usual size, the heap when the texts are longer: sized exactly, never
 * overrun), after `pad` zero bytes that align its end to 16 bytes, then one CRC. */
static int checksum_value(const Side *b, const Side *a, long long *out) {
    const Text *tb[CHECKSUM_LEVELS], *ta[CHECKSUM_LEVELS];
    Py_ssize_t nb = top_texts(b, tb), na = top_texts(a, ta);
    size_t total = 0; /* the texts and a ':' after each */
    for (Py_ssize_t k = 0; k < nb; k++)
        total += (size_t)tb[k]->len + 1;
    for (Py_ssize_t k = 0; k < na; k++)
        total += (size_t)ta[k]->len + 1;
    size_t len = total > 0 ? total - 1 : 0; /* ":".join: no separator after the last text */
    size_t pad = (16 - len % 16) % 16;
    char small[2048], *buf = small;
    if (pad + total + TEXT_COPY > sizeof(small)) {
        buf = PyMem_Malloc(pad + total + TEXT_COPY);
        if (buf == NULL) {
            PyErr_NoMemory();
            return -1;
        }
    }
    memset(buf, 0, pad);
    char *w = buf + pad, *text = w;
    Py_ssize_t m = nb > na ? nb : na;
    for (Py_ssize_t k = 0; k < m; k++) {
        if (k < nb)
            w = put_text(w, tb[k]);
        if (k < na)
            w = put_text(w, ta[k]);
    }
    uLong crc;
#ifdef HAVE_FOLD
    if (crc_fast_ok && len >= 64) {
        crc = crc_fold((unsigned char *)buf, pad, len);
    } else
#endif
    if (crc_function != NULL) {
        /* Where the fold above is unavailable: zlib-ng's folding CRC, ~0.13 us on a usual
         * 1.1 KB text against system zlib's ~0.65. */
        PyObject *view = PyMemoryView_FromMemory(text, (Py_ssize_t)len, PyBUF_READ);
        PyObject *value = view == NULL ? NULL : PyObject_CallOneArg(crc_function, view);
        Py_XDECREF(view);
        crc = value == NULL ? (uLong)-1 : PyLong_AsUnsignedLong(value);
        Py_XDECREF(value);
        if (crc == (uLong)-1 && PyErr_Occurred()) {
            if (buf != small)
                PyMem_Free(buf);
            return -1;
        }
    } else {
        /* zlib takes uInt lengths: a huge text goes in pieces. */
        crc = crc32(0L, Z_NULL, 0);
        for (size_t done = 0; done < len;) {
            size_t piece = len - done > 0x40000000u ? 0x40000000u : len - done;
            crc = crc32(crc, (const Bytef *)text + done, (uInt)piece);
            done += piece;
        }
    }
    if (buf != small)
        PyMem_Free(buf);
    int64_t value = (int64_t)(crc & 0xFFFFFFFFu);
    if (value & 0x80000000)
        value -= INT64_C(0x100000000);
    *out = (long long)value;
    return 0;
}

static PyObject *checksum_of(const Side *b, const Side *a) {
    long long value;
    return checksum_value(b, a, &value) < 0 ? NULL : PyLong_FromLongLong(value);
}

/* Which CRC the checksum runs (the module's CRC: for logs, tests and the benchmark). */
static const char *crc_name(void) {
#ifdef HAVE_FOLD
    if (crc_fast_ok)
        return "pclmul";
#endif
    return crc_function != NULL ? "zlib-ng" : "zlib";
}

static PyObject *checksum(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "checksum() takes 2 arguments (%zd given)", nargs);
        return NULL;
    }
    if (!PyObject_TypeCheck(args[0], &SideType) || !PyObject_TypeCheck(args[1], &SideType)) {
        PyErr_SetString(PyExc_TypeError, "checksum() takes two BookSide objects");
        return NULL;
    }
    return checksum_of((const Side *)args[0], (const Side *)args[1]);
}

/* ---- books push frames ---------------------------------------------------------------- */

/* A `books` push parsed here instead of by msgspec (decode_push): the envelope, and each data
 * element's levels straight into tokens that Book.update applies without reading the text
 * again. Only what is fully understood is taken: any other frame (an event, a missing or
 * duplicated field, a value of another type, a number that is not a plain int64, a
 * backslash anywhere, a level array the level parser refuses, non-ASCII bytes input) returns
 * "not understood" and the caller's msgspec decoder decides it, errors included. So a parse
 * here never differs from msgspec's: it is msgspec's result or none. */

static PyObject *ARG_TYPE;       /* schemas.Arg (configure()) */
static PyObject *UNSET_OBJ;      /* msgspec.UNSET: seqId / prevSeqId not sent */
static PyObject *CHECKSUM_ERROR; /* book.ChecksumMismatch, raised by Book.update */
static PyObject *ARG_CACHE;      /* an arg object's exact text -> its Arg (repeated every push) */
static PyObject *EMPTY, *INT_ZERO;
#define ARG_CACHE_MAX 4096 /* bounded: arg texts come from the network */
#define ARG_TEXT_MAX 256   /* and so are their lengths: a longer text (padding) is not kept */
static Side SCRATCH;       /* tokens of the element being parsed (the GIL serialises) */

/* One data element: the BookData fields, and the levels as tokens pointing into `frame`. */
typedef struct {
    PyObject_HEAD
    PyObject *frame; /* the str or bytes the tokens and the array slices point into */
    PyObject *ts, *checksum, *seqId, *prevSeqId;
    const char *bids, *asks; /* each array's text, as msgspec.Raw keeps it */
    Py_ssize_t bidslen, askslen;
    Tok *toks; /* bids toks[0, nb), asks toks[nb, nb + na) */
    Py_ssize_t nb, na;
} Msg;

/* The Push: what stream.py routes and BookFeed reads (no event: events go to msgspec). */
typedef struct {
    PyObject_HEAD
    PyObject *arg, *action, *data;
} PushFrame;

static PyTypeObject MsgType, PushFrameType;

static inline int key_is(const char *k, Py_ssize_t n, const char *word) {
    size_t w = strlen(word);
    return (size_t)n == w && memcmp(k, word, w) == 0;
}

/* After skip_ws: the next byte is `ch` (consumed). */
static inline int take(Cursor *c, unsigned char ch) {
    skip_ws(c);
    if (c->p < c->end && *c->p == ch) {
        c->p++;
        return 1;
    }
    return 0;
}

/* An object key and its ':'; 0 when there is none. */
static int object_key(Cursor *c, const char **k, Py_ssize_t *n) {
    skip_ws(c);
    if (c->p == c->end || *c->p != '"' || scan_string(c, k, n, 0) < 0)
        return 0;
    return take(c, ':');
}

/* After a member: 1 on ',', 2 on '}', 0 on anything else. */
static int member_end(Cursor *c) {
    skip_ws(c);
    if (c->p < c->end && *c->p == ',') {
        c->p++;
        return 1;
    }
    if (c->p < c->end && *c->p == '}') {
        c->p++;
        return 2;
    }
    return 0;
}

/* A JSON string as a new str; NULL when the value is not a string. */
static PyObject *string_value(Cursor *c) {
    const char *s;
    Py_ssize_t n;
    skip_ws(c);
    if (c->p == c->end || *c->p != '"' || scan_string(c, &s, &n, 0) < 0)
        return NULL;
    return PyUnicode_DecodeUTF8(s, n, NULL);
}

/* A plain JSON integer of at most 18 digits (no fraction, no exponent) as a new int; NULL
 * otherwise (msgspec then decides: a bigger int, a float, or an error). */
static PyObject *int_value(Cursor *c) {
    skip_ws(c);
    const unsigned char *p = c->p, *end = c->end;
    int neg = p < end && *p == '-';
    p += neg;
    const unsigned char *d = p;
    /* Unsigned: the 19th digit (read only to refuse the number) may pass LLONG_MAX, and a
     * signed overflow is undefined behaviour even when the value is then dropped. */
    unsigned long long v = 0;
    while (p < end && (unsigned)(*p - '0') < 10 && p - d < 19)
        v = v * 10 + (unsigned)(*p++ - '0');
    Py_ssize_t nd = p - d;
    if (nd == 0 || nd > 18 || (nd > 1 && *d == '0'))
        return NULL;
    if (p < end && ((unsigned)(*p - '0') < 10 || *p == '.' || *p == 'e' || *p == 'E'))
        return NULL;
    c->p = p;
    return PyLong_FromLongLong(neg ? -(long long)v : (long long)v);
}

/* Arg(channel, instId) from an arg object's text [start, end) (validated JSON). */
static PyObject *make_arg(const unsigned char *start, const unsigned char *end) {
    Cursor c = {start, start + 1, end};
    PyObject *channel = NULL, *inst = NULL, *arg = NULL;
    if (take(&c, '}'))
        goto out; /* {}: no channel, msgspec's error */
    for (;;) {
        const char *k;
        Py_ssize_t n;
        if (!object_key(&c, &k, &n))
            goto out;
        PyObject **slot = key_is(k, n, "channel") ? &channel : key_is(k, n, "instId") ? &inst : NULL;
        if (slot != NULL) {
            if (*slot != NULL || (*slot = string_value(&c)) == NULL)
                goto out; /* a duplicate, or not a string */
        } else {
            skip_ws(&c);
            if (skip_value(&c) < 0)
                goto out;
        }
        int e = member_end(&c);
        if (e == 2)
            break;
        if (e == 0)
            goto out;
    }
    if (channel != NULL) {
        PyObject *args[2] = {channel, inst != NULL ? inst : EMPTY};
        arg = PyObject_Vectorcall(ARG_TYPE, args, 2, NULL);
    }
out:
    Py_XDECREF(channel);
    Py_XDECREF(inst);
    return arg;
}

/* The arg object: skipped (validated) first, then looked up by its text, made on a miss.
 * The RECENT args found are checked first (a connection's pushes cycle through its markets;
 * a memcmp is cheaper than making and hashing the dict key), then the dict. */
#define RECENT 8
static PyObject *RECENT_TEXT[RECENT], *RECENT_ARG[RECENT]; /* bytes -> Arg, replaced in turn */
static int RECENT_NEXT;

static void forget_recent(void) {
    for (int k = 0; k < RECENT; k++) {
        Py_CLEAR(RECENT_TEXT[k]);
        Py_CLEAR(RECENT_ARG[k]);
    }
}

static PyObject *arg_value(Cursor *c) {
    skip_ws(c);
    const unsigned char *start = c->p;
    if (c->p == c->end || *c->p != '{' || skip_value(c) < 0)
        return NULL;
    Py_ssize_t len = c->p - start;
    if (len > ARG_TEXT_MAX) /* OKX's are ~50 bytes: made each time, never cached */
        return make_arg(start, c->p);
    for (int k = 0; k < RECENT; k++) {
        PyObject *text = RECENT_TEXT[k];
        if (text != NULL && PyBytes_GET_SIZE(text) == len &&
            memcmp(PyBytes_AS_STRING(text), start, (size_t)len) == 0)
            return Py_NewRef(RECENT_ARG[k]);
    }
    PyObject *key = PyBytes_FromStringAndSize((const char *)start, len);
    if (key == NULL)
        return NULL;
    PyObject *arg = PyDict_GetItemWithError(ARG_CACHE, key);
    if (arg != NULL) {
        Py_INCREF(arg);
    } else if (!PyErr_Occurred() && (arg = make_arg(start, c->p)) != NULL &&
               PyDict_GET_SIZE(ARG_CACHE) < ARG_CACHE_MAX &&
               PyDict_SetItem(ARG_CACHE, key, arg) < 0) {
        Py_CLEAR(arg);
    }
    if (arg != NULL) {
        Py_XSETREF(RECENT_TEXT[RECENT_NEXT], Py_NewRef(key));
        Py_XSETREF(RECENT_ARG[RECENT_NEXT], Py_NewRef(arg));
        RECENT_NEXT = (RECENT_NEXT + 1) % RECENT;
    }
    Py_DECREF(key);
    return arg;
}

/* One data element (an object); a new Msg, or NULL. */
static PyObject *msg_value(Cursor *c, PyObject *frame) {
    PyObject *ts = NULL, *cs = NULL, *seq = NULL, *prev = NULL;
    const unsigned char *arr[2] = {NULL, NULL}; /* bids, asks */
    Py_ssize_t len[2] = {0, 0}, base[2] = {0, 0}, count[2] = {0, 0}, used = 0;
    Msg *m = NULL;
    if (!take(c, '{') || take(c, '}'))
        goto out; /* not an object, or no bids/asks/ts */
    for (;;) {
        const char *k;
        Py_ssize_t n;
        if (!object_key(c, &k, &n))
            goto out;
        int side = key_is(k, n, "bids") ? 0 : key_is(k, n, "asks") ? 1 : -1;
        PyObject **slot = key_is(k, n, "ts")          ? &ts
                          : key_is(k, n, "checksum")  ? &cs
                          : key_is(k, n, "seqId")     ? &seq
                          : key_is(k, n, "prevSeqId") ? &prev
                                                      : NULL;
        skip_ws(c);
        if (side >= 0) {
            if (arr[side] != NULL)
                goto out;
            arr[side] = c->p;
            Py_ssize_t total = parse_array(c, &SCRATCH, used);
            if (total < 0)
                goto out; /* the levels as a Raw: the book refuses them, msgspec decides */
            len[side] = c->p - arr[side];
            base[side] = used;
            count[side] = total - used;
            used = total;
        } else if (slot != NULL) {
            if (*slot != NULL)
                goto out;
            *slot = slot == &ts ? string_value(c) : int_value(c);
            if (*slot == NULL)
                goto out;
        } else if (skip_value(c) < 0) {
            goto out;
        }
        int e = member_end(c);
        if (e == 2)
            break;
        if (e == 0)
            goto out;
    }
    if (arr[0] == NULL || arr[1] == NULL || ts == NULL)
        goto out;
    m = PyObject_New(Msg, &MsgType);
    if (m == NULL)
        goto out;
    m->toks = NULL;
    m->nb = count[0];
    m->na = count[1];
    if (used > 0) {
        m->toks = PyMem_Malloc((size_t)used * sizeof(Tok));
        if (m->toks == NULL) {
            m->frame = m->ts = m->checksum = m->seqId = m->prevSeqId = NULL;
            Py_CLEAR(m);
            goto out;
        }
        memcpy(m->toks, SCRATCH.toks + base[0], (size_t)count[0] * sizeof(Tok));
        memcpy(m->toks + count[0], SCRATCH.toks + base[1], (size_t)count[1] * sizeof(Tok));
    }
    Py_INCREF(frame);
    m->frame = frame;
    m->bids = (const char *)arr[0];
    m->bidslen = len[0];
    m->asks = (const char *)arr[1];
    m->askslen = len[1];
    m->ts = ts;
    m->checksum = cs != NULL ? cs : Py_NewRef(INT_ZERO);
    m->seqId = seq != NULL ? seq : Py_NewRef(UNSET_OBJ);
    m->prevSeqId = prev != NULL ? prev : Py_NewRef(UNSET_OBJ);
    return (PyObject *)m;
out:
    Py_XDECREF(ts);
    Py_XDECREF(cs);
    Py_XDECREF(seq);
    Py_XDECREF(prev);
    return NULL;
}

/* The data array: a new list of Msg, or NULL. */
static PyObject *data_value(Cursor *c, PyObject *frame) {
    if (!take(c, '['))
        return NULL;
    PyObject *list = PyList_New(0);
    if (list == NULL || take(c, ']'))
        return list;
    for (;;) {
        PyObject *m = msg_value(c, frame);
        if (m == NULL || PyList_Append(list, m) < 0) {
            Py_XDECREF(m);
            Py_DECREF(list);
            return NULL;
        }
        Py_DECREF(m);
        if (take(c, ']'))
            return list;
        if (!take(c, ',')) {
            Py_DECREF(list);
            return NULL;
        }
    }
}

/* A `books` push frame (str or bytes) as a PushFrame; NULL, no error set, when it is not
 * fully understood here (see the section comment). */
static PyObject *parse_push_once(PyObject *frame) {
    const char *buf;
    Py_ssize_t len;
    if (PyUnicode_CheckExact(frame)) {
        buf = PyUnicode_AsUTF8AndSize(frame, &len); /* a pointer into an ASCII str: no copy */
        if (buf == NULL)
            goto punt; /* e.g. a lone surrogate */
    } else if (PyBytes_CheckExact(frame)) {
        buf = PyBytes_AS_STRING(frame);
        len = PyBytes_GET_SIZE(frame);
        /* Bytes: only ASCII, so no string here needs the UTF-8 checks msgspec makes. */
        for (Py_ssize_t k = 0; k < len; k++)
            if ((unsigned char)buf[k] >= 0x80)
                return NULL;
    } else {
        return NULL;
    }
    /* No search for a backslash first: every string here goes through scan_string, which
     * refuses one (then the frame is msgspec's, escapes and the book's refusal included), or
     * through plain_number / okx_level, which take digits, '-' and '.' only. */
    Cursor c = {(const unsigned char *)buf, (const unsigned char *)buf,
                (const unsigned char *)buf + len};
    PyObject *arg = NULL, *action = NULL, *data = NULL;
    PushFrame *push = NULL;
    if (!take(&c, '{') || take(&c, '}'))
        goto out;
    for (;;) {
        const char *k;
        Py_ssize_t n;
        if (!object_key(&c, &k, &n))
            goto out;
        if (key_is(k, n, "arg")) {
            if (arg != NULL || (arg = arg_value(&c)) == NULL)
                goto out;
        } else if (key_is(k, n, "action")) {
            if (action != NULL || (action = string_value(&c)) == NULL)
                goto out;
        } else if (key_is(k, n, "data")) {
            if (data != NULL || (data = data_value(&c, frame)) == NULL)
                goto out;
        } else if (key_is(k, n, "event") || key_is(k, n, "code") || key_is(k, n, "msg") ||
                   key_is(k, n, "connId")) {
            goto out; /* Push fields this parser does not produce */
        } else {
            skip_ws(&c);
            if (skip_value(&c) < 0)
                goto out;
        }
        int e = member_end(&c);
        if (e == 2)
            break;
        if (e == 0)
            goto out;
    }
    skip_ws(&c);
    if (c.p != c.end || arg == NULL || action == NULL || data == NULL)
        goto out;
    push = PyObject_New(PushFrame, &PushFrameType);
    if (push != NULL) {
        push->arg = arg;
        push->action = action;
        push->data = data;
        return (PyObject *)push;
    }
out:
    Py_XDECREF(arg);
    Py_XDECREF(action);
    Py_XDECREF(data);
punt:
    PyErr_Clear(); /* whatever went wrong here, msgspec decides the frame */
    return NULL;
}

static PyObject *parse_push(PyObject *frame) {
    PyObject *push = parse_push_once(frame);
    trim_toks(&SCRATCH); /* each Msg copied its tokens out */
    return push;
}

static int configured(void) {
    if (ARG_TYPE == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "_okxbook.configure() was not called");
        return 0;
    }
    return 1;
}

static PyObject *py_parse_push(PyObject *module, PyObject *frame) {
    if (!configured())
        return NULL;
    PyObject *push = parse_push(frame);
    return push != NULL ? push : Py_NewRef(Py_None);
}

static PyObject *py_decode_push(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "decode_push() takes 2 arguments (%zd given)", nargs);
        return NULL;
    }
    if (!configured())
        return NULL;
    PyObject *push = parse_push(args[1]);
    return push != NULL ? push : PyObject_CallOneArg(args[0], args[1]);
}

static PyObject *py_configure(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_Format(PyExc_TypeError, "configure() takes 3 arguments (%zd given)", nargs);
        return NULL;
    }
    if (!PyType_Check(args[0]) || !PyExceptionClass_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "configure(Arg, UNSET, ChecksumMismatch)");
        return NULL;
    }
    Py_XSETREF(ARG_TYPE, Py_NewRef(args[0]));
    Py_XSETREF(UNSET_OBJ, Py_NewRef(args[1]));
    Py_XSETREF(CHECKSUM_ERROR, Py_NewRef(args[2]));
    PyDict_Clear(ARG_CACHE);
    forget_recent();
    Py_RETURN_NONE;
}

static void Msg_dealloc(Msg *self) {
    Py_XDECREF(self->frame);
    Py_XDECREF(self->ts);
    Py_XDECREF(self->checksum);
    Py_XDECREF(self->seqId);
    Py_XDECREF(self->prevSeqId);
    PyMem_Free(self->toks);
    PyObject_Free(self);
}

static PyObject *Msg_bids(Msg *self, void *unused) {
    return PyBytes_FromStringAndSize(self->bids, self->bidslen);
}

static PyObject *Msg_asks(Msg *self, void *unused) {
    return PyBytes_FromStringAndSize(self->asks, self->askslen);
}

static PyMemberDef Msg_members[] = {
    {"ts", T_OBJECT, offsetof(Msg, ts), READONLY, "ts as sent (a str)."},
    {"checksum", T_OBJECT, offsetof(Msg, checksum), READONLY, "OKX's checksum (0: not sent)."},
    {"seqId", T_OBJECT, offsetof(Msg, seqId), READONLY, "seqId, or msgspec.UNSET."},
    {"prevSeqId", T_OBJECT, offsetof(Msg, prevSeqId), READONLY, "prevSeqId, or UNSET."},
    {NULL, 0, 0, 0, NULL},
};

static PyGetSetDef Msg_getset[] = {
    {"bids", (getter)Msg_bids, NULL, "The bids' JSON text (new bytes, as a Raw holds).", NULL},
    {"asks", (getter)Msg_asks, NULL, "The asks' JSON text (new bytes, as a Raw holds).", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject MsgType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "astra.venues.okx._okxbook.BookMessage",
    .tp_basicsize = sizeof(Msg),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "One parsed data element of a books push (schemas.BookData's fields).",
    .tp_dealloc = (destructor)Msg_dealloc,
    .tp_members = Msg_members,
    .tp_getset = Msg_getset,
};

static void PushFrame_dealloc(PushFrame *self) {
    Py_XDECREF(self->arg);
    Py_XDECREF(self->action);
    Py_XDECREF(self->data);
    PyObject_Free(self);
}

static PyObject *PushFrame_empty(PyObject *self, void *unused) {
    return Py_NewRef(EMPTY);
}

static PyMemberDef PushFrame_members[] = {
    {"arg", T_OBJECT, offsetof(PushFrame, arg), READONLY, "The Arg."},
    {"action", T_OBJECT, offsetof(PushFrame, action), READONLY, "snapshot | update"},
    {"data", T_OBJECT, offsetof(PushFrame, data), READONLY, "A list of BookMessage."},
    {NULL, 0, 0, 0, NULL},
};

static PyGetSetDef PushFrame_getset[] = {
    {"event", PushFrame_empty, NULL, "\"\": a data push.", NULL},
    {"code", PushFrame_empty, NULL, "\"\"", NULL},
    {"msg", PushFrame_empty, NULL, "\"\"", NULL},
    {"connId", PushFrame_empty, NULL, "\"\"", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject PushFrameType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "astra.venues.okx._okxbook.BookPush",
    .tp_basicsize = sizeof(PushFrame),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A books push parsed in C: schemas.Push[BookData]'s fields.",
    .tp_dealloc = (destructor)PushFrame_dealloc,
    .tp_members = PushFrame_members,
    .tp_getset = PushFrame_getset,
};

/* ---- Book: both sides, one call per message ------------------------------------------- */

typedef struct {
    PyObject_HEAD
    Side *bids, *asks; /* owned; they reference only floats, so no cycle can form */
    Py_ssize_t verified; /* checksums update() compared, all equal */
} Book;

static PyObject *Book_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, ":Book", kwlist))
        return NULL;
    Book *self = (Book *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->bids = (Side *)SideType.tp_alloc(&SideType, 0);
    self->asks = (Side *)SideType.tp_alloc(&SideType, 0);
    if (self->bids == NULL || self->asks == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    self->bids->descending = 1;
    return (PyObject *)self;
}

static void Book_dealloc(Book *self) {
    Py_XDECREF(self->bids);
    Py_XDECREF(self->asks);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* bids then asks, as Python's two calls: an error in the asks leaves the bids applied. */
static PyObject *both(Book *self, PyObject *const *args, Py_ssize_t nargs, const char *name,
                      PyObject *(*one)(Side *, PyObject *)) {
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "%s() takes 2 arguments (%zd given)", name, nargs);
        return NULL;
    }
    PyObject *b = one(self->bids, args[0]);
    if (b == NULL)
        return NULL;
    PyObject *a = one(self->asks, args[1]);
    PyObject *t = a == NULL ? NULL : PyTuple_New(2);
    if (t == NULL) {
        Py_DECREF(b);
        Py_XDECREF(a);
        return NULL;
    }
    PyTuple_SET_ITEM(t, 0, b);
    PyTuple_SET_ITEM(t, 1, a);
    return t;
}

static PyObject *Book_apply(Book *self, PyObject *const *args, Py_ssize_t nargs) {
    return both(self, args, nargs, "apply", side_apply);
}

static PyObject *Book_load(Book *self, PyObject *const *args, Py_ssize_t nargs) {
    return both(self, args, nargs, "load", side_load);
}

static PyObject *Book_checksum(Book *self, PyObject *unused) {
    return checksum_of(self->bids, self->asks);
}

/* PyBook.update: both sides (bids first: an error in the asks leaves the bids applied), then
 * OKX's integrity rule when `verify` and the message's checksum is not 0 (not sent): the
 * rebuilt checksum must equal it, else ChecksumMismatch with the sides applied (the caller
 * resyncs). A BookMessage's levels were parsed with the frame; anything else (schemas.BookData)
 * is read through its bids/asks/checksum attributes, as Python does. */
static PyObject *Book_update(Book *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "update() takes 2 arguments (%zd given)", nargs);
        return NULL;
    }
    PyObject *data = args[0], *b = NULL, *a = NULL, *expected = NULL, *raw;
    int verify = PyObject_IsTrue(args[1]);
    if (verify < 0)
        return NULL;
    if (Py_IS_TYPE(data, &MsgType)) {
        Msg *m = (Msg *)data;
        if ((b = apply_toks(self->bids, m->toks, m->nb)) == NULL)
            return NULL;
        if ((a = apply_toks(self->asks, m->toks + m->nb, m->na)) == NULL)
            goto fail;
    } else {
        if ((raw = PyObject_GetAttrString(data, "bids")) == NULL)
            return NULL;
        b = side_apply(self->bids, raw);
        Py_DECREF(raw);
        if (b == NULL)
            return NULL;
        if ((raw = PyObject_GetAttrString(data, "asks")) == NULL)
            goto fail;
        a = side_apply(self->asks, raw);
        Py_DECREF(raw);
        if (a == NULL)
            goto fail;
    }
    if (verify) {
        expected = Py_IS_TYPE(data, &MsgType) ? Py_NewRef(((Msg *)data)->checksum)
                                               : PyObject_GetAttrString(data, "checksum");
        if (expected == NULL)
            goto fail;
        int sent, differs = 0, overflow = 0;
        long long want = 0, value;
        PyObject *local = NULL;
        if (PyLong_CheckExact(expected)) {
            /* An exact int (what both parsers give): compared as C integers, the rebuilt
             * checksum made an object only for the error message. */
            want = PyLong_AsLongLongAndOverflow(expected, &overflow);
            if (want == -1 && PyErr_Occurred())
                goto fail;
            sent = overflow != 0 || want != 0;
        } else if ((sent = PyObject_RichCompareBool(expected, INT_ZERO, Py_NE)) < 0) {
            goto fail;
        }
        if (sent) {
            if (PyLong_CheckExact(expected)) {
                if (checksum_value(self->bids, self->asks, &value) < 0)
                    goto fail;
                differs = overflow != 0 || value != want;
                if (differs && (local = PyLong_FromLongLong(value)) == NULL)
                    goto fail;
            } else {
                if ((local = checksum_of(self->bids, self->asks)) == NULL)
                    goto fail;
                differs = PyObject_RichCompareBool(local, expected, Py_NE);
            }
            if (differs > 0 && !configured()) {
                differs = -1; /* no ChecksumMismatch to raise: configured()'s RuntimeError */
            } else if (differs > 0) {
                PyObject *msg = PyUnicode_FromFormat("checksum %S but rebuilt book gives %S",
                                                     expected, local);
                if (msg != NULL) {
                    PyErr_SetObject(CHECKSUM_ERROR, msg);
                    Py_DECREF(msg);
                }
            }
            Py_XDECREF(local);
            if (differs != 0)
                goto fail;
            self->verified++;
        }
        Py_DECREF(expected);
    }
    PyObject *t = PyTuple_New(2);
    if (t == NULL)
        goto fail;
    PyTuple_SET_ITEM(t, 0, b);
    PyTuple_SET_ITEM(t, 1, a);
    return t;
fail:
    Py_XDECREF(expected);
    Py_XDECREF(b);
    Py_XDECREF(a);
    return NULL;
}

static PyObject *Book_bids(Book *self, void *unused) {
    Py_INCREF(self->bids);
    return (PyObject *)self->bids;
}

static PyObject *Book_asks(Book *self, void *unused) {
    Py_INCREF(self->asks);
    return (PyObject *)self->asks;
}

/* ---- module --------------------------------------------------------------------------- */

static PyMethodDef Side_methods[] = {
    {"apply", (PyCFunction)Side_apply, METH_O,
     "apply(levels) -> list[(price, size)]: one message's levels (JSON bytes), in order."},
    {"load", (PyCFunction)Side_load, METH_O,
     "load(levels) -> list[(price, size)]: a snapshot into an emptied side."},
    {"top", (PyCFunction)Side_top, METH_NOARGS,
     "top() -> list[str]: the best CHECKSUM_LEVELS 'price:size' texts, best first."},
    {"levels", (PyCFunction)Side_levels, METH_NOARGS,
     "levels() -> list[(float, str)]: every level, best first."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Side_getset[] = {
    {"descending", (getter)Side_descending, NULL, "True for bids.", NULL},
    {"prices", (getter)Side_prices, NULL, "The prices, ascending (a new list).", NULL},
    {"texts", (getter)Side_texts, NULL, "texts[i]: prices[i]'s 'price:size' as sent.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PySequenceMethods Side_as_sequence = {.sq_length = (lenfunc)Side_len};

static PyTypeObject SideType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "astra.venues.okx._okxbook.BookSide",
    .tp_basicsize = sizeof(Side),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "BookSide(descending): one side (bids: descending) of one OKX book.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Side_init,
    .tp_dealloc = (destructor)Side_dealloc,
    .tp_methods = Side_methods,
    .tp_getset = Side_getset,
    .tp_as_sequence = &Side_as_sequence,
};

static PyMethodDef Book_methods[] = {
    {"apply", (PyCFunction)(void (*)(void))Book_apply, METH_FASTCALL,
     "apply(bids, asks) -> (bid changes, ask changes): one message's levels (JSON bytes)."},
    {"load", (PyCFunction)(void (*)(void))Book_load, METH_FASTCALL,
     "load(bids, asks) -> (bid changes, ask changes): a snapshot."},
    {"checksum", (PyCFunction)Book_checksum, METH_NOARGS,
     "checksum() -> int: OKX's signed CRC32 of the top 25 of both sides."},
    {"update", (PyCFunction)(void (*)(void))Book_update, METH_FASTCALL,
     "update(data, verify) -> (bid changes, ask changes): one message applied and, when\n"
     "verify and data.checksum != 0, checked (ChecksumMismatch; `verified` counts)."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Book_getset[] = {
    {"bids", (getter)Book_bids, NULL, "The bid side (a BookSide).", NULL},
    {"asks", (getter)Book_asks, NULL, "The ask side (a BookSide).", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef Book_members[] = {
    {"verified", T_PYSSIZET, offsetof(Book, verified), READONLY,
     "Checksums update() compared (and found equal)."},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject BookType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "astra.venues.okx._okxbook.Book",
    .tp_basicsize = sizeof(Book),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Book(): both sides of one OKX book, applied and checked one message a call.",
    .tp_new = Book_new,
    .tp_dealloc = (destructor)Book_dealloc,
    .tp_methods = Book_methods,
    .tp_getset = Book_getset,
    .tp_members = Book_members,
};

static PyMethodDef module_methods[] = {
    {"checksum", (PyCFunction)(void (*)(void))checksum, METH_FASTCALL,
     "checksum(bids, asks) -> int: OKX's signed CRC32 of the two sides' top 25."},
    {"configure", (PyCFunction)(void (*)(void))py_configure, METH_FASTCALL,
     "configure(Arg, UNSET, ChecksumMismatch): the Python objects the parser and update use."},
    {"parse_push", (PyCFunction)py_parse_push, METH_O,
     "parse_push(frame) -> BookPush | None: a books push, or None when msgspec must decide."},
    {"decode_push", (PyCFunction)(void (*)(void))py_decode_push, METH_FASTCALL,
     "decode_push(fallback, frame): parse_push(frame), else fallback(frame)."},
    {NULL, NULL, 0, NULL},
};

PyDoc_STRVAR(module_doc,
"One OKX book (okx/book.py's PyBook / PyBookSide / py_checksum, which define the behaviour)\n"
"in C: the same results, the same errors, the same state after an error.\n"
"\n"
"Input: a side's levels as the JSON text OKX sent, [[\"px\", \"sz\", ...], ...], strict JSON;\n"
"px and sz strings, a backslash refused; a malformed array raises ValueError before any\n"
"level applies. Prices and sizes are float(text) bit for bit.\n"
"Invariants: levels in bisect_left order of their float price, one per price, sizes\n"
"positive; a message's levels apply in order (size > 0 sets \"px:sz\" as sent, anything\n"
"else deletes, an absent delete is no error); a float error at level k leaves levels\n"
"0..k-1 applied; load() changes nothing on an error.\n"
"Integrity rule: checksum is zlib's CRC32 of the best 25 texts of each side interleaved\n"
"bid1:ask1:bid2:ask2:... (a shorter side simply ends), as a signed int32; Book.update\n"
"applies a message and checks it (ChecksumMismatch) in one call. CRC names what computes\n"
"it (pclmul: carry-less multiplication, checked against zlib at import; else zlib-ng or\n"
"zlib).\n"
"parse_push(frame) parses a books push frame (schemas.Push[BookData]'s fields) or returns\n"
"None when msgspec must decide it: never a parse that differs from msgspec's.");

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "astra.venues.okx._okxbook",
    .m_doc = module_doc,
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC PyInit__okxbook(void) {
    if (PyType_Ready(&SideType) < 0 || PyType_Ready(&BookType) < 0 ||
        PyType_Ready(&MsgType) < 0 || PyType_Ready(&PushFrameType) < 0)
        return NULL;
    if (ZERO == NULL && (ZERO = PyFloat_FromDouble(0.0)) == NULL)
        return NULL;
    if (EMPTY == NULL && (EMPTY = PyUnicode_FromStringAndSize("", 0)) == NULL)
        return NULL;
    if (INT_ZERO == NULL && (INT_ZERO = PyLong_FromLong(0)) == NULL)
        return NULL;
    if (ARG_CACHE == NULL && (ARG_CACHE = PyDict_New()) == NULL)
        return NULL;
#ifdef HAVE_FOLD
    crc_fast_init();
#endif

    if (crc_function == NULL) {
        PyObject *ng = PyImport_ImportModule("zlib_ng.zlib_ng");
        if (ng != NULL) {
            crc_function = PyObject_GetAttrString(ng, "crc32");
            Py_DECREF(ng);
        }
        PyErr_Clear(); /* no zlib-ng: zlib's crc32 */
    }
    PyObject *m = PyModule_Create(&module_def);
    if (m == NULL)
        return NULL;
    if (PyModule_AddIntConstant(m, "CHECKSUM_LEVELS", CHECKSUM_LEVELS) < 0 ||
        PyModule_AddObjectRef(m, "BookSide", (PyObject *)&SideType) < 0 ||
        PyModule_AddObjectRef(m, "Book", (PyObject *)&BookType) < 0 ||
        PyModule_AddObjectRef(m, "BookMessage", (PyObject *)&MsgType) < 0 ||
        PyModule_AddObjectRef(m, "BookPush", (PyObject *)&PushFrameType) < 0 ||
        PyModule_AddStringConstant(m, "CRC", crc_name()) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
