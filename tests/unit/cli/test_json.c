/* mdlmapctl's JSON writer: escaping (quotes, backslashes, control bytes,
 * invalid UTF-8), nesting, separators, 64-bit values as hex strings, and the
 * depth bound. Output is compared byte for byte. */
#include <stdlib.h>
#include <string.h>

#include "json_out.h"
#include "tap.h"

static char *buf;
static size_t len;

static struct jw open_writer(FILE **f)
{
    *f = open_memstream(&buf, &len);
    struct jw w;
    jw_init(&w, *f);
    return w;
}

static bool same(FILE *f, const char *want)
{
    fclose(f);
    bool ok = strcmp(buf, want) == 0;
    if (!ok)
        tap_diag("got  %s\n# want %s", buf, want);
    free(buf);
    return ok;
}

int main(void)
{
    FILE *f;
    struct jw w = open_writer(&f);
    jw_obj(&w, NULL);
    jw_str(&w, "s", "a\"b\\c\n\t\r\x01\x1f\x7f");
    jw_strn(&w, "utf8", "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", 9);
    jw_strn(&w, "bad", "\xff\xc3\x28\xe0\x80\x80\xed\xa0\x80\xc3", 10);
    jw_strn(&w, "nul", "a\0b", 3);
    jw_u64(&w, "u", UINT64_MAX);
    jw_i64(&w, "i", -1073741816);
    jw_bool(&w, "t", true);
    jw_hex64(&w, "h", 0xdeadbeefcafef00dull);
    jw_bytes_hex(&w, "x", (const uint8_t *)"\x00\xff", 2);
    jw_arr(&w, "a");
    jw_u64(&w, NULL, 1);
    jw_obj(&w, NULL);
    jw_end(&w);
    jw_str(&w, NULL, NULL);
    jw_end(&w);
    jw_end(&w);
    CHECK(same(f, "{\"s\":\"a\\\"b\\\\c\\n\\t\\r\\u0001\\u001f\\u007f\","
                  "\"utf8\":\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\","
                  "\"bad\":\"\\ufffd\\ufffd(\\ufffd\\ufffd\\ufffd\\ufffd\\ufffd\\ufffd\\ufffd\","
                  "\"nul\":\"a\\u0000b\",\"u\":18446744073709551615,\"i\":-1073741816,\"t\":true,"
                  "\"h\":\"0xdeadbeefcafef00d\",\"x\":\"00ff\",\"a\":[1,{},\"\"]}\n"));

    /* two documents: one per line */
    w = open_writer(&f);
    jw_obj(&w, NULL);
    jw_end(&w);
    jw_obj(&w, NULL);
    jw_str(&w, "k\"", "v");
    jw_end(&w);
    CHECK(same(f, "{}\n{\"k\\\"\":\"v\"}\n"));

    /* nesting beyond the bound: not written, flagged, still balanced */
    w = open_writer(&f);
    for (int i = 0; i < JSON_MAX_DEPTH + 3; i++)
        jw_arr(&w, NULL);
    jw_u64(&w, NULL, 7);
    for (int i = 0; i < JSON_MAX_DEPTH + 3; i++)
        jw_end(&w);
    char want[2 * JSON_MAX_DEPTH + 2];
    memset(want, '[', JSON_MAX_DEPTH);
    memset(want + JSON_MAX_DEPTH, ']', JSON_MAX_DEPTH);
    strcpy(want + 2 * JSON_MAX_DEPTH, "\n");
    CHECK(w.error);
    CHECK(same(f, want));
    return tap_done();
}
