/* htmlreport: writing DIR/report.html (see htmlreport.h). */
#include "htmlreport.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stats.h"

static const char *const STYLE =
    "body{font-family:sans-serif;margin:2em;max-width:110em;color:#222}"
    "h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ccc}"
    "pre{background:#f6f6f6;padding:.8em;overflow-x:auto;font-size:.85em}"
    "table{border-collapse:collapse;font-size:.85em}th,td{border:1px solid #ccc;padding:.25em .5em;"
    "text-align:right}th:first-child,td:first-child{text-align:left}"
    "figure{margin:1em 0;max-width:90em}figure svg{width:100%;height:auto}figcaption{font-size:.85em;color:#555}";

/* Counts the charts that have a size once the page is laid out: body's data-charts,
 * data-fetches (resources loaded besides the page: none) and data-errors. */
static const char *const CHECK =
    "<script>\n"
    "var errors = 0;\n"
    "window.addEventListener('error', function () { errors++; });\n"
    "window.addEventListener('load', function () {\n"
    "  var shown = 0, svgs = document.querySelectorAll('figure svg');\n"
    "  for (var i = 0; i < svgs.length; i++) {\n"
    "    var r = svgs[i].getBoundingClientRect();\n"
    "    if (r.width > 0 && r.height > 0) shown++;\n"
    "  }\n"
    "  document.body.setAttribute('data-charts', String(shown));\n"
    "  document.body.setAttribute('data-fetches', String(performance.getEntriesByType('resource').length));\n"
    "  document.body.setAttribute('data-errors', String(errors));\n"
    "});\n"
    "</script>\n";

static void esc(FILE *f, const char *s)
{
    for (; *s; s++) {
        switch (*s) {
        case '&': fputs("&amp;", f); break;
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '"': fputs("&quot;", f); break;
        default: fputc(*s, f);
        }
    }
}

static void pre(FILE *f, const char *title, const char *text)
{
    if (!text || !*text)
        return;
    fprintf(f, "<h2>%s</h2>\n<pre>", title);
    esc(f, text);
    fputs("</pre>\n", f);
}

/* A whole file, NUL-terminated; NULL when it cannot be read. */
static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len + 4096 + 1 > cap) {
            char *nb = realloc(buf, cap = 2 * cap + 8192);
            if (!nb) {
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = nb;
        }
        size_t k = fread(buf + len, 1, cap - len - 1, f);
        len += k;
        if (k == 0)
            break;
    }
    fclose(f);
    buf[len] = 0;
    return buf;
}

/* An SVG file inline: from its <svg element on (gnuplot's XML prolog and DOCTYPE,
 * which name an external DTD, are left out). */
static void svg(FILE *f, const char *dir, const char *name)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s.svg", dir, name);
    char *text = slurp(path);
    const char *start = text ? strstr(text, "<svg") : NULL;
    if (!start) {
        fprintf(f, "<p>chart %s: not drawn (gnuplot missing)</p>\n", name);
        free(text);
        return;
    }
    fprintf(f, "<figure id=\"chart-%s\">\n", name);
    /* gnuplot names the same ids (gpPt0, gnuplot_canvas...) in every chart: each
     * chart's ids and references to them get the chart's name as a prefix, so the
     * page's ids stay unique and each chart uses its own definitions */
    static const char *const refs[] = {"id='", "id=\"", "href='#", "href=\"#", "url(#"};
    for (const char *c = start; *c;) {
        size_t k = 0;
        while (k < sizeof refs / sizeof *refs && strncmp(c, refs[k], strlen(refs[k])) != 0)
            k++;
        if (k == sizeof refs / sizeof *refs) {
            fputc(*c++, f);
            continue;
        }
        fprintf(f, "%s%s-", refs[k], name);
        c += strlen(refs[k]);
    }
    fprintf(f, "\n<figcaption>%s</figcaption></figure>\n", name);
    free(text);
}

static double st(const stats_block *b, int key)
{
    return b->valid ? b->v[key] : NAN;
}

static void stage_table(FILE *f, const hr_parts *p)
{
    fputs("<h2>Per stage</h2>\n<table id=\"stages\">\n<tr><th>router</th><th>stage</th><th>rate (req/s)</th>"
          "<th>achieved (req/s)</th><th>requests</th><th>failed</th><th>output tok/s</th><th>TTFT mean (s)</th>"
          "<th>TTFT p90 (s)</th><th>ITL mean (ms)</th><th>E2E p90 (s)</th><th>prefix hit</th></tr>\n",
          f);
    for (size_t r = 0; r < p->n; r++)
        for (size_t i = 0; i < p->lcs[r].n_stages; i++) {
            const lc_metrics *m = &p->lcs[r].stages[i];
            fputs("<tr><td>", f);
            esc(f, p->names[r]);
            fprintf(f, "</td><td>%d</td><td>%.2f</td><td>%.2f</td><td>%llu</td><td>%llu</td><td>%.1f</td>"
                       "<td>%.4f</td><td>%.4f</td><td>%.2f</td><td>%.3f</td><td>%.1f%%</td></tr>\n",
                    m->stage, m->requested_rate, m->achieved_rate, (unsigned long long)m->count,
                    (unsigned long long)m->n_failed, m->output_tokens_per_sec, st(&m->ttft, STATS_MEAN),
                    st(&m->ttft, STATS_P90), 1000 * st(&m->itl, STATS_MEAN), st(&m->request_latency, STATS_P90),
                    m->input_tokens ? 100.0 * (double)m->cached_tokens / (double)m->input_tokens : 0.0);
        }
    fputs("</table>\n", f);
}

static void db_row(void *ctx, const simdb_stage_row *r)
{
    FILE *f = ctx;
    fputs("<tr><td>", f);
    esc(f, r->router ? r->router : "?");
    fputs("</td><td>", f);
    esc(f, r->config ? r->config : "");
    fprintf(f, "</td><td>%d</td><td>%.2f</td><td>%.2f</td><td>%lld</td><td>%lld</td><td>%.1f</td><td>%.4f</td>"
               "<td>%.4f</td><td>%.2f</td><td>%.3f</td>",
            r->stage, r->rate, r->achieved_rate, (long long)r->count, (long long)r->failures, r->output_tokens_per_sec,
            r->ttft_mean, r->ttft_p90, 1000 * r->itl_mean, r->latency_p90);
    if (isnan(r->hit_rate))
        fputs("<td>-</td></tr>\n", f);   /* a live run does not see the servers' caches */
    else
        fprintf(f, "<td>%.1f%%</td></tr>\n", 100 * r->hit_rate);
}

/* Every run of the database, a live one's URL as its config. */
static int db_table(FILE *f, simdb *db, kv_err *err)
{
    fputs("<h2>Simulated and measured (runs.db)</h2>\n<table id=\"runs\">\n<tr><th>router</th><th>config</th>"
          "<th>stage</th><th>rate (req/s)</th><th>achieved (req/s)</th><th>requests</th><th>failed</th>"
          "<th>output tok/s</th><th>TTFT mean (s)</th><th>TTFT p90 (s)</th><th>ITL mean (ms)</th><th>E2E p90 (s)</th>"
          "<th>prefix hit</th></tr>\n",
          f);
    int rc = simdb_each_stage(db, db_row, f, err);
    fputs("</table>\n", f);
    return rc;
}

int hr_write(const scenario *s, const char *path, const hr_parts *p, kv_err *err)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return kv_err_set(err, KV_EIO, "%s: cannot create: %s", path, strerror(errno));
    fputs("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n<title>", f);
    esc(f, s->name);
    fprintf(f, " - kvroute sim</title>\n<style>%s</style>\n</head>\n<body>\n<h1>", STYLE);
    esc(f, s->name);
    fputs("</h1>\n", f);
    if (p->header) {
        fputs("<p>", f);
        esc(f, p->header);
        fputs("</p>\n", f);
    }
    pre(f, "Comparison", p->compare);
    if (p->n)
        stage_table(f, p);
    int rc = p->all_runs ? db_table(f, p->all_runs, err) : KV_OK;
    pre(f, "Sweep and plan", p->sweep);
    if (p->n_charts) {
        fputs("<h2>Charts</h2>\n", f);
        for (size_t i = 0; i < p->n_charts; i++)
            if (p->svg_dir)
                svg(f, p->svg_dir, p->charts[i]);
        if (!p->svg_dir)
            fputs("<p>Charts not drawn (--no-plots or outputs.plots: false).</p>\n", f);
    }
    pre(f, "expect:", p->expect);
    char *yaml = slurp(s->path);
    char title[PATH_MAX + 16];
    snprintf(title, sizeof title, "Scenario (%s)", s->path);
    fputs("<h2>", f);
    esc(f, title);
    fputs("</h2>\n<pre id=\"scenario\">", f);
    esc(f, yaml ? yaml : "(unreadable)");
    fputs("</pre>\n", f);
    free(yaml);
    fputs(CHECK, f);
    fputs("</body></html>\n", f);
    bool bad = ferror(f);
    if (fclose(f) || bad)
        return kv_err_set(err, KV_EIO, "%s: write failed", path);
    return rc;
}
