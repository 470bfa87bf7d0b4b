/* rng: seeded, portable random streams for the simulator.
 *
 * xoshiro256** seeded through splitmix64 from (seed, stream id): every subsystem
 * (prompt tokens, shuffle, arrivals, length distributions, ...) draws from its own
 * stream, so adding draws in one never shifts another, and the same seed gives the
 * same numbers on every machine. Integers and uniform doubles are exact bit
 * operations. rng_exp and rng_normal call libm's log/sqrt/cos: glibc's results are
 * identical across x86-64 and aarch64 builds of the same library, which is the
 * determinism the simulator promises (same scenario, seed and libc -> same bytes).
 * Single-threaded; a stream is a value (copy it to fork a sequence). */
#ifndef KVROUTE_SIM_RNG_H
#define KVROUTE_SIM_RNG_H

#include <stddef.h>
#include <stdint.h>

typedef struct rng {
    uint64_t s[4];
} rng;

/* Well-known stream ids, so streams stay stable as subsystems are added. */
enum {
    RNG_STREAM_TOKENS = 1,      /* shared_prefix / random prompt token ids */
    RNG_STREAM_SHUFFLE = 2,     /* the one shuffle of the prompt list */
    RNG_STREAM_ARRIVALS = 3,    /* poisson / constant load timers */
    RNG_STREAM_LENGTHS = 4,     /* input/output length distributions */
    RNG_STREAM_DRIFT = 5,       /* re-tokenisation length drift */
    RNG_STREAM_TRACE = 6,       /* trace replay synthetic tokens */
    RNG_STREAM_COUNTED = 7,     /* output_retokenize: counted output tokens, per request */
};

void rng_seed(rng *r, uint64_t seed, uint64_t stream);
uint64_t rng_u64(rng *r);
/* Uniform in [0,1) with 53 random bits. */
double rng_01(rng *r);
/* Uniform integer in [0, n); n > 0. Unbiased (Lemire's multiply-and-reject). */
uint64_t rng_below(rng *r, uint64_t n);
/* out[i] = rng_below(r, n) for i in [0, k), the same values in the same order: prompt
 * tokens are drawn hundreds at a time, and a call per token kept the state in memory. */
void rng_fill_below(rng *r, uint32_t n, uint32_t *out, size_t k);
/* Exponential with the given mean: -mean*log(u), u in (0,1]. */
double rng_exp(rng *r, double mean);
/* Standard normal (Box-Muller, one value per call). */
double rng_normal(rng *r);
/* Poisson(mean), exact: Knuth's product method on chunks of mean <= 256, summed
 * (a sum of independent Poissons is Poisson), so large means never underflow. */
uint64_t rng_poisson(rng *r, double mean);

#endif
