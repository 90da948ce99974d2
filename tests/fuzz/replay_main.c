/* Replay driver for fuzz targets when libFuzzer is not in use: feeds the
 * target N deterministic inputs (random bytes, random lengths, and mutations
 * of earlier inputs) so that the sanitizer build exercises the parser. Any
 * crash or sanitizer report fails the test. Usage: replay [iterations] [files...] */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static int run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        return -1;
    }
    static uint8_t buf[1 << 20];
    size_t n = fread(buf, 1, sizeof(buf), f);
    fclose(f);
    uint8_t *copy = malloc(n ? n : 1);
    if (!copy)
        return -1;
    memcpy(copy, buf, n);
    LLVMFuzzerTestOneInput(copy, n);
    free(copy);
    return 0;
}

int main(int argc, char **argv)
{
    long iterations = argc > 1 ? strtol(argv[1], NULL, 10) : 10000;
    for (int i = 2; i < argc; i++)
        if (run_file(argv[i]) < 0)
            return 1;

    enum { MAXLEN = 8192 };
    uint8_t *prev = calloc(1, MAXLEN);
    size_t prev_len = 0;
    if (!prev)
        return 1;
    for (long it = 0; it < iterations; it++) {
        size_t len = (size_t)(rng() % (it % 10 == 0 ? MAXLEN : 256));
        uint8_t *buf = malloc(len ? len : 1); /* exact size so ASan sees overreads */
        if (!buf)
            return 1;
        if (prev_len && (rng() & 1)) {
            /* mutate the previous input: flip bytes, keep structure mostly */
            size_t n = len < prev_len ? len : prev_len;
            memcpy(buf, prev, n);
            for (size_t j = n; j < len; j++)
                buf[j] = (uint8_t)rng();
            for (int k = 0; k < 4 && len; k++)
                buf[rng() % len] = (uint8_t)rng();
        } else {
            for (size_t j = 0; j < len; j++)
                buf[j] = (uint8_t)(rng() % 4 == 0 ? 0 : rng());
        }
        LLVMFuzzerTestOneInput(buf, len);
        memcpy(prev, buf, len);
        prev_len = len;
        free(buf);
    }
    free(prev);
    printf("replayed %ld inputs\n", iterations);
    return 0;
}
