#ifndef WASMDECK_DIGEST_H
#define WASMDECK_DIGEST_H

#include <stddef.h>
#include <stdint.h>

enum digest_algorithm { DIGEST_MD5, DIGEST_SHA1, DIGEST_SHA256, DIGEST_SHA384, DIGEST_SHA512 };

struct digest {
    enum digest_algorithm alg;
    uint32_t h32[8];
    uint64_t h64[8];
    uint64_t length;
    uint8_t buffer[128];
    size_t buffered;
};

int digest_size(enum digest_algorithm alg);
int digest_block_size(enum digest_algorithm alg);
void digest_init(struct digest *d, enum digest_algorithm alg);
void digest_update(struct digest *d, const uint8_t *data, size_t len);
void digest_final(struct digest *d, uint8_t *out);
void digest_oneshot(enum digest_algorithm alg, const uint8_t *data, size_t len, uint8_t *out);
void hmac(enum digest_algorithm alg, const uint8_t *key, size_t key_len,
          const uint8_t *data, size_t len, uint8_t *out);

#endif
