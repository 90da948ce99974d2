/* mdlmap-agent hold-string: a guest process that holds a string at a known
 * virtual address, for host introspection tests (tests/e2e/introspect_vaddr.sh):
 * the host pauses the VM, takes CR3 from QMP, reads the string through the
 * guest's page tables and ends the program by writing its stop byte the same
 * way (guest-virtual write), so that the whole path is shown both ways.
 *
 * The string straddles a page boundary of two separately faulted anonymous
 * pages (physically apart as a rule), so a read of it crosses pages. The
 * program spins on the CPU meanwhile: on a single vCPU it is then most
 * likely the current process whenever the host pauses the VM.
 *
 * Lines (host tests parse them; keep them exact):
 *   HOLDING pid=<pid> vaddr=0x<hex> len=<n> stop=0x<hex> secret=<str>
 *   HOST SAID STOP                 the host wrote a nonzero byte at stop=
 *   HOLD TIMEOUT after <s> s       nobody did within --seconds
 * Exit: 0 stopped by the host, 2 usage, 4 timeout, 5 setup failed. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <unistd.h>

#include "agent.h"
#include "agent_util.h"

#define HOLD_PAGE 4096u
#define HOLD_MAX 1024u  /* secret bytes: less than a page, so it spans two at most */
#define HOLD_STOP_OFF 64u

static void hold_usage(void)
{
    fprintf(stderr, "usage: mdlmap-agent hold-string [--secret STR] [--seconds S]\n"
                    "  STR: 1..%u bytes (default: 32 random hex digits); S default 120\n",
            HOLD_MAX);
}

/* 32 hex digits from getrandom(). */
static int random_secret(char *s, size_t cap)
{
    unsigned char r[16];
    if (cap < 2 * sizeof(r) + 1 || getrandom(r, sizeof(r), 0) != (ssize_t)sizeof(r))
        return -1;
    for (size_t i = 0; i < sizeof(r); i++)
        snprintf(s + 2 * i, 3, "%02x", r[i]);
    return 0;
}

int cmd_hold_string(int argc, char **argv)
{
    static const struct option lo[] = {
        { "secret", 1, 0, 's' }, { "seconds", 1, 0, 't' }, { 0, 0, 0, 0 },
    };
    char rnd[33];
    const char *secret = NULL;
    uint64_t seconds = 120;
    optind = 1;
    for (int c; (c = getopt_long(argc, argv, "", lo, NULL)) != -1;) {
        if (c == 's')
            secret = optarg;
        else if (c != 't' || parse_u64(optarg, &seconds) < 0 || seconds == 0) {
            hold_usage();
            return AGENT_EUSAGE;
        }
    }
    if (optind != argc || (secret && (!*secret || strlen(secret) > HOLD_MAX))) {
        hold_usage();
        return AGENT_EUSAGE;
    }
    if (!secret) {
        if (random_secret(rnd, sizeof(rnd)) < 0) {
            fprintf(stderr, "hold-string: getrandom: %s\n", strerror(errno));
            return AGENT_EIO;
        }
        secret = rnd;
    }
    size_t len = strlen(secret);
    /* MAP_POPULATE + mlock: both pages present from the start, so a
     * translation never meets a page the kernel has not faulted in yet */
    uint8_t *pages = mmap(NULL, 2 * HOLD_PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE,
                          -1, 0);
    if (pages == MAP_FAILED || mlock(pages, 2 * HOLD_PAGE) < 0) {
        fprintf(stderr, "hold-string: cannot map and lock 2 pages: %s\n", strerror(errno));
        return AGENT_EIO;
    }
    uint8_t *str = pages + HOLD_PAGE - (len + 1) / 2;
    memcpy(str, secret, len);
    volatile uint8_t *stop = pages + HOLD_STOP_OFF;
    printf("HOLDING pid=%d vaddr=0x%llx len=%zu stop=0x%llx secret=%s\n", (int)getpid(),
           (unsigned long long)(uintptr_t)str, len, (unsigned long long)(uintptr_t)stop, secret);
    fflush(stdout);
    double end = now_sec() + (double)seconds;
    for (unsigned long n = 1; !*stop; n++) {
        if ((n & 0xffff) == 0 && now_sec() > end) {
            printf("HOLD TIMEOUT after %llu s\n", (unsigned long long)seconds);
            fflush(stdout);
            return AGENT_ETIMEOUT;
        }
    }
    printf("HOST SAID STOP\n");
    fflush(stdout);
    munmap(pages, 2 * HOLD_PAGE);
    return AGENT_OK;
}
