/* memfd-backed buffers for programs that go through the agent daemon: the
 * daemon receives the memfd and pins the pages on the program's behalf. */
#include <errno.h>
#include <pthread.h>
#include <sys/mman.h>
#include <unistd.h>

#include "mdlmap.h"

#define MAX_BUFFERS 64

struct region {
    uintptr_t base;
    size_t len;
    int fd;
};
static struct region regions[MAX_BUFFERS];
static pthread_mutex_t regions_lock = PTHREAD_MUTEX_INITIALIZER;

void *mdl_buffer_alloc(size_t size)
{
    size_t len = (size + MDL_PAGE_MASK) & ~MDL_PAGE_MASK;
    if (!len)
        return NULL;
    int fd = memfd_create("mdlmap-buffer", MFD_CLOEXEC);
    if (fd < 0)
        return NULL;
    void *p = MAP_FAILED;
    if (ftruncate(fd, (off_t)len) == 0)
        p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
        close(fd);
        return NULL;
    }
    pthread_mutex_lock(&regions_lock);
    for (int i = 0; i < MAX_BUFFERS; i++)
        if (!regions[i].base) {
            regions[i] = (struct region){ (uintptr_t)p, len, fd };
            pthread_mutex_unlock(&regions_lock);
            return p;
        }
    pthread_mutex_unlock(&regions_lock);
    munmap(p, len);
    close(fd);
    errno = ENOSPC;
    return NULL;
}

void mdl_buffer_free(void *buf)
{
    pthread_mutex_lock(&regions_lock);
    for (int i = 0; i < MAX_BUFFERS; i++)
        if (regions[i].base == (uintptr_t)buf && buf) {
            munmap(buf, regions[i].len);
            close(regions[i].fd);
            regions[i] = (struct region){ 0, 0, -1 };
        }
    pthread_mutex_unlock(&regions_lock);
}

int mdl_buffer_lookup(uintptr_t va, size_t len, int *fd, uint64_t *offset)
{
    int rc = -ENOENT;
    pthread_mutex_lock(&regions_lock);
    for (int i = 0; i < MAX_BUFFERS; i++) {
        struct region *r = &regions[i];
        if (r->base && va >= r->base && va - r->base <= r->len && len <= r->len - (va - r->base)) {
            *fd = r->fd;
            *offset = va - r->base;
            rc = 0;
            break;
        }
    }
    pthread_mutex_unlock(&regions_lock);
    return rc;
}

static int agent_pin(struct mdl_pinner *self, uintptr_t va, size_t npages, uint64_t *pfns,
                     struct mdl_pin *out)
{
    (void)self;
    (void)pfns;
    int fd;
    uint64_t off;
    if (mdl_buffer_lookup(va, npages * MDL_PAGE_SIZE, &fd, &off) < 0)
        return -EFAULT;   /* only mdl_buffer_alloc memory can be handed over */
    out->cookie = NULL;
    out->pass_fd = fd;
    out->fd_offset = off;
    out->pfns_from_peer = true;
    return 0;
}

static void agent_unpin(struct mdl_pinner *self, struct mdl_pin *pin)
{
    (void)self;
    (void)pin;   /* the daemon unpins when hostd's MDL is unlocked */
}

static struct mdl_pinner agent_pinner = { agent_pin, agent_unpin };

struct mdl_pinner *mdl_pinner_agent(void)
{
    return &agent_pinner;
}
