/* decisionlog: SQLite decision log of ./epp (see decisionlog.h). runs and decisions are
 * io/tracedb's, the simulator's tables and rows; live_requests is ours. Created when absent. */
#include "decisionlog.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "tracedb.h"

#define COMMIT_EVERY 256

static const char schema[] =
    TRACEDB_RUNS_TABLE TRACEDB_DECISIONS_TABLE TRACEDB_DECISIONS_INDEX
    "CREATE TABLE IF NOT EXISTS live_requests("
    "  run_id INTEGER NOT NULL REFERENCES runs(run_id), request_id INTEGER NOT NULL, x_request_id TEXT,"
    "  model TEXT, target_model TEXT, objective TEXT, fairness_id TEXT, priority INTEGER NOT NULL,"
    "  outcome TEXT NOT NULL, target TEXT, PRIMARY KEY(run_id, request_id));";

struct decisionlog {
    pthread_mutex_t mu;
    sqlite3 *db;
    tracedb_writer ins;
    sqlite3_stmt *req;
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
    if (sqlite3_open(path, &d->db) != SQLITE_OK) {
        db_err(d, err, "open");
        goto fail;
    }
    if (sqlite3_exec(d->db, schema, NULL, NULL, NULL) != SQLITE_OK) {
        db_err(d, err, "create tables");
        goto fail;
    }
    const tracedb_run run = {.scenario = "live", .router = "epp", .config = config, .seed = seed, .created = created};
    if (tracedb_add_run(d->db, &run, &d->run_id) != SQLITE_OK) {
        db_err(d, err, "insert run");
        goto fail;
    }
    if (tracedb_writer_open(d->db, &d->ins) != SQLITE_OK ||
        sqlite3_prepare_v2(d->db, "INSERT INTO live_requests VALUES(?,?,?,?,?,?,?,?,?,?)", -1, &d->req, NULL) !=
            SQLITE_OK ||
        sqlite3_exec(d->db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK) {
        db_err(d, err, "prepare");
        goto fail;
    }
    return d;
fail:
    tracedb_writer_close(&d->ins);
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

static int request_row(decisionlog *d, const route_decision *dec, kv_err *err)
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

int decisionlog_add(decisionlog *d, const route_decision *dec, kv_err *err)
{
    pthread_mutex_lock(&d->mu);
    int rc = request_row(d, dec, err);
    if (rc == KV_OK && tracedb_add_decision(&d->ins, d->run_id, d->seq, dec->trace, dec->result) != SQLITE_OK)
        rc = db_err(d, err, "insert decision");
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
    tracedb_writer_close(&d->ins);
    sqlite3_finalize(d->req);
    sqlite3_close(d->db);
    pthread_mutex_destroy(&d->mu);
    free(d);
}
