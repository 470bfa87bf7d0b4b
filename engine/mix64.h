/* mix64: the 64-bit bit mixers, one copy each, for hashing integers into tables and
 * deriving seeds. Pure functions (header-only so they inline in hot loops); any thread.
 *   mix64       splitmix64's output function applied to x + 2^64/phi: seeds, stream ids,
 *               token draws (a bijection, so distinct inputs stay distinct);
 *   mix64_next  one step of a splitmix64 stream (the scheduler's tie-breaks, the EPP's
 *               weighted model rewrites);
 *   mix64_fmix  MurmurHash3's fmix64 finaliser: kvindex's table hash, kept because the
 *               table layout and its measured probe lengths were tuned with it. */
#ifndef KVROUTE_MIX64_H
#define KVROUTE_MIX64_H

#include <stdint.h>

static inline uint64_t mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

/* The state advances by 2^64/phi, which mix64 adds before mixing: splitmix64's output
 * for the advanced state. */
static inline uint64_t mix64_next(uint64_t *state)
{
    uint64_t z = mix64(*state);
    *state += 0x9e3779b97f4a7c15ULL;
    return z;
}

static inline uint64_t mix64_fmix(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

#endif
