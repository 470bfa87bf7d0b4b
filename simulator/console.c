/* console: the simulator's printed summary (see console.h). The comparison table copies
 * the llm-d guide's (precise-prefix-cache-aware README): same rows, same units, same
 * decimals, so a reader can hold the two side by side. */
#include "console.h"

#include <math.h>
#include <string.h>

void console_stage_lines(FILE *f, const char *router, const lc_run *m)
{
    fprintf(f, "%-16s %5s %7s %8s %10s %9s %11s %8s %6s\n", "router", "stage", "rate", "req/s", "out tok/s",
            "TTFT (s)", "latency (s)", "ITL (ms)", "failed");
    for (size_t i = 0; i < m->n_stages; i++) {
        const lc_metrics *s = &m->stages[i];
        fprintf(f, "%-16s %5d %7.2f %8.3f %10.1f %9.3f %11.3f %8.2f %6llu\n", router, s->stage, s->requested_rate,
                s->requests_per_sec, s->output_tokens_per_sec, s->ttft.valid ? s->ttft.v[STATS_MEAN] : NAN,
                s->request_latency.valid ? s->request_latency.v[STATS_MEAN] : NAN,
                s->itl.valid ? 1000 * s->itl.v[STATS_MEAN] : NAN, (unsigned long long)s->n_failed);
    }
}

void console_progress(FILE *f, const char *router, const cluster_progress *p, double wall_s)
{
    char eta[32] = "-";
    double done = ((double)p->sent + (double)p->completed) / 2, total = (double)p->total;
    if (p->completed >= p->total)
        snprintf(eta, sizeof eta, "0 s");
    else if (done * 100 >= total)
        snprintf(eta, sizeof eta, "%.0f s", wall_s * (total - done) / done);
    fprintf(f, "\r  %-16s stage %zu/%zu  sim %.1f s  %llu/%llu requests  wall %.1f s  ETA %s   ", router, p->stage + 1,
            p->n_stages, p->sim_s, (unsigned long long)p->completed, (unsigned long long)p->total, wall_s, eta);
}

/* "%.*f" with thousands separators and an optional leading sign. */
static const char *fmt_num(char *buf, size_t cap, double v, int decimals, bool sign, bool group)
{
    if (!isfinite(v)) {
        snprintf(buf, cap, "n/a");
        return buf;
    }
    char raw[64];
    snprintf(raw, sizeof raw, "%.*f", decimals, fabs(v));
    const char *dot = strchr(raw, '.');
    size_t int_len = dot ? (size_t)(dot - raw) : strlen(raw);
    size_t o = 0;
    bool neg = v < 0 && strspn(raw, "0.") != strlen(raw); /* no "-0.00" */
    if (neg)
        buf[o++] = '-';
    else if (sign)
        buf[o++] = '+';
    for (size_t i = 0; i < int_len && o + 2 < cap; i++) {
        if (group && i && (int_len - i) % 3 == 0)
            buf[o++] = ',';
        buf[o++] = raw[i];
    }
    snprintf(buf + o, cap - o, "%s", dot ? dot : "");
    return buf;
}

typedef struct row {
    const char *label;
    int decimals;
    bool group;
    double (*get)(const lc_metrics *);
} row;

static double g_rps(const lc_metrics *m) { return m->requests_per_sec; }
static double g_in(const lc_metrics *m) { return m->input_tokens_per_sec; }
static double g_out(const lc_metrics *m) { return m->output_tokens_per_sec; }
static double g_tot(const lc_metrics *m) { return m->total_tokens_per_sec; }
static double g_lat(const lc_metrics *m) { return m->request_latency.valid ? m->request_latency.v[STATS_MEAN] : NAN; }
static double g_ttft(const lc_metrics *m) { return m->ttft.valid ? m->ttft.v[STATS_MEAN] : NAN; }
static double g_itl(const lc_metrics *m) { return m->itl.valid ? 1000 * m->itl.v[STATS_MEAN] : NAN; }

static const row rows[] = {
    {"Requests/sec", 4, false, g_rps},
    {"Input tokens/sec", 2, true, g_in},
    {"Output tokens/sec", 2, true, g_out},
    {"Total tokens/sec", 2, true, g_tot},
    {"Request latency (s)", 4, false, g_lat},
    {"TTFT (s)", 4, false, g_ttft},
    {"Inter-token latency (ms)", 2, false, g_itl},
};

/* Terminal columns of a UTF-8 string (every character one column wide). */
static int cols(const char *s)
{
    int n = 0;
    for (; *s; s++)
        n += ((unsigned char)*s & 0xC0) != 0x80;
    return n;
}

static int colw(const char *header, int min)
{
    return cols(header) > min ? cols(header) : min;
}

/* Right-aligns s in w columns (printf pads bytes, not columns, so "Δ" needs this). */
static const char *pad(char *buf, size_t cap, const char *s, int w)
{
    int n = w - cols(s);
    snprintf(buf, cap, "%*s%s", n > 0 ? n : 0, "", s);
    return buf;
}

static const lc_metrics *find_stage(const lc_run *m, int stage)
{
    for (size_t i = 0; i < m->n_stages; i++)
        if (m->stages[i].stage == stage)
            return &m->stages[i];
    return NULL;
}

void console_compare(FILE *f, const char *const *names, const lc_run *const *m, size_t n, int stage)
{
    if (n < 2 || m[0]->n_stages == 0)
        return;
    if (stage < 0)
        stage = m[0]->stages[m[0]->n_stages - 1].stage;
    const lc_metrics *base = find_stage(m[0], stage);
    if (!base) {
        fprintf(f, "stage %d: not run by %s\n", stage, names[0]);
        return;
    }
    for (size_t k = 1; k < n; k++) {
        const lc_metrics *other = find_stage(m[k], stage);
        if (!other) {
            fprintf(f, "stage %d: not run by %s\n", stage, names[k]);
            continue;
        }
        char h1[64], h2[64], h3[96], h4[64], p1[128], p2[128], p3[160], p4[128];
        snprintf(h1, sizeof h1, "%s (Mean)", names[0]);
        snprintf(h2, sizeof h2, "%s (Mean)", names[k]);
        snprintf(h3, sizeof h3, "Δ (%s - %s)", names[k], names[0]);
        snprintf(h4, sizeof h4, "Δ%% vs %s", names[0]);
        fprintf(f, "\nStage %d (rate %g): %s vs %s\n", stage, base->requested_rate, names[0], names[k]);
        int w1 = colw(h1, 16), w2 = colw(h2, 16), w3 = colw(h3, 20), w4 = colw(h4, 12);
        fprintf(f, "%-26s %s %s %s %s\n", "Metric", pad(p1, sizeof p1, h1, w1), pad(p2, sizeof p2, h2, w2),
                pad(p3, sizeof p3, h3, w3), pad(p4, sizeof p4, h4, w4));
        for (size_t r = 0; r < sizeof rows / sizeof *rows; r++) {
            double a = rows[r].get(base), b = rows[r].get(other);
            char s1[48], s2[48], s3[48], s4[48];
            fmt_num(s1, sizeof s1, a, rows[r].decimals, false, rows[r].group);
            fmt_num(s2, sizeof s2, b, rows[r].decimals, false, rows[r].group);
            fmt_num(s3, sizeof s3, b - a, rows[r].decimals, true, rows[r].group);
            if (a != 0 && isfinite(a) && isfinite(b)) {
                fmt_num(s4, sizeof s4, 100 * (b - a) / a, 1, true, false);
                strcat(s4, "%");
            } else {
                snprintf(s4, sizeof s4, "n/a");
            }
            fprintf(f, "%-26s %*s %*s %*s %*s\n", rows[r].label, w1, s1, w2, s2, w3, s3, w4, s4);
        }
    }
}
