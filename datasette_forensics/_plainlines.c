/* The import's fast path for plain lines, compiled (see ingest._file_chunks).
 *
 * take() does for a run of lines what the Python loop of _file_chunks does for a
 * plain line: the PLAIN match of importers/combined.py, the time text cache, the
 * dictionary ids through the same Python dicts and miss functions, the request
 * row, the 8-byte BLAKE2b digest (line_hash's) and the raw line. It stops at the
 * first line it is not sure of (a non-ASCII byte, any line PLAIN would not match,
 * a time Python does not parse) and hands it back to the Python loop, which
 * treats it as before; and it stops when the chunk is full.
 *
 * BLAKE2b (RFC 7693), unkeyed, 8-byte digest, written out here after the
 * reference implementation.
 *
 * bloom_add(), bloom_add_text() and bloom_maybe() set and test the bits of the line
 * counts' Bloom filter (derived/line_filter.py) over lists of 64-bit line hashes.
 *
 * keymap_new(), keymap_ids() and keymap_grow() keep the compact value -> id map of a
 * dictionary whose unique index a first import defers (dictionaries.py).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* ---- BLAKE2b ---- */

static const uint64_t B2_IV[8] = {
    0x6a09e667f3bcc908ULL, 0xbb67ae8584caa73bULL, 0x3c6ef372fe94f82bULL, 0xa54ff53a5f1d36f1ULL,
    0x510e527fade682d1ULL, 0x9b05688c2b3e6c1fULL, 0x1f83d9abfb41bd6bULL, 0x5be0cd19137e2179ULL,
};

static const uint8_t B2_SIGMA[12][16] = {
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
    {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3},
    {11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4},
    {7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8},
    {9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13},
    {2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9},
    {12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11},
    {13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10},
    {6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5},
    {10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0},
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
    {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3},
};

static inline uint64_t load64(const unsigned char *p) {
    return (uint64_t)p[0] | ((uint64_t)p[1] << 8) | ((uint64_t)p[2] << 16) | ((uint64_t)p[3] << 24) |
           ((uint64_t)p[4] << 32) | ((uint64_t)p[5] << 40) | ((uint64_t)p[6] << 48) | ((uint64_t)p[7] << 56);
}

static inline uint64_t rotr64(uint64_t x, int n) { return (x >> n) | (x << (64 - n)); }

#define B2_G(a, b, c, d, x, y)          \
    do {                                \
        a = a + b + (x);                \
        d = rotr64(d ^ a, 32);          \
        c = c + d;                      \
        b = rotr64(b ^ c, 24);          \
        a = a + b + (y);                \
        d = rotr64(d ^ a, 16);          \
        c = c + d;                      \
        b = rotr64(b ^ c, 63);          \
    } while (0)

static void b2_compress(uint64_t h[8], const unsigned char *block, uint64_t t, int last) {
    uint64_t m[16], v[16];
    for (int i = 0; i < 16; i++) m[i] = load64(block + 8 * i);
    for (int i = 0; i < 8; i++) {
        v[i] = h[i];
        v[i + 8] = B2_IV[i];
    }
    v[12] ^= t; /* the high word of the counter stays 0: a line is far below 2**64 bytes */
    if (last) v[14] = ~v[14];
    for (int r = 0; r < 12; r++) {
        const uint8_t *s = B2_SIGMA[r];
        B2_G(v[0], v[4], v[8], v[12], m[s[0]], m[s[1]]);
        B2_G(v[1], v[5], v[9], v[13], m[s[2]], m[s[3]]);
        B2_G(v[2], v[6], v[10], v[14], m[s[4]], m[s[5]]);
        B2_G(v[3], v[7], v[11], v[15], m[s[6]], m[s[7]]);
        B2_G(v[0], v[5], v[10], v[15], m[s[8]], m[s[9]]);
        B2_G(v[1], v[6], v[11], v[12], m[s[10]], m[s[11]]);
        B2_G(v[2], v[7], v[8], v[13], m[s[12]], m[s[13]]);
        B2_G(v[3], v[4], v[9], v[14], m[s[14]], m[s[15]]);
    }
    for (int i = 0; i < 8; i++) h[i] ^= v[i] ^ v[i + 8];
}

/* The first 8 bytes of BLAKE2b-64(data), as hashlib.blake2b(data, digest_size=8).digest(). */
static void blake2b_8(const unsigned char *data, size_t len, unsigned char out[8]) {
    uint64_t h[8];
    unsigned char last[128];
    uint64_t t = 0;
    memcpy(h, B2_IV, sizeof h);
    h[0] ^= 0x01010000ULL ^ 8; /* digest length 8, no key, fanout 1, depth 1 */
    while (len > 128) {
        t += 128;
        b2_compress(h, data, t, 0);
        data += 128;
        len -= 128;
    }
    memset(last, 0, sizeof last);
    if (len) memcpy(last, data, len);
    t += len;
    b2_compress(h, last, t, 1);
    for (int i = 0; i < 8; i++) out[i] = (unsigned char)(h[0] >> (8 * i));
}

/* ---- PLAIN, on ASCII bytes ---- */

/* Python's \s on str, for ASCII characters: \t \n \v \f \r, \x1c-\x1f and space. */
static inline int is_space(unsigned char c) {
    return c == ' ' || (c >= 9 && c <= 13) || (c >= 0x1c && c <= 0x1f);
}

static inline int is_method(unsigned char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
}

/* Group spans: start and end offsets of PLAIN's 11 groups. */
enum { G_IP, G_IDENT, G_USER, G_TIME, G_METHOD, G_URI, G_PROTOCOL, G_STATUS, G_SIZE, G_REFERER, G_UA, NGROUPS };

/* A run of non-whitespace from i (at least one), ended by a space: its end, or -1. */
static Py_ssize_t word(const unsigned char *p, Py_ssize_t n, Py_ssize_t i) {
    Py_ssize_t j = i;
    while (j < n && !is_space(p[j])) j++;
    if (j == i || j >= n || p[j] != ' ') return -1;
    return j;
}

/* A run of characters other than space, quote and backslash, from i (at least one). */
static Py_ssize_t token_end(const unsigned char *p, Py_ssize_t n, Py_ssize_t i) {
    Py_ssize_t j = i;
    while (j < n && p[j] != ' ' && p[j] != '"' && p[j] != '\\') j++;
    return j == i ? -1 : j;
}

/* Digits (1 to max) or '-', from i, followed by a space: the end, or -1. */
static Py_ssize_t number(const unsigned char *p, Py_ssize_t n, Py_ssize_t i, int max) {
    Py_ssize_t j = i;
    if (j < n && p[j] == '-') {
        j++;
    } else {
        while (j < n && p[j] >= '0' && p[j] <= '9') j++;
        if (j == i || j - i > max) return -1;
    }
    return (j < n && p[j] == ' ') ? j : -1;
}

/* A quoted field's content from i (after its opening quote): no quote, no backslash; the end (at the closing quote) or -1. */
static Py_ssize_t quoted(const unsigned char *p, Py_ssize_t n, Py_ssize_t i) {
    Py_ssize_t j = i;
    while (j < n && p[j] != '"' && p[j] != '\\') j++;
    return (j < n && p[j] == '"') ? j : -1;
}

/* PLAIN.fullmatch on an ASCII line: 1 with the groups' spans, or 0. */
static int match_plain(const unsigned char *p, Py_ssize_t n, Py_ssize_t g[NGROUPS][2]) {
    Py_ssize_t i = 0, j;
    for (j = 0; j < n; j++)
        if (p[j] >= 0x80) return 0;
    if (n == 0 || is_space(p[0]) || p[0] == '[') return 0;
    for (int k = G_IP; k <= G_USER; k++) {
        if ((j = word(p, n, i)) < 0) return 0;
        g[k][0] = i, g[k][1] = j;
        i = j + 1;
    }
    if (i >= n || p[i] != '[') return 0;
    i++;
    j = i;
    while (j < n && p[j] != ']') j++;
    if (j + 2 >= n || p[j] != ']' || p[j + 1] != ' ' || p[j + 2] != '"') return 0;
    g[G_TIME][0] = i, g[G_TIME][1] = j;
    i = j + 3;
    /* method: a letter, then up to 31 of [A-Za-z0-9_-], then a space */
    if (i >= n || !((p[i] >= 'A' && p[i] <= 'Z') || (p[i] >= 'a' && p[i] <= 'z'))) return 0;
    j = i + 1;
    while (j < n && is_method(p[j])) j++;
    if (j - i > 32 || j >= n || p[j] != ' ') return 0;
    g[G_METHOD][0] = i, g[G_METHOD][1] = j;
    i = j + 1;
    if ((j = token_end(p, n, i)) < 0 || j >= n || p[j] != ' ') return 0;
    g[G_URI][0] = i, g[G_URI][1] = j;
    i = j + 1;
    if (n - i < 5 || memcmp(p + i, "HTTP/", 5) != 0) return 0;
    if ((j = token_end(p, n, i + 5)) < 0 || j >= n || p[j] != '"') return 0;
    g[G_PROTOCOL][0] = i, g[G_PROTOCOL][1] = j;
    i = j + 1;
    if (i >= n || p[i] != ' ') return 0;
    i++;
    if ((j = number(p, n, i, 3)) < 0) return 0;
    g[G_STATUS][0] = i, g[G_STATUS][1] = j;
    i = j + 1;
    if ((j = number(p, n, i, 18)) < 0) return 0;
    g[G_SIZE][0] = i, g[G_SIZE][1] = j;
    i = j + 1;
    if (i >= n || p[i] != '"') return 0;
    i++;
    if ((j = quoted(p, n, i)) < 0) return 0;
    g[G_REFERER][0] = i, g[G_REFERER][1] = j;
    i = j + 1;
    if (n - i < 2 || p[i] != ' ' || p[i + 1] != '"') return 0;
    i += 2;
    if ((j = quoted(p, n, i)) < 0) return 0;
    g[G_UA][0] = i, g[G_UA][1] = j;
    for (i = j + 1; i < n; i++)
        if (p[i] != ' ') return 0;
    return 1;
}

/* ---- the Python side ---- */

static PyObject *ascii_str(const unsigned char *p, Py_ssize_t n) {
    PyObject *s = PyUnicode_New(n, 127);
    if (s != NULL) memcpy(PyUnicode_1BYTE_DATA(s), p, (size_t)n);
    return s;
}

static inline int is_dash(const unsigned char *p, Py_ssize_t g[2]) { return g[1] - g[0] == 1 && p[g[0]] == '-'; }

/* cache.get(key) or miss(key): a new reference, or NULL with an exception. */
static PyObject *dict_id(PyObject *cache, PyObject *miss, PyObject *key) {
    PyObject *v = PyDict_GetItemWithError(cache, key);
    if (v != NULL) {
        int truth = PyObject_IsTrue(v);
        if (truth < 0) return NULL;
        if (truth) {
            Py_INCREF(v);
            return v;
        }
    } else if (PyErr_Occurred()) {
        return NULL;
    }
    return PyObject_CallOneArg(miss, key);
}

static PyObject *digits(const unsigned char *p, Py_ssize_t g[2]) {
    if (is_dash(p, g)) Py_RETURN_NONE;
    long long v = 0;
    for (Py_ssize_t i = g[0]; i < g[1]; i++) v = v * 10 + (p[i] - '0');
    return PyLong_FromLongLong(v);
}

/* The context's items, in the order ingest._file_chunks builds it. */
enum {
    C_BATCH, C_TIMES, C_TIME_PARSE, C_SIGNATURES, C_SIGNATURE_TEXTS,
    C_IP_CACHE, C_IP_MISS, C_UA_CACHE, C_UA_MISS, C_SIG_CACHE, C_SIG_MISS,
    C_URI_CACHE, C_URI_MISS, C_REF_CACHE, C_REF_MISS, C_METHODS, C_IDENT_EXTRA,
    C_CHUNK_LINES, C_CHUNK_BYTES, NCONTEXT
};

/* One plain line's request row (a new reference), Py_None when the line is not
 * plain after all (its time does not parse), or NULL with an exception. */
static PyObject *request_row(PyObject **c, const unsigned char *p, Py_ssize_t g[NGROUPS][2], long long line_no) {
    PyObject *ts = NULL, *ip = NULL, *ua = NULL, *pair = NULL, *sig = NULL, *uri = NULL, *uri_id = NULL;
    PyObject *method = NULL, *status = NULL, *size = NULL, *referer = NULL, *extra = NULL, *row = NULL;
    PyObject *text = ascii_str(p + g[G_TIME][0], g[G_TIME][1] - g[G_TIME][0]);
    if (text == NULL) return NULL;
    ts = PyDict_GetItemWithError(c[C_TIMES], text);
    if (ts != NULL) {
        Py_INCREF(ts);
    } else if (PyErr_Occurred() || (ts = PyObject_CallOneArg(c[C_TIME_PARSE], text)) == NULL) {
        goto done;
    } else if (ts == Py_None) {
        row = ts; /* Py_None: Python's parse() rejects the line */
        ts = NULL;
        goto done;
    }
    if ((ip = ascii_str(p + g[G_IP][0], g[G_IP][1] - g[G_IP][0])) == NULL) goto done;
    if (is_dash(p, g[G_UA]))
        ua = PyUnicode_New(0, 127);
    else
        ua = ascii_str(p + g[G_UA][0], g[G_UA][1] - g[G_UA][0]);
    if (ua == NULL || (pair = PyTuple_Pack(2, ip, ua)) == NULL) goto done;
    PyObject_GC_UnTrack(pair);
    sig = PyDict_GetItemWithError(c[C_SIGNATURES], pair);
    if (sig != NULL) {
        Py_INCREF(sig);
    } else {
        if (PyErr_Occurred()) goto done;
        PyObject *ip_id = dict_id(c[C_IP_CACHE], c[C_IP_MISS], ip);
        if (ip_id == NULL) goto done;
        PyObject *ua_id = dict_id(c[C_UA_CACHE], c[C_UA_MISS], ua);
        if (ua_id == NULL) {
            Py_DECREF(ip_id);
            goto done;
        }
        PyObject *key = PyTuple_Pack(2, ip_id, ua_id);
        Py_DECREF(ip_id);
        Py_DECREF(ua_id);
        if (key == NULL) goto done;
        sig = dict_id(c[C_SIG_CACHE], c[C_SIG_MISS], key);
        Py_DECREF(key);
        if (sig == NULL) goto done;
        Py_ssize_t limit = PyLong_AsSsize_t(c[C_SIGNATURE_TEXTS]);
        if (limit < 0 && PyErr_Occurred()) goto done;
        if (PyDict_GET_SIZE(c[C_SIGNATURES]) >= limit) PyDict_Clear(c[C_SIGNATURES]);
        if (PyDict_SetItem(c[C_SIGNATURES], pair, sig) < 0) goto done;
    }
    if ((uri = ascii_str(p + g[G_URI][0], g[G_URI][1] - g[G_URI][0])) == NULL) goto done;
    if ((uri_id = dict_id(c[C_URI_CACHE], c[C_URI_MISS], uri)) == NULL) goto done;
    if ((method = ascii_str(p + g[G_METHOD][0], g[G_METHOD][1] - g[G_METHOD][0])) == NULL) goto done;
    PyObject *known = PyDict_GetItemWithError(c[C_METHODS], method);
    if (known != NULL) {
        Py_INCREF(known);
        Py_SETREF(method, known);
    } else if (PyErr_Occurred()) {
        goto done;
    }
    if ((status = digits(p, g[G_STATUS])) == NULL || (size = digits(p, g[G_SIZE])) == NULL) goto done;
    if (is_dash(p, g[G_REFERER])) {
        referer = Py_NewRef(Py_None);
    } else {
        PyObject *text_ref = ascii_str(p + g[G_REFERER][0], g[G_REFERER][1] - g[G_REFERER][0]);
        if (text_ref == NULL) goto done;
        referer = dict_id(c[C_REF_CACHE], c[C_REF_MISS], text_ref);
        Py_DECREF(text_ref);
        if (referer == NULL) goto done;
    }
    if (is_dash(p, g[G_IDENT]) && is_dash(p, g[G_USER])) {
        extra = Py_NewRef(Py_None);
    } else {
        PyObject *ident = ascii_str(p + g[G_IDENT][0], g[G_IDENT][1] - g[G_IDENT][0]);
        PyObject *user = ident ? ascii_str(p + g[G_USER][0], g[G_USER][1] - g[G_USER][0]) : NULL;
        if (user != NULL) extra = PyObject_CallFunctionObjArgs(c[C_IDENT_EXTRA], ident, user, NULL);
        Py_XDECREF(ident);
        Py_XDECREF(user);
        if (extra == NULL) goto done;
    }
    PyObject *number = PyLong_FromLongLong(line_no);
    if (number == NULL) goto done;
    row = PyTuple_New(12);
    if (row == NULL) {
        Py_DECREF(number);
        goto done;
    }
    /* (batch_id, line_no, ts, sig_id, uri_id, method, status, bytes, referer_id, token_id, org_id, extra) */
    PyTuple_SET_ITEM(row, 0, Py_NewRef(c[C_BATCH]));
    PyTuple_SET_ITEM(row, 1, number);
    PyTuple_SET_ITEM(row, 2, Py_NewRef(ts));
    PyTuple_SET_ITEM(row, 3, Py_NewRef(sig));
    PyTuple_SET_ITEM(row, 4, Py_NewRef(uri_id));
    PyTuple_SET_ITEM(row, 5, Py_NewRef(method));
    PyTuple_SET_ITEM(row, 6, Py_NewRef(status));
    PyTuple_SET_ITEM(row, 7, Py_NewRef(size));
    PyTuple_SET_ITEM(row, 8, Py_NewRef(referer));
    PyTuple_SET_ITEM(row, 9, Py_NewRef(Py_None));
    PyTuple_SET_ITEM(row, 10, Py_NewRef(Py_None));
    PyTuple_SET_ITEM(row, 11, Py_NewRef(extra));
    /* Ints, strings and None only: never part of a cycle, so the garbage collector
     * need not walk the chunk's rows. */
    PyObject_GC_UnTrack(row);
done:
    Py_DECREF(text);
    Py_XDECREF(ts);
    Py_XDECREF(ip);
    Py_XDECREF(ua);
    Py_XDECREF(pair);
    Py_XDECREF(sig);
    Py_XDECREF(uri);
    Py_XDECREF(uri_id);
    Py_XDECREF(method);
    Py_XDECREF(status);
    Py_XDECREF(size);
    Py_XDECREF(referer);
    Py_XDECREF(extra);
    return row;
}

PyDoc_STRVAR(take_doc,
"take(block, i, line_no, last_line, chunk_lines, chunk_bytes, requests, digests, raw_lines, context)\n"
"\n"
"Take the plain lines of block (a list of bytes) from index i, as the Python loop\n"
"of ingest._file_chunks would, until a line it is not sure of, the block's end or a\n"
"full chunk. Returns (i, line_no, last_line, chunk_lines, chunk_bytes): block[i],\n"
"if any, is the next line for the Python loop.");

static PyObject *take(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 10) {
        PyErr_SetString(PyExc_TypeError, "take() takes 10 arguments");
        return NULL;
    }
    PyObject *block = args[0], *requests = args[6], *digests = args[7], *raw_lines = args[8], *context = args[9];
    if (!PyList_Check(block) || !PyList_Check(requests) || !PyList_Check(digests) || !PyList_Check(raw_lines) ||
        !PyTuple_Check(context) || PyTuple_GET_SIZE(context) != NCONTEXT) {
        PyErr_SetString(PyExc_TypeError, "take(): bad arguments");
        return NULL;
    }
    PyObject **c = &PyTuple_GET_ITEM(context, 0);
    if (!PyDict_Check(c[C_TIMES]) || !PyDict_Check(c[C_SIGNATURES]) || !PyDict_Check(c[C_IP_CACHE]) ||
        !PyDict_Check(c[C_UA_CACHE]) || !PyDict_Check(c[C_SIG_CACHE]) || !PyDict_Check(c[C_URI_CACHE]) ||
        !PyDict_Check(c[C_REF_CACHE]) || !PyDict_Check(c[C_METHODS])) {
        PyErr_SetString(PyExc_TypeError, "take(): the context's caches must be dicts");
        return NULL;
    }
    Py_ssize_t i = PyLong_AsSsize_t(args[1]);
    long long line_no = PyLong_AsLongLong(args[2]);
    long long last_line = PyLong_AsLongLong(args[3]);
    long long chunk_lines = PyLong_AsLongLong(args[4]);
    long long chunk_bytes = PyLong_AsLongLong(args[5]);
    long long max_lines = PyLong_AsLongLong(c[C_CHUNK_LINES]);
    long long max_bytes = PyLong_AsLongLong(c[C_CHUNK_BYTES]);
    if (PyErr_Occurred()) return NULL;
    Py_ssize_t g[NGROUPS][2];
    unsigned char digest[8];
    while (i < PyList_GET_SIZE(block) && chunk_lines < max_lines && chunk_bytes < max_bytes) {
        PyObject *raw = PyList_GET_ITEM(block, i);
        if (!PyBytes_CheckExact(raw)) break;
        const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(raw);
        Py_ssize_t n = PyBytes_GET_SIZE(raw);
        if (!match_plain(p, n, g)) break;
        Py_INCREF(raw); /* a miss function runs Python code: keep the line alive */
        PyObject *row = request_row(c, p, g, line_no + 1);
        if (row == NULL || row == Py_None) {
            Py_DECREF(raw);
            if (row == NULL) return NULL;
            Py_DECREF(row);
            break;
        }
        blake2b_8(p, (size_t)n, digest);
        PyObject *hash = PyBytes_FromStringAndSize((const char *)digest, 8);
        int failed = hash == NULL || PyList_Append(requests, row) < 0 || PyList_Append(digests, hash) < 0 ||
                     PyList_Append(raw_lines, raw) < 0;
        Py_DECREF(row);
        Py_XDECREF(hash);
        Py_DECREF(raw);
        if (failed) return NULL;
        line_no++;
        last_line = line_no;
        chunk_lines++;
        chunk_bytes += n;
        i++;
    }
    return Py_BuildValue("(nLLLL)", i, line_no, last_line, chunk_lines, chunk_bytes);
}

PyDoc_STRVAR(match_doc, "match(raw: bytes): PLAIN's 11 groups of a line the compiled path takes, or None (tests).");

static PyObject *match(PyObject *self, PyObject *raw) {
    if (!PyBytes_Check(raw)) {
        PyErr_SetString(PyExc_TypeError, "match() takes bytes");
        return NULL;
    }
    Py_ssize_t g[NGROUPS][2];
    const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(raw);
    if (!match_plain(p, PyBytes_GET_SIZE(raw), g)) Py_RETURN_NONE;
    PyObject *groups = PyTuple_New(NGROUPS);
    if (groups == NULL) return NULL;
    for (int k = 0; k < NGROUPS; k++) {
        PyObject *s = ascii_str(p + g[k][0], g[k][1] - g[k][0]);
        if (s == NULL) {
            Py_DECREF(groups);
            return NULL;
        }
        PyTuple_SET_ITEM(groups, k, s);
    }
    return groups;
}

PyDoc_STRVAR(digest_doc, "digest(raw: bytes): blake2b(raw, digest_size=8).digest(), compiled (tests).");

static PyObject *digest8(PyObject *self, PyObject *raw) {
    if (!PyBytes_Check(raw)) {
        PyErr_SetString(PyExc_TypeError, "digest() takes bytes");
        return NULL;
    }
    unsigned char out[8];
    blake2b_8((const unsigned char *)PyBytes_AS_STRING(raw), (size_t)PyBytes_GET_SIZE(raw), out);
    return PyBytes_FromStringAndSize((const char *)out, 8);
}

/* A blocked Bloom filter over 64-bit line hashes (derived/line_filter.py): each hash sets
 * four bits of one 512-bit block, so a test reads one cache line. The filter's size in
 * bytes is a power of two, at least 64. */

static inline uint64_t fmix64(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

/* The hash of an int (or of a 1-tuple's int: a row of a cursor), as 64 bits. */
static int hash_of(PyObject *item, uint64_t *out) {
    PyObject *v = item;
    if (PyTuple_Check(item)) {
        if (PyTuple_GET_SIZE(item) != 1) {
            PyErr_SetString(PyExc_TypeError, "bloom: a row must have one column");
            return -1;
        }
        v = PyTuple_GET_ITEM(item, 0);
    }
    long long h = PyLong_AsLongLong(v);
    if (h == -1 && PyErr_Occurred()) return -1;
    *out = fmix64((uint64_t)h);
    return 0;
}

/* A mixed hash's block (64 bytes: its low bits) and its four bits in the block (9 bits each, from bit 28). */
static inline unsigned char *bloom_block(unsigned char *bits, uint64_t nblocks, uint64_t x) {
    return bits + ((x & (nblocks - 1)) << 6);
}

static inline unsigned bloom_bit(uint64_t x, int k) { return (unsigned)(x >> (28 + 9 * k)) & 511; }

static inline void bloom_set(unsigned char *bits, uint64_t nblocks, uint64_t x) {
    unsigned char *b = bloom_block(bits, nblocks, x);
    for (int k = 0; k < 4; k++) b[bloom_bit(x, k) >> 3] |= (unsigned char)(1u << (bloom_bit(x, k) & 7));
}

/* Whether bloom_set(x) set all four of x's bits (the same block and bits). */
static inline int bloom_has(unsigned char *bits, uint64_t nblocks, uint64_t x) {
    const unsigned char *b = bloom_block(bits, nblocks, x);
    for (int k = 0; k < 4; k++)
        if (!((b[bloom_bit(x, k) >> 3] >> (bloom_bit(x, k) & 7)) & 1)) return 0;
    return 1;
}

static int bloom_buffer(PyObject *obj, Py_buffer *view, int writable, uint64_t *nblocks) {
    if (PyObject_GetBuffer(obj, view, writable ? PyBUF_WRITABLE : PyBUF_SIMPLE) < 0) return -1;
    Py_ssize_t n = view->len;
    if (n < 64 || (n & (n - 1))) {
        PyBuffer_Release(view);
        PyErr_SetString(PyExc_ValueError, "bloom: the filter's size must be a power of two, at least 64 bytes");
        return -1;
    }
    *nblocks = (uint64_t)n >> 6;
    return 0;
}

PyDoc_STRVAR(bloom_add_doc, "bloom_add(bits: bytearray, hashes: iterable of int or 1-tuples): set each hash's bits; returns how many.");

static PyObject *bloom_add(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "bloom_add(bits, hashes)");
        return NULL;
    }
    Py_buffer view;
    uint64_t nblocks;
    if (bloom_buffer(args[0], &view, 1, &nblocks) < 0) return NULL;
    unsigned char *bits = (unsigned char *)view.buf;
    PyObject *it = PyObject_GetIter(args[1]);
    if (it == NULL) {
        PyBuffer_Release(&view);
        return NULL;
    }
    long long count = 0;
    PyObject *item;
    while ((item = PyIter_Next(it)) != NULL) {
        uint64_t x;
        int bad = hash_of(item, &x);
        Py_DECREF(item);
        if (bad) break;
        bloom_set(bits, nblocks, x);
        count++;
    }
    Py_DECREF(it);
    PyBuffer_Release(&view);
    if (PyErr_Occurred()) return NULL;
    return PyLong_FromLongLong(count);
}

PyDoc_STRVAR(bloom_maybe_doc, "bloom_maybe(bits, hashes: list[int]): the hashes the filter may hold, in order (the others it never saw).");

static PyObject *bloom_maybe(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || !PyList_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "bloom_maybe(bits, hashes: list)");
        return NULL;
    }
    Py_buffer view;
    uint64_t nblocks;
    if (bloom_buffer(args[0], &view, 0, &nblocks) < 0) return NULL;
    unsigned char *bits = (unsigned char *)view.buf;
    PyObject *list = args[1], *out = PyList_New(0);
    if (out == NULL) {
        PyBuffer_Release(&view);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(list); i++) {
        PyObject *item = PyList_GET_ITEM(list, i);
        uint64_t x;
        if (hash_of(item, &x) < 0) {
            Py_DECREF(out);
            out = NULL;
            break;
        }
        if (bloom_has(bits, nblocks, x) && PyList_Append(out, item) < 0) {
            Py_DECREF(out);
            out = NULL;
            break;
        }
    }
    PyBuffer_Release(&view);
    return out;
}

PyDoc_STRVAR(bloom_add_text_doc, "bloom_add_text(bits: bytearray, text: str): set the bits of each hash of a comma-separated list of integers (SQLite's group_concat); returns how many.");

static PyObject *bloom_add_text(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || !PyUnicode_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "bloom_add_text(bits, text: str)");
        return NULL;
    }
    Py_ssize_t n;
    const char *p = PyUnicode_AsUTF8AndSize(args[1], &n);
    if (p == NULL) return NULL;
    Py_buffer view;
    uint64_t nblocks;
    if (bloom_buffer(args[0], &view, 1, &nblocks) < 0) return NULL;
    unsigned char *bits = (unsigned char *)view.buf;
    long long count = 0;
    Py_ssize_t i = 0;
    while (i < n) {
        int negative = p[i] == '-';
        if (negative) i++;
        uint64_t v = 0;
        Py_ssize_t start = i;
        while (i < n && p[i] >= '0' && p[i] <= '9' && i - start < 19) v = v * 10 + (uint64_t)(p[i++] - '0');
        if (i == start || (i < n && p[i] != ',')) {
            PyBuffer_Release(&view);
            PyErr_SetString(PyExc_ValueError, "bloom_add_text: not a comma-separated list of integers");
            return NULL;
        }
        i++;  /* the comma */
        uint64_t x = fmix64(negative ? (uint64_t)0 - v : v);
        bloom_set(bits, nblocks, x);
        count++;
    }
    PyBuffer_Release(&view);
    return PyLong_FromLongLong(count);
}

/* ---- the key map of a dictionary whose unique index is deferred (dictionaries.py) ----
 * An open-addressing table in a bytearray of 2**k 8-byte slots: a key's 32-bit check
 * (the top half of its mixed hash) above the id handed out for it; 0 is an empty slot.
 * A key's home slot is its check's low bits, so the table grows without the keys.
 * Checks may repeat (a multimap): keymap_ids() gives every id whose check matches,
 * and the caller tells the key's own by reading the stored value of each. */

static int keymap_buffer(PyObject *obj, Py_buffer *view, uint64_t *mask) {
    if (PyObject_GetBuffer(obj, view, PyBUF_WRITABLE) < 0) return -1;
    uint64_t n = (uint64_t)view->len / 8;
    if (view->len % 8 || n < 8 || n > ((uint64_t)1 << 32) || (n & (n - 1))) {
        PyBuffer_Release(view);
        PyErr_SetString(PyExc_ValueError, "keymap: the table must be 8 bytes times a power of two slots");
        return -1;
    }
    *mask = n - 1;
    return 0;
}

static int key_check(PyObject *key, uint32_t *check) {
    Py_hash_t h = PyObject_Hash(key);
    if (h == -1 && PyErr_Occurred()) return -1;
    *check = (uint32_t)(fmix64((uint64_t)h) >> 32);
    return 0;
}

PyDoc_STRVAR(keymap_ids_doc, "keymap_ids(table: bytearray, key) -> list[int]: the ids stored under key's check.");

static PyObject *keymap_ids(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "keymap_ids(table, key)");
        return NULL;
    }
    uint32_t check;
    if (key_check(args[1], &check) < 0) return NULL;
    Py_buffer view;
    uint64_t mask;
    if (keymap_buffer(args[0], &view, &mask) < 0) return NULL;
    const uint64_t *slots = (const uint64_t *)view.buf;
    PyObject *out = PyList_New(0);
    for (uint64_t i = check & mask; out != NULL && slots[i]; i = (i + 1) & mask) {
        if ((uint32_t)(slots[i] >> 32) != check) continue;
        PyObject *id = PyLong_FromUnsignedLong((unsigned long)(uint32_t)slots[i]);
        if (id == NULL || PyList_Append(out, id) < 0) Py_CLEAR(out);
        Py_XDECREF(id);
    }
    PyBuffer_Release(&view);
    return out;
}

static void keymap_insert(uint64_t *slots, uint64_t mask, uint64_t slot) {
    uint64_t i = (slot >> 32) & mask;
    while (slots[i]) i = (i + 1) & mask;
    slots[i] = slot;
}

PyDoc_STRVAR(keymap_grow_doc, "keymap_grow(old: bytearray, new: bytearray) -> int: copy old's entries into the empty, larger new; returns how many.");

static PyObject *keymap_grow(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "keymap_grow(old, new)");
        return NULL;
    }
    Py_buffer old, new;
    uint64_t old_mask, new_mask;
    if (keymap_buffer(args[0], &old, &old_mask) < 0) return NULL;
    if (keymap_buffer(args[1], &new, &new_mask) < 0) {
        PyBuffer_Release(&old);
        return NULL;
    }
    if (new_mask <= old_mask) {
        PyBuffer_Release(&old);
        PyBuffer_Release(&new);
        PyErr_SetString(PyExc_ValueError, "keymap_grow: the new table must be larger");
        return NULL;
    }
    const uint64_t *from = (const uint64_t *)old.buf;
    uint64_t *to = (uint64_t *)new.buf;
    long long count = 0;
    for (uint64_t i = 0; i <= old_mask; i++) {
        if (from[i]) {
            keymap_insert(to, new_mask, from[i]);
            count++;
        }
    }
    PyBuffer_Release(&old);
    PyBuffer_Release(&new);
    return PyLong_FromLongLong(count);
}

/* keymap_new(d, key, anyway): hands out a value of a mapped Dictionary, the one place
 * that does. A value with no id under its check in d.keymap was never handed out: it
 * gets d.next_id, its pending row (with, for a dictionary with a prefix_of, the id of
 * its part before the first "?" in that dictionary), its cache entry (or d._remember)
 * and its map entry (after d._grow_keymap() when d.keymap_count reached
 * d.keymap_limit). Returns the id; or None when the map holds ids under the key's
 * check and anyway is false: the caller reads them back, and calls again with anyway
 * true when none is the key's. */

static PyObject *one_value, *s_keymap, *s_keymap_count, *s_keymap_limit, *s_next_id, *s_pending, *s_cache, *s_generation,
    *s_prefix_of, *s_miss, *s_remember, *s_grow_keymap;

static int keymap_holds_check(PyObject *d, uint32_t check, int *holds) {
    PyObject *table = PyObject_GetAttr(d, s_keymap);
    if (table == NULL) return -1;
    Py_buffer view;
    uint64_t mask;
    int rc = keymap_buffer(table, &view, &mask);
    Py_DECREF(table);
    if (rc < 0) return -1;
    const uint64_t *slots = (const uint64_t *)view.buf;
    *holds = 0;
    for (uint64_t i = check & mask; slots[i]; i = (i + 1) & mask) {
        if ((uint32_t)(slots[i] >> 32) == check) {
            *holds = 1;
            break;
        }
    }
    PyBuffer_Release(&view);
    return 0;
}

/* The id of key's part before the first "?" in the prefix dictionary: a new reference. */
static PyObject *prefix_id(PyObject *prefix, PyObject *key) {
    if (!PyUnicode_Check(key)) {
        PyErr_SetString(PyExc_TypeError, "keymap_new(): a prefixed dictionary's values must be str");
        return NULL;
    }
    Py_ssize_t n = PyUnicode_GET_LENGTH(key);
    Py_ssize_t at = PyUnicode_FindChar(key, '?', 0, n, 1);
    if (at == -2) return NULL;
    PyObject *part = at < 0 ? (Py_INCREF(key), key) : PyUnicode_Substring(key, 0, at);
    if (part == NULL) return NULL;
    PyObject *cache = PyObject_GetAttr(prefix, s_cache), *id = NULL;
    if (cache != NULL && PyDict_Check(cache)) {
        id = PyDict_GetItemWithError(cache, part);
        if (id != NULL && PyObject_IsTrue(id) == 1) {
            Py_INCREF(id);
        } else if (!PyErr_Occurred()) {
            PyObject *miss = PyObject_GetAttr(prefix, s_miss);
            id = miss == NULL ? NULL : PyObject_CallOneArg(miss, part);
            Py_XDECREF(miss);
        } else {
            id = NULL;
        }
    } else if (cache != NULL) {
        PyErr_SetString(PyExc_TypeError, "keymap_new(): a cache must be a dict");
    }
    Py_XDECREF(cache);
    Py_DECREF(part);
    return id;
}

PyDoc_STRVAR(keymap_new_doc, "keymap_new(d: Dictionary, key, anyway: bool) -> int | None: the key handed out a new id (see the comment above); None when the map may hold it, unless anyway.");

static PyObject *keymap_new(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "keymap_new(d, key, anyway)");
        return NULL;
    }
    PyObject *d = args[0], *key = args[1];
    int anyway = PyObject_IsTrue(args[2]);
    if (anyway < 0) return NULL;
    uint32_t check;
    int holds = 0;
    if (key_check(key, &check) < 0 || (!anyway && keymap_holds_check(d, check, &holds) < 0)) return NULL;
    if (holds) Py_RETURN_NONE;
    PyObject *prefix = PyObject_GetAttr(d, s_prefix_of), *part_id = NULL, *new_id = NULL, *next = NULL,
             *row = NULL, *pending = NULL, *cache = NULL, *generation = NULL, *count = NULL, *limit = NULL,
             *result = NULL;
    if (prefix == NULL) return NULL;
    if (prefix != Py_None && (part_id = prefix_id(prefix, key)) == NULL) goto done;
    if ((new_id = PyObject_GetAttr(d, s_next_id)) == NULL) goto done;
    unsigned long long id = PyLong_AsUnsignedLongLong(new_id);
    if (id == (unsigned long long)-1 && PyErr_Occurred()) goto done;
    if (id == 0 || id > 0xffffffffULL) {
        PyErr_SetString(PyExc_OverflowError, "keymap_new: ids run from 1 to 2**32 - 1");
        goto done;
    }
    if ((next = PyLong_FromUnsignedLongLong(id + 1)) == NULL || PyObject_SetAttr(d, s_next_id, next) < 0) goto done;
    row = part_id == NULL ? PyTuple_Pack(2, new_id, key) : PyTuple_Pack(3, new_id, key, part_id);
    if (row == NULL) goto done;
    if ((pending = PyObject_GetAttr(d, s_pending)) == NULL) goto done;
    if (!PyList_Check(pending) || PyList_Append(pending, row) < 0) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "keymap_new(): pending must be a list");
        goto done;
    }
    if ((cache = PyObject_GetAttr(d, s_cache)) == NULL || (generation = PyObject_GetAttr(d, s_generation)) == NULL)
        goto done;
    Py_ssize_t size = PyObject_Length(cache), most = PyLong_AsSsize_t(generation);
    if (size < 0 || (most == -1 && PyErr_Occurred())) goto done;
    if (size < most) {
        if (PyObject_SetItem(cache, key, new_id) < 0) goto done;
    } else {
        PyObject *r = PyObject_CallMethodObjArgs(d, s_remember, key, new_id, NULL);
        if (r == NULL) goto done;
        Py_DECREF(r);
    }
    if ((count = PyObject_GetAttr(d, s_keymap_count)) == NULL || (limit = PyObject_GetAttr(d, s_keymap_limit)) == NULL)
        goto done;
    int full = PyObject_RichCompareBool(count, limit, Py_GE);
    if (full < 0) goto done;
    if (full) {
        PyObject *r = PyObject_CallMethodNoArgs(d, s_grow_keymap);
        if (r == NULL) goto done;
        Py_DECREF(r);
    }
    PyObject *table = PyObject_GetAttr(d, s_keymap);
    if (table == NULL) goto done;
    Py_buffer view;
    uint64_t mask;
    int rc = keymap_buffer(table, &view, &mask);
    Py_DECREF(table);
    if (rc < 0) goto done;
    keymap_insert((uint64_t *)view.buf, mask, ((uint64_t)check << 32) | id);
    PyBuffer_Release(&view);
    PyObject *more = PyNumber_Add(count, one_value);
    if (more == NULL || PyObject_SetAttr(d, s_keymap_count, more) < 0) {
        Py_XDECREF(more);
        goto done;
    }
    Py_DECREF(more);
    result = new_id;
    new_id = NULL;
done:
    Py_XDECREF(prefix);
    Py_XDECREF(part_id);
    Py_XDECREF(new_id);
    Py_XDECREF(next);
    Py_XDECREF(row);
    Py_XDECREF(pending);
    Py_XDECREF(cache);
    Py_XDECREF(generation);
    Py_XDECREF(count);
    Py_XDECREF(limit);
    return result;
}

static PyMethodDef methods[] = {
    {"take", (PyCFunction)(void (*)(void))take, METH_FASTCALL, take_doc},
    {"match", match, METH_O, match_doc},
    {"digest", digest8, METH_O, digest_doc},
    {"bloom_add", (PyCFunction)(void (*)(void))bloom_add, METH_FASTCALL, bloom_add_doc},
    {"bloom_maybe", (PyCFunction)(void (*)(void))bloom_maybe, METH_FASTCALL, bloom_maybe_doc},
    {"bloom_add_text", (PyCFunction)(void (*)(void))bloom_add_text, METH_FASTCALL, bloom_add_text_doc},
    {"keymap_ids", (PyCFunction)(void (*)(void))keymap_ids, METH_FASTCALL, keymap_ids_doc},
    {"keymap_grow", (PyCFunction)(void (*)(void))keymap_grow, METH_FASTCALL, keymap_grow_doc},
    {"keymap_new", (PyCFunction)(void (*)(void))keymap_new, METH_FASTCALL, keymap_new_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_plainlines", "The import's fast path for plain lines, compiled.", -1, methods,
};

PyMODINIT_FUNC PyInit__plainlines(void) {
    if ((one_value = PyLong_FromLong(1)) == NULL || (s_keymap = PyUnicode_InternFromString("keymap")) == NULL ||
        (s_keymap_count = PyUnicode_InternFromString("keymap_count")) == NULL ||
        (s_keymap_limit = PyUnicode_InternFromString("keymap_limit")) == NULL ||
        (s_next_id = PyUnicode_InternFromString("next_id")) == NULL ||
        (s_pending = PyUnicode_InternFromString("pending")) == NULL ||
        (s_cache = PyUnicode_InternFromString("cache")) == NULL ||
        (s_generation = PyUnicode_InternFromString("generation")) == NULL ||
        (s_prefix_of = PyUnicode_InternFromString("prefix_of")) == NULL ||
        (s_miss = PyUnicode_InternFromString("miss")) == NULL ||
        (s_remember = PyUnicode_InternFromString("_remember")) == NULL ||
        (s_grow_keymap = PyUnicode_InternFromString("_grow_keymap")) == NULL)
        return NULL;
    return PyModule_Create(&module);
}
