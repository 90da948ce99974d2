/* A small JSON reader for what QMP sends: objects, arrays, strings with
 * escapes (\uXXXX and surrogate pairs to UTF-8), numbers, true/false/null.
 * QEMU is untrusted: the input is bounded by its length, the tree by a node
 * limit and a nesting depth, and nothing is read past len. Strings are
 * decoded in place (an escape never decodes longer than it is written), so
 * the text must be writable and outlive the document. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum json_type { JSON_NULL, JSON_FALSE, JSON_TRUE, JSON_NUMBER, JSON_STRING, JSON_ARRAY, JSON_OBJECT };

#define JSON_NONE (-1) /* "no node": a missing member, the end of a list */

struct json_node {
    enum json_type type;
    int next;          /* next element of the parent array/object, or JSON_NONE */
    int child;         /* first element (arrays, objects), or JSON_NONE */
    const char *key;   /* member name (object members), NUL-terminated, decoded */
    size_t key_len;
    const char *str;   /* strings: decoded and NUL-terminated; numbers: their text (not terminated) */
    size_t len;
};

struct json_doc {
    struct json_node *n; /* n[0] is the root */
    int count;
    int cap;             /* nodes the caller provided */
};

#define JSON_MAX_DEPTH 32

/* Parse text[0..len) (one value, whitespace around it allowed) into doc,
 * using the caller's nodes[cap]. 0; -EINVAL for malformed JSON (trailing
 * bytes included), -E2BIG for more than cap nodes or nesting beyond
 * JSON_MAX_DEPTH. */
int json_parse(char *text, size_t len, struct json_node *nodes, int cap, struct json_doc *doc);

/* The member key of object node obj, or JSON_NONE (also when obj is not an object). */
int json_get(const struct json_doc *d, int obj, const char *key);
/* The string of node i, or NULL if it is not a string. */
const char *json_str(const struct json_doc *d, int i);
/* Node i as a bool: 0 and *out, or -EINVAL if it is not true/false. */
int json_bool(const struct json_doc *d, int i, bool *out);
/* Node i as a non-negative integer that fits 64 bits: 0 or -EINVAL. */
int json_u64(const struct json_doc *d, int i, uint64_t *out);
