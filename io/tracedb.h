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
 * Threads: a statement belongs to one thread at a time (the caller's lock). */
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

typedef struct tracedb_run {
    const char *scenario;             /* required */
    const char *router;               /* required */
    const char *config;               /* NULL stores NULL */
    uint64_t seed;
    const char *created;              /* NULL stores NULL */
} tracedb_run;

/* Inserts a runs row; SQLITE_OK with *run_id, or SQLite's error code (sqlite3_errmsg). */
int tracedb_add_run(sqlite3 *db, const tracedb_run *run, int64_t *run_id);
/* The decisions insert statement, for tracedb_add_decision; SQLite's code. */
int tracedb_prepare(sqlite3 *db, sqlite3_stmt **ins);
/* One decision's rows (none when t is NULL); SQLITE_OK or SQLite's error code. */
int tracedb_add_decision(sqlite3_stmt *ins, int64_t run_id, uint64_t request_id, const sched_trace *t,
                         const sched_result *res);

#endif
