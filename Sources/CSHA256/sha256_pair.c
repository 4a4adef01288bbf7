// SHA-256 (FIPS 180-4) with the x86 SHA extensions, one stream or two interleaved.
// See include/sha256_pair.h for why; tests compare every function with OpenSSL.
#include "sha256_pair.h"

#include <string.h>

#if defined(__x86_64__) && (defined(__clang__) || defined(__GNUC__))
#include <cpuid.h>
#include <immintrin.h>

static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

static const uint32_t H0[8] = {
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
};

#define SHA_TARGET __attribute__((target("sha,sse4.1,ssse3")))

int snapshot_sha256_pair_available(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
    int sse = (c & bit_SSE4_1) && (c & bit_SSSE3);
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
    return sse && (b & bit_SHA) ? 1 : 0;
}

// The SHA extensions keep the state as ABEF and CDGH.
SHA_TARGET static inline void load_state(const uint32_t s[8], __m128i *abef, __m128i *cdgh) {
    __m128i dcba = _mm_loadu_si128((const __m128i *)&s[0]);
    __m128i hgfe = _mm_loadu_si128((const __m128i *)&s[4]);
    __m128i cdab = _mm_shuffle_epi32(dcba, 0xB1);
    __m128i efgh = _mm_shuffle_epi32(hgfe, 0x1B);
    *abef = _mm_alignr_epi8(cdab, efgh, 8);
    *cdgh = _mm_blend_epi16(efgh, cdab, 0xF0);
}

SHA_TARGET static inline void store_state(uint32_t s[8], __m128i abef, __m128i cdgh) {
    __m128i feba = _mm_shuffle_epi32(abef, 0x1B);
    __m128i dchg = _mm_shuffle_epi32(cdgh, 0xB1);
    _mm_storeu_si128((__m128i *)&s[0], _mm_blend_epi16(feba, dchg, 0xF0));
    _mm_storeu_si128((__m128i *)&s[4], _mm_alignr_epi8(dchg, feba, 8));
}

// `blocks` 64-byte blocks of each of `lanes` messages into their states: the lanes'
// instructions interleave, so their round chains overlap.
#define DEFINE_BLOCKS(NAME, LANES)                                                              \
    SHA_TARGET static void NAME(uint32_t *state[LANES], const uint8_t *data[LANES], size_t blocks) { \
        const __m128i swap = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);      \
        __m128i abef[LANES], cdgh[LANES];                                                       \
        const uint8_t *p[LANES];                                                                \
        for (int l = 0; l < LANES; l++) {                                                       \
            load_state(state[l], &abef[l], &cdgh[l]);                                           \
            p[l] = data[l];                                                                     \
        }                                                                                       \
        while (blocks--) {                                                                      \
            __m128i saved0[LANES], saved1[LANES], w[LANES][16];                                 \
            for (int l = 0; l < LANES; l++) {                                                   \
                saved0[l] = abef[l];                                                            \
                saved1[l] = cdgh[l];                                                            \
            }                                                                                   \
            _Pragma("GCC unroll 16") for (int g = 0; g < 16; g++) {                             \
                __m128i k = _mm_loadu_si128((const __m128i *)&K[4 * g]);                        \
                _Pragma("GCC unroll 2") for (int l = 0; l < LANES; l++) {                       \
                    if (g < 4) {                                                                \
                        w[l][g] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(p[l] + 16 * g)), swap); \
                    } else {                                                                    \
                        __m128i x = _mm_sha256msg1_epu32(w[l][g - 4], w[l][g - 3]);             \
                        x = _mm_add_epi32(x, _mm_alignr_epi8(w[l][g - 1], w[l][g - 2], 4));     \
                        w[l][g] = _mm_sha256msg2_epu32(x, w[l][g - 1]);                         \
                    }                                                                           \
                    __m128i t = _mm_add_epi32(w[l][g], k);                                      \
                    cdgh[l] = _mm_sha256rnds2_epu32(cdgh[l], abef[l], t);                       \
                    t = _mm_shuffle_epi32(t, 0x0E);                                             \
                    abef[l] = _mm_sha256rnds2_epu32(abef[l], cdgh[l], t);                       \
                }                                                                               \
            }                                                                                   \
            for (int l = 0; l < LANES; l++) {                                                   \
                abef[l] = _mm_add_epi32(abef[l], saved0[l]);                                    \
                cdgh[l] = _mm_add_epi32(cdgh[l], saved1[l]);                                    \
                p[l] += 64;                                                                     \
            }                                                                                   \
        }                                                                                       \
        for (int l = 0; l < LANES; l++) store_state(state[l], abef[l], cdgh[l]);                \
    }

DEFINE_BLOCKS(blocks1, 1)
DEFINE_BLOCKS(blocks2, 2)

static void one(uint32_t state[8], const uint8_t *data, size_t blocks) {
    uint32_t *s[1] = {state};
    const uint8_t *d[1] = {data};
    if (blocks) blocks1(s, d, blocks);
}

// The padded last one or two blocks of a message of `total` bytes, of which `rest` (< 64)
// remain at `tail`; then the digest, big-endian.
static void finish(uint32_t state[8], const uint8_t *tail, size_t rest, uint64_t total, uint8_t *out) {
    uint8_t last[128] = {0};
    if (rest) memcpy(last, tail, rest);
    last[rest] = 0x80;
    size_t blocks = rest + 9 > 64 ? 2 : 1;
    uint64_t bits = total * 8;
    for (int i = 0; i < 8; i++) last[blocks * 64 - 1 - i] = (uint8_t)(bits >> (8 * i));
    one(state, last, blocks);
    for (int i = 0; i < 8; i++) {
        out[4 * i] = (uint8_t)(state[i] >> 24);
        out[4 * i + 1] = (uint8_t)(state[i] >> 16);
        out[4 * i + 2] = (uint8_t)(state[i] >> 8);
        out[4 * i + 3] = (uint8_t)state[i];
    }
}

// Both messages from the given states, `prefix` bytes (whole blocks) already hashed into each.
static void pair(uint32_t sa[8], const uint8_t *a, size_t an, uint32_t sb[8], const uint8_t *b, size_t bn,
                 uint64_t prefix, uint8_t *da, uint8_t *db) {
    size_t ablocks = an / 64, bblocks = bn / 64;
    size_t both = ablocks < bblocks ? ablocks : bblocks;
    if (both) {
        uint32_t *s[2] = {sa, sb};
        const uint8_t *d[2] = {a, b};
        blocks2(s, d, both);
    }
    one(sa, a + both * 64, ablocks - both);
    one(sb, b + both * 64, bblocks - both);
    finish(sa, a + ablocks * 64, an % 64, prefix + an, da);
    finish(sb, b + bblocks * 64, bn % 64, prefix + bn, db);
}

void snapshot_sha256_pair(const void *a, size_t a_length, const void *b, size_t b_length, void *digest_a, void *digest_b) {
    uint32_t sa[8], sb[8];
    memcpy(sa, H0, sizeof sa);
    memcpy(sb, H0, sizeof sb);
    pair(sa, a, a_length, sb, b, b_length, 0, digest_a, digest_b);
}

void snapshot_hmac_sha256_prepare(const void *key, size_t key_length, snapshot_hmac_sha256_key *out) {
    uint8_t block[64] = {0}, pad[64];
    if (key_length > 64) {
        uint32_t s[8];
        memcpy(s, H0, sizeof s);
        one(s, key, key_length / 64);
        finish(s, (const uint8_t *)key + key_length / 64 * 64, key_length % 64, key_length, block);
    } else if (key_length) {
        memcpy(block, key, key_length);
    }
    for (int i = 0; i < 64; i++) pad[i] = block[i] ^ 0x36;
    memcpy(out->inner, H0, sizeof out->inner);
    one(out->inner, pad, 1);
    for (int i = 0; i < 64; i++) pad[i] = block[i] ^ 0x5c;
    memcpy(out->outer, H0, sizeof out->outer);
    one(out->outer, pad, 1);
    // The key's bytes leave no copy on the stack.
    volatile uint8_t *wipe = block;
    for (int i = 0; i < 64; i++) wipe[i] = 0;
    wipe = pad;
    for (int i = 0; i < 64; i++) wipe[i] = 0;
}

void snapshot_hmac_sha256_pair(const snapshot_hmac_sha256_key *key, const void *a, size_t a_length, const void *b, size_t b_length, void *mac_a, void *mac_b) {
    uint32_t sa[8], sb[8];
    uint8_t inner_a[32], inner_b[32];
    memcpy(sa, key->inner, sizeof sa);
    memcpy(sb, key->inner, sizeof sb);
    pair(sa, a, a_length, sb, b, b_length, 64, inner_a, inner_b);
    memcpy(sa, key->outer, sizeof sa);
    memcpy(sb, key->outer, sizeof sb);
    pair(sa, inner_a, 32, sb, inner_b, 32, 64, mac_a, mac_b);
}

#else

int snapshot_sha256_pair_available(void) { return 0; }
void snapshot_sha256_pair(const void *a, size_t a_length, const void *b, size_t b_length, void *digest_a, void *digest_b) {
    (void)a; (void)a_length; (void)b; (void)b_length; (void)digest_a; (void)digest_b;
}
void snapshot_hmac_sha256_prepare(const void *key, size_t key_length, snapshot_hmac_sha256_key *out) {
    (void)key; (void)key_length; memset(out, 0, sizeof *out);
}
void snapshot_hmac_sha256_pair(const snapshot_hmac_sha256_key *key, const void *a, size_t a_length, const void *b, size_t b_length, void *mac_a, void *mac_b) {
    (void)key; (void)a; (void)a_length; (void)b; (void)b_length; (void)mac_a; (void)mac_b;
}

#endif
