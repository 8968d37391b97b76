/* astra.venues.htx._htxbook: the compiled core of HTX's feed handlers.
 *
 * The pure-Python modules define the behaviour and stay the fallback (feed.py, fullbook.py);
 * this module does the same work faster and is tested against them value for value.
 *
 * Inflater: one per connection. A frame is inflated by the fast decoder below when it can (a
 * plain gzip member with complete Huffman codes: every HTX frame seen), its output accepted
 * only when the trailer's CRC-32 (computed by zlib-ng) and length match. Anything it refuses
 * goes to the connection's z_stream (system zlib, reset per frame), which then
 * decides the result or the error. Integrity rule: a frame must be one complete gzip member (wbits 31: header
 * checked, trailer CRC-32 and length checked by zlib); bytes after the member are ignored
 * (as zlib.decompress does). Anything else raises zlib.error with zlib.decompress's message.
 * The output never exceeds the inflater's limit: a larger frame (a gzip bomb) raises
 * zlib.error without growing past limit + 1 bytes (+ OUT_SLACK, the fast decoder's room).
 * The fast decoder writes only inside its buffer (every index bounded by the buffer's
 * size or, in its fast loop, by FAST_ROOM bytes of room checked per symbol), reads only
 * inside the frame (8-byte loads while 16 bytes remain), and never trusts a table entry it
 * did not build from a complete code. The stream is reset after every frame,
 * success or failure, so a bad frame leaves no state behind.
 *
 * depth_push(json): a depth.step0 push's fields without msgspec, or None (see its section).
 *
 * side_changes(fallback, held, text): fullbook._side_changes in C, the same algorithm step for
 * step (head/tail cut back to whole levels, anchors, then a dict diff of the levels left), so
 * the result is the same list in the same order. Invariants:
 * - only the levels in the runs left over are parsed; numbers are parsed bit for bit as
 *   msgspec parses them (integers of up to 18 digits exactly, then converted; decimals of up
 *   to 15 digits by one correctly rounded division; everything else by PyOS_string_to_double,
 *   which is correctly rounded);
 * - anything outside that strict subset of JSON (whitespace, strings, long tokens, numbers out
 *   of range, malformed text) is not judged here: the whole side goes to fallback(held, text)
 *   (the Python implementation), which gives the same result or raises the same error. So C
 *   never accepts what the Python path rejects, and never raises where it would not.
 *
 * positive_levels(side): a snapshot's side (fullbook._positive) read under the same strict
 * form and number rule, or None (then msgspec reads it, and raises on what it rejects).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <float.h>
#include <limits.h>
#include <stdint.h>
#include <string.h>
#include <zlib.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

static PyObject *ZlibError; /* zlib.error: the class the feed already handles */

/* ------------------------------------------------------------------------------------ */
/* Inflater                                                                              */

/* Deflate expands at most 1032:1 (a 258-byte match in two bits); the size hint from the
 * gzip trailer is never trusted beyond that, so a lying trailer cannot make us allocate. */
#define MAX_RATIO 1032
#define MAX_LIMIT ((Py_ssize_t)1 << 30)
/* Room allocated past the expected payload (for payloads of SLACK_ABOVE bytes or more), so
 * the fast loop (which needs FAST_ROOM, 266 bytes, ahead of it) runs to the payload's end. */
#define OUT_SLACK 288
#define SLACK_ABOVE 1024

/* ------------------------------------------------------------------------------------ */
/* Fast inflate                                                                           */
/*
 * System zlib (1.2.x here) inflates HTX's number-heavy frames at ~170 MB/s, slower than the
 * zlib-ng one-shot call it was meant to replace. This decoder does the common case (one gzip
 * member, no optional header fields, complete Huffman codes) with table lookups on a 64-bit
 * bit buffer. It is only a fast path: on anything it does not take, or any doubt (a code
 * that is not complete, a distance too far back, input ending early, output past the
 * buffer, a CRC or length mismatch), it gives up and the frame is inflated again by zlib,
 * which decides the result or the error. Its output is accepted only when the trailer's
 * CRC-32 and length match it, so a frame it takes is one zlib takes, with the same bytes.
 */

#define LIT_BITS 11 /* first-level table index widths: longer codes decode bit by bit */
#define DIST_BITS 8
#define LONG_CODE 0xFFFFFFFFu

typedef struct {
    uint16_t count[16];   /* codes of each length */
    uint16_t symbol[288]; /* symbols in canonical order */
    /* table[bits]: (symbol << 8) | length for codes up to the table width, else LONG_CODE;
     * bits 4-7 stay 0, so "buf >>= e & 63" is one x86 shift (it masks the count to 6 bits) */
    uint32_t *table; /* 1 << max_bits entries */
    int max_bits, bits; /* the table's capacity, and the width in use */
} Huff;

static uint32_t pack_length(uint32_t e);
static uint32_t pack_dist(uint32_t e);
/* What a table entry holds past (symbol << 8) | length: nothing (code lengths), or a
 * length's or distance's base and extra bits (see PACKED). */
enum { PACK_NONE, PACK_LENGTH, PACK_DIST };

static uint8_t REV8[256]; /* bits of each byte reversed (set once, at import) */

/* Build a canonical code from lengths, each table entry passed through pack. 0: a complete code; -1: anything else (fall back). */
static int huff_build(Huff *h, const uint8_t *lens, int n, int pack) {
    uint16_t offs[16];
    /* Four histograms: most lengths are 0 in a row, and one counter's increments would
     * wait on each other through memory. */
    uint16_t c4[4][16];
    memset(c4, 0, sizeof c4);
    int s4 = 0;
    for (; s4 + 4 <= n; s4 += 4) {
        c4[0][lens[s4]]++;
        c4[1][lens[s4 + 1]]++;
        c4[2][lens[s4 + 2]]++;
        c4[3][lens[s4 + 3]]++;
    }
    for (; s4 < n; s4++)
        c4[0][lens[s4]]++;
    for (int len = 0; len < 16; len++)
        h->count[len] = (uint16_t)(c4[0][len] + c4[1][len] + c4[2][len] + c4[3][len]);
    if (h->count[0] == n)
        return -1; /* no codes: zlib may take it, the fast path does not */
    int left = 1;
    for (int len = 1; len < 16; len++) {
        left <<= 1;
        left -= h->count[len];
        if (left < 0)
            return -1; /* over-subscribed */
    }
    if (left > 0)
        return -1; /* incomplete */
    /* Symbols in canonical order (by length, then value), the unused ones (length 0)
     * left out. (Storing those too, with no branch, was slower: the long runs of unused
     * symbols in a small frame's code made one store wait on the last.) */
    offs[1] = 0;
    for (int len = 1; len < 15; len++)
        offs[len + 1] = (uint16_t)(offs[len] + h->count[len]);
    for (int s = 0; s < n; s++)
        if (lens[s])
            h->symbol[offs[lens[s]]++] = (uint16_t)s;
    int longest = 15;
    while (h->count[longest] == 0)
        longest--;
    /* A table no wider than the longest code: a small block's few short codes fill a small
     * table (a complete code of longest length L fills exactly 2**L entries). */
    h->bits = longest < h->max_bits ? longest : h->max_bits;
    /* Level by level, doubling: at level len the table has 2**len entries, each code of
     * length len is stored once at its reversed code (the stream sends codes MSB first),
     * then the table is copied after itself, which fills every longer index ending in a
     * shorter code with a memcpy instead of one store per entry and stride. Slots no code
     * fills (prefixes of codes longer than the table) start as LONG_CODE and stay so.
     * Codes are canonical (RFC 1951 3.2.2): those of one length are consecutive, from
     * code; each is reversed by table. */
    h->table[0] = h->table[1] = LONG_CODE;
    unsigned code = 0;
    int k = 0;
    for (int len = 1; len <= h->bits; len++) {
        for (int c = 0; c < h->count[len]; c++, k++, code++) {
            unsigned rev = ((unsigned)REV8[code & 0xFF] << 8 | REV8[code >> 8]) >> (16 - len);
            uint32_t e = ((uint32_t)h->symbol[k] << 8) | (uint32_t)len;
            h->table[rev] = pack == PACK_LENGTH ? pack_length(e) : pack == PACK_DIST ? pack_dist(e) : e;
        }
        code <<= 1;
        if (len < h->bits)
            memcpy(h->table + ((size_t)1 << len), h->table, sizeof(uint32_t) << len);
    }
    return 0;
}

typedef struct {
    const uint8_t *in, *end;
    uint64_t buf;
    int cnt;       /* valid bits in buf */
    int overrun;   /* bytes of zeros supplied past the end */
} Bits;

static inline __attribute__((always_inline)) void refill(Bits *b) {
    if (b->end - b->in >= 8) {
        uint64_t w;
        memcpy(&w, b->in, 8); /* little-endian load (x86-64, aarch64) */
        b->buf |= w << b->cnt;
        b->in += (63 - b->cnt) >> 3;
        b->cnt |= 56;
    } else {
        while (b->cnt <= 56) {
            if (b->in < b->end)
                b->buf |= (uint64_t)*b->in++ << b->cnt;
            else
                b->overrun++;
            b->cnt += 8;
        }
    }
}

static inline __attribute__((always_inline)) unsigned take(Bits *b, int n) { /* n <= 32, after refill */
    unsigned v = (unsigned)(b->buf & ((1ull << n) - 1));
    b->buf >>= n;
    b->cnt -= n;
    return v;
}

static int decode_long(uint64_t buf, const Huff *h);

/* One symbol (refilled: at least 56 bits in buf). -1: not a code. */
static inline __attribute__((always_inline)) int decode_sym(Bits *b, const Huff *h) {
    uint32_t e = h->table[b->buf & ((1u << h->bits) - 1)];
    if (e == LONG_CODE) {
        int got = decode_long(b->buf, h);
        if (got < 0)
            return -1;
        e = (uint32_t)got;
    }
    int len = (int)(e & 15);
    b->buf >>= len;
    b->cnt -= len;
    return (int)(e >> 8);
}

/* A code longer than the table width (rare): canonical decode, bit by bit, of the bits in
 * buf (not consumed here, so the caller's state stays in registers): (symbol << 8) | length,
 * or -1. */
static __attribute__((noinline)) int decode_long(uint64_t buf, const Huff *h) {
    int code = 0, first = 0, index = 0;
    for (int len = 1; len < 16; len++) {
        code |= (int)(buf & 1);
        buf >>= 1;
        int count = h->count[len];
        if (code - count < first)
            return (h->symbol[index + (code - first)] << 8) | len;
        index += count;
        first = (first + count) << 1;
        code <<= 1;
    }
    return -1;
}

static const uint16_t LEN_BASE[29] = {3,  4,  5,  6,  7,  8,  9,  10, 11,  13,
                                      15, 17, 19, 23, 27, 31, 35, 43, 51,  59,
                                      67, 83, 99, 115, 131, 163, 195, 227, 258};
static const uint8_t LEN_EXTRA[29] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2,
                                      2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0};
static const uint16_t DIST_BASE[30] = {1,    2,    3,    4,    5,    7,     9,     13,    17,  25,
                                       33,   49,   65,   97,   129,  193,   257,   385,   513, 769,
                                       1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577};
static const uint8_t DIST_EXTRA[30] = {0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6,
                                       6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13};
static const uint8_t CL_ORDER[19] = {16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15};

/* Table entries of lengths and distances carry their base and extra-bit count, so a match
 * costs no second table load: PACKED | base << 16 | extra << 12 | code length << 8 |
 * (code length + extra). The low byte is what to consume, as in every other entry: the
 * shift that decides the next lookup waits on no addition. */
#define PACKED 0x80000000u

static uint32_t pack_length(uint32_t e) {
    uint32_t sym = e >> 8;
    if (sym < 257 || sym > 285)
        return e; /* literal, end of block, or not a symbol (286, 287) */
    uint32_t ex = LEN_EXTRA[sym - 257];
    return PACKED | (uint32_t)LEN_BASE[sym - 257] << 16 | ex << 12 | (e & 15) << 8 |
           ((e & 15) + ex);
}

static uint32_t pack_dist(uint32_t e) {
    uint32_t sym = e >> 8;
    if (sym >= 30)
        return e; /* not a distance (30, 31): left unpacked, refused when met */
    uint32_t ex = DIST_EXTRA[sym];
    return PACKED | (uint32_t)DIST_BASE[sym] << 16 | ex << 12 | (e & 15) << 8 | ((e & 15) + ex);
}

static uint32_t fixed_lit_table[1 << LIT_BITS], fixed_dist_table[1 << DIST_BITS];
static Huff fixed_lit = {.table = fixed_lit_table, .max_bits = LIT_BITS};
static Huff fixed_dist = {.table = fixed_dist_table, .max_bits = DIST_BITS};

static int fixed_init(void) { /* RFC 1951 3.2.6; 30 distance codes + 2 unused = complete */
    for (int i = 0; i < 256; i++) {
        unsigned r = 0;
        for (int j = 0; j < 8; j++)
            r |= ((unsigned)i >> j & 1u) << (7 - j);
        REV8[i] = (uint8_t)r;
    }
    uint8_t lens[288];
    for (int s = 0; s < 288; s++)
        lens[s] = s < 144 ? 8 : s < 256 ? 9 : s < 280 ? 7 : 8;
    if (huff_build(&fixed_lit, lens, 288, PACK_LENGTH) < 0)
        return -1;
    for (int s = 0; s < 32; s++)
        lens[s] = 5;
    if (huff_build(&fixed_dist, lens, 32, PACK_DIST) < 0)
        return -1;
    return 0;
}

/* Inflate the deflate data of one block-sequence into out[0..cap). Returns the bytes written
 * (b is left at the end of the data); -1: give up (zlib decides). */
static inline __attribute__((always_inline)) Py_ssize_t fast_deflate_body(Bits *io, uint8_t *out,
                                                                          Py_ssize_t cap) {
    /* a local copy the compiler can keep in registers (io is written back on success) */
    Bits local = *io, *b = &local;
    uint32_t lit_table[1 << LIT_BITS], dist_table[1 << DIST_BITS], cl_table[1 << 7];
    Huff lit = {.table = lit_table, .max_bits = LIT_BITS};
    Huff dist = {.table = dist_table, .max_bits = DIST_BITS};
    Huff cl = {.table = cl_table, .max_bits = 7};
    Py_ssize_t pos = 0;
    int last;
    do {
        refill(b);
        last = (int)take(b, 1);
        int type = (int)take(b, 2);
        const Huff *hl, *hd;
        if (type == 0) { /* stored: byte-aligned LEN, NLEN, bytes */
            take(b, b->cnt & 7);
            refill(b);
            unsigned len = take(b, 16), nlen = take(b, 16);
            if ((len ^ 0xFFFFu) != nlen)
                return -1;
            /* whole bytes still in buf come first, then the input itself */
            while (len && b->cnt >= 8) {
                if (pos >= cap)
                    return -1;
                out[pos++] = (uint8_t)take(b, 8);
                len--;
            }
            if (len) {
                /* the bits above cnt are input read ahead: drop them, the copy moves `in` */
                b->buf = 0;
                if (b->cnt != 0 || (Py_ssize_t)len > b->end - b->in || (Py_ssize_t)len > cap - pos)
                    return -1;
                memcpy(out + pos, b->in, len);
                pos += len;
                b->in += len;
            }
            if (b->overrun)
                return -1;
            continue;
        } else if (type == 1) {
            hl = &fixed_lit;
            hd = &fixed_dist;
        } else if (type == 2) {
            unsigned hlit = take(b, 5) + 257, hdist = take(b, 5) + 1, hclen = take(b, 4) + 4;
            if (hlit > 286 || hdist > 30)
                return -1;
            uint8_t lens[286 + 30];
            uint8_t cll[19] = {0};
            for (unsigned i = 0; i < hclen; i++) {
                refill(b); /* 19 * 3 bits is more than one refill holds */
                cll[CL_ORDER[i]] = (uint8_t)take(b, 3);
            }
            if (huff_build(&cl, cll, 19, PACK_NONE) < 0)
                return -1;
            unsigned i = 0;
            while (i < hlit + hdist) {
                refill(b);
                int sym = decode_sym(b, &cl);
                if (sym < 0)
                    return -1;
                if (sym < 16) {
                    lens[i++] = (uint8_t)sym;
                    continue;
                }
                unsigned rep;
                uint8_t val = 0;
                if (sym == 16) {
                    if (i == 0)
                        return -1;
                    val = lens[i - 1];
                    rep = 3 + take(b, 2);
                } else if (sym == 17) {
                    rep = 3 + take(b, 3);
                } else {
                    rep = 11 + take(b, 7);
                }
                if (i + rep > hlit + hdist)
                    return -1;
                while (rep--)
                    lens[i++] = val;
            }
            if (lens[256] == 0 || huff_build(&lit, lens, (int)hlit, PACK_LENGTH) < 0 ||
                huff_build(&dist, lens + hlit, (int)hdist, PACK_DIST) < 0)
                return -1;
            hl = &lit;
            hd = &dist;
        } else {
            return -1;
        }
        const uint32_t *lt = hl->table;
        const uint64_t lmask = ((uint64_t)1 << hl->bits) - 1;
        /* Fast loop: while 16 input bytes remain (two 8-byte refills) and the output has
         * room for a longest match plus an 8-byte overshoot (FAST_ROOM), nothing is
         * bounds-checked but the distance. One refill before each symbol (56 bits) covers
         * a length and its distance (11 + 5 + 15 + 13 bits): no refill in between. The
         * rest of the block (near either end, or from a literal/length code longer than
         * the table on: none in HTX's frames) goes to the careful loop below, which checks
         * everything. */
        {
            const uint8_t *in = b->in, *const in_end = b->end;
            uint64_t buf = b->buf;
            unsigned cnt = (unsigned)b->cnt;
            uint8_t *o = out + pos, *const o_end = out + cap;
            const uint32_t *dt = hd->table;
            const uint64_t dmask = ((uint64_t)1 << hd->bits) - 1;
            int ended = 0;
#define FAST_REFILL()                                                                        \
    do {                                                                                     \
        uint64_t w_;                                                                         \
        memcpy(&w_, in, 8); /* little-endian load (x86-64, aarch64) */                       \
        buf |= w_ << cnt;   /* the bits above cnt are 0, or these same bits read ahead */    \
        in += (63 - cnt) >> 3;                                                               \
        cnt |= 56;                                                                           \
    } while (0)
#define FAST_ROOM (258 + 8)
            while (in_end - in >= 16 && o_end - o >= FAST_ROOM) {
                FAST_REFILL();
                uint32_t e = lt[buf & lmask];
                if (e < (256u << 8)) { /* literals: three on one refill (codes in the table
                                          * are at most LIT_BITS long: 3 x 11 bits) */
                    *o++ = (uint8_t)(e >> 8);
                    buf >>= e & 63;
                    cnt -= e & 63;
                    e = lt[buf & lmask];
                    if (e < (256u << 8)) {
                        *o++ = (uint8_t)(e >> 8);
                        buf >>= e & 63;
                        cnt -= e & 63;
                        e = lt[buf & lmask];
                        if (e < (256u << 8)) {
                            *o++ = (uint8_t)(e >> 8);
                            buf >>= e & 63;
                            cnt -= e & 63;
                            continue;
                        }
                    }
                    /* e (looked up from bits already held) stays valid: a refill only
                     * adds bits above cnt. The second refill is in bounds (16 bytes). */
                    FAST_REFILL();
                }
                /* LONG_CODE has every bit set, PACKED too: it is tested first, or it would
                 * pass for a length of up to 65534 bytes */
                if (e == LONG_CODE)
                    break; /* a code longer than the table: the careful loop */
                if (!(e & PACKED)) {
                    if ((e >> 8) != 256)
                        return -1; /* 286, 287: not symbols */
                    buf >>= e & 63;
                    cnt -= e & 63;
                    ended = 1;
                    break;
                }
                /* a length: code and extra bits in one shift, then its distance */
                unsigned cl = e >> 8 & 15, ex = e >> 12 & 15;
                unsigned len = (e >> 16 & 0x7FFF) + (unsigned)((buf >> cl) & ((1u << ex) - 1));
                buf >>= e & 63;
                cnt -= e & 63;
                uint32_t de = dt[buf & dmask];
                if (de == LONG_CODE) {
                    int got = decode_long(buf, hd);
                    if (got < 0)
                        return -1;
                    de = pack_dist((uint32_t)got);
                }
                if (!(de & PACKED))
                    return -1; /* distance code 30 or 31 */
                cl = de >> 8 & 15;
                ex = de >> 12 & 15;
                size_t d = (de >> 16 & 0x7FFF) + (size_t)((buf >> cl) & ((1u << ex) - 1));
                buf >>= de & 63;
                cnt -= de & 63;
                if (d > (size_t)(o - out))
                    return -1; /* before the start of the output */
                const uint8_t *src = o - d;
                if (d >= 8) {
                    /* 8-byte steps never read bytes not yet written (d >= 8); they write
                     * up to 7 bytes past the match, inside FAST_ROOM, overwritten later */
                    memcpy(o, src, 8);
                    for (unsigned k = 8; k < len; k += 8)
                        memcpy(o + k, src + k, 8);
                } else {
                    for (unsigned k = 0; k < len; k++)
                        o[k] = src[k];
                }
                o += len;
            }
#undef FAST_REFILL
#undef FAST_ROOM
            b->in = in;
            b->buf = buf;
            b->cnt = (int)cnt;
            pos = o - out;
            if (ended)
                goto block_done;
        }
        for (;;) { /* the symbols of a Huffman block */
            refill(b);
            /* Literals in a row without refilling (56 bits hold three codes of up to 15
             * bits): the refill is then off the lookup-shift chain that bounds the speed.
             * A table entry below 256 << 8 is a literal (LONG_CODE is above). */
            if (cap - pos >= 3) {
                uint32_t e = lt[b->buf & lmask];
                if (e < (256u << 8)) {
                    out[pos++] = (uint8_t)(e >> 8);
                    b->buf >>= e & 63;
                    b->cnt -= (int)(e & 63);
                    e = lt[b->buf & lmask];
                    if (e < (256u << 8)) {
                        out[pos++] = (uint8_t)(e >> 8);
                        b->buf >>= e & 63;
                        b->cnt -= (int)(e & 63);
                        e = lt[b->buf & lmask];
                        if (e < (256u << 8)) {
                            out[pos++] = (uint8_t)(e >> 8);
                            b->buf >>= e & 63;
                            b->cnt -= (int)(e & 63);
                            continue;
                        }
                    }
                    refill(b);
                }
            }
            uint32_t e = lt[b->buf & lmask];
            if (e == LONG_CODE) {
                int got = decode_long(b->buf, hl);
                if (got < 0)
                    return -1;
                e = pack_length((uint32_t)got);
            }
            if (e < (256u << 8)) {
                if (pos >= cap)
                    return -1;
                out[pos++] = (uint8_t)(e >> 8);
                b->buf >>= e & 63;
                b->cnt -= (int)(e & 63);
                continue;
            }
            if (!(e & PACKED)) { /* end of block, or a symbol that is not one (286, 287) */
                if ((e >> 8) != 256)
                    return -1;
                b->buf >>= e & 63;
                b->cnt -= (int)(e & 63);
                break;
            }
            /* A length: code and extra bits taken in one shift. */
            int cl = (int)(e >> 8 & 15), ex = (int)(e >> 12 & 15);
            unsigned len = (e >> 16 & 0x7FFF) + (unsigned)((b->buf >> cl) & ((1u << ex) - 1));
            b->buf >>= cl + ex;
            b->cnt -= cl + ex;
            refill(b); /* <= 15 + 13 bits follow */
            e = hd->table[b->buf & (((uint64_t)1 << hd->bits) - 1)];
            if (e == LONG_CODE) {
                int got = decode_long(b->buf, hd);
                if (got < 0)
                    return -1;
                e = pack_dist((uint32_t)got);
            }
            if (!(e & PACKED))
                return -1; /* distance code 30 or 31 */
            cl = (int)(e >> 8 & 15);
            ex = (int)(e >> 12 & 15);
            Py_ssize_t d = (e >> 16 & 0x7FFF) + (Py_ssize_t)((b->buf >> cl) & ((1u << ex) - 1));
            b->buf >>= cl + ex;
            b->cnt -= cl + ex;
            if (d > pos || (Py_ssize_t)len > cap - pos)
                return -1; /* too far back, or past the buffer */
            uint8_t *dst = out + pos;
            const uint8_t *src = dst - d;
            if (d >= 8 && cap - pos >= (Py_ssize_t)len + 8) {
                /* 8-byte steps never read bytes not yet written (d >= 8) and may write up
                 * to 7 bytes past the match, inside the buffer, overwritten later */
                for (unsigned k = 0; k < len; k += 8)
                    memcpy(dst + k, src + k, 8);
            } else {
                for (unsigned k = 0; k < len; k++)
                    dst[k] = src[k];
            }
            pos += len;
        }
    block_done:
        if (b->overrun)
            return -1;
    } while (!last);
    *io = local;
    return pos;
}

/* The same code compiled twice: with BMI2 (shifts by a register in one instruction, off the
 * flags: ~10% faster here) where the CPU has it, chosen once at import, and without. */
#if defined(__GNUC__) && defined(__x86_64__)
#define DISPATCH_BMI2 1
__attribute__((target("bmi2"))) static Py_ssize_t fast_deflate_bmi2(Bits *io, uint8_t *out,
                                                                      Py_ssize_t cap) {
    return fast_deflate_body(io, out, cap);
}
#endif

static Py_ssize_t fast_deflate_plain(Bits *io, uint8_t *out, Py_ssize_t cap) {
    return fast_deflate_body(io, out, cap);
}

static Py_ssize_t (*fast_deflate)(Bits *, uint8_t *, Py_ssize_t) = fast_deflate_plain;

static void fast_deflate_choose(void) {
#ifdef DISPATCH_BMI2
    __builtin_cpu_init();
    if (__builtin_cpu_supports("bmi2"))
        fast_deflate = fast_deflate_bmi2;
#endif
}

/* One gzip member (no optional header fields) in in[0..n) into out[0..cap): the payload
 * length with the trailer's CRC-32 in *crc (the caller checks it: see crc_of), or -1 to let
 * zlib decide. */
static Py_ssize_t fast_gunzip(const uint8_t *in, Py_ssize_t n, uint8_t *out, Py_ssize_t cap,
                              uint32_t *crc) {
    if (n < 18 || in[0] != 0x1f || in[1] != 0x8b || in[2] != 8 || in[3] != 0)
        return -1; /* not gzip, or FTEXT/FHCRC/FEXTRA/FNAME/FCOMMENT/reserved flags */
    Bits b = {.in = in + 10, .end = in + n, .buf = 0, .cnt = 0, .overrun = 0};
    Py_ssize_t got = fast_deflate(&b, out, cap);
    if (got < 0 || b.overrun)
        return -1;
    /* the trailer starts at the next whole byte: give back the bytes read ahead */
    const uint8_t *t = b.in - ((b.cnt) >> 3);
    if (b.end - t < 8)
        return -1;
    *crc = (uint32_t)t[0] | (uint32_t)t[1] << 8 | (uint32_t)t[2] << 16 | (uint32_t)t[3] << 24;
    uint32_t size = (uint32_t)t[4] | (uint32_t)t[5] << 8 | (uint32_t)t[6] << 16 | (uint32_t)t[7] << 24;
    if (size != (uint32_t)got)
        return -1;
    return got;
}

/* The CRC-32 of a bytes object: zlib-ng's (a folding CRC, ~10x system zlib 1.2's on a 4 KB
 * frame, ~0.9 us of a depth push) when it is installed, else zlib's. -1 with an error set. */
static PyObject *crc_function;
/* No libdeflate (the `deflate` package), though it is faster on frames of a few KB: it
 * accepts members zlib refuses (HLIT > 286 or HDIST > 30 code counts, distance codes 30/31,
 * an FHCRC header CRC it never checks), so its result is not zlib's decision. */

static int64_t crc_of(PyObject *data) {
    PyObject *value = PyObject_CallOneArg(crc_function, data);
    if (value == NULL)
        return -1;
    unsigned long crc = PyLong_AsUnsignedLong(value);
    Py_DECREF(value);
    if (crc == (unsigned long)-1 && PyErr_Occurred())
        return -1;
    return (int64_t)(uint32_t)crc;
}

typedef struct {
    PyObject_HEAD z_stream zs;
    int ready; /* inflateInit2 succeeded: inflateEnd is owed */
    Py_ssize_t limit;
    Py_ssize_t fast; /* frames the fast path took (tests check it is the common case) */
} Inflater;

static int Inflater_init(Inflater *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"limit", NULL};
    Py_ssize_t limit = (Py_ssize_t)64 << 20;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|n:Inflater", kwlist, &limit))
        return -1;
    if (limit < 1 || limit > MAX_LIMIT) {
        PyErr_SetString(PyExc_ValueError, "limit must be between 1 and 2**30");
        return -1;
    }
    self->limit = limit;
    if (self->ready) /* __init__ called again: keep the stream, reset it */
        return inflateReset(&self->zs) == Z_OK ? 0 : (PyErr_NoMemory(), -1);
    memset(&self->zs, 0, sizeof self->zs);
    int rc = inflateInit2(&self->zs, 31); /* 16 + 15: gzip only, 32 KB window */
    if (rc != Z_OK) {
        if (rc == Z_MEM_ERROR)
            PyErr_NoMemory();
        else
            PyErr_Format(ZlibError, "Error %d while preparing to decompress data", rc);
        return -1;
    }
    self->ready = 1;
    return 0;
}

static void Inflater_dealloc(Inflater *self) {
    if (self->ready)
        inflateEnd(&self->zs);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* zlib.decompress's own wording, so both implementations raise the same error text. */
static void inflate_error(z_stream *zs, int rc) {
    if (rc == Z_MEM_ERROR) {
        PyErr_NoMemory();
        return;
    }
    if (rc == Z_BUF_ERROR) {
        PyErr_Format(ZlibError, "Error %d while decompressing data: %s", rc,
                     "incomplete or truncated stream");
        return;
    }
    if (zs->msg != NULL)
        PyErr_Format(ZlibError, "Error %d while decompressing data: %s", rc, zs->msg);
    else
        PyErr_Format(ZlibError, "Error %d while decompressing data", rc);
}

static PyObject *Inflater_inflate(Inflater *self, PyObject *frame) {
    if (!self->ready) {
        PyErr_SetString(PyExc_RuntimeError, "Inflater not initialised");
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(frame, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    const unsigned char *in = view.buf;
    Py_ssize_t n = view.len;
    if (n > (Py_ssize_t)UINT_MAX) { /* avail_in is a uInt */
        PyBuffer_Release(&view);
        PyErr_SetString(ZlibError, "Error: frame too large");
        return NULL;
    }
    Py_ssize_t most = self->limit + 1; /* one byte past the limit tells a bomb */
    /* Size hint: the trailer's ISIZE when the member ends the frame (it usually does). */
    Py_ssize_t cap = n * 4 + 64;
    if (n >= 18) {
        const unsigned char *t = in + n - 4;
        uint32_t isize = (uint32_t)t[0] | (uint32_t)t[1] << 8 | (uint32_t)t[2] << 16 |
                         (uint32_t)t[3] << 24;
        if ((Py_ssize_t)isize <= n * MAX_RATIO)
            cap = isize > 0 ? (Py_ssize_t)isize : 64;
    }
    if (cap > most)
        cap = most;
    /* OUT_SLACK bytes past cap let the fast loop run to the payload's end (it needs room
     * for a longest match and its overshoot); anything it writes there is past cap, so
     * refused below. zlib is given cap, as before. Only for payloads of some size: below
     * it the resize to the payload (a copy, for pymalloc's small blocks) costs more than
     * the slack saves. */
    Py_ssize_t slack = cap >= SLACK_ABOVE ? OUT_SLACK : 0;
    PyObject *out = PyBytes_FromStringAndSize(NULL, cap + slack);
    if (out == NULL) {
        PyBuffer_Release(&view);
        return NULL;
    }
    uint32_t trailer_crc = 0;
    Py_ssize_t got = fast_gunzip(in, n, (uint8_t *)PyBytes_AS_STRING(out), cap + slack,
                                 &trailer_crc);
    if (got >= 0 && got <= cap && got <= self->limit) {
        if (got != cap + slack && _PyBytes_Resize(&out, got) < 0) {
            PyBuffer_Release(&view);
            return NULL;
        }
        /* Accepted only when the trailer's CRC-32 matches the output (else zlib decides). */
        int64_t crc = crc_of(out);
        if (crc < 0) {
            PyBuffer_Release(&view);
            Py_DECREF(out);
            return NULL;
        }
        if ((uint32_t)crc == trailer_crc) {
            self->fast++;
            PyBuffer_Release(&view);
            return out;
        }
        /* zlib decides, into a buffer of its own (a resized empty one may be shared) */
        Py_DECREF(out);
        cap = got > 64 ? got : 64;
        if ((out = PyBytes_FromStringAndSize(NULL, cap)) == NULL) {
            PyBuffer_Release(&view);
            return NULL;
        }
    }
    /* zlib decides: the frame the fast path gave up on, from the start */
    z_stream *zs = &self->zs;
    zs->next_in = (Bytef *)in;
    zs->avail_in = (uInt)n;
    zs->next_out = (Bytef *)PyBytes_AS_STRING(out);
    zs->avail_out = (uInt)cap;
    Py_ssize_t used = 0;
    int rc;
    for (;;) {
        rc = inflate(zs, Z_NO_FLUSH);
        used = cap - (Py_ssize_t)zs->avail_out;
        if (rc == Z_STREAM_END)
            break;
        if (rc != Z_OK && rc != Z_BUF_ERROR)
            goto fail; /* corrupt data, bad header, bad check */
        if (zs->avail_out == 0) {
            if (cap >= most) {
                PyErr_Format(ZlibError, "Error: inflated frame exceeds %zd bytes", self->limit);
                goto fail_raised;
            }
            Py_ssize_t grow = cap < most / 2 ? cap * 2 : most;
            if (grow < 1024)
                grow = most < 1024 ? most : 1024;
            if (_PyBytes_Resize(&out, grow) < 0)
                goto fail_raised; /* out is NULL now */
            cap = grow;
            zs->next_out = (Bytef *)PyBytes_AS_STRING(out) + used;
            zs->avail_out = (uInt)(cap - used);
            continue;
        }
        if (zs->avail_in == 0) { /* all input read, member not finished */
            rc = Z_BUF_ERROR;
            goto fail;
        }
        /* Z_BUF_ERROR with room on both sides cannot happen; never loop on it. */
        if (rc == Z_BUF_ERROR)
            goto fail;
    }
    if (used > self->limit) { /* ended in the byte past the limit: still too large */
        PyErr_Format(ZlibError, "Error: inflated frame exceeds %zd bytes", self->limit);
        goto fail_raised;
    }
    inflateReset(zs);
    PyBuffer_Release(&view);
    if (used != PyBytes_GET_SIZE(out) && _PyBytes_Resize(&out, used) < 0)
        return NULL;
    return out;
fail:
    inflate_error(zs, rc);
fail_raised:
    inflateReset(zs);
    PyBuffer_Release(&view);
    Py_XDECREF(out);
    return NULL;
}

static PyMethodDef Inflater_methods[] = {
    {"inflate", (PyCFunction)Inflater_inflate, METH_O,
     "inflate(frame) -> bytes: the payload of one gzip member (zlib.error otherwise)."},
    {NULL, NULL, 0, NULL},
};

static PyObject *Inflater_get_limit(Inflater *self, void *closure) {
    return PyLong_FromSsize_t(self->limit);
}

static PyObject *Inflater_get_fast(Inflater *self, void *closure) {
    return PyLong_FromSsize_t(self->fast);
}

static PyGetSetDef Inflater_getset[] = {
    {"limit", (getter)Inflater_get_limit, NULL, "largest payload accepted (bytes)", NULL},
    {"fast_frames", (getter)Inflater_get_fast, NULL, "frames inflated by the fast path", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject InflaterType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "astra.venues.htx._htxbook.Inflater",
    .tp_basicsize = sizeof(Inflater),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Inflater(limit=64 MiB): gunzip HTX frames with one reusable zlib stream.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Inflater_init,
    .tp_dealloc = (destructor)Inflater_dealloc,
    .tp_methods = Inflater_methods,
    .tp_getset = Inflater_getset,
};

/* ------------------------------------------------------------------------------------ */
/* side_changes                                                                         */

/* fullbook.py's constants: both implementations must cut the text at the same places. */
#define GRAIN 48
#define ANCHOR_ABOVE 320
#define MAX_ANCHORS 8
/* Each step pops one span pair and pushes at most two, and only MAX_ANCHORS steps push two:
 * the stack and the run lists are bounded by the anchor count, not by the input. */
#define MAX_SPANS (MAX_ANCHORS + 2)
#define MAX_RUNS (2 * MAX_ANCHORS + 2)

typedef struct {
    const char *p;
    Py_ssize_t n;
} Span;

/* s.find(b"],[", start) */
static Py_ssize_t find_sep(const char *s, Py_ssize_t n, Py_ssize_t start) {
    if (start < 0)
        start = 0;
    while (start + 3 <= n) {
        const char *hit = memchr(s + start, ']', (size_t)(n - 2 - start));
        if (hit == NULL)
            return -1;
        Py_ssize_t i = hit - s;
        if (hit[1] == ',' && hit[2] == '[')
            return i;
        start = i + 1;
    }
    return -1;
}

/* s.rfind(b"],[", 0, end) */
static Py_ssize_t rfind_sep(const char *s, Py_ssize_t end) {
    for (Py_ssize_t i = end - 3; i >= 0; i--)
        if (s[i] == ']' && s[i + 1] == ',' && s[i + 2] == '[')
            return i;
    return -1;
}

/* haystack.find(needle) */
static Py_ssize_t find_sub(const char *h, Py_ssize_t hn, const char *nd, Py_ssize_t nn) {
    if (nn == 0)
        return 0;
    for (Py_ssize_t i = 0; i + nn <= hn;) {
        const char *hit = memchr(h + i, nd[0], (size_t)(hn - nn - i + 1));
        if (hit == NULL)
            return -1;
        i = hit - h;
        if (memcmp(hit, nd, (size_t)nn) == 0)
            return i;
        i++;
    }
    return -1;
}

static Py_ssize_t common_prefix(const char *a, const char *b, Py_ssize_t n) {
    Py_ssize_t i = 0;
    while (i + 8 <= n && memcmp(a + i, b + i, 8) == 0)
        i += 8;
    while (i < n && a[i] == b[i])
        i++;
    return i;
}

static Py_ssize_t common_suffix(const char *a, Py_ssize_t la, const char *b, Py_ssize_t lb) {
    Py_ssize_t n = la < lb ? la : lb, i = 0;
    while (i + 8 <= n && memcmp(a + la - i - 8, b + lb - i - 8, 8) == 0)
        i += 8;
    while (i < n && a[la - 1 - i] == b[lb - 1 - i])
        i++;
    return i;
}

/* fullbook._head / _tail: the same probes, each "a.startswith(b[:m])" being m <= the exact
 * common length (the result must match Python's, which stops within GRAIN of it). */
static Py_ssize_t gallop(Py_ssize_t common, Py_ssize_t n, int is_tail) {
    Py_ssize_t lo = 0, hi = 64;
    while (hi < n && hi <= common) {
        lo = hi;
        hi <<= 2;
    }
    if (hi >= n) {
        if ((!is_tail || n > 0) && n <= common)
            return n;
        hi = n;
    }
    while (hi - lo > GRAIN) {
        Py_ssize_t mid = (lo + hi) >> 1;
        if (mid <= common)
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}

/* fullbook._unmatched. Returns 0, or -1 when a bound was hit (never with valid arguments). */
static int unmatched(Span a0, Span b0, Span *olds, int *nolds, Span *news, int *nnews) {
    Span sa[MAX_SPANS], sb[MAX_SPANS];
    int top = 0, anchors = 0;
    sa[top] = a0;
    sb[top] = b0;
    top++;
    *nolds = *nnews = 0;
    while (top > 0) {
        top--;
        Span a = sa[top], b = sb[top];
        Py_ssize_t la = a.n, lb = b.n, n = la < lb ? la : lb;
        Py_ssize_t h = gallop(common_prefix(a.p, b.p, n), n, 0);
        Py_ssize_t cut = rfind_sep(a.p, h) + 3;
        if (cut < 3)
            cut = 0;
        Py_ssize_t tail = gallop(common_suffix(a.p, la, b.p, lb), n - cut, 1);
        Py_ssize_t end = tail > 3 ? find_sep(a.p, la, la - tail) : -1;
        if (end >= 0) {
            Py_ssize_t bend = end + lb - la;
            a.p += cut;
            a.n = end > cut ? end - cut : 0;
            b.p += cut;
            b.n = bend > cut ? bend - cut : 0;
        } else {
            a.p += cut;
            a.n = la - cut;
            b.p += cut;
            b.n = lb > cut ? lb - cut : 0;
        }
        if (a.n && b.n && a.n + b.n > ANCHOR_ABOVE && anchors < MAX_ANCHORS) {
            anchors++;
            Py_ssize_t k = find_sep(a.p, a.n, a.n >> 1);
            Py_ssize_t e = k >= 0 ? find_sep(a.p, a.n, k + 3) : -1;
            Py_ssize_t x = e >= 0 ? find_sub(b.p, b.n, a.p + k, e + 3 - k) : -1;
            if (x >= 0) {
                if (top + 2 > MAX_SPANS)
                    return -1;
                sa[top] = (Span){a.p + k + 3, a.n - k - 3};
                sb[top] = (Span){b.p + x + 3, b.n - x - 3};
                top++;
                sa[top] = (Span){a.p, k};
                sb[top] = (Span){b.p, x};
                top++;
                continue;
            }
        }
        if (a.n) {
            if (*nolds >= MAX_RUNS)
                return -1;
            olds[(*nolds)++] = a;
        }
        if (b.n) {
            if (*nnews >= MAX_RUNS)
                return -1;
            news[(*nnews)++] = b;
        }
    }
    return 0;
}

/* The fast path needs each operation rounded once to double (no x87 extended precision). */
#if defined(FLT_EVAL_METHOD) && FLT_EVAL_METHOD == 0
#define FAST_DECIMAL 1
#else
#define FAST_DECIMAL 0
#endif

static const double POW10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                               1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                               1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

/* SWAR digit runs: with 8 bytes readable at p, the count of leading ASCII digits in them
 * (0..8), and their value. A byte is a digit when its high nibble is 3 and adding 6 keeps
 * it so (0x30-0x39); a carry out of a byte >= 0xFA can only change bytes after it, which
 * lie past the first non-digit and are not counted. No loop over the digits, so no branch
 * exit the predictor misses once a number. */
static inline int digits8(const char *p, uint64_t *value) {
    uint64_t w;
    memcpy(&w, p, 8); /* little-endian: p[0] is the low byte */
    uint64_t bad = ((w & 0xF0F0F0F0F0F0F0F0ull) ^ 0x3030303030303030ull) |
                   (((w + 0x0606060606060606ull) & 0xF0F0F0F0F0F0F0F0ull) ^ 0x3030303030303030ull);
    int k = bad ? __builtin_ctzll(bad) >> 3 : 8;
    if (k == 0) {
        *value = 0;
        return 0;
    }
    /* digits to the top bytes (the bytes after them, and any borrow from them, shift out):
     * eight digits with leading zeros, p[0]'s digit the most significant */
    uint64_t v = (w - 0x3030303030303030ull) << (8 * (8 - k));
    v = v * 10 + (v >> 8); /* each even byte: two digits (<= 99) */
    v = ((v & 0x000000FF000000FFull) * (100 + (1000000ull << 32)) +
         ((v >> 16) & 0x000000FF000000FFull) * (1 + (10000ull << 32))) >> 32;
    *value = v;
    return k;
}

static const uint64_t U64POW10[9] = {1, 10, 100, 1000, 10000, 100000, 1000000, 10000000,
                                     100000000};

/* Digits from s[*i] on (s[0..n)) into *m (wrapping past 19 digits, as the caller allows). */
static inline void scan_digits(const char *s, Py_ssize_t n, Py_ssize_t *i, uint64_t *m) {
    Py_ssize_t j = *i;
    while (n - j >= 8) {
        uint64_t v;
        int k = digits8(s + j, &v);
        *m = *m * U64POW10[k] + v;
        j += k;
        if (k < 8) {
            *i = j;
            return;
        }
    }
    while (j < n && (unsigned)(s[j] - '0') <= 9)
        *m = *m * 10 + (unsigned)(s[j++] - '0');
    *i = j;
}

/* One JSON number at s[0..n) into *out, exactly as msgspec reads it into a float. Returns
 * the bytes consumed, 0 when it is not a number of the strict form (caller falls back),
 * -1 with an exception set. */
static Py_ssize_t parse_number(const char *s, Py_ssize_t n, double *out) {
    Py_ssize_t i = 0;
    int neg = 0;
    if (i < n && s[i] == '-') {
        neg = 1;
        i++;
    }
    /* One pass: the digits are accumulated as they are scanned (each digit loop's exit is a
     * branch the predictor misses about once a number; a second loop over the same digits
     * doubled that). m wraps past 19 digits; it is used only for at most 18 (integers) or
     * 15 (decimals), where it is exact. */
    uint64_t m = 0;
    Py_ssize_t int_start = i;
    if (i < n && s[i] == '0')
        i++;
    else if (i < n && s[i] >= '1' && s[i] <= '9')
        scan_digits(s, n, &i, &m);
    else
        return 0;
    Py_ssize_t int_digits = i - int_start, frac_start = 0, frac_digits = 0;
    if (i < n && s[i] == '.') {
        frac_start = ++i;
        scan_digits(s, n, &i, &m);
        frac_digits = i - frac_start;
        if (frac_digits == 0)
            return 0;
    }
    int has_exp = 0;
    long e = 0;
    int eneg = 0;
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        has_exp = 1;
        i++;
        if (i < n && (s[i] == '+' || s[i] == '-'))
            eneg = s[i++] == '-';
        Py_ssize_t exp_start = i;
        while (i < n && (unsigned)(s[i] - '0') <= 9) {
            if (e < 100000) /* bounded: any exponent this long is out of the fast range */
                e = e * 10 + (s[i] - '0');
            i++;
        }
        if (i == exp_start)
            return 0;
    }
    if (!has_exp && frac_digits == 0) {
        /* An integer: msgspec reads it as one and converts (round to nearest even). */
        if (int_digits > 18)
            return 0;
        int64_t v = (int64_t)m;
        *out = (double)(neg ? -v : v);
        return i;
    }
    if (FAST_DECIMAL && int_digits + frac_digits <= 15) {
        /* Clinger's fast path: m < 10**15 < 2**53 and 10**k (k <= 22) are exact doubles, and
         * one IEEE multiplication or division rounds correctly: the same double as a
         * correctly rounded decimal parse (x86-64 SSE2 arithmetic, FLT_EVAL_METHOD 0). */
        long e10 = -(long)frac_digits + (eneg ? -e : e);
        if (e10 >= -22 && e10 <= 22) {
            double v = e10 < 0 ? (double)m / POW10[-e10] : (double)m * POW10[e10];
            *out = neg ? -v : v;
            return i;
        }
    }
    char buf[64]; /* a longer token is not judged here: bounded, never overflowed */
    if (i >= (Py_ssize_t)sizeof buf)
        return 0;
    memcpy(buf, s, (size_t)i);
    buf[i] = '\0';
    char *end = NULL;
    double v = PyOS_string_to_double(buf, &end, NULL);
    if (v == -1.0 && PyErr_Occurred())
        return -1;
    if (end != buf + i || Py_IS_INFINITY(v) || Py_IS_NAN(v))
        return 0; /* out of range: msgspec raises, the fallback says so */
    *out = v;
    return i;
}

typedef struct {
    double *v; /* price, size, price, size, ... */
    Py_ssize_t n, cap;
} Levels;

static int levels_push(Levels *lv, double p, double q) {
    if (lv->n + 2 > lv->cap) {
        Py_ssize_t cap = lv->cap ? lv->cap * 2 : 64;
        double *v = PyMem_Realloc(lv->v, (size_t)cap * sizeof(double));
        if (v == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        lv->v = v;
        lv->cap = cap;
    }
    lv->v[lv->n++] = p;
    lv->v[lv->n++] = q;
    return 0;
}

/* The levels of runs "p,q],[p,q" (as fullbook._parse joins them). 1: parsed; 0: not of the
 * strict form (fall back); -1: exception. */
static int parse_runs(const Span *runs, int nruns, Levels *lv) {
    for (int r = 0; r < nruns; r++) {
        const char *s = runs[r].p;
        Py_ssize_t n = runs[r].n, i = 0;
        for (;;) {
            double p, q;
            Py_ssize_t k = parse_number(s + i, n - i, &p);
            if (k <= 0)
                return (int)k;
            i += k;
            if (i >= n || s[i] != ',')
                return 0;
            i++;
            k = parse_number(s + i, n - i, &q);
            if (k <= 0)
                return (int)k;
            i += k;
            if (levels_push(lv, p, q) < 0)
                return -1;
            if (i == n)
                break;
            if (n - i < 3 || s[i] != ']' || s[i + 1] != ',' || s[i + 2] != '[')
                return 0;
            i += 3;
        }
    }
    return 1;
}

static PyObject *level(double p, double q) {
    PyObject *fp = PyFloat_FromDouble(p);
    if (fp == NULL)
        return NULL;
    PyObject *fq = PyFloat_FromDouble(q);
    if (fq == NULL) {
        Py_DECREF(fp);
        return NULL;
    }
    PyObject *t = PyTuple_New(2);
    if (t == NULL) {
        Py_DECREF(fp);
        Py_DECREF(fq);
        return NULL;
    }
    PyTuple_SET_ITEM(t, 0, fp);
    PyTuple_SET_ITEM(t, 1, fq);
    return t;
}

/* {p: q for p, q in levels if q > 0}, a later level of one price winning (as Python). */
static PyObject *positive_dict(const Levels *lv) {
    PyObject *d = PyDict_New();
    if (d == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < lv->n; i += 2) {
        if (!(lv->v[i + 1] > 0))
            continue;
        PyObject *p = PyFloat_FromDouble(lv->v[i]), *q = PyFloat_FromDouble(lv->v[i + 1]);
        int rc = (p && q) ? PyDict_SetItem(d, p, q) : -1;
        Py_XDECREF(p);
        Py_XDECREF(q);
        if (rc < 0) {
            Py_DECREF(d);
            return NULL;
        }
    }
    return d;
}

/* Up to this many levels a side, the dict diff runs on C arrays (quadratic, but the levels
 * left after the text diff are few); past it, on Python dicts. */
#define SMALL_DIFF 48

/* A dict {p: q for p, q in lv if q > 0} as arrays: one entry per price (==, so -0.0 is
 * 0.0) at its first position, holding the first price's bits and the last size. */
static Py_ssize_t small_dict(const Levels *lv, double *ps, double *qs) {
    Py_ssize_t n = 0;
    for (Py_ssize_t i = 0; i < lv->n; i += 2) {
        double p = lv->v[i], q = lv->v[i + 1];
        if (!(q > 0))
            continue;
        Py_ssize_t j = 0;
        while (j < n && ps[j] != p)
            j++;
        if (j == n)
            ps[n++] = p;
        qs[j] = q;
    }
    return n;
}

static int append_level(PyObject *out, double p, double q) {
    PyObject *lvl = level(p, q);
    if (lvl == NULL)
        return -1;
    int rc = PyList_Append(out, lvl);
    Py_DECREF(lvl);
    return rc;
}

/* dict_diff on arrays: the same list (values and order) for few levels. */
static PyObject *small_diff(const Levels *old, const Levels *new) {
    double wp[SMALL_DIFF], wq[SMALL_DIFF], np_[SMALL_DIFF], nq[SMALL_DIFF];
    Py_ssize_t nw = small_dict(old, wp, wq), nn = small_dict(new, np_, nq);
    PyObject *out = PyList_New(0);
    if (out == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < nn; i++) {
        Py_ssize_t j = 0;
        while (j < nw && wp[j] != np_[i])
            j++;
        if (j < nw && wq[j] == nq[i])
            continue;
        if (append_level(out, np_[i], nq[i]) < 0)
            goto fail;
    }
    for (Py_ssize_t j = 0; j < nw; j++) {
        Py_ssize_t i = 0;
        while (i < nn && np_[i] != wp[j])
            i++;
        if (i == nn && append_level(out, wp[j], 0.0) < 0)
            goto fail;
    }
    return out;
fail:
    Py_DECREF(out);
    return NULL;
}

/* The dict diff of fullbook._side_changes: changed/new levels of `now` in its order, then
 * the levels of `was` gone from `now`, at 0. */
static PyObject *dict_diff(const Levels *old, const Levels *new) {
    PyObject *was = NULL, *now = NULL, *out = NULL, *zero = NULL;
    if ((was = positive_dict(old)) == NULL || (now = positive_dict(new)) == NULL)
        goto done;
    if ((out = PyList_New(0)) == NULL)
        goto done;
    PyObject *p, *q;
    Py_ssize_t pos = 0;
    while (PyDict_Next(now, &pos, &p, &q)) {
        PyObject *w = PyDict_GetItemWithError(was, p); /* borrowed */
        if (w == NULL && PyErr_Occurred())
            goto fail;
        if (w != NULL && PyFloat_AS_DOUBLE(w) == PyFloat_AS_DOUBLE(q))
            continue;
        PyObject *t = PyTuple_Pack(2, p, q);
        if (t == NULL || PyList_Append(out, t) < 0) {
            Py_XDECREF(t);
            goto fail;
        }
        Py_DECREF(t);
    }
    if ((zero = PyFloat_FromDouble(0.0)) == NULL)
        goto fail;
    pos = 0;
    while (PyDict_Next(was, &pos, &p, &q)) {
        int in = PyDict_Contains(now, p);
        if (in < 0)
            goto fail;
        if (in)
            continue;
        PyObject *t = PyTuple_Pack(2, p, zero);
        if (t == NULL || PyList_Append(out, t) < 0) {
            Py_XDECREF(t);
            goto fail;
        }
        Py_DECREF(t);
    }
    goto done;
fail:
    Py_CLEAR(out);
done:
    Py_XDECREF(was);
    Py_XDECREF(now);
    Py_XDECREF(zero);
    return out;
}

static PyObject *side_changes(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "side_changes(fallback, held, text)");
        return NULL;
    }
    /* fallback first, so functools.partial(side_changes, fallback) is the whole function */
    PyObject *fallback = args[0], *held = args[1], *text = args[2];
    if (!PyBytes_Check(held) || !PyBytes_Check(text)) {
        PyErr_SetString(PyExc_TypeError, "held and text must be bytes");
        return NULL;
    }
    const char *h = PyBytes_AS_STRING(held), *t = PyBytes_AS_STRING(text);
    Py_ssize_t hn = PyBytes_GET_SIZE(held), tn = PyBytes_GET_SIZE(text);
    if (hn == tn && memcmp(h, t, (size_t)hn) == 0)
        return PyList_New(0);
    /* Not "[[...]]" on both sides (an empty side, whitespace): Python compares every level. */
    if (hn < 4 || tn < 4 || memcmp(h, "[[", 2) != 0 || memcmp(t, "[[", 2) != 0 ||
        memcmp(h + hn - 2, "]]", 2) != 0 || memcmp(t + tn - 2, "]]", 2) != 0)
        return PyObject_CallFunctionObjArgs(fallback, held, text, NULL);
    Span olds[MAX_RUNS], news[MAX_RUNS];
    int nolds, nnews;
    if (unmatched((Span){h + 2, hn - 4}, (Span){t + 2, tn - 4}, olds, &nolds, news, &nnews) <
        0)
        return PyObject_CallFunctionObjArgs(fallback, held, text, NULL);
    Levels old = {NULL, 0, 0}, new = {NULL, 0, 0};
    PyObject *out = NULL;
    int ok = parse_runs(news, nnews, &new);
    if (ok > 0 && nolds)
        ok = parse_runs(olds, nolds, &old);
    if (ok < 0)
        goto done;
    if (ok == 0) { /* not the strict form: the reference decides (and raises) */
        out = PyObject_CallFunctionObjArgs(fallback, held, text, NULL);
        goto done;
    }
    if (nolds == 0) { /* only new levels: each positive one, in order, duplicates kept */
        if ((out = PyList_New(0)) == NULL)
            goto done;
        for (Py_ssize_t i = 0; i < new.n; i += 2) {
            if (!(new.v[i + 1] > 0))
                continue;
            PyObject *lvl = level(new.v[i], new.v[i + 1]);
            if (lvl == NULL || PyList_Append(out, lvl) < 0) {
                Py_XDECREF(lvl);
                Py_CLEAR(out);
                goto done;
            }
            Py_DECREF(lvl);
        }
        goto done;
    }
    /* v holds two doubles a level: the arrays fit SMALL_DIFF levels of each side */
    if (old.n <= 2 * SMALL_DIFF && new.n <= 2 * SMALL_DIFF)
        out = small_diff(&old, &new);
    else
        out = dict_diff(&old, &new);
done:
    PyMem_Free(old.v);
    PyMem_Free(new.v);
    return out;
}


/* ------------------------------------------------------------------------------------ */
/* depth_push                                                                            */
/*
 * msgspec spends ~8 us decoding a depth.step0 push, most of it validating the two sides it
 * hands over as raw text. depth_push reads the one shape HTX sends for a push, without
 * whitespace: {"ch":"...","ts":N,"tick":{"bids":[...],"asks":[...],"version":N,"mrid":N,
 * "id":N,"ts":N}} (keys in any order, each at most once, mrid/id/ts optional). A side is
 * taken as "[]" or "[[" to the first "]]", not validated here: a snapshot's sides are decoded
 * by msgspec (FullBookDiff.load), and the full-book diff reads every level whose text differs
 * from the held push's (validated when it came) strictly, handing anything else to msgspec,
 * which raises on it; the levels it does not read are the held text, byte for byte. So a
 * push taken here is one msgspec would take, with the same values. Anything else in the
 * frame (another key, a string with an escape or non-ASCII, a float where an int belongs,
 * a long integer, whitespace) returns None: the caller decodes the frame with msgspec.
 */

typedef struct {
    const char *s;
    Py_ssize_t i, n;
} Reader;

static int lit(Reader *r, const char *t, Py_ssize_t len) {
    if (r->n - r->i < len || memcmp(r->s + r->i, t, (size_t)len) != 0)
        return 0;
    r->i += len;
    return 1;
}

/* "..." of printable ASCII without escapes: [*start, *start + *len). */
static int plain_string(Reader *r, Py_ssize_t *start, Py_ssize_t *len) {
    if (r->i >= r->n || r->s[r->i] != '"')
        return 0;
    Py_ssize_t j = r->i + 1;
    while (j < r->n && r->s[j] != '"') {
        unsigned char c = (unsigned char)r->s[j];
        if (c < 0x20 || c >= 0x7f || c == '\\')
            return 0;
        j++;
    }
    if (j >= r->n)
        return 0;
    *start = r->i + 1;
    *len = j - r->i - 1;
    r->i = j + 1;
    return 1;
}

/* A JSON integer of at most 18 digits (int64, as msgspec reads it). */
static int plain_int(Reader *r, int64_t *out) {
    Py_ssize_t j = r->i;
    int neg = j < r->n && r->s[j] == '-';
    j += neg;
    Py_ssize_t start = j;
    while (j < r->n && r->s[j] >= '0' && r->s[j] <= '9')
        j++;
    Py_ssize_t digits = j - start;
    if (digits == 0 || digits > 18 || (digits > 1 && r->s[start] == '0'))
        return 0;
    if (j < r->n && r->s[j] != ',' && r->s[j] != '}')
        return 0; /* a fraction or exponent: msgspec decides */
    int64_t v = 0;
    for (Py_ssize_t k = start; k < j; k++)
        v = v * 10 + (r->s[k] - '0');
    *out = neg ? -v : v;
    r->i = j;
    return 1;
}

/* The first "]]" in s[from..n): its index, or -1. SSE2 (every x86-64) tests 16 bytes a
 * step: a side is ~2 KB, and a byte loop over it costs more than the rest of depth_push. */
static Py_ssize_t find_close2(const char *s, Py_ssize_t from, Py_ssize_t n) {
    Py_ssize_t j = from;
#ifdef __SSE2__
    const __m128i close = _mm_set1_epi8(']');
    while (j + 17 <= n) { /* bytes j..j+16: a pair may start at the chunk's last byte */
        __m128i a = _mm_loadu_si128((const __m128i *)(s + j));
        __m128i b = _mm_loadu_si128((const __m128i *)(s + j + 1));
        unsigned m = (unsigned)_mm_movemask_epi8(
            _mm_and_si128(_mm_cmpeq_epi8(a, close), _mm_cmpeq_epi8(b, close)));
        if (m)
            return j + __builtin_ctz(m);
        j += 16;
    }
#endif
    for (; j + 1 < n; j++)
        if (s[j] == ']' && s[j + 1] == ']')
            return j;
    return -1;
}

/* Where JSON ends the array that opens at s[0]: the index past its ']' with strings skipped
 * (a backslash: -1, not judged here), or -1 when it does not end in s[0..n). */
static Py_ssize_t array_end(const char *s, Py_ssize_t n) {
    Py_ssize_t depth = 0;
    for (Py_ssize_t j = 0; j < n; j++) {
        char ch = s[j];
        if (ch == '"') {
            for (j++; j < n && s[j] != '"'; j++)
                if (s[j] == '\\')
                    return -1;
        } else if (ch == '[') {
            depth++;
        } else if (ch == ']' && --depth == 0) {
            return j + 1;
        }
    }
    return -1;
}

/* 1 when s[0..n), a side's "[[" to its first "]]", is where JSON ends that array (then
 * msgspec's Raw is the same bytes). Levels are flat pairs, so that holds in any side without
 * whitespace, strings or deeper nesting; with whitespace ("[[1,2] ]") or a stray value
 * ("[[1,2],3]") the first "]]" lies past the array's end, in the next keys: a cut msgspec
 * never makes, so such a frame is msgspec's (any byte <= 0x21 is refused outright: the
 * whitespace, and '!', which no JSON holds outside a string). Without
 * a '"' the bracket counts decide (the span cannot reach another key: keys are strings);
 * with one, array_end. (Levels that are not numbers are refused by the diff, which reads
 * every level that differs from the held, validated, text.) */
static int side_ok(const char *s, Py_ssize_t n) {
    Py_ssize_t j = 0, opens = 0, closes = 0;
    int quote = 0;
#ifdef __SSE2__
    /* Branch-free: per-lane byte counters (flushed before they can wrap) and one OR of
     * every chunk's "whitespace or quote" lanes, tested once. */
    const __m128i low = _mm_set1_epi8(0x21), dq = _mm_set1_epi8('"'), zero = _mm_setzero_si128();
    const __m128i open = _mm_set1_epi8('['), close = _mm_set1_epi8(']');
    __m128i ws = zero, qs = zero;
    while (j + 16 <= n) {
        __m128i co = zero, cc = zero;
        for (int k = 0; k < 255 && j + 16 <= n; k++, j += 16) {
            __m128i a = _mm_loadu_si128((const __m128i *)(s + j));
            ws = _mm_or_si128(ws, _mm_cmpeq_epi8(_mm_min_epu8(a, low), a)); /* a <= 0x21 */
            qs = _mm_or_si128(qs, _mm_cmpeq_epi8(a, dq));
            co = _mm_sub_epi8(co, _mm_cmpeq_epi8(a, open));
            cc = _mm_sub_epi8(cc, _mm_cmpeq_epi8(a, close));
        }
        __m128i so = _mm_sad_epu8(co, zero), sc = _mm_sad_epu8(cc, zero);
        opens += _mm_cvtsi128_si32(so) + _mm_extract_epi16(so, 4);
        closes += _mm_cvtsi128_si32(sc) + _mm_extract_epi16(sc, 4);
    }
    /* ws also holds lanes equal to 0x21 ('!'): refused too (never in a side) */
    if (_mm_movemask_epi8(ws))
        return 0;
    quote = _mm_movemask_epi8(qs) != 0;
#endif
    for (; j < n; j++) {
        unsigned char ch = (unsigned char)s[j];
        if (ch <= 0x21)
            return 0;
        quote |= ch == '"';
        opens += ch == '[';
        closes += ch == ']';
    }
    if (quote)
        return array_end(s, n) == n;
    return opens == closes;
}

/* A side: "[]", or "[[" up to the first "]]" when side_ok (levels are flat pairs, so that is
 * its end in any well-formed side; the numbers between are checked by the diff, see above). */
static int side_extent(Reader *r, Py_ssize_t *start, Py_ssize_t *len) {
    const char *s = r->s;
    Py_ssize_t i = r->i, n = r->n;
    if (n - i < 2 || s[i] != '[')
        return 0;
    Py_ssize_t end;
    if (s[i + 1] == ']')
        end = i + 2;
    else if (s[i + 1] == '[') {
        Py_ssize_t at = find_close2(s, i + 2, n);
        if (at < 0 || !side_ok(s + i, at + 2 - i))
            return 0;
        end = at + 2;
    } else
        return 0;
    *start = i;
    *len = end - i;
    r->i = end;
    return 1;
}

static PyObject *depth_push(PyObject *module, PyObject *arg) {
    if (!PyBytes_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "depth_push(bytes)");
        return NULL;
    }
    Reader r = {PyBytes_AS_STRING(arg), 0, PyBytes_GET_SIZE(arg)};
    Py_ssize_t ch_at = 0, ch_len = 0, bids_at = 0, bids_len = 0, asks_at = 0, asks_len = 0;
    int64_t ts = 0, version = 0, mrid = 0, tick_ts = 0, id = 0;
    enum { CH = 1, TS = 2, TICK = 4, BIDS = 8, ASKS = 16, VERSION = 32, MRID = 64, TTS = 128,
           ID = 256 };
    int seen = 0, in_tick = 0;
/* A key, once matched, commits: its value must follow (and the key be new), else None. */
#define FIELD(KEY, BIT, PARSE)                                                               \
    if (lit(&r, KEY, (Py_ssize_t)sizeof(KEY) - 1)) {                                         \
        if ((seen & (BIT)) || !(PARSE))                                                      \
            Py_RETURN_NONE;                                                                  \
        seen |= (BIT);                                                                       \
    }
    if (!lit(&r, "{", 1))
        Py_RETURN_NONE;
    for (;;) { /* the envelope */
        FIELD("\"ch\":", CH, plain_string(&r, &ch_at, &ch_len))
        else FIELD("\"ts\":", TS, plain_int(&r, &ts))
        else FIELD("\"tick\":{", TICK, (in_tick = 1)) else Py_RETURN_NONE;
        if (in_tick) {
            in_tick = 0;
            for (;;) { /* the tick, just opened */
                FIELD("\"bids\":", BIDS, side_extent(&r, &bids_at, &bids_len))
                else FIELD("\"asks\":", ASKS, side_extent(&r, &asks_at, &asks_len))
                else FIELD("\"version\":", VERSION, plain_int(&r, &version))
                else FIELD("\"mrid\":", MRID, plain_int(&r, &mrid))
                else FIELD("\"ts\":", TTS, plain_int(&r, &tick_ts))
                else FIELD("\"id\":", ID, plain_int(&r, &id)) /* not a DepthTick field */
                else Py_RETURN_NONE;
                if (lit(&r, "}", 1))
                    break;
                if (!lit(&r, ",", 1))
                    Py_RETURN_NONE;
            }
        }
        if (lit(&r, "}", 1))
            break;
        if (!lit(&r, ",", 1))
            Py_RETURN_NONE;
    }
#undef FIELD
    if (r.i != r.n || (seen & (CH | TICK | VERSION)) != (CH | TICK | VERSION))
        Py_RETURN_NONE; /* trailing bytes, or a required field missing: msgspec says what */
    const char *s = r.s;
    PyObject *ch = PyUnicode_DecodeASCII(s + ch_at, ch_len, NULL);
    PyObject *bids = seen & BIDS ? PyBytes_FromStringAndSize(s + bids_at, bids_len)
                                 : PyBytes_FromStringAndSize("[]", 2);
    PyObject *asks = seen & ASKS ? PyBytes_FromStringAndSize(s + asks_at, asks_len)
                                 : PyBytes_FromStringAndSize("[]", 2);
    PyObject *out = NULL;
    if (ch && bids && asks)
        out = Py_BuildValue("(OLOOLNL)", ch, (long long)ts, bids, asks, (long long)version,
                            seen & MRID ? PyLong_FromLongLong(mrid) : Py_NewRef(Py_None),
                            (long long)tick_ts);
    Py_XDECREF(ch);
    Py_XDECREF(bids);
    Py_XDECREF(asks);
    return out;
}

/* parse_levels(runs_text): the strict-form parse of "p,q],[p,q" (for tests: the numbers are
 * read as msgspec reads them). None when not of the strict form. */
static PyObject *parse_levels(PyObject *module, PyObject *arg) {
    if (!PyBytes_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "parse_levels(bytes)");
        return NULL;
    }
    Span run = {PyBytes_AS_STRING(arg), PyBytes_GET_SIZE(arg)};
    Levels lv = {NULL, 0, 0};
    int ok = run.n ? parse_runs(&run, 1, &lv) : 1;
    PyObject *out = NULL;
    if (ok < 0)
        goto done;
    if (ok == 0) {
        out = Py_NewRef(Py_None);
        goto done;
    }
    if ((out = PyList_New(lv.n / 2)) == NULL)
        goto done;
    for (Py_ssize_t i = 0; i < lv.n; i += 2) {
        PyObject *lvl = level(lv.v[i], lv.v[i + 1]);
        if (lvl == NULL) {
            Py_CLEAR(out);
            goto done;
        }
        PyList_SET_ITEM(out, i / 2, lvl);
    }
done:
    PyMem_Free(lv.v);
    return out;
}

/* positive_levels(side): fullbook._positive in C for a side of the strict form
 * "[[p,q],...,[p,q]]" (no whitespace, numbers read as msgspec reads them): the levels with a
 * size above 0, in order, as (price, size) tuples. None for anything else ("[]", whitespace,
 * strings, malformed or out-of-range numbers): the caller decodes it with msgspec, which
 * gives the result or raises. So it never accepts what msgspec rejects. */
static PyObject *positive_levels(PyObject *module, PyObject *arg) {
    if (!PyBytes_Check(arg))
        Py_RETURN_NONE; /* str, memoryview...: msgspec's, as in the reference */
    const char *t = PyBytes_AS_STRING(arg);
    Py_ssize_t n = PyBytes_GET_SIZE(arg);
    if (n < 4 || memcmp(t, "[[", 2) != 0 || memcmp(t + n - 2, "]]", 2) != 0)
        Py_RETURN_NONE;
    Span run = {t + 2, n - 4};
    Levels lv = {NULL, 0, 0};
    int ok = parse_runs(&run, 1, &lv);
    PyObject *out = NULL;
    if (ok < 0)
        goto done;
    if (ok == 0) {
        out = Py_NewRef(Py_None);
        goto done;
    }
    Py_ssize_t kept = 0;
    for (Py_ssize_t i = 0; i < lv.n; i += 2)
        kept += lv.v[i + 1] > 0;
    if ((out = PyList_New(kept)) == NULL)
        goto done;
    for (Py_ssize_t i = 0, k = 0; i < lv.n; i += 2) {
        if (!(lv.v[i + 1] > 0))
            continue;
        PyObject *lvl = level(lv.v[i], lv.v[i + 1]);
        if (lvl == NULL) {
            Py_CLEAR(out);
            goto done;
        }
        PyList_SET_ITEM(out, k++, lvl);
    }
done:
    PyMem_Free(lv.v);
    return out;
}

static PyMethodDef module_methods[] = {
    {"side_changes", (PyCFunction)(void (*)(void))side_changes, METH_FASTCALL,
     "side_changes(fallback, held, text) -> list: fullbook._side_changes (see the module doc)."},
    {"depth_push", depth_push, METH_O,
     "depth_push(json) -> (ch, ts, bids, asks, version, mrid, tick_ts) | None (see the source)."},
    {"positive_levels", positive_levels, METH_O,
     "positive_levels(side) -> list | None: fullbook._positive of a strict-form side, or None."},
    {"parse_levels", parse_levels, METH_O,
     "parse_levels(text) -> list | None: levels 'p,q],[p,q' read as msgspec does, or None."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "astra.venues.htx._htxbook",
    .m_doc = "HTX feed cores in C: Inflater (gzip frames), depth_push (a depth.step0 push's\n"
             "fields), side_changes (the full-book diff) and positive_levels (a snapshot's\n"
             "side).\n\n"
             "The pure-Python implementations (feed.py, fullbook.py) define the behaviour;\n"
             "these give the same results and raise the same errors (see _htxbook.c).",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC PyInit__htxbook(void) {
    fast_deflate_choose();
    if (fixed_init() < 0) {
        PyErr_SetString(PyExc_SystemError, "fixed Huffman tables");
        return NULL;
    }
    if (PyType_Ready(&InflaterType) < 0)
        return NULL;
    PyObject *zlib = PyImport_ImportModule("zlib");
    if (zlib == NULL)
        return NULL;
    ZlibError = PyObject_GetAttrString(zlib, "error");
    PyObject *ng = PyImport_ImportModule("zlib_ng.zlib_ng");
    if (ng != NULL) {
        crc_function = PyObject_GetAttrString(ng, "crc32");
        Py_DECREF(ng);
    }
    PyErr_Clear();
    if (crc_function == NULL) { /* zlib-ng missing: the system zlib's */
        PyErr_Clear();
        crc_function = PyObject_GetAttrString(zlib, "crc32");
    }
    Py_DECREF(zlib);
    if (ZlibError == NULL || crc_function == NULL)
        return NULL;
    PyObject *m = PyModule_Create(&module_def);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "Inflater", (PyObject *)&InflaterType) < 0 ||
        PyModule_AddObjectRef(m, "error", ZlibError) < 0 ||
        PyModule_AddIntConstant(m, "GRAIN", GRAIN) < 0 ||
        PyModule_AddIntConstant(m, "ANCHOR_ABOVE", ANCHOR_ABOVE) < 0 ||
        PyModule_AddIntConstant(m, "MAX_ANCHORS", MAX_ANCHORS) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
