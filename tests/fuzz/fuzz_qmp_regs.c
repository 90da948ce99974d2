/* Fuzz the parser of `info registers -a` text. Even first byte: the rest
 * is the text; odd: each byte picks a token of QEMU's dump (CPU#, the keys
 * hostd reads and some it skips, hex digits, spaces, line ends), so random
 * inputs build plausible dumps. A success must return 1..max vCPUs; a
 * failure -EINVAL or -E2BIG with a detail. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "qmp_regs.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const tokens[] = {
    "CPU#", "0", "1", "7", "f", "A", "=", " ", "\r\n", "\n", "RIP=", "EIP=", "RSP=", "ESP=", "CR0=", "CR3=",
    "CR4=", "EFER=", "RFL=", "EFL=", "CPL=", "DR3=", "R8 =", "CS =", "ffffffff81000000", "0000fff0", "x",
    "[---Z-P-]", "XMM00=", "00000000000000000",
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!size)
        return 0;
    char *text = malloc(size * 20 + 1);
    if (!text)
        return 0;
    size_t len = 0;
    if (data[0] & 1) {
        for (size_t i = 1; i < size; i++) {
            const char *t = tokens[data[i] % (sizeof(tokens) / sizeof(tokens[0]))];
            size_t n = strlen(t);
            memcpy(text + len, t, n);
            len += n;
        }
    } else {
        len = size - 1;
        memcpy(text, data + 1, len);
    }
    char *exact = malloc(len ? len : 1);
    if (!exact) {
        free(text);
        return 0;
    }
    memcpy(exact, text, len);
    free(text);
    struct qmp_vcpu v[8];
    char detail[128] = "";
    unsigned max = 1 + (unsigned)(size % 8);
    int n = qmp_regs_parse(exact, len, v, max, detail, sizeof(detail));
    if (n > 0) {
        if ((unsigned)n > max)
            __builtin_trap();
        for (int i = 0; i < n; i++)
            if (v[i].cpl > 3)
                __builtin_trap();
    } else if ((n != -EINVAL && n != -E2BIG) || !detail[0]) {
        __builtin_trap();
    }
    free(exact);
    return 0;
}
