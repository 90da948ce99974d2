/* Streaming JSON writer (mdlmapctl --json). */
#include "json_out.h"

#include <inttypes.h>
#include <string.h>

void jw_init(struct jw *w, FILE *f)
{
    *w = (struct jw){ .f = f };
}

static void put_escaped(FILE *f, const unsigned char *s, size_t n)
{
    fputc('"', f);
    for (size_t i = 0; i < n;) {
        unsigned c = s[i];
        if (c == '"' || c == '\\') {
            fputc('\\', f);
            fputc((int)c, f);
            i++;
        } else if (c < 0x20 || c == 0x7f) {
            const char *e = c == '\n' ? "\\n" : c == '\t' ? "\\t" : c == '\r' ? "\\r" : NULL;
            if (e)
                fputs(e, f);
            else
                fprintf(f, "\\u%04x", c);
            i++;
        } else if (c < 0x80) {
            fputc((int)c, f);
            i++;
        } else {
            /* a well-formed UTF-8 sequence is copied; anything else is U+FFFD */
            size_t len = c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3 : c >= 0xf0 && c <= 0xf4 ? 4 : 0;
            bool ok = len && i + len <= n;
            for (size_t k = 1; ok && k < len; k++)
                ok = (s[i + k] & 0xc0) == 0x80;
            if (ok && len == 3) /* no overlongs, no surrogates */
                ok = !(c == 0xe0 && s[i + 1] < 0xa0) && !(c == 0xed && s[i + 1] >= 0xa0);
            if (ok && len == 4) /* no overlongs, nothing above U+10FFFF */
                ok = !(c == 0xf0 && s[i + 1] < 0x90) && !(c == 0xf4 && s[i + 1] >= 0x90);
            if (ok) {
                fwrite(s + i, 1, len, f);
                i += len;
            } else {
                fputs("\\ufffd", f);
                i++;
            }
        }
    }
    fputc('"', f);
}

/* Separator and key before a value; false when nesting is too deep. */
static bool member(struct jw *w, const char *key)
{
    if (w->depth > JSON_MAX_DEPTH) {
        w->error = true;
        return false;
    }
    if (w->comma[w->depth])
        fputc(',', w->f);
    w->comma[w->depth] = true;
    if (key) {
        put_escaped(w->f, (const unsigned char *)key, strlen(key));
        fputc(':', w->f);
    }
    return true;
}

static void open_(struct jw *w, const char *key, char open, char close)
{
    if (w->depth >= JSON_MAX_DEPTH || !member(w, key)) {
        w->error = true;
        w->depth++; /* skipped, but jw_end still balances */
        return;
    }
    fputc(open, w->f);
    w->closer[w->depth++] = close;
    w->comma[w->depth] = false;
}

void jw_obj(struct jw *w, const char *key)
{
    open_(w, key, '{', '}');
}

void jw_arr(struct jw *w, const char *key)
{
    open_(w, key, '[', ']');
}

void jw_end(struct jw *w)
{
    if (!w->depth)
        return;
    w->depth--;
    if (w->depth < JSON_MAX_DEPTH)
        fputc(w->closer[w->depth], w->f);
    if (!w->depth) {
        fputc('\n', w->f);
        fflush(w->f);
        w->comma[0] = false;
    }
}

void jw_strn(struct jw *w, const char *key, const char *s, size_t n)
{
    if (member(w, key))
        put_escaped(w->f, (const unsigned char *)(s ? s : ""), s ? n : 0);
}

void jw_str(struct jw *w, const char *key, const char *s)
{
    jw_strn(w, key, s, s ? strlen(s) : 0);
}

void jw_u64(struct jw *w, const char *key, uint64_t v)
{
    if (member(w, key))
        fprintf(w->f, "%" PRIu64, v);
}

void jw_i64(struct jw *w, const char *key, int64_t v)
{
    if (member(w, key))
        fprintf(w->f, "%" PRId64, v);
}

void jw_bool(struct jw *w, const char *key, bool v)
{
    if (member(w, key))
        fputs(v ? "true" : "false", w->f);
}

void jw_hex64(struct jw *w, const char *key, uint64_t v)
{
    if (member(w, key))
        fprintf(w->f, "\"0x%" PRIx64 "\"", v);
}

void jw_bytes_hex(struct jw *w, const char *key, const uint8_t *p, size_t n)
{
    if (!member(w, key))
        return;
    fputc('"', w->f);
    for (size_t i = 0; i < n; i++)
        fprintf(w->f, "%02x", p[i]);
    fputc('"', w->f);
}
