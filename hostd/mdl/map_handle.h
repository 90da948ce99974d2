/* Opaque 64-bit handles for MDLs and mappings: unpredictable to guests and
 * never reused within hostd's lifetime (a keyed bijection of a counter). */
#pragma once
#include <stdint.h>

struct map_handle_gen {
    uint64_t key0, key1;
    uint64_t counter;
};

void map_handle_gen_init(struct map_handle_gen *g);
/* Next handle; never 0, never a value returned before by this generator. */
uint64_t map_handle_next(struct map_handle_gen *g);
