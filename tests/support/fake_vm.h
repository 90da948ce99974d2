/* A memfd-backed fake VM for the MDL engine tests (and fuzz_rpc): guest RAM
 * as a memtable, registered with a map engine. Links mdl_dep only. */
#pragma once
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "map_engine.h"
#include "memtable.h"

/* A mapping's fields, read the way every engine user reads them. */
static inline struct map_info mdl_test_info(const struct map_obj *m)
{
    struct map_info i;
    map_obj_info(m, &i);
    return i;
}
#define MI(m) mdl_test_info(m)

/* Fake VM: one memfd of 64 MiB. Region A: gpa 0..16 MiB = file 0..16 MiB;
 * MMIO hole 16..32 MiB; region B: gpa 32..48 MiB = file 16..32 MiB.
 * The test keeps its own mapping of the whole file in fake_vm.file. */
#define FAKE_FILE_SIZE (64ull << 20)
#define FAKE_B_GPA (32ull << 20)
#define FAKE_HOLE_GPA (16ull << 20)

struct fake_vm {
    char name[64];
    uint64_t cid;
    struct memtable mem;
    int fd;
    uint8_t *file;
    uint64_t size;   /* bytes of file (and of its mapping) */
};

int fake_vm_init(struct fake_vm *f, const char *name, uint64_t cid);
/* A large fake VM: ram bytes (page multiple) of RAM as one region at gpa 0,
 * file offset 0. The memfd is sparse: only pages a test touches cost memory,
 * so GiB-sized MDLs can be locked and mapped. */
int fake_vm_init_ram(struct fake_vm *f, const char *name, uint64_t cid, uint64_t ram);
void fake_vm_fini(struct fake_vm *f);
/* The fake VM as a VM of engine e (freed with e). */
struct map_vm *fake_vm_add(struct fake_vm *f, struct map_engine *e);
/* file offset of gpa (region A or B) */
uint64_t fake_gpa_to_file(uint64_t gpa);
