/* Handle generator. A counter goes through an invertible 64-bit mix keyed by
 * random values from getrandom(): distinct counters give distinct handles,
 * so uniqueness does not depend on luck, and guests cannot guess handles. */
#include "map_handle.h"

#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

static uint64_t mix(uint64_t x)
{
    /* each step is a bijection on 64-bit values */
    x ^= x >> 31;
    x *= 0x7fb5d329728ea185ull;
    x ^= x >> 27;
    x *= 0x81dadef4bc2dd44dull;
    x ^= x >> 33;
    return x;
}

void map_handle_gen_init(struct map_handle_gen *g)
{
    uint64_t k[2];
    memset(g, 0, sizeof(*g));
    if (getrandom(k, sizeof(k), GRND_NONBLOCK) != (ssize_t)sizeof(k)) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        k[0] = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^ ((uint64_t)getpid() << 40);
        k[1] = mix(k[0] + 0x9e3779b97f4a7c15ull);
    }
    g->key0 = k[0];
    g->key1 = k[1];
}

uint64_t map_handle_next(struct map_handle_gen *g)
{
    for (;;) {
        uint64_t h = mix(mix(++g->counter ^ g->key0) + g->key1);
        if (h != 0)
            return h;
    }
}
