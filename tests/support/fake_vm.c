/* memfd-backed fake VM for the engine tests and fuzzing. */
#include "fake_vm.h"

#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* The memfd of size bytes and the test's own mapping of it. */
static int fake_file(struct fake_vm *f, const char *name, uint64_t cid, uint64_t size)
{
    memset(f, 0, sizeof(*f));
    memtable_init(&f->mem);
    snprintf(f->name, sizeof(f->name), "%s", name);
    f->cid = cid;
    f->fd = memfd_create(name, MFD_CLOEXEC);
    if (f->fd < 0 || ftruncate(f->fd, (off_t)size) < 0)
        return -1;
    f->file = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, f->fd, 0);
    if (f->file == MAP_FAILED)
        return -1;
    f->size = size;
    return 0;
}

int fake_vm_init(struct fake_vm *f, const char *name, uint64_t cid)
{
    if (fake_file(f, name, cid, FAKE_FILE_SIZE) < 0)
        return -1;
    if (memtable_add(&f->mem, 0, 16u << 20, 0x7f0000000000ull, 0, dup(f->fd)) < 0)
        return -1;
    if (memtable_add(&f->mem, FAKE_B_GPA, 16u << 20, 0x7f0002000000ull, 16u << 20, dup(f->fd)) < 0)
        return -1;
    return 0;
}

int fake_vm_init_ram(struct fake_vm *f, const char *name, uint64_t cid, uint64_t ram)
{
    if (fake_file(f, name, cid, ram) < 0)
        return -1;
    return memtable_add(&f->mem, 0, ram, 0x7f0000000000ull, 0, dup(f->fd)) < 0 ? -1 : 0;
}

void fake_vm_fini(struct fake_vm *f)
{
    memtable_clear(&f->mem);
    if (f->file && f->file != MAP_FAILED)
        munmap(f->file, f->size);
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
