/* Parser of `info registers -a` (see qmp_regs.h). Line by line: a "CPU#N"
 * line opens a vCPU, fields of the known keys fill it, everything else (the
 * segment, FPU and vector registers) is skipped. */
#include "qmp_regs.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

enum {
    F_RIP = 1 << 0,
    F_RSP = 1 << 1,
    F_RFL = 1 << 2,
    F_CR0 = 1 << 3,
    F_CR3 = 1 << 4,
    F_CR4 = 1 << 5,
    F_EFER = 1 << 6,
    F_CPL = 1 << 7,
};
#define F_NEEDED (F_RIP | F_RSP | F_CR3)

/* Field key -> where it goes. Both register widths name the same slot. */
static const struct field {
    const char *key;
    unsigned flag;
    size_t off;
    int base;
} fields[] = {
    { "RIP", F_RIP, offsetof(struct qmp_vcpu, rip), 16 },
    { "EIP", F_RIP, offsetof(struct qmp_vcpu, rip), 16 },
    { "RSP", F_RSP, offsetof(struct qmp_vcpu, rsp), 16 },
    { "ESP", F_RSP, offsetof(struct qmp_vcpu, rsp), 16 },
    { "RFL", F_RFL, offsetof(struct qmp_vcpu, rflags), 16 },
    { "EFL", F_RFL, offsetof(struct qmp_vcpu, rflags), 16 },
    { "CR0", F_CR0, offsetof(struct qmp_vcpu, cr0), 16 },
    { "CR3", F_CR3, offsetof(struct qmp_vcpu, cr3), 16 },
    { "CR4", F_CR4, offsetof(struct qmp_vcpu, cr4), 16 },
    { "EFER", F_EFER, offsetof(struct qmp_vcpu, efer), 16 },
    { "CPL", F_CPL, offsetof(struct qmp_vcpu, cpl), 10 },
};

/* Digits at s[0..n) in base (at most 16 hex or 10 decimal digits, so no
 * overflow); returns how many were read, 0 if none or too many. */
static size_t read_num(const char *s, size_t n, int base, uint64_t *out)
{
    uint64_t v = 0;
    size_t k = 0;
    for (; k < n; k++) {
        char c = s[k];
        unsigned d;
        if (c >= '0' && c <= '9')
            d = (unsigned)(c - '0');
        else if (base == 16 && c >= 'a' && c <= 'f')
            d = (unsigned)(c - 'a' + 10);
        else if (base == 16 && c >= 'A' && c <= 'F')
            d = (unsigned)(c - 'A' + 10);
        else
            break;
        v = v * (unsigned)base + d;
    }
    if (k == 0 || k > (base == 16 ? 16u : 10u))
        return 0;
    *out = v;
    return k;
}

static const char *missing_name(unsigned have)
{
    return !(have & F_RIP) ? "RIP/EIP" : !(have & F_RSP) ? "RSP/ESP" : "CR3";
}

/* The fields of one line s[0..n) into v; -EINVAL on a malformed value. */
static int parse_line(const char *s, size_t n, struct qmp_vcpu *v, unsigned *have, char *detail,
                      size_t detail_len)
{
    for (size_t i = 0; i < n;) {
        /* a field starts the line or follows a space */
        if (i > 0 && s[i - 1] != ' ') {
            i++;
            continue;
        }
        const struct field *f = NULL;
        size_t kl = 0;
        for (size_t k = 0; k < sizeof(fields) / sizeof(fields[0]); k++) {
            kl = strlen(fields[k].key);
            if (n - i > kl && memcmp(s + i, fields[k].key, kl) == 0 && s[i + kl] == '=') {
                f = &fields[k];
                break;
            }
        }
        if (!f) {
            i++;
            continue;
        }
        uint64_t val;
        size_t used = read_num(s + i + kl + 1, n - i - kl - 1, f->base, &val);
        if (!used) {
            snprintf(detail, detail_len, "CPU#%u: malformed %s value", v->index, f->key);
            return -EINVAL;
        }
        if (f->flag == F_CPL) {
            if (val > 3) {
                snprintf(detail, detail_len, "CPU#%u: CPL %llu", v->index, (unsigned long long)val);
                return -EINVAL;
            }
            v->cpl = (uint32_t)val;
        } else {
            memcpy((char *)v + f->off, &val, sizeof(val));
        }
        *have |= f->flag;
        i += kl + 1 + used;
    }
    return 0;
}

int qmp_regs_parse(const char *text, size_t len, struct qmp_vcpu *out, unsigned max, char *detail,
                   size_t detail_len)
{
    unsigned count = 0, have = 0;
    struct qmp_vcpu *cur = NULL;
    size_t pos = 0;
    while (pos < len) {
        const char *line = text + pos;
        const char *nl = memchr(line, '\n', len - pos);
        size_t n = nl ? (size_t)(nl - line) : len - pos;
        pos += n + (nl ? 1 : 0);
        if (n && line[n - 1] == '\r')
            n--;
        if (n >= 4 && memcmp(line, "CPU#", 4) == 0) {
            if (cur && (have & F_NEEDED) != F_NEEDED) {
                snprintf(detail, detail_len, "CPU#%u: no %s", cur->index, missing_name(have));
                return -EINVAL;
            }
            uint64_t idx;
            size_t used = read_num(line + 4, n - 4, 10, &idx);
            if (!used || used != n - 4 || idx > UINT32_MAX) {
                snprintf(detail, detail_len, "malformed vCPU header");
                return -EINVAL;
            }
            if (count == max) {
                snprintf(detail, detail_len, "more than %u vCPUs", max);
                return -E2BIG;
            }
            cur = &out[count++];
            memset(cur, 0, sizeof(*cur));
            cur->index = (uint32_t)idx;
            have = 0;
            continue;
        }
        if (!cur)
            continue; /* text before the first vCPU (a blank line) */
        int rc = parse_line(line, n, cur, &have, detail, detail_len);
        if (rc < 0)
            return rc;
    }
    if (!cur) {
        snprintf(detail, detail_len, "no vCPU in the register dump");
        return -EINVAL;
    }
    if ((have & F_NEEDED) != F_NEEDED) {
        snprintf(detail, detail_len, "CPU#%u: no %s", cur->index, missing_name(have));
        return -EINVAL;
    }
    return (int)count;
}
