/* simdb: runs.db writer (see simdb.h; schema and queries in docs/sim-outputs.md).
 * One transaction per run. The two big tables, requests and samples (a ladder run has
 * 17k requests a router and 669k samples in all), go in ROWS_PER_INSERT rows per INSERT
 * through one helper (insert_rows), so SQLite steps one statement per 64 rows instead of
 * one per row. samples is keyed by (run_id, server, t) without a rowid and its rows go in
 * in that order, so every insert appends to the table's B-tree. Times are stored as
 * seconds (REAL), like the report files. */
#include "simdb.h"

#include <errno.h>
#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tracedb.h"

static const char schema[] =
    "PRAGMA journal_mode=MEMORY;"
    "PRAGMA synchronous=OFF;"
    /* A thousand-replica run's million requests and two million samples make tables of
     * tens of MB: with SQLite's 2 MiB page cache their inserts would read and write pages
     * through the file system. Up to 128 MiB of cache, used only as the tables grow and
     * given back after each run's commit (simdb_end_run); the file is the same. */
    "PRAGMA cache_size=-131072;"
    TRACEDB_RUNS_TABLE
    "CREATE TABLE stages("
    "  run_id INTEGER NOT NULL REFERENCES runs(run_id), stage INTEGER NOT NULL,"
    "  rate REAL, duration REAL, concurrency INTEGER, num_requests INTEGER, t_begin REAL, t_end REAL,"
    "  count INTEGER, successes INTEGER, failures INTEGER,"
    "  send_duration REAL, total_time REAL, achieved_rate REAL,"
    "  requests_per_sec REAL, input_tokens_per_sec REAL, output_tokens_per_sec REAL, total_tokens_per_sec REAL,"
    "  ttft_mean REAL, ttft_p50 REAL, ttft_p90 REAL, ttft_p99 REAL,"
    "  latency_mean REAL, latency_p50 REAL, latency_p90 REAL, latency_p99 REAL,"
    "  itl_mean REAL, itl_p50 REAL, itl_p90 REAL, itl_p99 REAL, tpot_mean REAL, ntpot_mean REAL,"
    "  input_tokens INTEGER, output_tokens INTEGER, cached_tokens INTEGER, preemptions INTEGER,"
    "  PRIMARY KEY(run_id, stage));"
    "CREATE TABLE requests("
    "  run_id INTEGER NOT NULL REFERENCES runs(run_id), id INTEGER NOT NULL, stage INTEGER NOT NULL,"
    "  endpoint INTEGER, t_scheduled REAL, t_start REAL, t_first_token REAL, t_end REAL,"
    "  prompt_tokens INTEGER, output_tokens INTEGER, cached_tokens INTEGER, preemptions INTEGER,"
    "  failed INTEGER NOT NULL, prefix_group INTEGER,"
    "  PRIMARY KEY(run_id, id));"
    TRACEDB_DECISIONS_TABLE
    "CREATE TABLE samples("
    "  run_id INTEGER NOT NULL REFERENCES runs(run_id), t REAL NOT NULL, server INTEGER NOT NULL,"
    "  waiting INTEGER, running INTEGER, kv_usage REAL, hit_rate REAL, preemptions INTEGER,"
    "  PRIMARY KEY(run_id, server, t)) WITHOUT ROWID;"
    "CREATE INDEX requests_by_stage ON requests(run_id, stage);"
    TRACEDB_DECISIONS_INDEX;

/* runs and decisions rows are io/tracedb's, shared with ./epp's decision log */
enum { ST_RUN_END, ST_STAGE, ST_N };
static const char *const stmt_sql[ST_N] = {
    [ST_RUN_END] = "UPDATE runs SET events_delivered=? WHERE run_id=?",
    [ST_STAGE] = "INSERT INTO stages VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
};

/* Rows per INSERT of the tables in row_tables: a run's rows go in as full statements of
 * this many (64 x 14 = 896 parameters at most, far below SQLite's limit), prepared once,
 * then one statement for the rest. */
enum { ROWS_PER_INSERT = 64 };

/* A table filled ROWS_PER_INSERT rows per statement: its INSERT up to VALUES, its column
 * count, and how row k of rows goes to the parameters from p on. */
typedef struct row_table {
    const char *insert;
    int n_cols;
    void (*bind)(sqlite3_stmt *s, int p, int64_t run_id, const void *rows, size_t k);
} row_table;

static void bind_request(sqlite3_stmt *s, int p, int64_t run_id, const void *rows, size_t k);
static void bind_sample(sqlite3_stmt *s, int p, int64_t run_id, const void *rows, size_t k);

enum { TB_REQ, TB_SAMPLE, TB_N };
static const row_table row_tables[TB_N] = {
    [TB_REQ] = {.insert = "INSERT INTO requests", .n_cols = 14, .bind = bind_request},
    /* A server's (t) repeats when the run drains at a scrape time: the scrape taken then
     * and the one after the drain (cluster.c's last) share t; the later one is kept. */
    [TB_SAMPLE] = {.insert = "INSERT OR REPLACE INTO samples", .n_cols = 8, .bind = bind_sample},
};

struct simdb {
    sqlite3 *db;
    sqlite3_stmt *st[ST_N];
    sqlite3_stmt *full[TB_N];         /* row_tables' ROWS_PER_INSERT-row INSERTs */
    tracedb_writer dec;               /* tracedb's decisions and endpoints inserts */
    char path[1024];
    bool in_run;
};

static int db_err(simdb *d, kv_err *err, const char *what)
{
    return kv_err_set(err, KV_EIO, "%s: %s: %s", d->path, what, sqlite3_errmsg(d->db));
}

/* A row_table's INSERT of n_rows rows. */
static int prepare_rows(sqlite3 *db, const row_table *t, size_t n_rows, sqlite3_stmt **st)
{
    size_t head = strlen(t->insert), row = 2 * (size_t)t->n_cols + 2;   /* "(?,...,?)," */
    char *sql = malloc(head + sizeof " VALUES" + n_rows * row);
    if (!sql)
        return SQLITE_NOMEM;
    memcpy(sql, t->insert, head);
    size_t len = head + (size_t)sprintf(sql + head, " VALUES");
    for (size_t r = 0; r < n_rows; r++) {
        sql[len++] = r ? ',' : ' ';
        sql[len++] = '(';
        for (int c = 0; c < t->n_cols; c++)
            sql[len++] = '?', sql[len++] = c + 1 < t->n_cols ? ',' : ')';
    }
    int rc = sqlite3_prepare_v2(db, sql, (int)len, st, NULL);
    free(sql);
    return rc;
}

/* replace: start afresh; else keep an existing database (its schema is already there). */
static simdb *db_open(const char *path, bool replace, kv_err *err)
{
    simdb *d = calloc(1, sizeof *d);
    if (!d) {
        kv_err_set(err, KV_ENOMEM, "%s: out of memory", path);
        return NULL;
    }
    snprintf(d->path, sizeof d->path, "%s", path);
    if (replace && unlink(path) != 0 && errno != ENOENT) {
        kv_err_set(err, KV_EIO, "%s: cannot replace: %s", path, strerror(errno));
        free(d);
        return NULL;
    }
    bool fresh = replace || access(path, F_OK) != 0;
    if (sqlite3_open_v2(path, &d->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK ||
        (fresh && sqlite3_exec(d->db, schema, NULL, NULL, NULL) != SQLITE_OK)) {
        db_err(d, err, fresh ? "cannot create the database" : "cannot open the database");
        simdb_close(d);
        return NULL;
    }
    for (int i = 0; i < ST_N + TB_N; i++)
        if ((i < ST_N ? sqlite3_prepare_v2(d->db, stmt_sql[i], -1, &d->st[i], NULL)
                      : prepare_rows(d->db, &row_tables[i - ST_N], ROWS_PER_INSERT, &d->full[i - ST_N])) !=
            SQLITE_OK) {
            db_err(d, err, "cannot prepare a statement (not a runs.db?)");
            simdb_close(d);
            return NULL;
        }
    if (tracedb_writer_open(d->db, &d->dec) != SQLITE_OK) {
        db_err(d, err, "cannot prepare a statement");
        simdb_close(d);
        return NULL;
    }
    return d;
}

simdb *simdb_open(const char *path, kv_err *err)
{
    return db_open(path, true, err);
}

simdb *simdb_open_append(const char *path, kv_err *err)
{
    return db_open(path, false, err);
}

void simdb_close(simdb *d)
{
    if (!d)
        return;
    if (d->in_run)
        sqlite3_exec(d->db, "ROLLBACK", NULL, NULL, NULL);
    for (int i = 0; i < ST_N; i++)
        sqlite3_finalize(d->st[i]);
    for (int i = 0; i < TB_N; i++)
        sqlite3_finalize(d->full[i]);
    tracedb_writer_close(&d->dec);
    sqlite3_close(d->db);
    free(d);
}

/* Runs a bound statement to completion and resets it for the next row. */
static int step(simdb *d, sqlite3_stmt *s, kv_err *err)
{
    int rc = sqlite3_step(s);
    sqlite3_reset(s);   /* every statement binds all its parameters for every row */
    if (rc != SQLITE_DONE)
        return db_err(d, err, "insert failed");
    return KV_OK;
}

static double secs(sim_time t)
{
    return (double)t / (double)SIM_US_PER_S;
}

int simdb_begin_run(simdb *d, const simdb_run_info *info, int64_t *run_id, kv_err *err)
{
    if (d->in_run)
        return kv_err_set(err, KV_ESTATE, "%s: a run is already open", d->path);
    if (!info || !info->scenario || !info->router)
        return kv_err_set(err, KV_EINVAL, "%s: a run needs a scenario and a router name", d->path);
    if (sqlite3_exec(d->db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK)
        return db_err(d, err, "cannot begin a transaction");
    d->in_run = true;
    const tracedb_run run = {
        .scenario = info->scenario,
        .router = info->router,
        .config = info->config,
        .seed = info->seed,
        .created = info->created,
    };
    return tracedb_add_run(d->db, &run, run_id) == SQLITE_OK ? KV_OK : db_err(d, err, "insert failed");
}

int simdb_add_decision(simdb *d, int64_t run_id, uint64_t request_id, const sched_trace *t, const sched_result *res,
                       kv_err *err)
{
    if (!d->in_run)
        return kv_err_set(err, KV_ESTATE, "%s: decision outside a run", d->path);
    return tracedb_add_decision(&d->dec, run_id, request_id, t, res) == SQLITE_OK ? KV_OK
                                                                                 : db_err(d, err, "insert failed");
}

static const char live_pods_sql[] =
    "CREATE TABLE IF NOT EXISTS live_pods("
    "  run_id INTEGER NOT NULL REFERENCES runs(run_id), pod INTEGER NOT NULL, address TEXT,"
    "  prefix_cache_queries REAL, prefix_cache_hits REAL, routed INTEGER,"
    "  PRIMARY KEY(run_id, pod));";

int simdb_add_live_pod(simdb *d, int64_t run_id, const simdb_live_pod *p, kv_err *err)
{
    if (!d->in_run)
        return kv_err_set(err, KV_ESTATE, "%s: live pod outside a run", d->path);
    sqlite3_stmt *s = NULL;
    if (sqlite3_exec(d->db, live_pods_sql, NULL, NULL, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(d->db, "INSERT INTO live_pods VALUES(?,?,?,?,?,?)", -1, &s, NULL) != SQLITE_OK)
        return db_err(d, err, "cannot create table live_pods");
    sqlite3_bind_int64(s, 1, run_id);
    sqlite3_bind_int(s, 2, p->pod);
    sqlite3_bind_text(s, 3, p->address, -1, SQLITE_TRANSIENT);
    if (p->counters_ok) {
        sqlite3_bind_double(s, 4, p->prefix_cache_queries);
        sqlite3_bind_double(s, 5, p->prefix_cache_hits);
    }
    sqlite3_bind_int64(s, 6, (sqlite3_int64)p->routed);
    int rc = sqlite3_step(s);
    sqlite3_finalize(s);
    return rc == SQLITE_DONE ? KV_OK : db_err(d, err, "insert failed");
}

static void bind_stat(sqlite3_stmt *s, int i, const stats_block *b, int key)
{
    if (b->valid)
        sqlite3_bind_double(s, i, b->v[key]);
    else
        sqlite3_bind_null(s, i);
}

static int add_stage(simdb *d, int64_t run_id, const sim_stage_info *si, const lc_metrics *m, kv_err *err)
{
    sqlite3_stmt *s = d->st[ST_STAGE];
    int c = 1;
    sqlite3_bind_int64(s, c++, run_id);
    sqlite3_bind_int(s, c++, si->index);
    sqlite3_bind_double(s, c++, si->rate);
    sqlite3_bind_double(s, c++, si->duration_s);
    sqlite3_bind_int(s, c++, si->concurrency);
    sqlite3_bind_int64(s, c++, si->num_requests);
    sqlite3_bind_double(s, c++, secs(si->t_begin));
    sqlite3_bind_double(s, c++, secs(si->t_end));
    sqlite3_bind_int64(s, c++, (sqlite3_int64)m->count);
    sqlite3_bind_int64(s, c++, (sqlite3_int64)m->n_success);
    sqlite3_bind_int64(s, c++, (sqlite3_int64)m->n_failed);
    sqlite3_bind_double(s, c++, m->send_duration);
    sqlite3_bind_double(s, c++, m->total_time);
    sqlite3_bind_double(s, c++, m->achieved_rate);
    sqlite3_bind_double(s, c++, m->requests_per_sec);
    sqlite3_bind_double(s, c++, m->input_tokens_per_sec);
    sqlite3_bind_double(s, c++, m->output_tokens_per_sec);
    sqlite3_bind_double(s, c++, m->total_tokens_per_sec);
    const stats_block *blocks[] = {&m->ttft, &m->request_latency, &m->itl};
    for (int b = 0; b < 3; b++) {
        bind_stat(s, c++, blocks[b], STATS_MEAN);
        bind_stat(s, c++, blocks[b], STATS_MEDIAN);
        bind_stat(s, c++, blocks[b], STATS_P90);
        bind_stat(s, c++, blocks[b], STATS_P99);
    }
    bind_stat(s, c++, &m->tpot, STATS_MEAN);
    bind_stat(s, c++, &m->ntpot, STATS_MEAN);
    sqlite3_bind_int64(s, c++, (sqlite3_int64)m->input_tokens);
    sqlite3_bind_int64(s, c++, (sqlite3_int64)m->output_tokens);
    sqlite3_bind_int64(s, c++, (sqlite3_int64)m->cached_tokens);
    sqlite3_bind_int64(s, c++, (sqlite3_int64)m->preemptions);
    return step(d, d->st[ST_STAGE], err);
}

/* rows: the run's requests. */
static void bind_request(sqlite3_stmt *s, int p, int64_t run_id, const void *rows, size_t k)
{
    const sim_request_record *r = (const sim_request_record *)rows + k;
    sqlite3_bind_int64(s, p, run_id);
    sqlite3_bind_int64(s, p + 1, (sqlite3_int64)r->id);
    sqlite3_bind_int(s, p + 2, r->stage);
    sqlite3_bind_int(s, p + 3, r->endpoint);
    sqlite3_bind_double(s, p + 4, secs(r->t_scheduled));
    sqlite3_bind_double(s, p + 5, secs(r->t_start));
    if (r->failed)
        sqlite3_bind_null(s, p + 6);
    else
        sqlite3_bind_double(s, p + 6, secs(r->t_first_token));
    sqlite3_bind_double(s, p + 7, secs(r->t_end));
    sqlite3_bind_int64(s, p + 8, r->prompt_tokens);
    sqlite3_bind_int64(s, p + 9, r->output_tokens);
    sqlite3_bind_int64(s, p + 10, r->cached_tokens);
    sqlite3_bind_int64(s, p + 11, r->preemptions);
    sqlite3_bind_int(s, p + 12, r->failed);
    if (r->prefix_group == UINT32_MAX)
        sqlite3_bind_null(s, p + 13);
    else
        sqlite3_bind_int64(s, p + 13, r->prefix_group);
}

/* The run's samples in the table's key order: order[] as sim_samples_by_server makes it. */
typedef struct sample_rows {
    const sim_server_sample *samples;
    const size_t *order;
} sample_rows;

static void bind_sample(sqlite3_stmt *s, int p, int64_t run_id, const void *rows, size_t k)
{
    const sample_rows *sr = rows;
    const sim_server_sample *x = &sr->samples[sr->order[k]];
    sqlite3_bind_int64(s, p, run_id);
    sqlite3_bind_double(s, p + 1, secs(x->t));
    sqlite3_bind_int(s, p + 2, x->server);
    sqlite3_bind_int(s, p + 3, x->waiting);
    sqlite3_bind_int(s, p + 4, x->running);
    sqlite3_bind_double(s, p + 5, x->kv_usage);
    sqlite3_bind_double(s, p + 6, x->hit_rate);
    sqlite3_bind_int64(s, p + 7, (sqlite3_int64)x->preemptions);
}

/* Rows 0..n of a row_table: the prepared full statements, then one for the rest. */
static int insert_rows(simdb *d, int tb, int64_t run_id, const void *rows, size_t n, kv_err *err)
{
    const row_table *t = &row_tables[tb];
    sqlite3_stmt *rest = NULL;
    if (n % ROWS_PER_INSERT && prepare_rows(d->db, t, n % ROWS_PER_INSERT, &rest) != SQLITE_OK)
        return db_err(d, err, "cannot prepare a statement");
    int rc = KV_OK;
    for (size_t k = 0; rc == KV_OK && k < n;) {
        size_t m = n - k < ROWS_PER_INSERT ? n - k : ROWS_PER_INSERT;
        sqlite3_stmt *s = m == ROWS_PER_INSERT ? d->full[tb] : rest;
        for (int p = 1; m--; k++, p += t->n_cols)
            t->bind(s, p, run_id, rows, k);
        rc = step(d, s, err);
    }
    sqlite3_finalize(rest);
    return rc;
}

static int add_samples(simdb *d, int64_t run_id, const sim_run *run, kv_err *err)
{
    size_t *order, *first;
    int rc = sim_samples_by_server(run, sim_server_count(run), &order, &first)
                 ? insert_rows(d, TB_SAMPLE, run_id, &(sample_rows){.samples = run->samples, .order = order},
                               run->n_samples, err)
                 : kv_err_set(err, KV_ENOMEM, "%s: out of memory for %zu samples", d->path, run->n_samples);
    free(order), free(first);
    return rc;
}

int simdb_end_run(simdb *d, int64_t run_id, const sim_run *run, const lc_run *m, kv_err *err)
{
    if (!d->in_run)
        return kv_err_set(err, KV_ESTATE, "%s: simdb_end_run without simdb_begin_run", d->path);
    if (m->n_stages != run->n_stages)
        return kv_err_set(err, KV_EINVAL, "%s: %zu stage metrics for %zu stages", d->path, m->n_stages,
                          run->n_stages);
    int rc = KV_OK;
    for (size_t i = 0; rc == KV_OK && i < run->n_stages; i++)
        rc = add_stage(d, run_id, &run->stages[i], &m->stages[i], err);
    if (rc == KV_OK)
        rc = insert_rows(d, TB_REQ, run_id, run->requests, run->n_requests, err);
    /* requests_by_endpoint is built once the first run's rows are in: they come in id
     * order, which is random endpoint order, and SQLite builds an index from sorted keys
     * in about a third of the time it takes to insert them one by one (300,000 rows:
     * 0.15 s against 0.42 s). Later runs, and runs added to an older runs.db, insert
     * into it as it stands. */
    if (rc == KV_OK && sqlite3_exec(d->db, "CREATE INDEX IF NOT EXISTS requests_by_endpoint ON requests(run_id, endpoint)",
                                    NULL, NULL, NULL) != SQLITE_OK)
        rc = db_err(d, err, "cannot index requests by endpoint");
    if (rc == KV_OK)
        rc = add_samples(d, run_id, run, err);
    if (rc == KV_OK) {
        sqlite3_bind_int64(d->st[ST_RUN_END], 1, (sqlite3_int64)run->events_delivered);
        sqlite3_bind_int64(d->st[ST_RUN_END], 2, run_id);
        rc = step(d, d->st[ST_RUN_END], err);
    }
    if (rc == KV_OK && sqlite3_exec(d->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
        rc = db_err(d, err, "commit failed");
    if (rc != KV_OK)
        sqlite3_exec(d->db, "ROLLBACK", NULL, NULL, NULL);
    d->in_run = false;
    /* the next router simulates while runs.db waits: its cache need not sit in memory */
    sqlite3_db_release_memory(d->db);
    return rc;
}

int simdb_each_stage(simdb *d, void (*fn)(void *ctx, const simdb_stage_row *row), void *ctx, kv_err *err)
{
    static const char *const sql =
        "SELECT r.run_id, r.router, r.config, s.stage, s.rate, s.achieved_rate, s.output_tokens_per_sec,"
        " s.ttft_mean, s.ttft_p90, s.itl_mean, s.latency_p90, s.count, s.failures,"
        " CAST(s.cached_tokens AS REAL) / NULLIF(s.input_tokens, 0)"
        " FROM stages s JOIN runs r USING (run_id) ORDER BY r.run_id, s.stage";
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(d->db, sql, -1, &st, NULL) != SQLITE_OK)
        return db_err(d, err, "cannot read the stages");
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        /* a NULL figure (nothing measured) reads as NaN, not 0 */
        double v[8];
        for (int i = 0; i < 8; i++) {
            int col = i < 7 ? 4 + i : 13;
            v[i] = sqlite3_column_type(st, col) == SQLITE_NULL ? NAN : sqlite3_column_double(st, col);
        }
        simdb_stage_row row = {
            .run_id = sqlite3_column_int64(st, 0), .router = (const char *)sqlite3_column_text(st, 1),
            .config = (const char *)sqlite3_column_text(st, 2), .stage = sqlite3_column_int(st, 3),
            .rate = v[0], .achieved_rate = v[1], .output_tokens_per_sec = v[2], .ttft_mean = v[3],
            .ttft_p90 = v[4], .itl_mean = v[5], .latency_p90 = v[6], .hit_rate = v[7],
            .count = sqlite3_column_int64(st, 11), .failures = sqlite3_column_int64(st, 12)};
        fn(ctx, &row);
    }
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? KV_OK : db_err(d, err, "cannot read the stages");
}
