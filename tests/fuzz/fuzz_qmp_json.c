/* Fuzz the QMP layer's JSON reader, on text as QEMU would send it or built
 * of JSON tokens (brackets, quotes, escapes, literals, digits; fuzz_text.h). On success every node index must be in range and every string
 * NUL-terminated inside the input; the accessors must hold on every node. */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_text.h"
#include "qmp_json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const tokens[] = {
    "{", "}", "[", "]", "\"", ":", ",", " ", "\\", "\\u", "\\ud83d", "\\ude00", "00e9", "n", "\\\"",
    "true", "false", "null", "0", "1", "-", ".", "e", "9", "\"return\"", "\"id\"", "\"event\"", "\r\n",
    "\"QMP\"", "\"error\"", "\"desc\"", "x",
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!size)
        return 0;
    size_t len;
    char *exact = fuzz_text(data, size, tokens, sizeof(tokens) / sizeof(tokens[0]), &len);
    if (!exact)
        return 0;
    static struct json_node nodes[512];
    int cap_nodes = 1 + (int)(size % 512);
    struct json_doc d;
    int rc = json_parse(exact, len, nodes, cap_nodes, &d);
    if (rc != 0 && rc != -EINVAL && rc != -E2BIG)
        __builtin_trap();
    if (rc == 0) {
        if (d.count < 1 || d.count > cap_nodes)
            __builtin_trap();
        for (int i = 0; i < d.count; i++) {
            const struct json_node *n = &d.n[i];
            if (n->next != JSON_NONE && (n->next <= i || n->next >= d.count))
                __builtin_trap();
            if (n->child != JSON_NONE && (n->child <= i || n->child >= d.count))
                __builtin_trap();
            if (n->type == JSON_STRING &&
                (n->str < exact || n->str + n->len >= exact + len || n->str[n->len] != '\0' ||
                 strlen(n->str) != n->len))
                __builtin_trap();
            if (n->key && (n->key < exact || n->key + n->key_len >= exact + len || n->key[n->key_len] != '\0'))
                __builtin_trap();
            bool b;
            uint64_t u;
            if ((json_bool(&d, i, &b) == 0) != (n->type == JSON_TRUE || n->type == JSON_FALSE))
                __builtin_trap();
            if (json_u64(&d, i, &u) == 0 && n->type != JSON_NUMBER)
                __builtin_trap();
            if ((json_str(&d, i) != NULL) != (n->type == JSON_STRING))
                __builtin_trap();
            json_get(&d, i, "return");
            json_get(&d, i, "id");
        }
    }
    free(exact);
    return 0;
}
