/* memfd-backed fake VM for the engine tests and fuzzing. */
#include "fake_vm.h"

#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int fake_vm_init(struct fake_vm *f, const char *name, uint64_t cid)
{
    memset(f, 0, sizeof(*f));
    memtable_init(&f->mem);
    snprintf(f->name, sizeof(f->name), "%s", name);
    f->cid = cid;
    f->fd = memfd_create(name, MFD_CLOEXEC);
    if (f->fd < 0 || ftruncate(f->fd, (off_t)FAKE_FILE_SIZE) < 0)
        return -1;
    f->file = mmap(NULL, FAKE_FILE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, f->fd, 0);
    if (f->file == MAP_FAILED)
        return -1;
    if (memtable_add(&f->mem, 0, 16u << 20, 0x7f0000000000ull, 0, dup(f->fd)) < 0)
        return -1;
    if (memtable_add(&f->mem, FAKE_B_GPA, 16u << 20, 0x7f0002000000ull, 16u << 20, dup(f->fd)) < 0)
        return -1;
    return 0;
}

void fake_vm_fini(struct fake_vm *f)
{
    memtable_clear(&f->mem);
    if (f->file && f->file != MAP_FAILED)
        munmap(f->file, FAKE_FILE_SIZE);
    if (f->fd >= 0)
        close(f->fd);
}

struct map_vm *fake_vm_add(struct fake_vm *f, struct map_engine *e)
{
    struct map_vm_view v = { .name = f->name, .cid = f->cid, .mem = &f->mem };
    return map_engine_vm_add(e, &v);
}

uint64_t fake_gpa_to_file(uint64_t gpa)
{
    return gpa >= FAKE_B_GPA ? gpa - FAKE_B_GPA + (16u << 20) : gpa;
}
