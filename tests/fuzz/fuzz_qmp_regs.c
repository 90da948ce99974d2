/* Fuzz the parser of `info registers -a` text, raw or built of tokens of
 * QEMU's dump (CPU#, the keys hostd reads and some it skips, hex digits,
 * spaces, line ends; fuzz_text.h). A success must return 1..max vCPUs; a
 * failure -EINVAL or -E2BIG with a detail. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_text.h"
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
    size_t len;
    char *exact = fuzz_text(data, size, tokens, sizeof(tokens) / sizeof(tokens[0]), &len);
    if (!exact)
        return 0;
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
