/* Building blocks of a hostile front-end (see hostile.h). */
#include "hostile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "tap.h"

#define BIT(n) (1ull << (n))

bool hostile_front_end(struct guest *g, const char *sock, uint64_t cid, const char *what)
{
    memset(g, 0, sizeof(*g));
    if (!tap_check(guest_connect(g, sock, cid, NULL) == 0, "[%s] front-end handshake%s%s", what,
                   g->err[0] ? ": " : "", g->err))
        return false;
    g->fe.need_reply = true;
    return tap_check(vu_fe_set_u64(&g->fe, VHOST_USER_SET_FEATURES, g->fe.features & (BIT(32) | BIT(30))) == 0,
                     "[%s] SET_FEATURES acked", what);
}

int hostile_mem_table_one(struct guest *g, int fd)
{
    struct vu_mem_table t;
    memset(&t, 0, sizeof(t));
    t.nregions = 1;
    t.r[0] = (struct vu_region){ 0, 16u << 20, 0x7f5500000000ull, 0 };
    return vu_fe_req(&g->fe, VHOST_USER_SET_MEM_TABLE, &t, 8 + sizeof(t.r[0]), &fd, 1);
}

long proc_cpu_ticks(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = 0;
    const char *p = strrchr(buf, ')'); /* the command may hold spaces */
    unsigned long ut = 0, st = 0;
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return -1;
    return (long)(ut + st);
}
