/* vCPU registers from the HMP text of `info registers -a` (QEMU 7.2,
 * target/i386 x86_cpu_dump_state): a "CPU#N" line per vCPU, then lines of
 * KEY=HEX fields. Long mode prints RAX=.. RIP=.. RFL=.., other modes EAX=..
 * EIP=.. EFL=..; both forms are read (32-bit values zero-extended). The
 * text comes from QEMU and is untrusted: every field is bounds-checked. */
#pragma once
#include <stddef.h>
#include <stdint.h>

#define QMP_MAX_VCPUS 1024 /* vCPUs read from one dump; more is refused */

struct qmp_vcpu {
    uint32_t index;    /* N of "CPU#N" */
    uint64_t rip, rsp, rflags;
    uint64_t cr0, cr3, cr4, efer;
    uint32_t cpl;
};

/* Parse text[0..len) (need not be NUL-terminated) into out[max]. Returns the
 * number of vCPUs (>= 1), or -EINVAL (detail says why: no CPU, a vCPU
 * without RIP/EIP, RSP/ESP or CR3, a malformed value), -E2BIG (more than max). */
int qmp_regs_parse(const char *text, size_t len, struct qmp_vcpu *out, unsigned max, char *detail,
                   size_t detail_len);
