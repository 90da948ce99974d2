/* The VM table's CID index (open addressing, linear probing) under VMs
 * added and removed at run time: after every step each VM served is found
 * by its CID, a removed one is not, and the table keeps the order VMs were
 * added in. CIDs come from a small range so that probe clusters form and
 * deletions in their middle (which must move later entries back) happen
 * often; the index also grows while VMs come and go. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "hostd.h"
#include "log.h"
#include "tap.h"

#define CID_LO 3u
#define CID_N 96u   /* CIDs 3..98: up to 96 VMs, the index grows to 256 slots */
#define STEPS 4000u

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static unsigned next_rand(unsigned n)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (unsigned)(rng % n);
}

static struct vm_config config_of(uint64_t cid)
{
    struct vm_config c;
    memset(&c, 0, sizeof(c));
    snprintf(c.name, sizeof(c.name), "vm%llu", (unsigned long long)cid);
    c.cid = cid;   /* no socket: the VM does not listen (nothing to connect here) */
    return c;
}

/* Every CID of the range: found iff served, and as the VM of that CID. */
static bool index_consistent(struct hostd *h, const bool *served)
{
    for (unsigned i = 0; i < CID_N; i++) {
        struct vm *vm = hostd_vm_by_cid(h, CID_LO + i);
        if (served[i] ? !vm || vm->cfg.cid != CID_LO + i : vm != NULL) {
            tap_diag("cid %u: %s", CID_LO + i, served[i] ? "not found" : "found after removal");
            return false;
        }
    }
    return true;
}

int main(void)
{
    log_threshold = LOG_ERROR;
    struct hostd h;
    struct hostd_options o = { .sibling_routing = true };
    CHECK_EQ(hostd_init(&h, &o), 0);
    bool served[CID_N] = { false };
    uint64_t order[CID_N];   /* CIDs in the order they were added */
    unsigned n = 0, adds = 0, removes = 0, bad_index = 0, bad_order = 0, bad_rc = 0;
    for (unsigned step = 0; step < STEPS; step++) {
        unsigned i = next_rand(CID_N);
        /* grow first, then keep the table around half full */
        bool add = !served[i] && (step < STEPS / 8 || next_rand(2));
        if (add) {
            struct vm_config c = config_of(CID_LO + i);
            bad_rc += hostd_vm_add(&h, &c) != 0;
            served[i] = true;
            order[n++] = CID_LO + i;
            adds++;
        } else if (served[i]) {
            char name[HOSTD_VM_NAME_MAX];
            snprintf(name, sizeof(name), "vm%u", CID_LO + i);
            bad_rc += hostd_vm_remove(&h, name) != 0;
            bad_rc += hostd_vm_remove(&h, name) != -ENOENT;
            served[i] = false;
            unsigned k = 0;
            while (order[k] != CID_LO + i)
                k++;
            memmove(&order[k], &order[k + 1], (n - k - 1) * sizeof(order[0]));
            n--;
            removes++;
        }
        bad_index += !index_consistent(&h, served);
        bool same = h.nvms == n;
        for (unsigned k = 0; same && k < n; k++)
            same = h.vms[k]->cfg.cid == order[k];
        bad_order += !same;
    }
    tap_check(adds > 500 && removes > 400, "%u adds and %u removes of VMs with CIDs %u..%u", adds, removes, CID_LO,
              CID_LO + CID_N - 1);
    tap_check(bad_rc == 0, "every add and remove answered as expected (%u wrong)", bad_rc);
    tap_check(bad_index == 0, "after every step each served CID is found and no removed one (%u bad steps)",
              bad_index);
    tap_check(bad_order == 0, "the table keeps the VMs in the order they were added (%u bad steps)", bad_order);
    CHECK(h.cid_slots >= 2 * h.nvms);
    /* a duplicate is refused, with the field named */
    if (n) {
        struct vm_config c = config_of(order[0]);
        char err[200] = "";
        CHECK_EQ(hostd_vm_clash(&h, &c, err, sizeof(err)), -EEXIST);
        CHECK(strstr(err, "name") != NULL);
    }
    hostd_fini(&h);
    return tap_done();
}
