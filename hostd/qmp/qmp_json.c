/* JSON reader (see qmp_json.h). Recursive descent; the recursion is bounded
 * by JSON_MAX_DEPTH, every read by the end of the input. */
#include "qmp_json.h"

#include <errno.h>
#include <string.h>

struct parser {
    char *p;        /* next byte to read */
    char *end;
    struct json_doc *d;
};

static void skip_ws(struct parser *ps)
{
    while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r'))
        ps->p++;
}

static int new_node(struct parser *ps, enum json_type t)
{
    struct json_doc *d = ps->d;
    if (d->count >= d->cap)
        return -E2BIG;
    struct json_node *n = &d->n[d->count];
    memset(n, 0, sizeof(*n));
    n->type = t;
    n->next = JSON_NONE;
    n->child = JSON_NONE;
    return d->count++;
}

static int hex4(const char *s, unsigned *out)
{
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = s[i];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (unsigned)(c - 'A' + 10);
        else
            return -EINVAL;
    }
    *out = v;
    return 0;
}

/* UTF-8 of code point cp at w; returns bytes written (1..4). */
static size_t put_utf8(char *w, unsigned cp)
{
    if (cp < 0x80) {
        w[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        w[0] = (char)(0xc0 | (cp >> 6));
        w[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        w[0] = (char)(0xe0 | (cp >> 12));
        w[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        w[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    w[0] = (char)(0xf0 | (cp >> 18));
    w[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    w[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    w[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/* A string at ps->p (the opening quote), decoded in place: the writer never
 * overtakes the reader (\uXXXX: 6 bytes read, at most 3 written; a
 * surrogate pair: 12 read, 4 written), and the terminating NUL lands at
 * most on the closing quote. */
static int parse_string(struct parser *ps, const char **out, size_t *out_len)
{
    char *r = ps->p + 1, *w = r;
    char *start = w;
    for (;;) {
        if (r >= ps->end)
            return -EINVAL;
        char c = *r;
        if (c == '"')
            break;
        if ((unsigned char)c < 0x20)
            return -EINVAL; /* control characters must be escaped */
        if (c != '\\') {
            *w++ = *r++;
            continue;
        }
        if (ps->end - r < 2)
            return -EINVAL;
        char e = r[1];
        r += 2;
        switch (e) {
        case '"': *w++ = '"'; break;
        case '\\': *w++ = '\\'; break;
        case '/': *w++ = '/'; break;
        case 'b': *w++ = '\b'; break;
        case 'f': *w++ = '\f'; break;
        case 'n': *w++ = '\n'; break;
        case 'r': *w++ = '\r'; break;
        case 't': *w++ = '\t'; break;
        case 'u': {
            unsigned cp, lo;
            if (ps->end - r < 4 || hex4(r, &cp) < 0)
                return -EINVAL;
            r += 4;
            if (cp >= 0xd800 && cp <= 0xdbff) {
                if (ps->end - r < 6 || r[0] != '\\' || r[1] != 'u' || hex4(r + 2, &lo) < 0 || lo < 0xdc00 ||
                    lo > 0xdfff)
                    return -EINVAL;
                r += 6;
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
            } else if (cp >= 0xdc00 && cp <= 0xdfff) {
                return -EINVAL; /* a lone low surrogate */
            }
            if (cp == 0)
                return -EINVAL; /* strings are handed out NUL-terminated */
            w += put_utf8(w, cp);
            break;
        }
        default:
            return -EINVAL;
        }
    }
    *out_len = (size_t)(w - start);
    *w = '\0';
    *out = start;
    ps->p = r + 1;
    return 0;
}

static int parse_number(struct parser *ps, int node)
{
    char *s = ps->p;
    char *q = s;
    if (q < ps->end && *q == '-')
        q++;
    if (q >= ps->end || *q < '0' || *q > '9')
        return -EINVAL;
    if (*q == '0')
        q++;
    else
        while (q < ps->end && *q >= '0' && *q <= '9')
            q++;
    if (q < ps->end && *q == '.') {
        q++;
        if (q >= ps->end || *q < '0' || *q > '9')
            return -EINVAL;
        while (q < ps->end && *q >= '0' && *q <= '9')
            q++;
    }
    if (q < ps->end && (*q == 'e' || *q == 'E')) {
        q++;
        if (q < ps->end && (*q == '+' || *q == '-'))
            q++;
        if (q >= ps->end || *q < '0' || *q > '9')
            return -EINVAL;
        while (q < ps->end && *q >= '0' && *q <= '9')
            q++;
    }
    ps->d->n[node].str = s;
    ps->d->n[node].len = (size_t)(q - s);
    ps->p = q;
    return 0;
}

static int literal(struct parser *ps, const char *word)
{
    size_t n = strlen(word);
    if ((size_t)(ps->end - ps->p) < n || memcmp(ps->p, word, n) != 0)
        return -EINVAL;
    ps->p += n;
    return 0;
}

static int parse_value(struct parser *ps, int depth);

/* Elements of an array or members of an object, after the opening bracket. */
static int parse_list(struct parser *ps, int node, bool object, int depth)
{
    char close = object ? '}' : ']';
    int last = JSON_NONE;
    skip_ws(ps);
    if (ps->p < ps->end && *ps->p == close) {
        ps->p++;
        return 0;
    }
    for (;;) {
        const char *key = NULL;
        size_t key_len = 0;
        skip_ws(ps);
        if (object) {
            if (ps->p >= ps->end || *ps->p != '"')
                return -EINVAL;
            int rc = parse_string(ps, &key, &key_len);
            if (rc < 0)
                return rc;
            skip_ws(ps);
            if (ps->p >= ps->end || *ps->p != ':')
                return -EINVAL;
            ps->p++;
        }
        int child = parse_value(ps, depth + 1);
        if (child < 0)
            return child;
        ps->d->n[child].key = key;
        ps->d->n[child].key_len = key_len;
        if (last == JSON_NONE)
            ps->d->n[node].child = child;
        else
            ps->d->n[last].next = child;
        last = child;
        skip_ws(ps);
        if (ps->p >= ps->end)
            return -EINVAL;
        char c = *ps->p++;
        if (c == close)
            return 0;
        if (c != ',')
            return -EINVAL;
    }
}

/* One value; returns its node index or a negative errno. */
static int parse_value(struct parser *ps, int depth)
{
    if (depth > JSON_MAX_DEPTH)
        return -E2BIG;
    skip_ws(ps);
    if (ps->p >= ps->end)
        return -EINVAL;
    char c = *ps->p;
    int node, rc;
    switch (c) {
    case '{':
    case '[':
        node = new_node(ps, c == '{' ? JSON_OBJECT : JSON_ARRAY);
        if (node < 0)
            return node;
        ps->p++;
        rc = parse_list(ps, node, c == '{', depth);
        break;
    case '"':
        node = new_node(ps, JSON_STRING);
        if (node < 0)
            return node;
        rc = parse_string(ps, &ps->d->n[node].str, &ps->d->n[node].len);
        break;
    case 't':
    case 'f':
    case 'n':
        node = new_node(ps, c == 't' ? JSON_TRUE : c == 'f' ? JSON_FALSE : JSON_NULL);
        if (node < 0)
            return node;
        rc = literal(ps, c == 't' ? "true" : c == 'f' ? "false" : "null");
        break;
    default:
        node = new_node(ps, JSON_NUMBER);
        if (node < 0)
            return node;
        rc = parse_number(ps, node);
        break;
    }
    return rc < 0 ? rc : node;
}

int json_parse(char *text, size_t len, struct json_node *nodes, int cap, struct json_doc *doc)
{
    *doc = (struct json_doc){ .n = nodes, .count = 0, .cap = cap };
    struct parser ps = { .p = text, .end = text + len, .d = doc };
    int rc = parse_value(&ps, 0);
    if (rc < 0)
        return rc;
    skip_ws(&ps);
    return ps.p == ps.end ? 0 : -EINVAL;
}

int json_get(const struct json_doc *d, int obj, const char *key)
{
    if (obj < 0 || obj >= d->count || d->n[obj].type != JSON_OBJECT)
        return JSON_NONE;
    size_t kl = strlen(key);
    for (int i = d->n[obj].child; i != JSON_NONE; i = d->n[i].next)
        if (d->n[i].key_len == kl && memcmp(d->n[i].key, key, kl) == 0)
            return i;
    return JSON_NONE;
}

const char *json_str(const struct json_doc *d, int i)
{
    return i >= 0 && i < d->count && d->n[i].type == JSON_STRING ? d->n[i].str : NULL;
}

int json_bool(const struct json_doc *d, int i, bool *out)
{
    if (i < 0 || i >= d->count || (d->n[i].type != JSON_TRUE && d->n[i].type != JSON_FALSE))
        return -EINVAL;
    *out = d->n[i].type == JSON_TRUE;
    return 0;
}

int json_u64(const struct json_doc *d, int i, uint64_t *out)
{
    if (i < 0 || i >= d->count || d->n[i].type != JSON_NUMBER)
        return -EINVAL;
    const char *s = d->n[i].str;
    size_t n = d->n[i].len;
    uint64_t v = 0;
    if (n == 0)
        return -EINVAL;
    for (size_t k = 0; k < n; k++) {
        if (s[k] < '0' || s[k] > '9')
            return -EINVAL; /* negative, fraction or exponent */
        unsigned dg = (unsigned)(s[k] - '0');
        if (v > (UINT64_MAX - dg) / 10)
            return -EINVAL;
        v = v * 10 + dg;
    }
    *out = v;
    return 0;
}
