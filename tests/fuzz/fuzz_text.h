/* Text inputs for the fuzz targets of text parsers. First byte even: the
 * rest is the text as a peer would send it; odd: each following byte picks
 * one of the target's tokens, so random inputs build text that goes deep
 * into the grammar. The text comes back in a buffer of its exact length
 * (ASan sees any read past it); free() it. NULL: out of memory. */
#pragma once
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static inline char *fuzz_text(const uint8_t *data, size_t size, const char *const *tokens, size_t ntokens,
                              size_t *len)
{
    size_t n = 0;
    if (size && data[0] & 1)
        for (size_t i = 1; i < size; i++)
            n += strlen(tokens[data[i] % ntokens]);
    else
        n = size ? size - 1 : 0;
    char *text = malloc(n ? n : 1);
    if (!text)
        return NULL;
    if (size && data[0] & 1) {
        size_t k = 0;
        for (size_t i = 1; i < size; i++) {
            const char *t = tokens[data[i] % ntokens];
            memcpy(text + k, t, strlen(t));
            k += strlen(t);
        }
    } else if (n) {
        memcpy(text, data + 1, n);
    }
    *len = n;
    return text;
}
