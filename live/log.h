/* log: ./epp's JSON log lines, shaped like zap's JSON encoder as GIE/llm-d configure it,
 * so users' greps and log pipelines keep working:
 *   {"level":"info","ts":"2026-11-24T01:22:03.123Z","caller":"ingest.c:412","msg":"...",<fields>}
 * Levels follow logr-on-zap: error, info (V(0)), debug (V(1)), and "Level(-N)" for V(N),
 * N >= 2 -- llm-d logs its per-scorer "Calculated score" lines at V(4) = "Level(-4)".
 * Warnings are zap "warn" lines (logr has none; llm-d's Go code uses zap's for the same).
 *
 * Fields are a jansson json_pack format and its arguments ("{s:s, s:I}", "pod", p, "n", n),
 * so values are encoded by jansson, never by hand; reals are written as zap writes a Go
 * float64 (1 and 0 without a fraction, 0.3 in its shortest form).
 *
 * Threads: every call may come from any thread; lines are written whole (one lock). The
 * sink and verbosity are process-wide, set once before threads start (log_setup). */
#ifndef KVROUTE_LOG_H
#define KVROUTE_LOG_H

#include <stdbool.h>

typedef enum log_level {
    LOG_ERROR = -2,
    LOG_WARN = -1,
    LOG_INFO = 0,     /* V(0) */
    LOG_DEBUG = 1,    /* V(1); V(n) is simply n */
} log_level;

/* verbosity: the -v flag; lines with level > verbosity are dropped (errors and warnings
 * always pass). sink receives each line without its newline; NULL writes to stderr. */
void log_setup(int verbosity, void (*sink)(void *ctx, const char *line), void *ctx);
bool log_enabled(int level);
/* fields: a json_pack object format ("{s:s}") or NULL; the arguments follow. */
void log_at(int level, const char *file, int line, const char *msg, const char *fields, ...);
/* zap's level name for a level ("info", "Level(-4)", ...), into buf. */
const char *log_level_name(int level, char *buf, unsigned cap);

#define LOG_E(msg, ...) log_at(LOG_ERROR, __FILE__, __LINE__, msg, __VA_ARGS__)
#define LOG_W(msg, ...) log_at(LOG_WARN, __FILE__, __LINE__, msg, __VA_ARGS__)
#define LOG_I(msg, ...) log_at(LOG_INFO, __FILE__, __LINE__, msg, __VA_ARGS__)
#define LOG_V(n, msg, ...) log_at((n), __FILE__, __LINE__, msg, __VA_ARGS__)

#endif
