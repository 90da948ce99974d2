/* The daemon's sharing options: --sharing-pair and --sharing-pool parsing,
 * and a pool's file: a sealed memfd behind a symlink, the header guests
 * check, gone with the pool. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hostd.h"
#include "share_pool.h"
#include "tap.h"

int main(void)
{
    struct hostd_options o;
    memset(&o, 0, sizeof(o));
    CHECK_EQ(hostd_sharing_pair_add(&o, "a,b"), 0);
    CHECK_EQ(hostd_sharing_pair_add(&o, "a,a"), -EINVAL);
    CHECK_EQ(hostd_sharing_pair_add(&o, "a,"), -EINVAL);
    CHECK_EQ(hostd_sharing_pair_add(&o, ",b"), -EINVAL);
    CHECK_EQ(hostd_sharing_pair_add(&o, "a,b,c"), -EINVAL);
    CHECK_EQ(o.nsharing_pairs, 1);

    struct share_pool_spec s;
    CHECK_EQ(share_pool_parse("ab,a,b,64M", &s), 0);
    CHECK_EQ(s.size, 64ull << 20);
    CHECK(!strcmp(s.dir, "/dev/shm") && !strcmp(s.vm_a, "a") && !strcmp(s.vm_b, "b"));
    CHECK_EQ(share_pool_parse("ab,a,b,1G,/tmp", &s), 0);
    CHECK(!strcmp(s.dir, "/tmp"));
    CHECK_EQ(share_pool_parse("ab,a,b,2G", &s), -EINVAL);     /* > 1 GiB */
    CHECK_EQ(share_pool_parse("ab,a,b,48M", &s), -EINVAL);    /* not a power of two: no PCI BAR */
    CHECK_EQ(share_pool_parse("ab,a,b,4K", &s), -EINVAL);     /* no room for data */
    CHECK_EQ(share_pool_parse("ab,a,a,1M", &s), -EINVAL);
    CHECK_EQ(share_pool_parse("a/b,a,b,1M", &s), -EINVAL);    /* names never make paths */
    CHECK_EQ(share_pool_parse("ab,a,b,1M,tmp", &s), -EINVAL); /* relative dir */
    CHECK_EQ(share_pool_parse("ab,a,b,1Mx", &s), -EINVAL);
    CHECK_EQ(share_pool_parse("ab,a,b", &s), -EINVAL);

    char dir[] = "/tmp/mdlmap-pooltest.XXXXXX";
    if (!mkdtemp(dir))
        return 1;
    char spec[128], path[256];
    snprintf(spec, sizeof(spec), "t,a,b,1M,%s", dir);
    snprintf(path, sizeof(path), "%s/mdlmap-pool-t", dir);
    CHECK_EQ(share_pool_parse(spec, &s), 0);
    struct share_pool p, q;
    CHECK_EQ(share_pool_create(&p, &s), 0);
    CHECK_EQ(share_pool_create(&q, &s), -EEXIST); /* never adopted */
    int fd = open(path, O_RDWR);
    CHECK(fd >= 0);
    struct stat st;
    CHECK(fd >= 0 && fstat(fd, &st) == 0 && st.st_size == (1 << 20));
    struct share_pool_hdr h;
    CHECK(fd >= 0 && pread(fd, &h, sizeof(h), 0) == (ssize_t)sizeof(h));
    CHECK(!memcmp(h.magic, SHARE_POOL_MAGIC, 8) && h.version == 1 && h.size == (1 << 20) &&
          h.data_offset == SHARE_POOL_HDR && !strcmp(h.name, "t") && !strcmp(h.vm_a, "a") && !strcmp(h.vm_b, "b"));
    int seals = fd >= 0 ? fcntl(fd, F_GET_SEALS) : 0;
    CHECK((seals & (F_SEAL_SHRINK | F_SEAL_GROW)) == (F_SEAL_SHRINK | F_SEAL_GROW));
    CHECK(fd >= 0 && ftruncate(fd, 4096) < 0); /* hostd keeps it mapped: it must not shrink */
    if (fd >= 0)
        close(fd);
    share_pool_destroy(&p);
    CHECK(access(path, F_OK) < 0);
    rmdir(dir);
    return tap_done();
}
