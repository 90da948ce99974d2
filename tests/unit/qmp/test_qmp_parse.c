/* The QMP layer's parsers: the JSON reader (values, escapes, bounds,
 * malformed input) and the `info registers -a` parser on real QEMU 7.2
 * answers (tests/unit/qmp/fixtures, argv[1] is that folder) and on damaged
 * copies of them. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qmp_json.h"
#include "qmp_regs.h"
#include "tap.h"

static struct json_node nodes[256];

/* Parse a copy of s (the reader decodes in place). */
static int parse(const char *s, struct json_doc *d, char *buf, size_t cap)
{
    size_t n = strlen(s);
    if (n >= cap)
        return -ENOSPC;
    memcpy(buf, s, n + 1);
    return json_parse(buf, n, nodes, (int)(sizeof(nodes) / sizeof(nodes[0])), d);
}

static void test_json_values(void)
{
    char buf[512];
    struct json_doc d;
    CHECK_EQ(parse(" {\"return\": {\"status\": \"paused\", \"singlestep\": false, \"running\": false},"
                   " \"id\": 7}\r", &d, buf, sizeof(buf)), 0);
    int ret = json_get(&d, 0, "return");
    CHECK(ret != JSON_NONE);
    CHECK(json_str(&d, json_get(&d, ret, "status")) && !strcmp(json_str(&d, json_get(&d, ret, "status")), "paused"));
    bool b = true;
    CHECK_EQ(json_bool(&d, json_get(&d, ret, "running"), &b), 0);
    CHECK(!b);
    uint64_t v = 0;
    CHECK_EQ(json_u64(&d, json_get(&d, 0, "id"), &v), 0);
    CHECK_EQ(v, 7);
    CHECK_EQ(json_get(&d, 0, "error"), JSON_NONE);
    CHECK_EQ(json_get(&d, ret, "missing"), JSON_NONE);
    CHECK(json_str(&d, json_get(&d, 0, "id")) == NULL); /* a number is not a string */
    CHECK(json_bool(&d, json_get(&d, 0, "id"), &b) < 0);

    /* escapes decode in place; \u to UTF-8 (two, three and four bytes) */
    CHECK_EQ(parse("[\"a\\\"b\\\\c\\/d\\n\\r\\t\\b\\f\", \"\\u00e9\\u20ac\\ud83d\\ude00\"]", &d, buf, sizeof(buf)), 0);
    int s1 = d.n[0].child, s2 = d.n[s1].next;
    CHECK(json_str(&d, s1) && !strcmp(json_str(&d, s1), "a\"b\\c/d\n\r\t\b\f"));
    CHECK(json_str(&d, s2) && !strcmp(json_str(&d, s2), "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80"));
    CHECK_EQ(d.n[s2].len, 9);
    CHECK_EQ(d.n[s2].next, JSON_NONE);

    /* numbers, literals, empty containers */
    CHECK_EQ(parse("[0, -1, 1.5e3, 18446744073709551615, 18446744073709551616, true, null, {}, []]", &d, buf,
                   sizeof(buf)), 0);
    int e = d.n[0].child;
    CHECK_EQ(json_u64(&d, e, &v), 0);
    CHECK_EQ(v, 0);
    e = d.n[e].next;
    CHECK(json_u64(&d, e, &v) < 0); /* negative */
    e = d.n[e].next;
    CHECK(json_u64(&d, e, &v) < 0); /* not an integer */
    e = d.n[e].next;
    CHECK_EQ(json_u64(&d, e, &v), 0);
    CHECK(v == UINT64_MAX);
    e = d.n[e].next;
    CHECK(json_u64(&d, e, &v) < 0); /* overflows */
    e = d.n[e].next;
    CHECK_EQ(d.n[e].type, JSON_TRUE);
    e = d.n[e].next;
    CHECK_EQ(d.n[e].type, JSON_NULL);
    e = d.n[e].next;
    CHECK_EQ(d.n[e].type, JSON_OBJECT);
    CHECK_EQ(d.n[e].child, JSON_NONE);
    e = d.n[e].next;
    CHECK_EQ(d.n[e].type, JSON_ARRAY);
}

static void test_json_malformed(void)
{
    static const char *bad[] = {
        "", " ", "{", "}", "[1,]", "{\"a\"}", "{\"a\":}", "{\"a\":1,}", "{a:1}", "\"abc", "\"a\\x\"",
        "\"\\u12\"", "\"\\ud800\"", "\"\\udc00\"", "\"\\ud800\\u0041\"", "\"\\u0000\"", "\"a\tb\"", "tru",
        "nul", "-", "01", "1.", "1e", "+1", "{} {}", "[1] x", "\"x\"\"y\"", "{\"a\":1 \"b\":2}",
    };
    char buf[128];
    struct json_doc d;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        tap_check(parse(bad[i], &d, buf, sizeof(buf)) == -EINVAL, "malformed JSON refused: '%s'", bad[i]);
    /* a truncated copy of a valid message is refused at every length */
    const char *good = "{\"return\": \"\\r\\nCPU#0\\u00e9\", \"id\": 12}";
    unsigned refused = 0;
    for (size_t n = 0; n < strlen(good); n++) {
        memcpy(buf, good, n);
        refused += json_parse(buf, n, nodes, 256, &d) < 0;
    }
    CHECK_EQ(refused, strlen(good));
}

static void test_json_bounds(void)
{
    char buf[4096];
    struct json_doc d;
    /* depth: JSON_MAX_DEPTH nested arrays inside the root are fine, one more is not */
    for (int depth = JSON_MAX_DEPTH; depth <= JSON_MAX_DEPTH + 1; depth++) {
        int k = 0;
        for (int i = 0; i <= depth; i++)
            buf[k++] = '[';
        for (int i = 0; i <= depth; i++)
            buf[k++] = ']';
        tap_check(json_parse(buf, (size_t)k, nodes, 256, &d) == (depth == JSON_MAX_DEPTH ? 0 : -E2BIG),
                  "nesting %d below the root: %s", depth, depth == JSON_MAX_DEPTH ? "read" : "refused");
    }
    /* nodes: the caller's array is the limit */
    CHECK_EQ(json_parse(memcpy(buf, "[1,2,3]", 7), 7, nodes, 4, &d), 0);
    CHECK_EQ(json_parse(memcpy(buf, "[1,2,3]", 7), 7, nodes, 3, &d), -E2BIG);
    /* the input's length is the end: bytes after it are never read */
    memcpy(buf, "[1]]]]", 6);
    CHECK_EQ(json_parse(buf, 3, nodes, 256, &d), 0);
    memcpy(buf, "\"ab\"", 4);
    CHECK_EQ(json_parse(buf, 3, nodes, 256, &d), -EINVAL);
}

/* The "return" string of a fixture file (decoded), or NULL. */
static char *fixture(const char *dir, const char *name, size_t *len, char **keep)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    if (!tap_check(f != NULL, "fixture %s opens", name))
        return NULL;
    char *buf = calloc(1, 65536);
    size_t n = fread(buf, 1, 65535, f);
    fclose(f);
    static struct json_node fx[64];
    struct json_doc d;
    if (!tap_check(json_parse(buf, n, fx, 64, &d) == 0, "fixture %s is one JSON message", name)) {
        free(buf);
        return NULL;
    }
    int r = json_get(&d, 0, "return");
    if (!tap_check(json_str(&d, r) != NULL, "fixture %s returns a string", name)) {
        free(buf);
        return NULL;
    }
    *len = d.n[r].len;
    *keep = buf;
    return (char *)d.n[r].str;
}

/* The dump of fixture name parsed into v[4]; true when it has the 2 vCPUs
 * every fixture has (*keep, to free, holds *text either way). */
static bool two_vcpus(const char *dir, const char *name, struct qmp_vcpu *v, char **text, size_t *len, char **keep)
{
    *keep = NULL;
    *text = fixture(dir, name, len, keep);
    if (!*text)
        return false;
    char why[128] = "";
    int n = qmp_regs_parse(*text, *len, v, 4, why, sizeof(why));
    return tap_check(n == 2, "%s: 2 vCPUs (%d: %s)", name, n, why);
}

static void test_regs_reset(const char *dir)
{
    size_t len;
    char *keep, *text, why[128];
    struct qmp_vcpu v[4];
    if (!two_vcpus(dir, "info_registers_reset.json", v, &text, &len, &keep))
        goto out;
    for (int i = 0; i < 2; i++) {
        CHECK_EQ(v[i].index, i);
        CHECK_EQ(v[i].rip, 0xfff0);
        CHECK_EQ(v[i].rsp, 0);
        CHECK_EQ(v[i].rflags, 0x2);
        CHECK_EQ(v[i].cr0, 0x60000010);
        CHECK_EQ(v[i].cr3, 0);
        CHECK_EQ(v[i].cr4, 0);
        CHECK_EQ(v[i].efer, 0);
        CHECK_EQ(v[i].cpl, 0);
    }
    /* one vCPU more than the caller has room for */
    CHECK_EQ(qmp_regs_parse(text, len, v, 1, why, sizeof(why)), -E2BIG);
out:
    free(keep);
}

static void test_regs_long_mode(const char *dir)
{
    size_t len;
    char *keep, *text, why[128] = "";
    struct qmp_vcpu v[4];
    if (!two_vcpus(dir, "info_registers_long_mode.json", v, &text, &len, &keep))
        goto out;
    /* CPU#0 in long mode: the 64-bit names */
    CHECK_EQ(v[0].index, 0);
    CHECK_EQ(v[0].rip, 0x4f3a4d8);
    CHECK_EQ(v[0].rsp, 0x4f57dc0);
    CHECK_EQ(v[0].rflags, 0x6);
    CHECK_EQ(v[0].cr0, 0x80050033);
    CHECK_EQ(v[0].cr3, 0x4f77000);
    CHECK_EQ(v[0].cr4, 0x20);
    CHECK_EQ(v[0].efer, 0x500);
    CHECK_EQ(v[0].cpl, 0);
    /* CPU#1 in 32-bit protected mode: the 32-bit names fill the same fields */
    CHECK_EQ(v[1].index, 1);
    CHECK_EQ(v[1].rip, 0xfd09a);
    CHECK_EQ(v[1].rsp, 0x6c5c);
    CHECK_EQ(v[1].cr0, 0x11);
    CHECK_EQ(v[1].cr3, 0);

    /* damaged copies: every prefix parses or is refused, never read beyond */
    unsigned ok = 0, refused = 0;
    for (size_t cut = 0; cut < len; cut++) {
        char *copy = malloc(cut ? cut : 1);
        memcpy(copy, text, cut);
        int r = qmp_regs_parse(copy, cut, v, 4, why, sizeof(why));
        ok += r > 0;
        refused += r == -EINVAL;
        free(copy);
    }
    tap_check(ok + refused == len && ok > 0 && refused > 0, "prefixes: %u parsed, %u refused of %zu", ok, refused,
              len);

    /* a field without digits, an oversized value, a CPL out of range, a
     * vCPU without CR3, a header without a number */
    static const char *bad[] = {
        "CPU#0\nRIP= RSP=0 CR3=0\n",
        "CPU#0\nRIP=00000000000000001 RSP=0 CR3=0\n",
        "CPU#0\nRIP=0 RSP=0 CR3=0 CPL=4\n",
        "CPU#0\nRIP=0 RSP=0\nCPU#1\nRIP=0 RSP=0 CR3=0\n",
        "CPU#\nRIP=0 RSP=0 CR3=0\n",
        "CPU#0x\nRIP=0 RSP=0 CR3=0\n",
        "RIP=0 RSP=0 CR3=0\n",
        "",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        tap_check(qmp_regs_parse(bad[i], strlen(bad[i]), v, 4, why, sizeof(why)) == -EINVAL,
                  "bad dump %zu refused (%s)", i, why);
    /* fields are found only at the start of a token (XCR3=, DR3= are not CR3=) */
    const char *t = "CPU#3\r\nRIP=1 XRSP=5 RSP=2 XCR3=7 CR3=abc\r\n";
    CHECK_EQ(qmp_regs_parse(t, strlen(t), v, 4, why, sizeof(why)), 1);
    CHECK_EQ(v[0].index, 3);
    CHECK_EQ(v[0].rsp, 2);
    CHECK_EQ(v[0].cr3, 0xabc);
out:
    free(keep);
}

int main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : "tests/unit/qmp/fixtures";
    test_json_values();
    test_json_malformed();
    test_json_bounds();
    test_regs_reset(dir);
    test_regs_long_mode(dir);
    return tap_done();
}
