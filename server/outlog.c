#include "outlog.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "compat.h"
#include "grpcwire.h"
#include "prismq/runner/v1/runner.pb-c.h"
#include "xalloc.h"

/* Upper bound of a packed record body: OUTLOG_CHUNK_MAX bytes of data plus at most
 * 39 bytes of tags and varints (seq 11, stream 2, data length 4, offset 11, time 11).
 * Anything longer in a file is not ours. */
#define REC_BODY_MAX (OUTLOG_CHUNK_MAX + 64u)
#define REC_MAX      (GW_PREFIX_LEN + REC_BODY_MAX)

/* pread size: large enough to hold any record, small enough to keep a read call short. */
#define READ_BLOCK (256u << 10)

/* Bytes of skipped records a reader may scan per call before yielding to the loop. */
#define SCAN_BUDGET_MIN (1u << 20)

struct idx_entry {
  uint64_t seq;
  uint64_t off;
};

struct outlog {
  unsigned refs; /* the owner's (until outlog_free) + one per reader */
  struct event_base *base;
  int fd;     /* O_RDWR|O_APPEND: appends go to the end, pread ignores O_APPEND; -1
           * until the first record of a new log (a run with no output has no file) */
  char *path; /* for that first open; NULL once open */
  uint64_t max_bytes;
  uint32_t idx_max;
  uint64_t idx_every_recs, idx_every_bytes; /* double on each thinning */
  struct idx_entry *idx;
  size_t n_idx, cap_idx;
  uint64_t size; /* bytes of whole records: what readers may see */
  uint64_t next_seq;
  uint64_t bytes[2];        /* produced per stream, dropped included */
  uint64_t stored;          /* data bytes stored, against max_bytes */
  uint64_t progress_stored; /* bytes of progress records stored, against max_bytes too */
  struct gather *g;         /* set during outlog_append_updates: records wait there */
  int write_err;            /* set when a failed append could not be rolled back */
  int ended;
  int truncated;
  outlog_reader *waiters; /* readers waiting for more (waiter_add) */
};

struct outlog_reader {
  outlog *log;
  struct event *ev; /* deferred wake-up: never fires inside the writer's call */
  uint64_t off;     /* file offset of the record with seq `seq` */
  uint64_t seq;
  uint64_t want; /* first seq to yield */
  int filter;
  outlog_wake_fn fn;
  void *arg;
  int waiting;           /* on log->waiters */
  outlog_reader *next;   /* on log->waiters */
  outlog_reader **prevp; /* the pointer to r on log->waiters */
};

/* log->waiters is a list with O(1) removal from anywhere (sys/queue.h's LIST, which not
 * every C library has). */
static void waiter_add(outlog *l, outlog_reader *r) {
  r->next = l->waiters;
  if (r->next) r->next->prevp = &r->next;
  l->waiters = r;
  r->prevp = &l->waiters;
  r->waiting = 1;
}

static void waiter_remove(outlog_reader *r) {
  *r->prevp = r->next;
  if (r->next) r->next->prevp = r->prevp;
  r->waiting = 0;
}

/* Looks at the record starting at p (avail bytes there). Returns 1 and sets *size
 * (prefix included) if it is whole, 0 if more bytes are needed, -1 if the prefix is
 * not one we write. */
static int rec_size(const uint8_t *p, size_t avail, size_t *size) {
  if (avail < GW_PREFIX_LEN) return 0;
  uint32_t len;
  if (gw_prefix_decode(&len, p) != 0 || len > REC_BODY_MAX) return -1;
  if (avail - GW_PREFIX_LEN < len) return 0;
  *size = GW_PREFIX_LEN + len;
  return 1;
}

static Prismq__Runner__V1__OutputChunk *rec_unpack(const uint8_t *rec, size_t size) {
  return prismq__runner__v1__output_chunk__unpack(NULL, size - GW_PREFIX_LEN, rec + GW_PREFIX_LEN);
}

int outlog_path(char *buf, size_t cap, const char *data_dir, const char *run_id) {
  int n = snprintf(buf, cap, "%s/" OUTLOG_DIR "/%s.out", data_dir, run_id);
  return n >= 0 && (size_t)n < cap ? 0 : -ENAMETOOLONG;
}

static int check_opts(const outlog_opts *o) {
  return o->index_every_records && o->index_every_bytes && o->index_max_entries >= 2 ? 0 : -EINVAL;
}

/* Records the file offset of `seq` if enough records or bytes have passed since the
 * last entry. At the cap, every other entry goes and the spacings double, so the gap
 * between neighbours stays within the current spacing (plus one record). */
static void index_note(outlog *l, uint64_t seq, uint64_t off) {
  if (l->n_idx) {
    const struct idx_entry *last = &l->idx[l->n_idx - 1];
    if (seq - last->seq < l->idx_every_recs && off - last->off < l->idx_every_bytes) return;
  }
  if (l->n_idx == l->idx_max) {
    size_t kept = (l->n_idx + 1) / 2;
    for (size_t i = 1; i < kept; i++) l->idx[i] = l->idx[2 * i];
    l->n_idx = kept;
    l->idx_every_recs *= 2;
    l->idx_every_bytes *= 2;
  }
  if (l->n_idx == l->cap_idx) {
    size_t cap = l->cap_idx ? l->cap_idx * 2 : 16;
    if (cap > l->idx_max) cap = l->idx_max;
    l->idx = xrealloc(l->idx, cap * sizeof *l->idx);
    l->cap_idx = cap;
  }
  l->idx[l->n_idx++] = (struct idx_entry){seq, off};
}

/* The last entry at or before `seq`, or NULL when there is none (empty log). */
static const struct idx_entry *index_find(const outlog *l, uint64_t seq) {
  size_t lo = 0, hi = l->n_idx; /* answer is in [lo - 1, hi) */
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (l->idx[mid].seq <= seq)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo ? &l->idx[lo - 1] : NULL;
}

static void wake_waiters(outlog *l) {
  outlog_reader *r;
  while ((r = l->waiters) != NULL) {
    waiter_remove(r);
    event_active(r->ev, 0, 0);
  }
}

static int log_alloc(outlog **out, struct event_base *base, const char *path, int flags,
                     const outlog_opts *opts) {
  outlog_opts defaults = OUTLOG_OPTS_INIT;
  if (!opts) opts = &defaults;
  int rc = check_opts(opts);
  if (rc) return rc;
  int fd = -1;
  if (!(flags & O_CREAT)) {
    fd = open(path, flags, 0600);
    if (fd < 0) return -errno;
  }
  outlog *l = xcalloc(1, sizeof *l);
  l->refs = 1;
  l->base = base;
  l->fd = fd;
  if (fd < 0) {
    /* Creating a file costs the start of a run more than anything else it does
     * (inode allocation): leave it to the first output. */
    l->path = xstrdup(path);
  }
  l->max_bytes = opts->max_bytes;
  l->idx_max = opts->index_max_entries;
  l->idx_every_recs = opts->index_every_records;
  l->idx_every_bytes = opts->index_every_bytes;
  l->next_seq = 1;
  *out = l;
  return 0;
}

static void log_unref(outlog *l) {
  if (--l->refs) return;
  if (l->fd >= 0) close(l->fd);
  free(l->path);
  free(l->idx);
  free(l);
}

int outlog_new(outlog **out, struct event_base *base, const char *path, const outlog_opts *opts) {
  return log_alloc(out, base, path, O_RDWR | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, opts);
}

/* Whether c is what we write after what the log holds so far: output at or past the
 * offset where its stream's bytes end (past it after output a write error dropped), or
 * a progress update (no stream, no data). */
static int rec_fits(const outlog *l, const Prismq__Runner__V1__OutputChunk *c) {
  if (c->progress) return c->stream == 0 && c->data.len == 0 && c->offset == 0;
  return (c->stream == OUTLOG_STDOUT || c->stream == OUTLOG_STDERR) &&
         c->offset >= l->bytes[c->stream - 1] && c->offset <= UINT64_MAX - c->data.len;
}

/* Rebuilds index and counters from the file, stopping at the first record that is
 * partial or is not the one expected next (torn write, zero-filled tail, garbage). */
static int scan_file(outlog *l) {
  uint8_t *buf = xmalloc(READ_BLOCK);
  uint64_t off = 0;
  int rc = 0;
  for (;;) {
    ssize_t got = compat_pread(l->fd, buf, READ_BLOCK, off);
    if (got < 0) {
      rc = -errno;
      break;
    }
    size_t pos = 0, size;
    int valid = 1;
    while (valid && rec_size(buf + pos, (size_t)got - pos, &size) == 1) {
      Prismq__Runner__V1__OutputChunk *c = rec_unpack(buf + pos, size);
      valid = c && c->seq == l->next_seq && rec_fits(l, c);
      if (valid) {
        index_note(l, c->seq, off + pos);
        if (!c->progress) {
          l->bytes[c->stream - 1] = c->offset + c->data.len;
          l->stored += c->data.len;
        }
        l->next_seq++;
        pos += size;
      }
      if (c) prismq__runner__v1__output_chunk__free_unpacked(c, NULL);
    }
    off += pos;
    /* A block always holds a whole valid record at its start unless the valid part
     * has ended there. */
    if (!valid || pos == 0) break;
  }
  free(buf);
  l->size = off;
  return rc;
}

int outlog_open_existing(outlog **out, struct event_base *base, const char *path,
                         const outlog_opts *opts) {
  outlog *l = NULL;
  int rc = log_alloc(&l, base, path, O_RDONLY | O_CLOEXEC, opts);
  if (rc) return rc;
  rc = scan_file(l);
  if (rc) {
    log_unref(l);
    return rc;
  }
  l->ended = 1;
  *out = l;
  return 0;
}

int outlog_resume(outlog **out, struct event_base *base, const char *path,
                  const outlog_opts *opts) {
  outlog *l = NULL;
  int rc = log_alloc(&l, base, path, O_RDWR | O_APPEND | O_CLOEXEC, opts);
  if (rc == -ENOENT) return outlog_new(out, base, path, opts);
  if (rc) return rc;
  rc = scan_file(l);
  if (rc == 0 && ftruncate(l->fd, (off_t)l->size) != 0) rc = -errno;
  if (rc) {
    log_unref(l);
    return rc;
  }
  l->truncated = l->max_bytes && l->stored >= l->max_bytes;
  *out = l;
  return 0;
}

void outlog_free(outlog *l) {
  if (!l) return;
  outlog_end(l);
  log_unref(l);
}

/* A ProtobufCBuffer that gathers a packed record as iovecs instead of copying it:
 * protobuf-c hands a bytes field's data to append() as the caller's own pointer, so
 * the output is written straight from the read buffer. Small pieces (tags, varints)
 * are copied into `small`, consecutive ones merged. */
struct iov_buf {
  ProtobufCBuffer base;
  struct iovec iov[8];
  int n;
  uint8_t small[96];
  size_t used;
};

/* Appends below this size are copied; larger ones are referenced. */
#define IOV_COPY_MAX 64

static void iov_append(ProtobufCBuffer *b, size_t len, const uint8_t *data) {
  struct iov_buf *ib = (struct iov_buf *)b;
  if (len == 0) return;
  if (len <= IOV_COPY_MAX && len <= sizeof ib->small - ib->used) {
    uint8_t *dst = ib->small + ib->used;
    memcpy(dst, data, len);
    ib->used += len;
    struct iovec *last = ib->n ? &ib->iov[ib->n - 1] : NULL;
    if (last && (uint8_t *)last->iov_base + last->iov_len == dst) {
      last->iov_len += len;
      return;
    }
    data = dst;
  }
  /* An OutputChunk packs into at most 7 pieces (5 fields, the data split in two). */
  if (ib->n == (int)(sizeof ib->iov / sizeof ib->iov[0])) abort();
  ib->iov[ib->n].iov_base = (void *)data;
  ib->iov[ib->n].iov_len = len;
  ib->n++;
}

/* Iovecs of at most this many bytes are copied when gathered: the packing's small pieces
 * and progress records live on stacks that are gone by the write. Larger ones are the
 * caller's data, valid until outlog_append_updates returns. */
#define GATHER_COPY_MAX 1024u
/* What outlog_append_updates gathers at most: a piece of output before each update, the
 * updates, the rest of the output and a truncation notice; an output record packs into
 * at most 7 pieces (iov_append), a progress record into one. */
#define GATHER_RECS  (2 * OUTLOG_UPDATES_MAX + 2)
#define GATHER_IOV   (7 * GATHER_RECS)
#define GATHER_STORE (GATHER_RECS * (96 + GATHER_COPY_MAX))

/* The records of one outlog_append_updates, written at its end with one writev. */
struct gather {
  struct iovec iov[GATHER_IOV];
  int n;
  size_t rec[GATHER_RECS]; /* each record's size */
  int nrec;
  uint64_t stored, progress_stored; /* the log's counters before: restored if the write fails */
  size_t used;
  uint8_t store[GATHER_STORE];
};

/* Keeps a record for the gather's write: it takes its seq now, its place in the file and
 * the index at the write. */
static void gather_record(outlog *l, const struct iovec *v, int nv, size_t n) {
  struct gather *g = l->g;
  if (g->n + nv > GATHER_IOV || g->nrec == GATHER_RECS) abort(); /* beyond the bounds above */
  for (int i = 0; i < nv; i++) {
    struct iovec c = v[i];
    if (c.iov_len <= GATHER_COPY_MAX) {
      if (c.iov_len > sizeof g->store - g->used) abort();
      c.iov_base = memcpy(g->store + g->used, c.iov_base, c.iov_len);
      g->used += c.iov_len;
    }
    g->iov[g->n++] = c;
  }
  g->rec[g->nrec++] = n;
  l->next_seq++;
}

/* Writes records, whose sizes are rec[0, nrec), from v[0, nv) with one writev(2) (a
 * loop only if the kernel writes part of it, which happens when the disk or a file size
 * limit is reached), and wakes waiting readers. On failure the file is cut back to its
 * last whole record, so readers and later appends see no torn record. During
 * outlog_append_updates the record is gathered instead (returns 0). */
static int write_iov(outlog *l, struct iovec *v, int nv, const size_t *rec, int nrec) {
  size_t n = 0, done = 0;
  int rc = 0;
  for (int i = 0; i < nrec; i++) n += rec[i];
  if (l->g) {
    gather_record(l, v, nv, n);
    return 0;
  }
  if (l->fd < 0) {
    l->fd = open(l->path, O_RDWR | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0600);
    if (l->fd < 0) return -errno;
    free(l->path);
    l->path = NULL;
  }
  while (done < n) {
    ssize_t w = compat_writev(l->fd, v, nv);
    if (w < 0) {
      if (errno == EINTR) continue;
      rc = -errno;
      break;
    }
    done += (size_t)w;
    /* A short write: skip what went out, go on with the rest. */
    size_t k = (size_t)w;
    while (nv > 0 && k >= v->iov_len) {
      k -= v->iov_len;
      v++;
      nv--;
    }
    if (nv > 0) {
      v->iov_base = (uint8_t *)v->iov_base + k;
      v->iov_len -= k;
    }
  }
  if (rc) {
    if (done && ftruncate(l->fd, (off_t)l->size) != 0) l->write_err = rc;
    return rc;
  }
  for (int i = 0; i < nrec; i++) {
    index_note(l, l->next_seq, l->size);
    l->size += rec[i];
    l->next_seq++;
  }
  wake_waiters(l);
  return 0;
}

/* Writes one output record, its data straight from the caller's buffer. */
static int write_record(outlog *l, int stream, const uint8_t *data, size_t len, uint64_t offset,
                        int64_t time_ms) {
  Prismq__Runner__V1__OutputChunk c = PRISMQ__RUNNER__V1__OUTPUT_CHUNK__INIT;
  c.seq = l->next_seq;
  c.stream = (Prismq__Runner__V1__OutputStream)stream;
  c.data.data = (uint8_t *)data;
  c.data.len = len;
  c.offset = offset;
  c.time_ms = time_ms;
  size_t body = prismq__runner__v1__output_chunk__get_packed_size(&c);
  struct iov_buf ib = {.base = {.append = iov_append}};
  uint8_t prefix[GW_PREFIX_LEN];
  gw_prefix_encode(prefix, (uint32_t)body);
  iov_append(&ib.base, sizeof prefix, prefix);
  prismq__runner__v1__output_chunk__pack_to_buffer(&c, &ib.base);
  size_t n = GW_PREFIX_LEN + body;
  return write_iov(l, ib.iov, ib.n, &n, 1);
}

/* Stores data as records of at most OUTLOG_CHUNK_MAX bytes. */
static int store(outlog *l, int stream, const uint8_t *data, size_t len, uint64_t offset,
                 int64_t time_ms) {
  for (size_t done = 0; done < len;) {
    size_t n = len - done < OUTLOG_CHUNK_MAX ? len - done : OUTLOG_CHUNK_MAX;
    int rc = write_record(l, stream, data + done, n, offset + done, time_ms);
    if (rc) return rc;
    l->stored += n;
    done += n;
  }
  return 0;
}

int outlog_append(outlog *l, int stream, const void *data, size_t len, int64_t time_ms) {
  if ((stream != OUTLOG_STDOUT && stream != OUTLOG_STDERR) || l->ended) return -EINVAL;
  if (len == 0) return 0;
  uint64_t offset = l->bytes[stream - 1];
  l->bytes[stream - 1] += len;
  if (l->write_err) return l->write_err;
  size_t keep = len;
  if (l->max_bytes) {
    uint64_t room = l->truncated ? 0 : l->max_bytes - l->stored;
    if (keep > room) keep = (size_t)room;
  }
  int rc = store(l, stream, data, keep, offset, time_ms);
  if (rc == 0 && keep < len && !l->truncated) {
    /* The notice sits where stderr's stored bytes end, so stderr offsets stay
     * contiguous in the file. */
    char msg[80];
    int n = snprintf(msg, sizeof msg, "[prismq: output truncated after %" PRIu64 " bytes]\n",
                     l->max_bytes);
    uint64_t err_off = stream == OUTLOG_STDERR ? offset + keep : l->bytes[OUTLOG_STDERR - 1];
    l->truncated = 1;
    rc = write_record(l, OUTLOG_STDERR, (const uint8_t *)msg, (size_t)n, err_off, time_ms);
  }
  return rc;
}

int outlog_append_progress(outlog *l, const Prismq__Runner__V1__Progress *p, int64_t time_ms) {
  if (l->ended) return -EINVAL;
  if (l->write_err) return l->write_err;
  Prismq__Runner__V1__OutputChunk c = PRISMQ__RUNNER__V1__OUTPUT_CHUNK__INIT;
  c.seq = l->next_seq;
  c.time_ms = time_ms;
  c.progress = (Prismq__Runner__V1__Progress *)p;
  size_t body = prismq__runner__v1__output_chunk__get_packed_size(&c), n = GW_PREFIX_LEN + body;
  /* A record packed whole (a few hundred bytes): no iov_buf, whose copies of small
   * pieces are sized for output records. */
  uint8_t buf[GATHER_COPY_MAX];
  if (n > sizeof buf) return -EMSGSIZE;
  if (l->max_bytes && l->progress_stored + n > l->max_bytes) return -EFBIG;
  gw_prefix_encode(buf, (uint32_t)body);
  prismq__runner__v1__output_chunk__pack(&c, buf + GW_PREFIX_LEN);
  struct iovec v = {buf, n};
  int rc = write_iov(l, &v, 1, &n, 1);
  if (rc) return rc;
  l->progress_stored += n;
  return 0;
}

int outlog_append_updates(outlog *l, int stream, const void *data, size_t len, const size_t *at,
                          const Prismq__Runner__V1__Progress *const *updates, size_t n,
                          int64_t time_ms) {
  if (n > OUTLOG_UPDATES_MAX || len > OUTLOG_CHUNK_MAX ||
      (len && stream != OUTLOG_STDOUT && stream != OUTLOG_STDERR))
    return -EINVAL;
  for (size_t i = 0; i < n; i++)
    if (at[i] > len || (i && at[i] < at[i - 1])) return -EINVAL;
  struct gather g;
  g.n = g.nrec = 0;
  g.used = 0;
  g.stored = l->stored;
  g.progress_stored = l->progress_stored;
  uint64_t seq = l->next_seq;
  int rc = 0, dropped = 0;
  size_t from = 0;
  l->g = &g;
  for (size_t i = 0; i <= n && rc == 0; i++) {
    size_t to = i < n ? at[i] : len;
    if (to > from) rc = outlog_append(l, stream, (const uint8_t *)data + from, to - from, time_ms);
    if (rc == 0 && i < n && (rc = outlog_append_progress(l, updates[i], time_ms)) == -EFBIG) {
      dropped = 1;
      rc = 0;
    }
    from = to;
  }
  l->g = NULL;
  l->next_seq = seq; /* write_iov numbers the records again as it writes them */
  if (rc == 0 && g.nrec) rc = write_iov(l, g.iov, g.n, g.rec, g.nrec);
  if (rc < 0) {
    l->stored = g.stored;
    l->progress_stored = g.progress_stored;
    return rc;
  }
  return dropped;
}

void outlog_end(outlog *l) {
  if (l->ended) return;
  l->ended = 1;
  wake_waiters(l);
}

int outlog_ended(const outlog *l) { return l->ended; }

uint64_t outlog_bytes(const outlog *l, int stream) {
  return stream == OUTLOG_STDOUT || stream == OUTLOG_STDERR ? l->bytes[stream - 1] : 0;
}

uint64_t outlog_next_seq(const outlog *l) { return l->next_seq; }

size_t outlog_index_entries(const outlog *l) { return l->n_idx; }

static void reader_wake_cb(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  outlog_reader *r = arg;
  outlog_wake_fn fn = r->fn;
  r->fn = NULL;
  fn(r, r->arg);
}

int outlog_reader_new(outlog_reader **out, outlog *l, uint64_t start_seq, int stream_filter) {
  if (stream_filter != 0 && stream_filter != OUTLOG_STDOUT && stream_filter != OUTLOG_STDERR)
    return -EINVAL;
  outlog_reader *r = xcalloc(1, sizeof *r);
  r->ev = event_new(l->base, -1, 0, reader_wake_cb, r);
  if (!r->ev) abort();
  r->log = l;
  l->refs++;
  r->want = start_seq ? start_seq : 1;
  r->filter = stream_filter;
  const struct idx_entry *e = index_find(l, r->want);
  r->seq = e ? e->seq : 1;
  r->off = e ? e->off : 0;
  *out = r;
  return 0;
}

void outlog_reader_free(outlog_reader *r) {
  if (!r) return;
  if (r->waiting) waiter_remove(r);
  event_free(r->ev); /* also takes it off the active queue: a pending wake never fires */
  log_unref(r->log);
  free(r);
}

/* Walks the whole records in p[0, got) from the reader's cursor, moving those it
 * yields to the front of p (in place: they are already framed) and advancing the
 * cursor past everything walked. Stops before a record that would take the total
 * (out already appended + *kept) past max_bytes, unless nothing is taken yet. Sets
 * *kept and *walked; returns 1 if it stopped for max_bytes, 0 otherwise, -EIO for a
 * record we did not write. */
static int take_records(outlog_reader *r, uint8_t *p, size_t got, size_t out, size_t max_bytes,
                        size_t *kept, size_t *walked) {
  size_t pos = 0, k = 0, size;
  int rc = 0, whole;
  while ((whole = rec_size(p + pos, got - pos, &size)) == 1) {
    int yield = r->seq >= r->want;
    if (yield && r->filter) {
      Prismq__Runner__V1__OutputChunk *c = rec_unpack(p + pos, size);
      if (!c) {
        rc = -EIO;
        break;
      }
      yield = (int)c->stream == r->filter || c->progress;
      prismq__runner__v1__output_chunk__free_unpacked(c, NULL);
    }
    if (yield) {
      if (out + k > 0 && out + k + size > max_bytes) {
        rc = 1;
        break;
      }
      if (k != pos) memmove(p + k, p + pos, size);
      k += size;
    }
    pos += size;
    r->seq++;
    r->off += size;
  }
  if (whole < 0) rc = -EIO;
  *kept = k;
  *walked = pos;
  return rc;
}

ssize_t outlog_reader_read(outlog_reader *r, struct evbuffer *dst, size_t max_bytes) {
  const outlog *l = r->log;
  size_t out = 0, scanned = 0;
  size_t budget = max_bytes > SCAN_BUDGET_MIN ? max_bytes : SCAN_BUDGET_MIN;
  int rc = 0;
  while (rc == 0 && r->off < l->size && scanned < budget && (out == 0 || out < max_bytes)) {
    /* With nothing taken yet, read enough to hold any record whole. */
    size_t want = out < max_bytes ? max_bytes - out : 0;
    if (out == 0 && want < REC_MAX) want = REC_MAX;
    if (want > READ_BLOCK) want = READ_BLOCK;
    if (want > l->size - r->off) want = (size_t)(l->size - r->off);
    struct evbuffer_iovec v;
    if (evbuffer_reserve_space(dst, (ev_ssize_t)want, &v, 1) != 1) abort();
    ssize_t got = compat_pread(l->fd, v.iov_base, want, r->off);
    size_t kept = 0, walked = 0;
    if (got < 0)
      rc = -errno;
    else
      rc = take_records(r, v.iov_base, (size_t)got, out, max_bytes, &kept, &walked);
    v.iov_len = kept;
    evbuffer_commit_space(dst, &v, kept ? 1 : 0);
    out += kept;
    scanned += walked;
    /* Nothing whole in a block sized for any record: the file is shorter than what
     * was written, or holds a record we did not write. */
    if (rc == 0 && walked == 0) rc = out ? 1 : -EIO;
  }
  if (out) return (ssize_t)out;
  return rc < 0 ? rc : 0;
}

/* A segment holds the log (and so its file descriptor) until the last byte taken
 * from it has been sent or dropped. */
static void segment_done(const struct evbuffer_file_segment *seg, int flags, void *arg) {
  (void)seg;
  (void)flags;
  log_unref(arg);
}

ssize_t outlog_reader_read_segment(outlog_reader *r, struct evbuffer_file_segment **out) {
  outlog *l = r->log;
  if (r->filter || r->seq < r->want) return -ENOTSUP;
  if (r->off >= l->size) return 0;
  uint64_t len = l->size - r->off;
  struct evbuffer_file_segment *seg =
      evbuffer_file_segment_new(l->fd, (ev_off_t)r->off, (ev_off_t)len, EVBUF_FS_DISABLE_LOCKING);
  if (!seg) return -ENOMEM;
  l->refs++;
  evbuffer_file_segment_add_cleanup_cb(seg, segment_done, l);
  /* The log's size is always the end of a whole record: the cursor stays on a record
   * boundary, and the next seq is the log's. */
  r->off = l->size;
  r->seq = l->next_seq;
  *out = seg;
  return (ssize_t)len;
}

void outlog_reader_wait(outlog_reader *r, outlog_wake_fn fn, void *arg) {
  r->fn = fn;
  r->arg = arg;
  if (r->off < r->log->size || r->log->ended)
    event_active(r->ev, 0, 0);
  else if (!r->waiting)
    waiter_add(r->log, r);
}

int outlog_reader_caught_up(const outlog_reader *r) { return r->off >= r->log->size; }

int outlog_reader_done(const outlog_reader *r) { return r->log->ended && r->off >= r->log->size; }
