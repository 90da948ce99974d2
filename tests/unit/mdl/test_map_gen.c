/* Engine: runs computed at lock time are reused at map time only while the
 * VM's memory table is unchanged (memtable.generation); any change between
 * lock and map re-validates every frame against the new table. */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "map_engine.h"
#include "fake_vm.h"
#include "tap.h"

#define PG 4096u
#define DL 200
#define B_SIZE (16u << 20)
#define B_UVA 0x7f0002000000ull

static char detail[DL];

static struct map_engine *engine(void)
{
    struct map_limits lim = { .vm_page_quota = 0, .global_page_quota = 0, .max_vmas = 1000 };
    return map_engine_new(&lim);
}

static int lock_run(struct map_engine *e, struct map_owner *o, uint64_t first, uint32_t n, uint64_t *h)
{
    uint64_t pfns[64];
    for (uint32_t i = 0; i < n; i++)
        pfns[i] = first + i;
    return map_engine_lock(e, o, 0, n * PG, pfns, n, 1, h, detail, DL);
}

static int map_k(struct map_engine *e, struct map_owner *o, uint64_t h, const struct map_obj **m)
{
    struct map_params p = { .access_mode = MAP_MODE_KERNEL, .cache_type = 1, .priority = 16 };
    return map_engine_map(e, o, h, &p, m, detail, DL);
}

int main(void)
{
    struct fake_vm f;
    if (fake_vm_init(&f, "test_map_gen", 3) < 0) {
        perror("fake_vm_init");
        return 1;
    }
    struct map_engine *e = engine();
    struct map_vm *fv = fake_vm_add(&f, e);
    struct map_owner o = { fv, 1 };
    const struct map_obj *m;
    uint64_t hA, hB, hB2, hU;
    uint64_t b = FAKE_B_GPA >> 12;

    /* unchanged table: cached runs used, contents right */
    CHECK_EQ(lock_run(e, &o, 200, 8, &hU), 0);
    memset(f.file + 200 * PG, 0x5a, 8 * PG);
    CHECK_EQ(map_k(e, &o, hU, &m), 0);
    CHECK_EQ(MI(m).runs, 1);
    CHECK(((const uint8_t *)(uintptr_t)MI(m).address)[8 * PG - 1] == 0x5a);

    CHECK_EQ(lock_run(e, &o, 100, 16, &hA), 0);   /* region A */
    CHECK_EQ(lock_run(e, &o, b + 4, 16, &hB), 0); /* region B */
    CHECK_EQ(lock_run(e, &o, b + 8, 4, &hB2), 0); /* region B */

    /* region B removed between lock and map: B's MDL must fail re-validation
     * (its cached runs borrow a now-closed fd), A's still maps */
    CHECK_EQ(memtable_remove(&f.mem, FAKE_B_GPA, B_SIZE, B_UVA), 0);
    CHECK_EQ(map_k(e, &o, hB, &m), -EFAULT);
    memset(f.file + 100 * PG, 0x11, 16 * PG);
    CHECK_EQ(map_k(e, &o, hA, &m), 0);
    CHECK_EQ(MI(m).runs, 1);
    CHECK(((const uint8_t *)(uintptr_t)MI(m).address)[0] == 0x11);

    /* B re-added at the same GPA over a different part of the file: the map
     * must follow the new table, not the offsets cached at lock time */
    CHECK_EQ(memtable_add(&f.mem, FAKE_B_GPA, B_SIZE, B_UVA, 32u << 20, dup(f.fd)), 0);
    memset(f.file + (16u << 20) + 8 * PG, 0x22, 4 * PG); /* old backing */
    memset(f.file + (32u << 20) + 8 * PG, 0x33, 4 * PG); /* new backing */
    CHECK_EQ(map_k(e, &o, hB2, &m), 0);
    CHECK_EQ(MI(m).runs, 1);
    CHECK(((const uint8_t *)(uintptr_t)MI(m).address)[0] == 0x33);
    CHECK(((const uint8_t *)(uintptr_t)MI(m).address)[4 * PG - 1] == 0x33);

    map_engine_free(e);
    fake_vm_fini(&f);
    return tap_done();
}
