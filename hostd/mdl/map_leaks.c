/* Leak record ring. */
#include "map_leaks.h"

void map_leaks_add(struct map_leaks *l, const struct map_leak *rec)
{
    l->ring[l->total % MAP_LEAK_RING] = *rec;
    l->total++;
}

unsigned map_leaks_count(const struct map_leaks *l)
{
    return l->total < MAP_LEAK_RING ? (unsigned)l->total : MAP_LEAK_RING;
}

const struct map_leak *map_leaks_get(const struct map_leaks *l, unsigned i)
{
    unsigned n = map_leaks_count(l);
    if (i >= n)
        return 0;
    uint64_t first = l->total - n;
    return &l->ring[(first + i) % MAP_LEAK_RING];
}
