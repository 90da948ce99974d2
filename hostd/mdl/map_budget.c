/* Derive the VMA budget from /proc. */
#include "map_budget.h"

#include <stdio.h>

#include "log.h"

#define DEFAULT_MAX_MAP_COUNT 65530ull
#define MIN_BUDGET 256ull

static uint64_t read_max_map_count(void)
{
    FILE *f = fopen("/proc/sys/vm/max_map_count", "r");
    unsigned long long v = 0;
    if (!f)
        return DEFAULT_MAX_MAP_COUNT;
    if (fscanf(f, "%llu", &v) != 1 || v == 0)
        v = DEFAULT_MAX_MAP_COUNT;
    fclose(f);
    return v;
}

static uint64_t count_own_vmas(void)
{
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f)
        return 0;
    uint64_t n = 0;
    int ch;
    while ((ch = fgetc(f)) != EOF)
        if (ch == '\n')
            n++;
    fclose(f);
    return n;
}

uint64_t map_budget_default_vmas(void)
{
    uint64_t max = read_max_map_count(), used = count_own_vmas();
    /* margin for everything but mappings, chiefly guest memory regions (one
     * VMA each; QEMU registers 1-2 per VM, at most 32): 8191 VMAs with the
     * default max_map_count, i.e. 1000 VMs of up to 8 regions. The budget is
     * fixed before any VM is added, so it cannot follow the VM count; past
     * the margin a region or map fails with ENOMEM (docs/architecture.md). */
    uint64_t margin = 4096 + max / 16;
    uint64_t budget = max > used + margin + MIN_BUDGET ? max - used - margin : MIN_BUDGET;
    log_info("mdl: VMA budget %llu (vm.max_map_count %llu, in use %llu, margin %llu)",
             (unsigned long long)budget, (unsigned long long)max, (unsigned long long)used,
             (unsigned long long)margin);
    return budget;
}
