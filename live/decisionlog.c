/* decisionlog: SQLite decision log of ./epp (see decisionlog.h). runs and decisions are
 * the simulator's definitions, verbatim; live_requests is ours. Created when absent. */
#include "decisionlog.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define COMMIT_EVERY 256

static const char schema[] =
    "CREATE TABLE IF NOT EXISTS runs("
    "  run_id INTEGER PRIMARY KEY, scenario TEXT NOT NULL, router TEXT NOT NULL, config TEXT,"
    "  seed INTEGER NOT NULL, created TEXT, events_delivered INTEGER);"
    "CREATE TABLE IF NOT EXISTS decisions("
    "  run_id INTEGER NOT NULL REFERENCES runs(run_id), request_id INTEGER NOT NULL, profile TEXT,"
    "  plugin TEXT NOT NULL, endpoint INTEGER NOT NULL, score REAL, weight REAL, picked INTEGER NOT NULL);"
    "CREATE INDEX IF NOT EXISTS decisions_by_request ON decisions(run_id, request_id);"
    "CREATE TABLE IF NOT EXISTS live_requests("
    "  run_id INTEGER NOT NULL REFERENCES runs(run_id), request_id INTEGER NOT NULL, x_request_id TEXT,"
    "  model TEXT, target_model TEXT, objective TEXT, fairness_id TEXT, priority INTEGER NOT NULL,"
    "  outcome TEXT NOT NULL, target TEXT, PRIMARY KEY(run_id, request_id));";

struct decisionlog {
    pthread_mutex_t mu;
    sqlite3 *db;
    sqlite3_stmt *ins, *req;
    int64_t run_id;
    uint64_t seq;
    char path[1024];
};

static int db_err(decisionlog *d, kv_err *err, const char *what)
{
    return kv_err_set(err, KV_EIO, "decision log %s: %s: %s", d->path, what, sqlite3_errmsg(d->db));
}

decisionlog *decisionlog_open(const char *path, const char *config, uint64_t seed, kv_err *err)
{
    decisionlog *d = calloc(1, sizeof *d);
    if (!d) {
        kv_err_set(err, KV_ENOMEM, "decision log: out of memory");
        return NULL;
    }
    pthread_mutex_init(&d->mu, NULL);
    snprintf(d->path, sizeof d->path, "%s", path);
    char created[32];
    time_t now = time(NULL);
    struct tm tm;
    strftime(created, sizeof created, "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&now, &tm));
    sqlite3_stmt *run = NULL;
    if (sqlite3_open(path, &d->db) != SQLITE_OK) {
        db_err(d, err, "open");
        goto fail;
    }
    if (sqlite3_exec(d->db, schema, NULL, NULL, NULL) != SQLITE_OK) {
        db_err(d, err, "create tables");
        goto fail;
    }
    if (sqlite3_prepare_v2(d->db, "INSERT INTO runs(scenario, router, config, seed, created) VALUES('live','epp',?,?,?)",
                           -1, &run, NULL) != SQLITE_OK) {
        db_err(d, err, "prepare");
        goto fail;
    }
    sqlite3_bind_text(run, 1, config, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(run, 2, (sqlite3_int64)seed);
    sqlite3_bind_text(run, 3, created, -1, SQLITE_TRANSIENT);
    if (sqlite3_step(run) != SQLITE_DONE) {
        db_err(d, err, "insert run");
        goto fail;
    }
    sqlite3_finalize(run);
    run = NULL;
    d->run_id = sqlite3_last_insert_rowid(d->db);
    if (sqlite3_prepare_v2(d->db, "INSERT INTO decisions VALUES(?,?,?,?,?,?,?,?)", -1, &d->ins, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(d->db, "INSERT INTO live_requests VALUES(?,?,?,?,?,?,?,?,?,?)", -1, &d->req, NULL) !=
            SQLITE_OK ||
        sqlite3_exec(d->db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK) {
        db_err(d, err, "prepare");
        goto fail;
    }
    return d;
fail:
    sqlite3_finalize(run);
    sqlite3_finalize(d->ins);
    sqlite3_finalize(d->req);
    sqlite3_close(d->db);
    pthread_mutex_destroy(&d->mu);
    free(d);
    return NULL;
}

static void bind_text(sqlite3_stmt *s, int i, const char *v)
{
    if (v)
        sqlite3_bind_text(s, i, v, -1, SQLITE_TRANSIENT);
    else
        sqlite3_bind_null(s, i);
}

static int row(decisionlog *d, const char *profile, const char *plugin, const sched_endpoint *ep, double score,
               const double *weight, int picked, kv_err *err)
{
    sqlite3_stmt *s = d->ins;
    sqlite3_reset(s);
    sqlite3_bind_int64(s, 1, d->run_id);
    sqlite3_bind_int64(s, 2, (sqlite3_int64)d->seq);
    bind_text(s, 3, profile);
    bind_text(s, 4, plugin);
    sqlite3_bind_int64(s, 5, ep->id);
    sqlite3_bind_double(s, 6, score);
    if (weight)
        sqlite3_bind_double(s, 7, *weight);
    else
        sqlite3_bind_null(s, 7);
    sqlite3_bind_int(s, 8, picked);
    return sqlite3_step(s) == SQLITE_DONE ? KV_OK : db_err(d, err, "insert decision");
}

static int request_row(decisionlog *d, const extproc_decision *dec, kv_err *err)
{
    sqlite3_stmt *s = d->req;
    sqlite3_reset(s);
    sqlite3_bind_int64(s, 1, d->run_id);
    sqlite3_bind_int64(s, 2, (sqlite3_int64)d->seq);
    bind_text(s, 3, dec->request_id);
    bind_text(s, 4, dec->model);
    bind_text(s, 5, dec->target_model ? dec->target_model : dec->model);
    bind_text(s, 6, dec->objective);
    bind_text(s, 7, dec->fairness_id);
    sqlite3_bind_int(s, 8, dec->priority);
    bind_text(s, 9, dec->shed ? "shed" : dec->target ? "routed" : "failed");
    bind_text(s, 10, dec->target);
    return sqlite3_step(s) == SQLITE_DONE ? KV_OK : db_err(d, err, "insert live request");
}

int decisionlog_add(decisionlog *d, const extproc_decision *dec, kv_err *err)
{
    const sched_trace *t = dec->trace;
    const sched_result *res = dec->result;
    const sched_endpoint *chosen = res && res->n_targets ? res->targets[0] : NULL;
    char plugin[256];
    pthread_mutex_lock(&d->mu);
    int rc = request_row(d, dec, err);
    for (size_t i = 0; t && i < t->n_scores && rc == KV_OK; i++) {
        const sched_trace_score *sc = &t->scores[i];
        snprintf(plugin, sizeof plugin, "%s/%s", sc->plugin->type->type, sc->plugin->name);
        rc = row(d, sc->profile, plugin, sc->ep, sc->score, &sc->weight, sc->ep == chosen, err);
    }
    for (size_t i = 0; t && i < t->n_totals && rc == KV_OK; i++)
        rc = row(d, res ? res->profile : NULL, "total", t->totals[i].ep, t->totals[i].score, NULL,
                 t->totals[i].ep == chosen, err);
    if (++d->seq % COMMIT_EVERY == 0 && rc == KV_OK &&
        sqlite3_exec(d->db, "COMMIT; BEGIN", NULL, NULL, NULL) != SQLITE_OK)
        rc = db_err(d, err, "commit");
    pthread_mutex_unlock(&d->mu);
    return rc;
}

void decisionlog_close(decisionlog *d)
{
    if (!d)
        return;
    sqlite3_exec(d->db, "COMMIT", NULL, NULL, NULL);
    sqlite3_finalize(d->ins);
    sqlite3_finalize(d->req);
    sqlite3_close(d->db);
    pthread_mutex_destroy(&d->mu);
    free(d);
}
