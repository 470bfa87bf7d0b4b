/* rng: xoshiro256** streams seeded by splitmix64; see rng.h for the determinism rules. */
#include "rng.h"
#include "mix64.h"

#include <math.h>

void rng_seed(rng *r, uint64_t seed, uint64_t stream)
{
    uint64_t x = mix64(seed) ^ mix64(stream * 0xd1342543de82ef95ULL + 1);
    for (int i = 0; i < 4; i++) {
        x = mix64(x);
        r->s[i] = x;
    }
    if (!(r->s[0] | r->s[1] | r->s[2] | r->s[3]))   /* the one forbidden state */
        r->s[0] = 1;
}

static inline uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static inline uint64_t next(rng *r)
{
    uint64_t *s = r->s;
    uint64_t out = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return out;
}

uint64_t rng_u64(rng *r)
{
    return next(r);
}

double rng_01(rng *r)
{
    return (double)(rng_u64(r) >> 11) * 0x1.0p-53;
}

static inline uint64_t below(rng *r, uint64_t n)
{
    unsigned __int128 m = (unsigned __int128)next(r) * n;
    uint64_t lo = (uint64_t)m;
    if (lo < n) {
        uint64_t threshold = -n % n;
        while (lo < threshold) {
            m = (unsigned __int128)next(r) * n;
            lo = (uint64_t)m;
        }
    }
    return (uint64_t)(m >> 64);
}

uint64_t rng_below(rng *r, uint64_t n)
{
    return below(r, n);
}

void rng_fill_below(rng *r, uint32_t n, uint32_t *out, size_t k)
{
    rng l = *r;   /* a local copy stays in registers over the loop */
    for (size_t i = 0; i < k; i++)
        out[i] = (uint32_t)below(&l, n);
    *r = l;
}

double rng_exp(rng *r, double mean)
{
    return -mean * log(1.0 - rng_01(r));    /* 1 - [0,1) is (0,1]: log never sees 0 */
}

double rng_normal(rng *r)
{
    double u1 = 1.0 - rng_01(r), u2 = rng_01(r);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

uint64_t rng_poisson(rng *r, double mean)
{
    uint64_t k = 0;
    while (mean > 0) {
        double chunk = mean > 256.0 ? 256.0 : mean;
        mean -= chunk;
        double limit = exp(-chunk), p = 1.0;
        for (;;) {
            p *= rng_01(r);
            if (p <= limit)
                break;
            k++;
        }
    }
    return k;
}
