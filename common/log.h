/* log: one line per event on stderr, filtered by level.
 *
 * Lines look like `2026-11-26T17:43:48.123Z INFO run started run_id=... module_id=...`:
 * a UTC timestamp, the level, then the caller's text (by convention a short phrase
 * followed by key=value context). Not thread-safe for set-up; log_msg itself may be
 * called from any thread (each line is written with one write(2), or batched: see
 * log_batch). */
#ifndef PRISMQ_LOG_H
#define PRISMQ_LOG_H

#include "compat.h"

enum log_level { LOG_LVL_DEBUG = 0, LOG_LVL_INFO, LOG_LVL_WARNING, LOG_LVL_ERROR };

/* Parses DEBUG|INFO|WARNING|ERROR (case-insensitive; WARN is accepted too).
 * Returns 0 and sets *out, or -EINVAL leaving *out untouched. */
int log_level_parse(enum log_level *out, const char *s);

/* Sets the lowest level that is printed (default LOG_LVL_INFO). */
void log_set_level(enum log_level lvl);
enum log_level log_get_level(void);

/* Prints one line at `lvl` if it passes the filter. */
void log_msg(enum log_level lvl, const char *fmt, ...) COMPAT_PRINTF(2, 3);

/* Batching, for a thread that logs a lot between waits (an event loop): its lines below
 * ERROR go into a buffer instead of one write(2) each, and leave together, so that a
 * reader of stderr (a pipe, journald) wakes once per batch rather than once per line.
 *
 * log_batch(request, arg) turns batching on for the calling thread (only one thread
 * batches at a time) and log_batch(NULL, NULL) flushes and turns it off. While on, the
 * first line buffered after a flush calls request(arg), which must see to it that
 * log_flush() is called soon on that thread (the server activates an event, so the
 * lines of one pass of its loop leave in one write). A line that does not fit in the
 * buffer (LOG_BATCH_BYTES, at most PIPE_BUF so that a batch is written atomically to a
 * pipe) first flushes it; an ERROR line is written at once, after the lines buffered
 * before it; lines of other threads are written at once. Lines still buffered when the
 * process dies are lost: turn batching off before exiting. */
#define LOG_BATCH_BYTES 4096
typedef void (*log_flush_request_fn)(void *arg);
void log_batch(log_flush_request_fn request, void *arg);

/* Writes the buffered lines, if any. Call it from the batching thread; elsewhere it
 * does nothing. */
void log_flush(void);

/* A rate limit for a line that can repeat without end (a full descriptor table, a
 * flood of refused connections): at most one per interval, saying how many were held
 * back. Zero-initialise. Single-threaded per limit. */
typedef struct log_limit {
  long long last_ms; /* monotonic time of the last line passed; 0 = none yet */
  unsigned long long held;
} log_limit;

/* Returns 1 if a line may be printed now, setting *held to the lines held back since
 * the previous one; returns 0 (counting one more held back) within `every_ms` of it. */
int log_limit_pass(log_limit *l, unsigned every_ms, unsigned long long *held);

#define LOG_DEBUG(...)                                                         \
  do {                                                                         \
    if (log_get_level() <= LOG_LVL_DEBUG) log_msg(LOG_LVL_DEBUG, __VA_ARGS__); \
  } while (0)
#define LOG_INFO(...)  log_msg(LOG_LVL_INFO, __VA_ARGS__)
#define LOG_WARN(...)  log_msg(LOG_LVL_WARNING, __VA_ARGS__)
#define LOG_ERROR(...) log_msg(LOG_LVL_ERROR, __VA_ARGS__)

#endif
