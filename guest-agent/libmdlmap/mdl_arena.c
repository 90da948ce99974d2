/* A bump allocator for protobuf-c's unpack: a session decodes every reply
 * into it and resets it per call, so a reply costs no malloc/free pairs once
 * the block has grown to the largest reply seen (up to MDL_ARENA_KEEP). */
#include <errno.h>
#include <stdalign.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "mdl_internal.h"

#define ALIGN_TO alignof(max_align_t)

/* A decode that outgrows the block continues in spill blocks of its own. */
struct mdl_arena_spill {
    struct mdl_arena_spill *next;
    alignas(max_align_t) unsigned char data[];
};

static size_t round_up(size_t n)
{
    return (n + ALIGN_TO - 1) & ~(size_t)(ALIGN_TO - 1);
}

static void *arena_alloc(void *ctx, size_t size)
{
    struct mdl_arena *a = ctx;
    if (size > SIZE_MAX / 2)
        return NULL;
    /* protobuf-c asks for 0 bytes for empty repeated fields on some paths:
     * hand out a distinct non-NULL pointer all the same. */
    size_t n = round_up(size ? size : 1);
    a->need += n;
    if (n <= a->cap - a->used) {
        void *p = a->base + a->used;
        a->used += n;
        return p;
    }
    struct mdl_arena_spill *s = malloc(sizeof(*s) + n);
    if (!s)
        return NULL;
    s->next = a->spill;
    a->spill = s;
    return s->data;
}

static void arena_free(void *ctx, void *p)
{
    /* Everything goes at the next reset. */
    (void)ctx;
    (void)p;
}

int mdl_arena_init(struct mdl_arena *a, size_t initial)
{
    *a = (struct mdl_arena){ 0 };
    a->pc.alloc = arena_alloc;
    a->pc.free = arena_free;
    a->pc.allocator_data = a;
    a->cap = round_up(initial);
    a->base = malloc(a->cap);
    if (!a->base)
        return -ENOMEM;
    return 0;
}

void mdl_arena_reset(struct mdl_arena *a)
{
    while (a->spill) {
        struct mdl_arena_spill *s = a->spill;
        a->spill = s->next;
        free(s);
    }
    /* The last call spilled: take the size it needed for the block, so the
     * same reply fits next time. Past MDL_ARENA_KEEP it stays a spill per
     * call, rather than pinning megabytes for a session's lifetime. */
    if (a->need > a->cap && a->need <= MDL_ARENA_KEEP) {
        unsigned char *nb = realloc(a->base, a->need);
        if (nb) {
            a->base = nb;
            a->cap = a->need;
        }
    }
    a->used = 0;
    a->need = 0;
}

void mdl_arena_fini(struct mdl_arena *a)
{
    mdl_arena_reset(a);
    free(a->base);
    *a = (struct mdl_arena){ 0 };
}
