/* Open-addressing hash table from 64-bit handle (nonzero) to pointer. */
#pragma once
#include <stddef.h>
#include <stdint.h>

struct map_table {
    struct map_table_slot { uint64_t key; void *val; } *slots;
    size_t cap;   /* power of two, or 0 */
    size_t n;     /* live entries */
    size_t used;  /* live + tombstones */
};

void map_table_init(struct map_table *t);
void map_table_free(struct map_table *t);
int map_table_put(struct map_table *t, uint64_t key, void *val); /* 0, -EEXIST, -ENOMEM, -EINVAL */
void *map_table_get(const struct map_table *t, uint64_t key);
void *map_table_del(struct map_table *t, uint64_t key);         /* removed value or NULL */
