/* Handle table: linear probing with tombstones, grown at 50% occupancy. */
#include "map_table.h"

#include <errno.h>
#include <stdlib.h>

#define TOMBSTONE ((void *)&tombstone_marker)
static const char tombstone_marker;

void map_table_init(struct map_table *t)
{
    t->slots = NULL;
    t->cap = t->n = t->used = 0;
}

void map_table_free(struct map_table *t)
{
    free(t->slots);
    map_table_init(t);
}

static size_t slot_of(uint64_t key, size_t cap)
{
    key ^= key >> 29;
    key *= 0xbf58476d1ce4e5b9ull;
    key ^= key >> 32;
    return (size_t)key & (cap - 1);
}

static int grow(struct map_table *t)
{
    size_t cap = t->cap ? t->cap * 2 : 64;
    if (t->n * 4 < t->cap) /* mostly tombstones: rehash at the same size */
        cap = t->cap;
    struct map_table_slot *s = calloc(cap, sizeof(*s));
    if (!s)
        return -ENOMEM;
    for (size_t i = 0; i < t->cap; i++) {
        if (!t->slots[i].key || t->slots[i].val == TOMBSTONE)
            continue;
        size_t j = slot_of(t->slots[i].key, cap);
        while (s[j].key)
            j = (j + 1) & (cap - 1);
        s[j] = t->slots[i];
    }
    free(t->slots);
    t->slots = s;
    t->cap = cap;
    t->used = t->n;
    return 0;
}

int map_table_put(struct map_table *t, uint64_t key, void *val)
{
    if (!key || !val)
        return -EINVAL;
    if (map_table_get(t, key))
        return -EEXIST;
    if ((t->used + 1) * 2 > t->cap) {
        int rc = grow(t);
        if (rc < 0)
            return rc;
    }
    size_t j = slot_of(key, t->cap);
    while (t->slots[j].key && t->slots[j].val != TOMBSTONE)
        j = (j + 1) & (t->cap - 1);
    if (!t->slots[j].key)
        t->used++;
    t->slots[j].key = key;
    t->slots[j].val = val;
    t->n++;
    return 0;
}

static struct map_table_slot *find(const struct map_table *t, uint64_t key)
{
    if (!t->cap || !key)
        return NULL;
    size_t j = slot_of(key, t->cap);
    while (t->slots[j].key) {
        if (t->slots[j].key == key && t->slots[j].val != TOMBSTONE)
            return &t->slots[j];
        j = (j + 1) & (t->cap - 1);
    }
    return NULL;
}

void *map_table_get(const struct map_table *t, uint64_t key)
{
    struct map_table_slot *s = find(t, key);
    return s ? s->val : NULL;
}

void *map_table_del(struct map_table *t, uint64_t key)
{
    struct map_table_slot *s = find(t, key);
    if (!s)
        return NULL;
    void *v = s->val;
    s->val = TOMBSTONE;
    t->n--;
    return v;
}
