/* tracedb: the decision-trace tables both drivers write (./sim's runs.db, ./epp's
 * --decision-log), their one schema and their one trace-to-rows writer, so a query
 * written against simulated decisions reads live ones unchanged (docs/sim-outputs.md).
 * Each driver creates its own database and its other tables; these texts go into its
 * schema, in its order. SQLite is I/O, which engine/ does not do, hence io/.
 *
 * A decision becomes one decisions row per (profile, scorer, endpoint) score in the
 * trace (plugin "type/name") and one row per primary candidate with plugin "total" and
 * weight NULL; picked = 1 for the endpoint routed to (res->targets[0]); endpoint is
 * sched_endpoint.id. Scores without an endpoint are skipped.
 *
 * endpoints maps those numbers to names: one row per (run, endpoint) the first time a
 * decision of the run names it, with sched_endpoint.name ("ip:port", what was routed
 * to) and .pod. The writer creates the table when the database lacks it, so a runs.db
 * written before it existed can still be appended to; readers of the other tables are
 * unaffected.
 * Threads: a writer belongs to one thread at a time (the caller's lock). */
#ifndef KVROUTE_TRACEDB_H
#define KVROUTE_TRACEDB_H

#include <sqlite3.h>
#include <stdint.h>

#include "scheduler.h"

#define TRACEDB_RUNS_TABLE                                                                   \
    "CREATE TABLE IF NOT EXISTS runs("                                                       \
    "  run_id INTEGER PRIMARY KEY, scenario TEXT NOT NULL, router TEXT NOT NULL, config TEXT," \
    "  seed INTEGER NOT NULL, created TEXT, events_delivered INTEGER);"
#define TRACEDB_DECISIONS_TABLE                                                                      \
    "CREATE TABLE IF NOT EXISTS decisions("                                                          \
    "  run_id INTEGER NOT NULL REFERENCES runs(run_id), request_id INTEGER NOT NULL, profile TEXT,"  \
    "  plugin TEXT NOT NULL, endpoint INTEGER NOT NULL, score REAL, weight REAL, picked INTEGER NOT NULL);"
#define TRACEDB_DECISIONS_INDEX "CREATE INDEX IF NOT EXISTS decisions_by_request ON decisions(run_id, request_id);"
#define TRACEDB_ENDPOINTS_TABLE                                                                  \
    "CREATE TABLE IF NOT EXISTS endpoints("                                                      \
    "  run_id INTEGER NOT NULL REFERENCES runs(run_id), endpoint INTEGER NOT NULL, name TEXT NOT NULL," \
    "  pod TEXT, PRIMARY KEY(run_id, endpoint));"

typedef struct tracedb_run {
    const char *scenario;             /* required */
    const char *router;               /* required */
    const char *config;               /* NULL stores NULL */
    uint64_t seed;
    const char *created;              /* NULL stores NULL */
} tracedb_run;

/* Inserts a runs row; SQLITE_OK with *run_id, or SQLite's error code (sqlite3_errmsg). */
int tracedb_add_run(sqlite3 *db, const tracedb_run *run, int64_t *run_id);
/* The decision rows' writer: its statements, and which endpoints of the current run
 * already have their endpoints row. */
typedef struct tracedb_writer {
    sqlite3_stmt *decision, *endpoint;
    int64_t run_id;
    uint8_t *named;               /* bit per endpoint id written for run_id */
    size_t named_bytes;
} tracedb_writer;

/* Creates the endpoints table if absent and prepares the inserts; SQLite's code (the
 * writer is then empty, tracedb_writer_close still safe). */
int tracedb_writer_open(sqlite3 *db, tracedb_writer *w);
void tracedb_writer_close(tracedb_writer *w);
/* One decision's rows (none when t is NULL) and the endpoints rows it needs; SQLITE_OK,
 * SQLITE_NOMEM, or SQLite's error code. */
int tracedb_add_decision(tracedb_writer *w, int64_t run_id, uint64_t request_id, const sched_trace *t,
                         const sched_result *res);

#endif
