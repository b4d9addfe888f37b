/* runtab: the run table, every run the server has accepted, kept durably in SQLite.
 *
 * Runs are stored as the contract's data model, prismq.runner.v1.Run (protobuf-c's
 * Prismq__Runner__V1__Run): the packed message is the record, and a few of its fields
 * are copied into indexed columns for lookups and filters (run_id, request_id,
 * module_id, owner, status, created_at_ms, labels). What the table returns is always
 * the unpacked record, so every field written comes back exactly.
 *
 * Order: run ids are ULIDs (common/ids.h) that sort by creation time, so "newest
 * first" is descending run id, and a page cursor is simply a run id: the next page
 * holds the runs whose id sorts before it, whether or not that run still exists.
 *
 * Fixed at insert: run_id, request_id, module_id, owner, created_at_ms and labels
 * identify and classify a run and never change in the contract. runtab_update rewrites
 * the stored record and the status column only; the caller must not change those
 * fields.
 *
 * Durability: SQLite in WAL mode with synchronous=NORMAL. A committed write survives a
 * crash of the process; the last transactions before a power loss may be lost (the
 * database stays consistent). runtab_insert commits before it returns; runtab_update
 * only joins the open transaction (reads on this table see it at once), which the next
 * runtab_insert, runtab_purge, runtab_sync or runtab_free commits: group commit. A
 * run's status changes thus share one commit with each other and with the next new
 * run, instead of one each (three per run; WAL writes were the largest part of a
 * start). The caller syncs before anything outside the process can learn of an update
 * (prismqd: before a connection sends, and at the end of each pass of its loop).
 *
 * Single-threaded: one runtab is used from one thread (the event loop thread), and it
 * is the only user of its file (runtab_open locks it). Calls do blocking file I/O:
 * normally short (page cache, no fsync per commit: a GetRun costs a few microseconds).
 * About once per few hundred runs a commit starts a checkpoint of the WAL into the
 * database, with two fsyncs, on a thread of its own for its length; a call that needs
 * the connection meanwhile waits for it to end (runtab_busy tells whether one runs).
 * Out of memory aborts (server code). */
#ifndef PRISMQ_RUNTAB_H
#define PRISMQ_RUNTAB_H

#include <stddef.h>
#include <stdint.h>

#include "ids.h"
#include "prismq/runner/v1/runner.pb-c.h"

typedef struct runtab runtab;
typedef struct metrics metrics;

/* Most statuses, and most labels, one runtab_list filter may hold. */
#define RUNTAB_FILTER_MAX 64

/* Opens (creating it if needed) the run table in the SQLite database file `path`
 * (e.g. "<data_dir>/runs.db"; its directory must exist), or a private in-memory table
 * for ":memory:". Creates or upgrades the schema (tracked by PRAGMA user_version), in
 * place and in one transaction: the runs of an older file are kept (a run stored before
 * owners were, has owner "").
 * On success returns 0 and sets *out (free with runtab_free). Otherwise *out is
 * untouched, `err` (errlen bytes; may be NULL if errlen is 0) receives a one-line
 * message starting with the path, and the return is -EIO when SQLite fails (cannot
 * open or create the file, not a database, corrupt, I/O error), -EBUSY when another
 * process has the file open (the table holds it locked until runtab_free, so nothing
 * else, not even the sqlite3 shell, reads it meanwhile), or -ENOTSUP when the file's
 * schema is newer than this server knows. */
int runtab_open(runtab **out, const char *path, char *err, size_t errlen);

/* Commits what waits (runtab_sync) and closes the database. Accepts NULL. */
void runtab_free(runtab *t);

/* Adds a new run: the record, its index columns and its labels (all or nothing), and
 * commits it together with the updates waiting (see Durability). run->run_id must be a
 * valid run id (id_run_valid); an empty (or NULL) request_id means none, and any number
 * of runs may have none; a NULL owner is stored as "" (anonymous). Labels with the same
 * key: the last one counts for label filters (as protobuf map semantics say), the stored
 * record keeps them all. `run` is not kept.
 * Returns 0; -EINVAL for an invalid run_id; -EEXIST if another run has the same
 * non-empty request_id (the caller may then look it up with runtab_get_by_request_id);
 * -EBUSY if a run with this run_id exists (when both clash, either code may come);
 * -EIO if SQLite fails (logged). On any error nothing of this run is written, and the
 * updates waiting still wait. */
int runtab_insert(runtab *t, const Prismq__Runner__V1__Run *run);

/* Replaces the stored record of run->run_id by `run` and sets its status column
 * (see the top of this file for the fields that must not change), in the open
 * transaction: durable once committed (see Durability). `run` is not kept: the table
 * keeps its own copy until the commit, and applies it again if SQLite has rolled the
 * transaction back meanwhile (a write failed: disk full, an I/O error).
 * Returns 0; -ENOENT if there is no run with that id; -EIO if SQLite fails (logged: the
 * update waits all the same, and the next commit tries it again). */
int runtab_update(runtab *t, const Prismq__Runner__V1__Run *run);

/* Commits the updates waiting, if any. Returns 0, or -EIO if SQLite fails (logged, at
 * most a line per 10 s with a count): they keep waiting, and the next runtab_sync,
 * runtab_insert or runtab_free tries them again. */
int runtab_sync(runtab *t);

/* Looks up a run by id. Returns 0 and sets *out to a new copy, which the caller frees
 * with prismq__runner__v1__run__free_unpacked(*out, NULL); -ENOENT if there is no such
 * run; -EIO if SQLite fails or the stored record does not unpack (logged). *out is
 * untouched unless 0 is returned. */
int runtab_get(runtab *t, const char *run_id, Prismq__Runner__V1__Run **out);

/* As runtab_get, but gives the stored encoding of the run (a packed Run) without
 * decoding it: *out points into the table's own buffer, valid until the next call on
 * `t`. Returns 0, -ENOENT or -EIO. */
int runtab_get_packed(runtab *t, const char *run_id, const uint8_t **out, size_t *len);

/* As runtab_get, by the request_id given at insert. An empty request_id finds nothing
 * (-ENOENT). */
int runtab_get_by_request_id(runtab *t, const char *request_id, Prismq__Runner__V1__Run **out);

/* Which runs runtab_list returns: those matching every condition given. Not kept by
 * runtab_list. */
typedef struct runtab_filter {
  const int *statuses;             /* the status is one of these (RunStatus values) */
  size_t nstatuses;                /* 0 = any status; at most RUNTAB_FILTER_MAX */
  const char *module_id;           /* NULL or "" = any module */
  const char *owner;               /* NULL = any owner; "" = anonymous runs only */
  const char *const *label_keys;   /* the run has label label_keys[i] ... */
  const char *const *label_values; /* ... with value label_values[i], for every i */
  size_t nlabels;                  /* 0 = any labels; at most RUNTAB_FILTER_MAX */
} runtab_filter;

#define RUNTAB_FILTER_INIT \
  { NULL, 0, NULL, NULL, NULL, NULL, 0 }

/* Lists the runs matching `f` (NULL = all runs), newest first (descending run id), at
 * most `limit` of them (>= 1). `before_run_id` NULL or "" starts from the newest run;
 * otherwise only runs whose id sorts before it are listed: pass the last id of a page
 * to get the next one (the run need not exist any more, only its id is compared).
 * On success returns 0, sets *out to an array of *n_out runs (NULL when 0), which the
 * caller frees with runtab_list_free(*out, *n_out), and sets *more_out to 1 if more
 * runs match after these (a next page exists), else 0.
 * Returns -EINVAL for limit 0, too many statuses or labels, or a NULL array with a
 * non-zero count; -EIO if SQLite fails or a stored record does not unpack (logged).
 * The outputs are untouched unless 0 is returned. */
int runtab_list(runtab *t, const runtab_filter *f, const char *before_run_id, size_t limit,
                Prismq__Runner__V1__Run ***out, size_t *n_out, int *more_out);

/* Frees the n runs of `runs` and the array, as returned by runtab_list. Accepts NULL. */
void runtab_list_free(Prismq__Runner__V1__Run **runs, size_t n);

/* For start-up: the runs still QUEUED or RUNNING, left so by an earlier server,
 * oldest first. On success returns 0 and sets *out to an array of *n_out runs (NULL
 * when 0; free with runtab_list_free); -EIO if SQLite fails or a stored record does not
 * unpack (logged; outputs untouched). */
int runtab_active(runtab *t, Prismq__Runner__V1__Run ***out, size_t *n_out);

/* Retention: deletes old terminal runs (any status but QUEUED and RUNNING; active runs
 * are never touched), with their labels, oldest first, at most `batch` (>= 1) of them,
 * in one transaction that also commits the updates waiting (see Durability). A run goes
 * when it is
 *   - beyond max_runs: the table holds more than max_runs runs (all statuses count)
 *     and the run is one of the (count - max_runs) oldest terminal runs; so the oldest
 *     terminal runs go until the table is back at max_runs (or holds only active runs
 *     beyond it). max_runs 0 = no limit;
 *   - or older than cutoff_ms: created_at_ms and finished_at_ms both before cutoff_ms
 *     (a run without finished_at_ms counts as finished when created). cutoff_ms <= 0 =
 *     no age limit.
 * "Oldest" is run id order, which is creation order. The table is walked from its
 * oldest run through the primary key (no sort, no extra index), and the walk ends at
 * the first terminal run that is neither beyond max_runs nor created before cutoff_ms:
 * a call costs the runs it deletes plus the terminal runs it passes over (those
 * created before the cutoff but finished after it, which a longer run can be) and the
 * active ones among them. After a clock step back, a run created before the cutoff
 * may wait behind a newer one until that one is old enough too.
 * On success returns 0, writes the deleted ids to ids[0..*n_out) (ids has room for
 * `batch`), oldest first, and runtab_count drops by *n_out. *n_out < batch means no
 * run is left to delete for these limits: call again with the same limits until then
 * (each call deletes the next ones; the caller may let other work run in between).
 * Returns -EINVAL for batch 0; -EIO if SQLite fails (logged): nothing is deleted, the
 * updates waiting still wait, and *n_out is untouched (ids may have been written). */
int runtab_purge(runtab *t, int64_t cutoff_ms, uint64_t max_runs, size_t batch,
                 char (*ids)[ID_RUN_LEN + 1], size_t *n_out);

/* 1 unless the last commit failed (a full disk, an I/O error, a file size limit):
 * then runs cannot be recorded until a commit succeeds again. Constant time. */
int runtab_writable(const runtab *t);

/* After a failed commit, tries one: the updates waiting if any, else a write that
 * changes nothing. Returns runtab_writable afterwards (at once, doing nothing, if the
 * last commit succeeded). */
int runtab_probe(runtab *t);

/* The number of runs in the table. Constant time. */
uint64_t runtab_count(const runtab *t);

/* ---- saved presets ----------------------------------------------------------------
 * The database also keeps the presets clients save (preset.h decides what may be
 * saved): prismq.runner.v1.Preset records, one per (module_id, name). Writes commit at
 * once, together with the run updates waiting (see Durability). */

/* Saves p (its module_id and name non-empty), replacing the preset of the same
 * module_id and name if there is one; `p` is not kept. A new preset is refused with
 * -ENOSPC when its module has max_per_module presets already (0 = no limit).
 * Returns 0, -ENOSPC, or -EIO if SQLite fails (logged; nothing saved). */
int runtab_preset_put(runtab *t, const Prismq__Runner__V1__Preset *p, uint32_t max_per_module);

/* Looks up the preset of module_id named `name`. Returns 0 and sets *out (if out is not
 * NULL) to a new copy, which the caller frees with
 * prismq__runner__v1__preset__free_unpacked(*out, NULL); -ENOENT if there is none;
 * -EIO if SQLite fails or the record does not unpack (logged). */
int runtab_preset_get(runtab *t, const char *module_id, const char *name,
                      Prismq__Runner__V1__Preset **out);

/* The presets of module_id (NULL or "" = of every module), ordered by module_id then
 * name. Returns 0 and sets *out to an array of *n_out presets (NULL when 0; free with
 * runtab_preset_list_free), or -EIO (logged; outputs untouched). */
int runtab_preset_list(runtab *t, const char *module_id, Prismq__Runner__V1__Preset ***out,
                       size_t *n_out);

/* Frees what runtab_preset_list returned. Accepts NULL. */
void runtab_preset_list_free(Prismq__Runner__V1__Preset **presets, size_t n);

/* Deletes the preset of module_id named `name`. Returns 0, -ENOENT if there is none, or
 * -EIO if SQLite fails (logged; nothing deleted). */
int runtab_preset_delete(runtab *t, const char *module_id, const char *name);

/* Whether a checkpoint is running on its own thread now (see runtab.c,
 * "Checkpoints"): any other runtab_* call but runtab_count, runtab_writable and a
 * runtab_sync with nothing waiting would wait for it to end. For work that can come back
 * later instead (the retention sweep). */
int runtab_busy(runtab *t);

/* Measures every commit from now on, in m's histogram prismq_runtab_commit_seconds (m
 * must outlive t). */
void runtab_set_metrics(runtab *t, metrics *m);

#endif
