/* tracedb: the decision-trace schema's rows (see tracedb.h). Every value is bound for
 * one step and the bindings cleared right after it, so nothing bound outlives the call
 * and SQLITE_STATIC is safe for the caller's strings. */
#include "tracedb.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void bind_text(sqlite3_stmt *s, int i, const char *t)
{
    if (t)
        sqlite3_bind_text(s, i, t, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(s, i);
}

/* Runs a bound statement to completion and resets it for the next row. */
static int step(sqlite3_stmt *s)
{
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

int tracedb_add_run(sqlite3 *db, const tracedb_run *run, int64_t *run_id)
{
    sqlite3_stmt *s;
    int rc = sqlite3_prepare_v2(db, "INSERT INTO runs(scenario, router, config, seed, created) VALUES(?,?,?,?,?)", -1,
                                &s, NULL);
    if (rc != SQLITE_OK)
        return rc;
    bind_text(s, 1, run->scenario);
    bind_text(s, 2, run->router);
    bind_text(s, 3, run->config);
    sqlite3_bind_int64(s, 4, (sqlite3_int64)run->seed);
    bind_text(s, 5, run->created);
    rc = step(s);
    sqlite3_finalize(s);
    *run_id = sqlite3_last_insert_rowid(db);
    return rc;
}

int tracedb_writer_open(sqlite3 *db, tracedb_writer *w)
{
    *w = (tracedb_writer){.run_id = -1};
    int rc = sqlite3_exec(db, TRACEDB_ENDPOINTS_TABLE, NULL, NULL, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(db, "INSERT INTO decisions VALUES(?,?,?,?,?,?,?,?)", -1, &w->decision, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(db, "INSERT OR IGNORE INTO endpoints VALUES(?,?,?,?)", -1, &w->endpoint, NULL);
    if (rc != SQLITE_OK)
        tracedb_writer_close(w);
    return rc;
}

void tracedb_writer_close(tracedb_writer *w)
{
    sqlite3_finalize(w->decision);
    sqlite3_finalize(w->endpoint);
    free(w->named);
    *w = (tracedb_writer){.run_id = -1};
}

/* The endpoints row of ep in run_id, once per run. */
static int name_endpoint(tracedb_writer *w, int64_t run_id, const sched_endpoint *ep)
{
    if (w->run_id != run_id) {
        if (w->named)
            memset(w->named, 0, w->named_bytes);
        w->run_id = run_id;
    }
    size_t byte = ep->id / 8;
    uint8_t bit = (uint8_t)(1u << (ep->id % 8));
    if (byte < w->named_bytes && (w->named[byte] & bit))
        return SQLITE_OK;
    if (byte >= w->named_bytes) {
        size_t n = w->named_bytes ? w->named_bytes : 64;
        while (n <= byte)
            n *= 2;
        uint8_t *g = realloc(w->named, n);
        if (!g)
            return SQLITE_NOMEM;
        memset(g + w->named_bytes, 0, n - w->named_bytes);
        w->named = g;
        w->named_bytes = n;
    }
    sqlite3_stmt *s = w->endpoint;
    sqlite3_bind_int64(s, 1, run_id);
    sqlite3_bind_int64(s, 2, ep->id);
    bind_text(s, 3, ep->name ? ep->name : "");
    bind_text(s, 4, ep->pod);
    int rc = step(s);
    if (rc == SQLITE_OK)
        w->named[byte] |= bit;
    return rc;
}

static int row(sqlite3_stmt *s, int64_t run_id, uint64_t request_id, const char *profile, const char *plugin,
               const sched_endpoint *ep, double score, const double *weight, int picked)
{
    sqlite3_bind_int64(s, 1, run_id);
    sqlite3_bind_int64(s, 2, (sqlite3_int64)request_id);
    bind_text(s, 3, profile);
    bind_text(s, 4, plugin);
    sqlite3_bind_int64(s, 5, ep->id);
    sqlite3_bind_double(s, 6, score);
    if (weight)
        sqlite3_bind_double(s, 7, *weight);
    else
        sqlite3_bind_null(s, 7);
    sqlite3_bind_int(s, 8, picked);
    return step(s);
}

int tracedb_add_decision(tracedb_writer *w, int64_t run_id, uint64_t request_id, const sched_trace *t,
                         const sched_result *res)
{
    sqlite3_stmt *ins = w->decision;
    if (!t)
        return SQLITE_OK;
    const sched_endpoint *chosen = res && res->n_targets ? res->targets[0] : NULL;
    char plugin[256];
    for (size_t i = 0; i < t->n_scores; i++) {
        const sched_trace_score *sc = &t->scores[i];
        if (!sc->ep)
            continue;
        const char *type = sc->plugin && sc->plugin->type ? sc->plugin->type->type : "?";
        const char *name = sc->plugin && sc->plugin->name ? sc->plugin->name : type;
        snprintf(plugin, sizeof plugin, "%s/%s", type, name);
        int rc = name_endpoint(w, run_id, sc->ep);
        if (rc == SQLITE_OK)
            rc = row(ins, run_id, request_id, sc->profile, plugin, sc->ep, sc->score, &sc->weight, sc->ep == chosen);
        if (rc != SQLITE_OK)
            return rc;
    }
    const char *profile = res ? res->profile : NULL;
    for (size_t i = 0; i < t->n_totals; i++) {
        if (!t->totals[i].ep)
            continue;
        int rc = name_endpoint(w, run_id, t->totals[i].ep);
        if (rc == SQLITE_OK)
            rc = row(ins, run_id, request_id, profile, "total", t->totals[i].ep, t->totals[i].score, NULL,
                     t->totals[i].ep == chosen);
        if (rc != SQLITE_OK)
            return rc;
    }
    return SQLITE_OK;
}
