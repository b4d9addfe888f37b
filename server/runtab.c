/* Schema (user_version 3):
 *
 *   runs(run_id TEXT PRIMARY KEY, request_id TEXT, module_id TEXT NOT NULL,
 *        status INTEGER NOT NULL, created_at_ms INTEGER NOT NULL, pb BLOB NOT NULL,
 *        owner TEXT NOT NULL DEFAULT '')
 *     pb is the packed Run and the only source of truth for reads; the other columns
 *     are copies for lookups and filters. An ordinary rowid table rather than WITHOUT
 *     ROWID, because pb has no size bound (parameters, error messages) and WITHOUT ROWID
 *     keeps whole rows in interior b-tree pages. owner comes last because version 2
 *     added it (ALTER TABLE, which only appends); the default gives the runs of a
 *     version-1 file owner "" without rewriting them.
 *   runs_request UNIQUE (request_id) WHERE request_id IS NOT NULL
 *     request_id is NULL when the run has none; the partial index leaves those out, so
 *     most inserts write one index page fewer.
 *   runs_status (status, run_id), runs_module (module_id, run_id),
 *   runs_owner (owner, run_id)
 *     An equality filter plus a cursor on run_id reads one index range already in
 *     "newest first" order, with no sort.
 *   run_labels(run_id, key, value, PRIMARY KEY (run_id, key)) WITHOUT ROWID
 *     Small rows, clustered by run. run_labels_kv (key, value) carries the primary key
 *     too, so a label filter is answered from that index alone.
 *
 *   presets(module_id TEXT, name TEXT, pb BLOB NOT NULL, PRIMARY KEY (module_id, name))
 *     WITHOUT ROWID
 *     The saved presets (runtab_preset_*): pb is the packed Preset. Few and small rows,
 *     read by key or by module.
 *
 * No foreign key from run_labels to runs: both are written in the same transaction by
 * this file alone, and enforcing it would cost a lookup per label on the start path.
 *
 * Checkpoints: started after the commit that takes the WAL past CKPT_PAGES pages (our
 * WAL hook, in place of SQLite's automatic one); a checkpoint fsyncs the WAL, copies it
 * into the database and fsyncs that. A run writes about ten pages (three
 * transactions), so that is once per few hundred runs. 4000 pages (16 MiB) rather than
 * SQLite's 1000 spend fewer fsyncs per run while the WAL stays small enough for fast
 * reads. The checkpoint runs on a thread of its own, on this connection, while nothing
 * else touches it: every function below that uses the connection first waits for the
 * checkpoint to end (ckpt_join), so the loop waits for its fsyncs only when it needs the
 * table meanwhile, and runtab_busy lets work that can wait (the retention sweep) come
 * back later instead. As no writer runs beside it, the checkpoint always completes and
 * the next write rewinds the WAL (PASSIVE checkpoints from a second connection never
 * caught up with a sustained writer, and the WAL grew without bound). The thread lives
 * only for one checkpoint, so the process has a second thread (whose presence makes
 * every munmap, one per spawn, a TLB shootdown) for a few tens of milliseconds now and
 * then.
 *
 * Writing the WAL back early: so that the checkpoint's first fsync does not write back
 * all 16 MiB of the WAL while the event loop waits, every FLUSH_PAGES pages the WAL hook
 * starts the writeback of what the WAL holds so far (sync_file_range, which does not
 * wait for it), and the checkpoint finds it nearly clean. This is not a sync (no
 * metadata, no disk cache flush), only writeback started sooner; the checkpoint still
 * syncs as SQLite does. sync_file_range waits only when the disk's request queue is
 * full. It is not a helper thread's fdatasync because a second thread in the process
 * makes every munmap (one per posix_spawn, its child's stack) a TLB shootdown across
 * CPUs. docs/performance.md has the measurements.
 *
 * Migrations: migrations[i] takes the schema from version i to i + 1; runtab_open
 * applies the missing ones in one transaction (a new file gets them all, so it ends up
 * with the same schema as an upgraded one). A new version appends an entry; an entry
 * never changes once released. */
#include "runtab.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "compat.h"
#include "ids.h"
#include "log.h"
#include "metrics.h"
#include "xalloc.h"

typedef Prismq__Runner__V1__Run Run;

static const char *const migrations[] = {
    "CREATE TABLE runs(run_id TEXT PRIMARY KEY, request_id TEXT,"
    " module_id TEXT NOT NULL, status INTEGER NOT NULL, created_at_ms INTEGER NOT NULL,"
    " pb BLOB NOT NULL);"
    "CREATE UNIQUE INDEX runs_request ON runs(request_id) WHERE request_id IS NOT NULL;"
    "CREATE INDEX runs_status ON runs(status, run_id);"
    "CREATE INDEX runs_module ON runs(module_id, run_id);"
    "CREATE TABLE run_labels(run_id TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,"
    " PRIMARY KEY (run_id, key)) WITHOUT ROWID;"
    "CREATE INDEX run_labels_kv ON run_labels(key, value);",
    /* 1 -> 2: who started each run. */
    "ALTER TABLE runs ADD COLUMN owner TEXT NOT NULL DEFAULT '';"
    "CREATE INDEX runs_owner ON runs(owner, run_id);",
    /* 2 -> 3: saved presets. */
    "CREATE TABLE presets(module_id TEXT NOT NULL, name TEXT NOT NULL, pb BLOB NOT NULL,"
    " PRIMARY KEY (module_id, name)) WITHOUT ROWID;",
};
#define SCHEMA_VERSION ((int64_t)(sizeof migrations / sizeof migrations[0]))

enum {
  ST_BEGIN,
  ST_COMMIT,
  ST_ROLLBACK,
  ST_SAVEPOINT,
  ST_ROLLBACK_TO,
  ST_RELEASE,
  ST_INSERT,
  ST_INSERT_LABEL,
  ST_UPDATE,
  ST_GET,
  ST_GET_BY_REQUEST,
  ST_ACTIVE,
  ST_PURGE_SCAN,
  ST_PURGE_RUN,
  ST_PURGE_LABELS,
  ST_PRESET_PUT,
  ST_PRESET_GET,
  ST_PRESET_LIST,
  ST_PRESET_LIST_ALL,
  ST_PRESET_COUNT,
  ST_PRESET_DELETE,
  ST_COUNT
};

/* Every statement but runtab_list's is prepared once at open. */
static const char *const stmt_sql[ST_COUNT] = {
    [ST_BEGIN] = "BEGIN IMMEDIATE",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
    [ST_SAVEPOINT] = "SAVEPOINT ins",
    [ST_ROLLBACK_TO] = "ROLLBACK TO ins",
    [ST_RELEASE] = "RELEASE ins",
    [ST_INSERT] =
        "INSERT INTO runs(run_id, request_id, module_id, status, created_at_ms, pb,"
        " owner) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    /* OR REPLACE: a repeated map key keeps the last value, as protobuf maps do. */
    [ST_INSERT_LABEL] = "INSERT OR REPLACE INTO run_labels(run_id, key, value) VALUES (?1, ?2, ?3)",
    [ST_UPDATE] = "UPDATE runs SET status = ?2, pb = ?3 WHERE run_id = ?1",
    [ST_GET] = "SELECT pb FROM runs WHERE run_id = ?1",
    [ST_GET_BY_REQUEST] = "SELECT pb FROM runs WHERE request_id = ?1",
    /* QUEUED, RUNNING: oldest first, through the status index. */
    [ST_ACTIVE] = "SELECT pb FROM runs WHERE status IN (1, 2) ORDER BY run_id",
    /* Terminal runs, oldest first: one walk of the primary key's index, which stops
     * as soon as runtab_purge has what it wants (old runs come first). */
    [ST_PURGE_SCAN] =
        "SELECT run_id, created_at_ms, pb FROM runs WHERE status NOT IN (1, 2)"
        " ORDER BY run_id",
    [ST_PURGE_RUN] = "DELETE FROM runs WHERE run_id = ?1",
    [ST_PURGE_LABELS] = "DELETE FROM run_labels WHERE run_id = ?1",
    [ST_PRESET_PUT] = "INSERT OR REPLACE INTO presets(module_id, name, pb) VALUES (?1, ?2, ?3)",
    [ST_PRESET_GET] = "SELECT pb FROM presets WHERE module_id = ?1 AND name = ?2",
    [ST_PRESET_LIST] = "SELECT pb FROM presets WHERE module_id = ?1 ORDER BY name",
    [ST_PRESET_LIST_ALL] = "SELECT pb FROM presets ORDER BY module_id, name",
    [ST_PRESET_COUNT] = "SELECT count(*) FROM presets WHERE module_id = ?1",
    [ST_PRESET_DELETE] = "DELETE FROM presets WHERE module_id = ?1 AND name = ?2",
};

/* runtab_list's SQL depends on the shape of the filter; the statements of the last
 * few shapes are kept, so a client paging through a listing prepares once. */
#define LIST_CACHE 8

struct list_shape {
  size_t nstatuses, nlabels;
  int module, owner, cursor;
};

struct list_stmt {
  struct list_shape shape;
  sqlite3_stmt *st; /* NULL: free slot */
};

/* See "Checkpoints" and "Writing the WAL back early" above. */
#define CKPT_PAGES  4000
#define FLUSH_PAGES 500

/* An update waiting for its commit (see runtab.h, "Durability"). Kept until then, to be
 * applied again if SQLite rolls the transaction back: a failed write (disk full, an I/O
 * error) can take the whole transaction, with other runs' updates in it, and those
 * must neither be lost nor told to anyone as done. */
struct pending {
  char run_id[ID_RUN_LEN + 1];
  int status;
  size_t off, len; /* the packed run, in pend_buf */
};

struct runtab {
  sqlite3 *db;
  int wal_fd;           /* the WAL file, read-only, for sync_file_range; -1 if none */
  int flushed_pages;    /* WAL size at the last writeback started */
  struct pending *pend; /* updates since the last commit, in order */
  size_t npend, pend_cap;
  int failing; /* the last commit failed (runtab_writable) */
  uint8_t *pend_buf;
  size_t pend_used, pend_buf_cap;
  log_limit fail_limit; /* SQL failures can repeat every pass while a disk is full */
  sqlite3_stmt *st[ST_COUNT];
  struct list_stmt lists[LIST_CACHE];
  unsigned list_victim; /* next slot to reuse when all are taken (round robin) */
  uint8_t *buf;         /* packing buffer, reused by every write */
  size_t cap;
  uint64_t count;                 /* rows in runs: this connection is the only writer */
  metrics_series *commit_seconds; /* runtab_set_metrics; NULL: not measured */
  int ckpt_wanted;                /* the WAL is past CKPT_PAGES: a checkpoint is due */
  int ckpt_running;               /* ckpt_thread has the connection until joined */
  atomic_int ckpt_done;           /* set by ckpt_thread as it ends */
  pthread_t ckpt_thread;
};

/* protobuf-c leaves strings NULL only if the caller did; treat that as "". */
static const char *str_or_empty(const char *s) { return s ? s : ""; }

static void set_err(char *err, size_t errlen, const char *fmt, ...) COMPAT_PRINTF(3, 4);
static void set_err(char *err, size_t errlen, const char *fmt, ...) {
  if (!errlen) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}

static int fail_sql(runtab *t, const char *op, const char *run_id) {
  unsigned long long held;
  if (log_limit_pass(&t->fail_limit, 10000, &held))
    LOG_ERROR("run table %s failed: %s run_id=%s (%llu more failures in the last 10 s)", op,
              sqlite3_errmsg(t->db), str_or_empty(run_id), held);
  return -EIO;
}

/* Steps a statement that returns no rows and resets it; returns SQLite's code. */
static int step_done(sqlite3_stmt *st) {
  int rc = sqlite3_step(st);
  sqlite3_reset(st);
  return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* Abandons the open transaction, if a failed statement has not already ended it. */
static void rollback(runtab *t) {
  if (!sqlite3_get_autocommit(t->db)) step_done(t->st[ST_ROLLBACK]);
}

static void ckpt_start(runtab *t);

/* Commits the open transaction, which ends the waiting of its updates; on failure
 * rolls it back (they keep waiting) and returns -EIO (logged). */
static int commit(runtab *t, const char *op, const char *run_id) {
  struct timespec t0;
  if (t->commit_seconds) clock_gettime(CLOCK_MONOTONIC, &t0);
  int rc = step_done(t->st[ST_COMMIT]);
  /* The checkpoints that commits run (the WAL hook) are in it: they are the slow ones. */
  if (t->commit_seconds) metrics_observe_since(t->commit_seconds, &t0);
  if (rc == SQLITE_OK) {
    t->npend = 0;
    t->pend_used = 0;
    t->failing = 0;
    if (t->ckpt_wanted) ckpt_start(t);
    return 0;
  }
  t->failing = 1;
  int ret = fail_sql(t, op, run_id);
  rollback(t);
  return ret;
}

/* Packs run into t->buf; returns its size. */
static size_t pack_run(runtab *t, const Run *run) {
  size_t n = prismq__runner__v1__run__get_packed_size(run);
  if (n > t->cap) {
    t->cap = n;
    t->buf = xrealloc(t->buf, n);
  }
  prismq__runner__v1__run__pack(run, t->buf);
  return n;
}

/* Packs run into t->buf and binds it as parameter idx of st. */
static void bind_run(runtab *t, sqlite3_stmt *st, int idx, const Run *run) {
  size_t n = pack_run(t, run);
  /* n > 0 for any run with a run_id, so the blob is never NULL where a row is written. */
  sqlite3_bind_blob64(st, idx, t->buf, n, SQLITE_STATIC);
}

/* Unpacks column `col` of st's current row into a new Run; NULL if it does not unpack
 * (logged). */
static Run *unpack_row(sqlite3_stmt *st, int col) {
  const void *p = sqlite3_column_blob(st, col);
  int n = sqlite3_column_bytes(st, col);
  Run *r = prismq__runner__v1__run__unpack(NULL, (size_t)n, p);
  if (!r) LOG_ERROR("run table: a stored run does not unpack bytes=%d", n);
  return r;
}

/* Steps st to the end, or until `limit` rows are collected, unpacking each row into
 * the array *runs (grown as needed; *n rows so far). *more is set to 1 if a row is
 * left after the limit. Resets st. Returns 0 or -EIO (logged); the rows collected
 * stay in *runs either way. */
static int collect(runtab *t, sqlite3_stmt *st, size_t limit, Run ***runs, size_t *n, int *more) {
  size_t cap = 0;
  int rc, ret = 0;
  *more = 0;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    if (*n == limit) {
      *more = 1;
      break;
    }
    Run *r = unpack_row(st, 0);
    if (!r) {
      ret = -EIO;
      break;
    }
    if (*n == cap) {
      cap = cap ? 2 * cap : (limit < 16 ? limit : 16);
      *runs = xrealloc(*runs, cap * sizeof **runs);
    }
    (*runs)[(*n)++] = r;
  }
  if (!ret && rc != SQLITE_ROW && rc != SQLITE_DONE) ret = fail_sql(t, "select", NULL);
  sqlite3_reset(st); /* ends the read transaction, if any */
  return ret;
}

/* ---- checkpoints ---- */

static void *ckpt_thread(void *arg) {
  runtab *t = arg;
  /* PASSIVE, as SQLite's own: with no other connection, it copies the whole WAL. */
  sqlite3_wal_checkpoint_v2(t->db, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
  atomic_store(&t->ckpt_done, 1);
  return NULL;
}

/* Starts the checkpoint that is due, after a commit. Where no thread can be made, it
 * runs here, as it used to. */
static void ckpt_start(runtab *t) {
  t->ckpt_wanted = 0;
  atomic_store(&t->ckpt_done, 0);
  if (pthread_create(&t->ckpt_thread, NULL, ckpt_thread, t) == 0) {
    t->ckpt_running = 1;
    return;
  }
  ckpt_thread(t);
}

/* Waits for a checkpoint in progress to end: the connection is the caller's again. */
static void ckpt_join(runtab *t) {
  if (!t->ckpt_running) return;
  pthread_join(t->ckpt_thread, NULL);
  t->ckpt_running = 0;
}

/* SQLite calls this after each commit with the WAL's size in pages. It replaces
 * sqlite3_wal_autocheckpoint's hook: past CKPT_PAGES a checkpoint is due (commit starts
 * it once the commit is over, see "Checkpoints"); below, it starts the WAL's
 * writeback. */
static int wal_hook(void *arg, sqlite3 *db, const char *name, int pages) {
  (void)db;
  (void)name;
  runtab *t = arg;
  if (pages < t->flushed_pages) t->flushed_pages = 0; /* the WAL was rewound */
  if (pages >= CKPT_PAGES) {
    t->ckpt_wanted = 1;
    t->flushed_pages = 0;
  } else if (t->wal_fd >= 0 && pages - t->flushed_pages >= FLUSH_PAGES) {
    /* A failure costs only speed: the checkpoint syncs the WAL itself. */
#ifdef SYNC_FILE_RANGE_WRITE
    sync_file_range(t->wal_fd, 0, 0, SYNC_FILE_RANGE_WRITE);
#endif
    t->flushed_pages = pages;
  }
  return SQLITE_OK;
}

/* ---- open ---- */

static int query_int(sqlite3 *db, const char *sql, int64_t *out) {
  sqlite3_stmt *st = NULL;
  int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
  if (rc == SQLITE_OK) {
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
      *out = sqlite3_column_int64(st, 0);
      rc = SQLITE_OK;
    }
  }
  sqlite3_finalize(st);
  return rc;
}

/* Fills err with SQLite's view of the failure rc on db (NULL if even the handle could
 * not be allocated) and returns -EIO, or -EBUSY when another process holds the file. */
static int open_err(sqlite3 *db, int rc, const char *path, char *err, size_t errlen) {
  if ((rc & 0xff) == SQLITE_BUSY) {
    set_err(err, errlen, "%s: in use by another process (another prismqd on this data directory?)",
            path);
    return -EBUSY;
  }
  if (!db)
    set_err(err, errlen, "%s: %s", path, sqlite3_errstr(rc));
  else if ((rc & 0xff) == SQLITE_CANTOPEN && sqlite3_system_errno(db))
    /* SQLite's "unable to open database file" does not say why; errno does. */
    set_err(err, errlen, "%s: %s (%s)", path, sqlite3_errmsg(db),
            strerror(sqlite3_system_errno(db)));
  else
    set_err(err, errlen, "%s: %s", path, sqlite3_errmsg(db));
  return -EIO;
}

/* Brings the schema from version `from` to SCHEMA_VERSION in one transaction.
 * Returns 0, or -EIO with err filled. */
static int migrate(sqlite3 *db, int64_t from, const char *path, char *err, size_t errlen) {
  int rc = sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
  for (int64_t v = from; rc == SQLITE_OK && v < SCHEMA_VERSION; v++)
    rc = sqlite3_exec(db, migrations[v], NULL, NULL, NULL);
  if (rc == SQLITE_OK) {
    char sql[64];
    snprintf(sql, sizeof sql, "PRAGMA user_version = %" PRId64, SCHEMA_VERSION);
    rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
  }
  if (rc == SQLITE_OK) rc = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
  if (rc == SQLITE_OK) return 0;
  int ret = open_err(db, rc, path, err, errlen); /* before ROLLBACK replaces the message */
  if (!sqlite3_get_autocommit(db)) sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
  return ret;
}

int runtab_open(runtab **out, const char *path, char *err, size_t errlen) {
  sqlite3 *db = NULL;
  runtab *t = NULL;
  int64_t version = 0, count = 0;
  int ret;

  /* NOMUTEX: the table is single-threaded (see runtab.h), so SQLite's locks are waste.
   * EXRESCODE: tells a duplicate primary key from a duplicate request_id. */
  int rc = sqlite3_open_v2(
      path, &db,
      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_EXRESCODE,
      NULL);
  if (rc != SQLITE_OK) goto fail_db;
  /* READWRITE quietly falls back to read-only on a write-protected file. */
  if (sqlite3_db_readonly(db, "main") == 1) {
    set_err(err, errlen, "%s: the database file is read-only", path);
    ret = -EIO;
    goto fail;
  }
  /* EXCLUSIVE locking: the file stays locked while the table is open, so a second
   * server on the same data directory stops here instead of marking the first one's
   * runs LOST; and WAL keeps its index in this process's memory, without the -shm file
   * and its lock calls (22 fcntl per run, 2 per GetRun). Set before WAL mode, which
   * takes it from here.
   * WAL: a commit is one append; synchronous=NORMAL drops the fsync per commit (durable
   * across a process crash, see runtab.h). */
  rc = sqlite3_exec(db,
                    "PRAGMA locking_mode = EXCLUSIVE; PRAGMA journal_mode = WAL;"
                    " PRAGMA synchronous = NORMAL",
                    NULL, NULL, NULL);
  if (rc != SQLITE_OK) goto fail_db;
  if ((rc = query_int(db, "PRAGMA user_version", &version)) != SQLITE_OK) goto fail_db;
  if (version > SCHEMA_VERSION) {
    set_err(err, errlen,
            "%s: run table schema version %" PRId64 " is newer than this server's (%" PRId64 ")",
            path, version, SCHEMA_VERSION);
    ret = -ENOTSUP;
    goto fail;
  }
  if (version < SCHEMA_VERSION && (ret = migrate(db, version, path, err, errlen)) < 0) goto fail;
  if ((rc = query_int(db, "SELECT count(*) FROM runs", &count)) != SQLITE_OK) goto fail_db;

  t = xcalloc(1, sizeof *t);
  t->db = db;
  t->wal_fd = -1;
#ifdef SYNC_FILE_RANGE_WRITE /* Linux's; elsewhere no early writeback (and no handle that
                              * would keep Windows from deleting the WAL) */
  const char *file = sqlite3_db_filename(db, "main"); /* "" for :memory: */
  if (file && *file) {
    /* WAL mode has made the file by now; without it checkpoints are only slower. */
    char wal[4096];
    errno = ENAMETOOLONG;
    if ((size_t)snprintf(wal, sizeof wal, "%s-wal", file) < sizeof wal)
      t->wal_fd = open(wal, O_RDONLY | O_CLOEXEC);
    if (t->wal_fd < 0) LOG_WARN("run table: cannot open %s-wal: %s", file, strerror(errno));
  }
#endif
  sqlite3_wal_hook(db, wal_hook, t);
  t->count = (uint64_t)count;
  for (int i = 0; i < ST_COUNT; i++) {
    rc = sqlite3_prepare_v3(db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &t->st[i], NULL);
    if (rc != SQLITE_OK) goto fail_db;
  }
  *out = t;
  return 0;

fail_db:
  ret = open_err(db, rc, path, err, errlen);
fail:
  if (t)
    runtab_free(t); /* closes db */
  else
    sqlite3_close(db);
  return ret;
}

void runtab_free(runtab *t) {
  if (!t) return;
  ckpt_join(t);
  runtab_sync(t); /* a failure is logged; nothing else to do with it here */
  for (int i = 0; i < ST_COUNT; i++) sqlite3_finalize(t->st[i]);
  for (size_t i = 0; i < LIST_CACHE; i++) sqlite3_finalize(t->lists[i].st);
  sqlite3_close(t->db);
  if (t->wal_fd >= 0) close(t->wal_fd);
  free(t->pend);
  free(t->pend_buf);
  free(t->buf);
  free(t);
}

uint64_t runtab_count(const runtab *t) { return t->count; }

/* ---- writes ---- */

static int insert_rows(runtab *t, const Run *run) {
  sqlite3_stmt *st = t->st[ST_INSERT];
  const char *req = run->request_id && *run->request_id ? run->request_id : NULL;
  sqlite3_bind_text(st, 1, run->run_id, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 2, req, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 3, str_or_empty(run->module_id), -1, SQLITE_STATIC);
  sqlite3_bind_int(st, 4, run->status);
  sqlite3_bind_int64(st, 5, run->created_at_ms);
  bind_run(t, st, 6, run);
  sqlite3_bind_text(st, 7, str_or_empty(run->owner), -1, SQLITE_STATIC);
  int rc = step_done(st);
  if (rc == SQLITE_CONSTRAINT_PRIMARYKEY) return -EBUSY;
  if (rc == SQLITE_CONSTRAINT_UNIQUE) return -EEXIST;
  if (rc != SQLITE_OK) return fail_sql(t, "insert", run->run_id);

  st = t->st[ST_INSERT_LABEL];
  sqlite3_bind_text(st, 1, run->run_id, -1, SQLITE_STATIC);
  for (size_t i = 0; i < run->n_labels; i++) {
    sqlite3_bind_text(st, 2, str_or_empty(run->labels[i]->key), -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, str_or_empty(run->labels[i]->value), -1, SQLITE_STATIC);
    if (step_done(st) != SQLITE_OK) return fail_sql(t, "insert label", run->run_id);
  }
  return 0;
}

/* Runs one update statement in the open transaction. Returns 0, -ENOENT (no such run)
 * or -EIO (logged). */
static int apply_update(runtab *t, const char *run_id, int status, const uint8_t *pb, size_t len) {
  sqlite3_stmt *st = t->st[ST_UPDATE];
  sqlite3_bind_text(st, 1, run_id, -1, SQLITE_STATIC);
  sqlite3_bind_int(st, 2, status);
  /* len > 0 for any run with a run_id, so the blob is never NULL. */
  sqlite3_bind_blob64(st, 3, pb, len, SQLITE_STATIC);
  if (step_done(st) != SQLITE_OK) return fail_sql(t, "update", run_id);
  return sqlite3_changes(t->db) ? 0 : -ENOENT;
}

/* Opens the transaction that writes join until the next commit, if none is open. When
 * updates are waiting although no transaction is open, SQLite rolled theirs back (a
 * write failed): they are applied again first. Returns 0 or -EIO (logged; nothing open). */
static int begin(runtab *t, const char *run_id) {
  if (!sqlite3_get_autocommit(t->db)) return 0;
  if (step_done(t->st[ST_BEGIN]) != SQLITE_OK) return fail_sql(t, "begin", run_id);
  for (size_t i = 0; i < t->npend; i++) {
    const struct pending *p = &t->pend[i];
    if (apply_update(t, p->run_id, p->status, t->pend_buf + p->off, p->len) == -EIO) {
      rollback(t);
      return -EIO;
    }
  }
  return 0;
}

/* Keeps an update until it is committed. */
static void pend_push(runtab *t, const char *run_id, int status, const uint8_t *pb, size_t len) {
  if (t->npend == t->pend_cap) {
    t->pend_cap = t->pend_cap ? 2 * t->pend_cap : 16;
    t->pend = xrealloc(t->pend, t->pend_cap * sizeof *t->pend);
  }
  if (len > t->pend_buf_cap - t->pend_used) {
    size_t want = t->pend_used + len;
    t->pend_buf_cap = t->pend_buf_cap ? 2 * t->pend_buf_cap : 4096;
    if (t->pend_buf_cap < want) t->pend_buf_cap = want;
    t->pend_buf = xrealloc(t->pend_buf, t->pend_buf_cap);
  }
  struct pending *p = &t->pend[t->npend++];
  memcpy(p->run_id, run_id, sizeof p->run_id);
  p->status = status;
  p->off = t->pend_used;
  p->len = len;
  memcpy(t->pend_buf + t->pend_used, pb, len);
  t->pend_used += len;
}

int runtab_insert(runtab *t, const Run *run) {
  ckpt_join(t);
  if (!run->run_id || !id_run_valid(run->run_id, strlen(run->run_id))) return -EINVAL;
  int rc = begin(t, run->run_id);
  if (rc) return rc;
  /* The savepoint undoes this insert alone (a clash, a failed label) and keeps the
   * updates waiting in the transaction. */
  if (step_done(t->st[ST_SAVEPOINT]) != SQLITE_OK) return fail_sql(t, "savepoint", run->run_id);
  rc = insert_rows(t, run);
  if (rc) {
    step_done(t->st[ST_ROLLBACK_TO]);
    step_done(t->st[ST_RELEASE]);
    return rc;
  }
  step_done(t->st[ST_RELEASE]);
  if ((rc = commit(t, "commit insert", run->run_id)) == 0) t->count++;
  return rc;
}

int runtab_update(runtab *t, const Run *run) {
  ckpt_join(t);
  /* Only a valid id can name a row (and fits a pending entry). */
  if (!run->run_id || !id_run_valid(run->run_id, strlen(run->run_id))) return -ENOENT;
  size_t n = pack_run(t, run);
  int rc = begin(t, run->run_id);
  if (rc == 0) rc = apply_update(t, run->run_id, run->status, t->buf, n);
  if (rc == -ENOENT) return rc;
  /* Kept also when this write failed: a failed statement may have ended the
   * transaction or not, so end it here either way, and the next commit applies every
   * waiting update again. */
  pend_push(t, run->run_id, run->status, t->buf, n);
  if (rc) rollback(t);
  return rc;
}

int runtab_busy(runtab *t) {
  if (t->ckpt_running && atomic_load(&t->ckpt_done)) ckpt_join(t); /* over: no wait */
  return t->ckpt_running;
}

int runtab_sync(runtab *t) {
  /* During a checkpoint no transaction is open (it starts after a commit, and whatever
   * opens one waits for it first): with nothing waiting, nothing to do or wait for. */
  if (!t->npend && (t->ckpt_running || sqlite3_get_autocommit(t->db))) return 0;
  ckpt_join(t);
  int rc = begin(t, NULL);
  return rc ? rc : commit(t, "commit updates", NULL);
}

int runtab_writable(const runtab *t) { return !t->failing; }

int runtab_probe(runtab *t) {
  ckpt_join(t);
  if (!t->failing) return 1;
  if (t->npend || !sqlite3_get_autocommit(t->db)) return runtab_sync(t) == 0;
  /* Nothing waits: a write that changes nothing (the schema version, rewritten as it
   * is) tells whether a commit goes through again. */
  char sql[64];
  snprintf(sql, sizeof sql, "PRAGMA user_version = %" PRId64, SCHEMA_VERSION);
  if (sqlite3_exec(t->db, sql, NULL, NULL, NULL) == SQLITE_OK) t->failing = 0;
  return !t->failing;
}

/* ---- purge ---- */

/* Whether the run in column 2 of st's current row finished before cutoff_ms (one
 * that never recorded a finish counts as finished when it was created, which the
 * caller has checked). A record that does not unpack is kept (logged). */
static int finished_before(sqlite3_stmt *st, int64_t cutoff_ms) {
  Run *r = unpack_row(st, 2);
  if (!r) return 0;
  int before = r->finished_at_ms < cutoff_ms;
  prismq__runner__v1__run__free_unpacked(r, NULL);
  return before;
}

/* Picks the runs runtab_purge deletes (see runtab.h) into ids[0..*n), at most batch.
 * `over` is how many runs the table holds beyond max_runs. Returns 0 or -EIO (logged). */
static int purge_pick(runtab *t, int64_t cutoff_ms, uint64_t over, size_t batch,
                      char (*ids)[ID_RUN_LEN + 1], size_t *n) {
  sqlite3_stmt *st = t->st[ST_PURGE_SCAN];
  uint64_t seen = 0; /* terminal runs walked, all of them older than the next */
  int rc = SQLITE_DONE;
  *n = 0;
  while (*n < batch && (rc = sqlite3_step(st)) == SQLITE_ROW) {
    if (seen++ >= over) {
      /* Past the runs beyond max_runs, only age counts, and creation order is run id
       * order: the first run created after the cutoff ends the walk. */
      if (cutoff_ms <= 0 || sqlite3_column_int64(st, 1) >= cutoff_ms) break;
      if (!finished_before(st, cutoff_ms)) continue;
    }
    snprintf(ids[*n], sizeof ids[*n], "%s", (const char *)sqlite3_column_text(st, 0));
    (*n)++;
  }
  int ret = rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : fail_sql(t, "purge select", NULL);
  sqlite3_reset(st);
  return ret;
}

/* Deletes runs ids[0..n) and their labels, in the open transaction. Returns 0 or -EIO
 * (logged). */
static int purge_rows(runtab *t, char (*ids)[ID_RUN_LEN + 1], size_t n) {
  for (size_t i = 0; i < n; i++) {
    for (int s = ST_PURGE_RUN; s <= ST_PURGE_LABELS; s++) {
      sqlite3_stmt *st = t->st[s];
      sqlite3_bind_text(st, 1, ids[i], -1, SQLITE_STATIC);
      if (step_done(st) != SQLITE_OK) return fail_sql(t, "purge", ids[i]);
    }
  }
  return 0;
}

int runtab_purge(runtab *t, int64_t cutoff_ms, uint64_t max_runs, size_t batch,
                 char (*ids)[ID_RUN_LEN + 1], size_t *n_out) {
  ckpt_join(t);
  if (!batch) return -EINVAL;
  uint64_t over = max_runs && t->count > max_runs ? t->count - max_runs : 0;
  if (!over && cutoff_ms <= 0) {
    *n_out = 0;
    return 0;
  }
  /* In the open transaction, with the waiting updates applied again if SQLite rolled
   * them back: the status column is then the one the scheduler last wrote. */
  int rc = begin(t, NULL);
  if (rc) return rc;
  /* The savepoint undoes a failed purge alone and keeps the updates waiting, as an
   * insert does. */
  if (step_done(t->st[ST_SAVEPOINT]) != SQLITE_OK) return fail_sql(t, "savepoint", NULL);
  size_t n = 0;
  rc = purge_pick(t, cutoff_ms, over, batch, ids, &n);
  if (rc == 0) rc = purge_rows(t, ids, n);
  if (rc) {
    step_done(t->st[ST_ROLLBACK_TO]);
    step_done(t->st[ST_RELEASE]);
    return rc;
  }
  step_done(t->st[ST_RELEASE]);
  if ((rc = commit(t, "commit purge", NULL)) < 0) return rc;
  t->count -= n;
  *n_out = n;
  return 0;
}

int runtab_active(runtab *t, Run ***out, size_t *n_out) {
  ckpt_join(t);
  Run **runs = NULL;
  size_t n = 0;
  int more;
  int rc = collect(t, t->st[ST_ACTIVE], SIZE_MAX, &runs, &n, &more);
  if (rc < 0) {
    runtab_list_free(runs, n);
    return rc;
  }
  *out = runs;
  *n_out = n;
  return 0;
}

/* ---- reads ---- */

/* Runs a one-row lookup statement keyed by parameter 1. */
static int get_one(runtab *t, sqlite3_stmt *st, const char *key, Run **out) {
  sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
  int ret, rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) {
    Run *r = unpack_row(st, 0);
    if (r) *out = r;
    ret = r ? 0 : -EIO;
  } else if (rc == SQLITE_DONE) {
    ret = -ENOENT;
  } else {
    ret = fail_sql(t, "get", key);
  }
  sqlite3_reset(st); /* ends the read transaction */
  return ret;
}

int runtab_get_packed(runtab *t, const char *run_id, const uint8_t **out, size_t *len) {
  ckpt_join(t);
  sqlite3_stmt *st = t->st[ST_GET];
  sqlite3_bind_text(st, 1, run_id, -1, SQLITE_STATIC);
  int ret, rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) {
    /* Copied out: the row's memory is gone once the statement is reset. */
    size_t n = (size_t)sqlite3_column_bytes(st, 0);
    if (n > t->cap) {
      t->cap = n;
      t->buf = xrealloc(t->buf, n);
    }
    memcpy(t->buf, sqlite3_column_blob(st, 0), n);
    *out = t->buf;
    *len = n;
    ret = 0;
  } else if (rc == SQLITE_DONE) {
    ret = -ENOENT;
  } else {
    ret = fail_sql(t, "get", run_id);
  }
  sqlite3_reset(st);
  return ret;
}

int runtab_get(runtab *t, const char *run_id, Run **out) {
  ckpt_join(t);
  return get_one(t, t->st[ST_GET], run_id, out);
}

int runtab_get_by_request_id(runtab *t, const char *request_id, Run **out) {
  ckpt_join(t);
  /* Runs without one store NULL, which "" (or anything) never equals. */
  return get_one(t, t->st[ST_GET_BY_REQUEST], request_id, out);
}

/* Builds the SQL of a listing of this shape; parameters in order: the statuses, the
 * module, the owner, each label's key and value, the cursor, then the limit.
 * With labels, the first label's range of run_labels_kv (key, value, then run_id, the
 * primary key it carries) drives the listing, newest first, and each run met there is
 * checked against the rest of the filter: a page reads the runs with that label only
 * down to its last run. (A `run_id IN (SELECT ...)` list is built whole before the
 * first row comes: every run with the label, 50,000 for a label on 5 % of a million
 * runs.) CROSS JOIN keeps SQLite from choosing another order of the two tables. */
static char *list_sql(sqlite3 *db, const struct list_shape *s) {
  sqlite3_str *q = sqlite3_str_new(db);
  const char *id = s->nlabels ? "l.run_id" : "r.run_id";
  sqlite3_str_appendall(q, s->nlabels ? "SELECT r.pb FROM run_labels l CROSS JOIN runs r"
                                        " ON r.run_id = l.run_id WHERE 1"
                                      : "SELECT r.pb FROM runs r WHERE 1");
  if (s->nstatuses) {
    sqlite3_str_appendall(q, " AND r.status IN (?");
    for (size_t i = 1; i < s->nstatuses; i++) sqlite3_str_appendall(q, ", ?");
    sqlite3_str_appendall(q, ")");
  }
  if (s->module) sqlite3_str_appendall(q, " AND r.module_id = ?");
  if (s->owner) sqlite3_str_appendall(q, " AND r.owner = ?");
  for (size_t i = 0; i < s->nlabels; i++)
    sqlite3_str_appendall(q, i == 0 ? " AND l.key = ? AND l.value = ?"
                                    : " AND EXISTS (SELECT 1 FROM run_labels x"
                                      " WHERE x.run_id = r.run_id AND x.key = ? AND x.value = ?)");
  if (s->cursor) sqlite3_str_appendf(q, " AND %s < ?", id);
  sqlite3_str_appendf(q, " ORDER BY %s DESC LIMIT ?", id);
  char *sql = sqlite3_str_finish(q);
  if (!sql) abort(); /* out of memory: the only way sqlite3_str fails here */
  return sql;
}

/* Returns the cached statement for shape s, preparing it on a miss; NULL if SQLite
 * fails (logged). */
static sqlite3_stmt *list_stmt(runtab *t, const struct list_shape *s) {
  for (size_t i = 0; i < LIST_CACHE; i++) {
    const struct list_stmt *l = &t->lists[i];
    if (l->st && l->shape.nstatuses == s->nstatuses && l->shape.nlabels == s->nlabels &&
        l->shape.module == s->module && l->shape.owner == s->owner && l->shape.cursor == s->cursor)
      return l->st;
  }
  struct list_stmt *l = &t->lists[t->list_victim];
  t->list_victim = (t->list_victim + 1) % LIST_CACHE;
  sqlite3_finalize(l->st);
  l->st = NULL;
  char *sql = list_sql(t->db, s);
  if (sqlite3_prepare_v3(t->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &l->st, NULL) == SQLITE_OK)
    l->shape = *s;
  else
    fail_sql(t, "prepare list", NULL);
  sqlite3_free(sql);
  return l->st;
}

int runtab_list(runtab *t, const runtab_filter *f, const char *before_run_id, size_t limit,
                Run ***out, size_t *n_out, int *more_out) {
  ckpt_join(t);
  static const runtab_filter all = RUNTAB_FILTER_INIT;
  if (!f) f = &all;
  if (!limit || f->nstatuses > RUNTAB_FILTER_MAX || f->nlabels > RUNTAB_FILTER_MAX ||
      (f->nstatuses && !f->statuses) || (f->nlabels && (!f->label_keys || !f->label_values)))
    return -EINVAL;

  const struct list_shape shape = {
      .nstatuses = f->nstatuses,
      .nlabels = f->nlabels,
      .module = f->module_id && *f->module_id,
      .owner = f->owner != NULL, /* "" is a condition: anonymous runs only */
      .cursor = before_run_id && *before_run_id,
  };
  sqlite3_stmt *st = list_stmt(t, &shape);
  if (!st) return -EIO;

  int p = 1;
  for (size_t i = 0; i < f->nstatuses; i++) sqlite3_bind_int(st, p++, f->statuses[i]);
  if (shape.module) sqlite3_bind_text(st, p++, f->module_id, -1, SQLITE_STATIC);
  if (shape.owner) sqlite3_bind_text(st, p++, f->owner, -1, SQLITE_STATIC);
  for (size_t i = 0; i < f->nlabels; i++) {
    sqlite3_bind_text(st, p++, f->label_keys[i], -1, SQLITE_STATIC);
    sqlite3_bind_text(st, p++, f->label_values[i], -1, SQLITE_STATIC);
  }
  if (shape.cursor) sqlite3_bind_text(st, p++, before_run_id, -1, SQLITE_STATIC);
  /* One row past the page says whether another page exists. */
  sqlite3_bind_int64(st, p, limit < (size_t)INT64_MAX ? (sqlite3_int64)limit + 1 : INT64_MAX);

  Run **runs = NULL;
  size_t n = 0;
  int more;
  int ret = collect(t, st, limit, &runs, &n, &more);
  if (ret) {
    runtab_list_free(runs, n);
    return ret;
  }
  *out = runs;
  *n_out = n;
  *more_out = more;
  return 0;
}

void runtab_list_free(Run **runs, size_t n) {
  for (size_t i = 0; i < n; i++) prismq__runner__v1__run__free_unpacked(runs[i], NULL);
  free(runs);
}

/* ---- presets ---- */

typedef Prismq__Runner__V1__Preset Preset;

int runtab_preset_put(runtab *t, const Preset *p, uint32_t max_per_module) {
  ckpt_join(t);
  sqlite3_stmt *st = t->st[ST_PRESET_COUNT];
  int rc;
  if (max_per_module && runtab_preset_get(t, p->module_id, p->name, NULL) == -ENOENT) {
    sqlite3_bind_text(st, 1, p->module_id, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    int64_t n = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    sqlite3_reset(st);
    if (rc != SQLITE_ROW) return fail_sql(t, "count presets", NULL);
    if (n >= max_per_module) return -ENOSPC;
  }
  size_t len = prismq__runner__v1__preset__get_packed_size(p);
  uint8_t *buf = xmalloc(len + 1);
  prismq__runner__v1__preset__pack(p, buf);
  /* Joins the open transaction and commits it, waiting run updates and all. */
  if ((rc = begin(t, NULL)) == 0) {
    st = t->st[ST_PRESET_PUT];
    sqlite3_bind_text(st, 1, p->module_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, p->name, -1, SQLITE_STATIC);
    sqlite3_bind_blob64(st, 3, buf, len, SQLITE_STATIC);
    if (step_done(st) != SQLITE_OK) {
      rc = fail_sql(t, "save preset", NULL);
      rollback(t);
    } else {
      rc = commit(t, "commit preset", NULL);
    }
  }
  free(buf);
  return rc;
}

int runtab_preset_get(runtab *t, const char *module_id, const char *name, Preset **out) {
  ckpt_join(t);
  sqlite3_stmt *st = t->st[ST_PRESET_GET];
  sqlite3_bind_text(st, 1, module_id, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 2, name, -1, SQLITE_STATIC);
  int rc = sqlite3_step(st), ret = -ENOENT;
  if (rc == SQLITE_ROW && out) {
    Preset *p = prismq__runner__v1__preset__unpack(NULL, (size_t)sqlite3_column_bytes(st, 0),
                                                   sqlite3_column_blob(st, 0));
    if (p) *out = p;
    ret = p ? 0 : -EIO;
    if (!p) LOG_ERROR("run table: a stored preset does not unpack module_id=%s", module_id);
  } else if (rc == SQLITE_ROW) {
    ret = 0;
  } else if (rc != SQLITE_DONE) {
    ret = fail_sql(t, "get preset", NULL);
  }
  sqlite3_reset(st);
  return ret;
}

int runtab_preset_list(runtab *t, const char *module_id, Preset ***out, size_t *n_out) {
  ckpt_join(t);
  int all = !module_id || !*module_id;
  sqlite3_stmt *st = t->st[all ? ST_PRESET_LIST_ALL : ST_PRESET_LIST];
  Preset **arr = NULL;
  size_t n = 0;
  int rc, ret = 0;
  if (!all) sqlite3_bind_text(st, 1, module_id, -1, SQLITE_STATIC);
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    Preset *p = prismq__runner__v1__preset__unpack(NULL, (size_t)sqlite3_column_bytes(st, 0),
                                                   sqlite3_column_blob(st, 0));
    if (!p) {
      LOG_ERROR("run table: a stored preset does not unpack");
      ret = -EIO;
      break;
    }
    arr = xrealloc(arr, (n + 1) * sizeof *arr);
    arr[n++] = p;
  }
  if (ret == 0 && rc != SQLITE_DONE) ret = fail_sql(t, "list presets", NULL);
  sqlite3_reset(st);
  if (ret < 0) {
    runtab_preset_list_free(arr, n);
    return ret;
  }
  *out = arr;
  *n_out = n;
  return 0;
}

void runtab_preset_list_free(Preset **presets, size_t n) {
  for (size_t i = 0; i < n; i++) prismq__runner__v1__preset__free_unpacked(presets[i], NULL);
  free(presets);
}

int runtab_preset_delete(runtab *t, const char *module_id, const char *name) {
  ckpt_join(t);
  int rc = begin(t, NULL);
  if (rc) return rc;
  sqlite3_stmt *st = t->st[ST_PRESET_DELETE];
  sqlite3_bind_text(st, 1, module_id, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 2, name, -1, SQLITE_STATIC);
  if (step_done(st) != SQLITE_OK) {
    rc = fail_sql(t, "delete preset", NULL);
    rollback(t);
    return rc;
  }
  int gone = sqlite3_changes(t->db) > 0;
  if ((rc = commit(t, "commit preset", NULL)) < 0) return rc;
  return gone ? 0 : -ENOENT;
}

void runtab_set_metrics(runtab *t, metrics *m) {
  /* Seconds: an append to the WAL takes tens of microseconds, a checkpoint's fsyncs tens
   * of milliseconds. */
  static const double buckets[] = {0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                   0.01,    0.025,  0.05,    0.1,    0.25,  0.5,    1};
  t->commit_seconds = metrics_series_only(
      metrics_family_get(m, METRICS_HISTOGRAM, "prismq_runtab_commit_seconds",
                         "How long run table commits took, checkpoints included.", NULL, buckets,
                         sizeof buckets / sizeof *buckets));
}
