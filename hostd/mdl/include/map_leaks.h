/* Bounded ring of leak records (R12): MDLs a connection left locked (0x76
 * style) or mapped (0xCB style) when it went away. Each VM has its own ring,
 * so one guest's leaks cannot push another VM's records out. */
#pragma once
#include <stdbool.h>
#include <stdint.h>

#define MAP_LEAK_RING 16   /* records kept per VM */

struct map_leak {
    uint64_t seq;     /* engine-wide order of the records (1, 2, ...) */
    char vm_name[64];
    uint64_t conn_id;
    uint64_t mdl_handle;
    uint64_t map_handle;
    uint32_t page_count;
    char reason[64];
    bool was_mapped;
};

struct map_leaks {
    struct map_leak ring[MAP_LEAK_RING];
    uint64_t total;   /* records ever added; ring holds the last MAP_LEAK_RING */
};

void map_leaks_add(struct map_leaks *l, const struct map_leak *rec);
/* Number of records held (<= MAP_LEAK_RING); i = 0 is the oldest. */
unsigned map_leaks_count(const struct map_leaks *l);
const struct map_leak *map_leaks_get(const struct map_leaks *l, unsigned i);
