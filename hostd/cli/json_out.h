/* A small streaming JSON writer for mdlmapctl --json: objects, arrays,
 * strings (escaped: quote, backslash, control characters, and bytes that are
 * not valid UTF-8 become U+FFFD, so the output is always valid JSON), numbers
 * and booleans. Nesting is bounded (JSON_MAX_DEPTH); deeper values are not
 * written and set the error flag. 64-bit handles and addresses are written
 * as "0x..." strings (jw_hex64): JSON readers keep only 53 bits of a number. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define JSON_MAX_DEPTH 16

struct jw {
    FILE *f;
    unsigned depth;
    bool comma[JSON_MAX_DEPTH + 1]; /* a value was written at this level */
    char closer[JSON_MAX_DEPTH];    /* '}' or ']' of each open level */
    bool error;
};

void jw_init(struct jw *w, FILE *f);
/* key: the member name inside an object, NULL inside an array or at the top. */
void jw_obj(struct jw *w, const char *key);
void jw_arr(struct jw *w, const char *key);
/* Close the innermost object or array; at the top level a newline follows
 * (one JSON document per line) and the stream is flushed. */
void jw_end(struct jw *w);
void jw_str(struct jw *w, const char *key, const char *s);
void jw_strn(struct jw *w, const char *key, const char *s, size_t n);
void jw_u64(struct jw *w, const char *key, uint64_t v);
void jw_i64(struct jw *w, const char *key, int64_t v);
void jw_bool(struct jw *w, const char *key, bool v);
void jw_hex64(struct jw *w, const char *key, uint64_t v);
/* Bytes as a string of hex digits ("00ff..."). */
void jw_bytes_hex(struct jw *w, const char *key, const uint8_t *p, size_t n);
