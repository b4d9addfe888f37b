/* outlog: the output log of one run: every read from the child's stdout/stderr becomes
 * an OutputChunk record appended to a per-run file, and so does every progress update
 * the run reports, in order with its output; any number of followers (readers) replay
 * it from any seq and go on live.
 *
 * File format: a sequence of records, each exactly one gRPC length-prefixed message:
 * a flag byte 0, a 4-byte big-endian length, then a packed
 * prismq.runner.v1.OutputChunk with seq, stream, data, offset and time_ms set, or for a
 * progress update seq, time_ms and progress (stream 0, no data, offset 0); `run` is
 * never set in the file. seq counts records from 1 without gaps; offset is the byte
 * position of data within its own stream. So a reader without a stream filter hands
 * file bytes to the network as they are: whole, already framed messages.
 *
 * Memory per log is bounded and independent of the output size: counters plus a
 * sparse index (seq -> file offset) capped at opts.index_max_entries entries. There
 * is no in-memory copy of the output: readers pread the file, which the page cache
 * keeps hot for live followers. A slow reader costs nothing but its cursor, and never
 * blocks the writer or other readers.
 *
 * Durability: appends are single write(2) calls without fsync. A record is visible to
 * readers once its write has completed whole. A short write is rolled back with
 * ftruncate, so the file only ever holds whole records while the process lives; after
 * a crash the file may end in a partial record, which outlog_open_existing ignores.
 *
 * Lifetime: the log is reference counted. Its owner (the run) holds one reference,
 * dropped by outlog_free; each reader holds one, dropped by outlog_reader_free. So a
 * run may free its log while followers still drain it; the file descriptor and index
 * live until the last reference goes. The event_base must outlive every reader.
 *
 * Single-threaded: every function runs on the thread of the log's event_base. */
#ifndef PRISMQ_OUTLOG_H
#define PRISMQ_OUTLOG_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "prismq/runner/v1/runner.pb-c.h"

struct event_base;
struct evbuffer;
struct evbuffer_file_segment;

typedef struct outlog outlog;
typedef struct outlog_reader outlog_reader;

/* Stream numbers, equal to prismq.runner.v1.OutputStream. */
#define OUTLOG_STDOUT 1
#define OUTLOG_STDERR 2

/* Largest data size of one record: a longer append is stored as several consecutive
 * records. Keeps every record far below gRPC's default 4 MiB message limit. */
#define OUTLOG_CHUNK_MAX (64u << 10)

typedef struct outlog_opts {
  /* Most output bytes stored (stdout and stderr together); 0 = unlimited. Output past
   * it is counted but dropped, and one stderr record saying
   * "[prismq: output truncated after N bytes]\n" is appended as the last output record
   * (its offset is where the stored stderr bytes end, so stderr offsets stay
   * contiguous). Progress records have a budget of their own, as large: truncated
   * output does not stop them, and a run that reports progress without end cannot grow
   * its file without bound either (see outlog_append_progress). */
  uint64_t max_bytes;
  /* Sparse index: an entry is added for a record when this many records ... */
  uint32_t index_every_records;
  /* ... or this many file bytes have passed since the previous entry (whichever
   * comes first), so a reader seeks to any seq by skipping at most that much. */
  uint32_t index_every_bytes;
  /* Hard cap on index entries (>= 2). When it is reached, every other entry is dropped
   * and both spacings above double: memory stays constant, seeking gets coarser. */
  uint32_t index_max_entries;
} outlog_opts;

#define OUTLOG_OPTS_INIT \
  { 0, 1024, 1u << 20, 4096 }

/* Where a data directory keeps the output files: DATA_DIR/OUTLOG_DIR/<run_id>.out. */
#define OUTLOG_DIR "output"

/* Writes the path of the output file of run `run_id` under data directory `data_dir`
 * (DATA_DIR/output/RUN_ID.out) into buf, NUL-terminated. Returns 0, or -ENAMETOOLONG
 * if it does not fit in cap bytes (buf then holds it cut short). */
int outlog_path(char *buf, size_t cap, const char *data_dir, const char *run_id);

/* Creates the log; its file at `path` is created by the first append (O_EXCL; mode
 * 0600), so a run that writes nothing leaves no file (outlog_open_existing then gives
 * -ENOENT: an empty log). `opts` may be NULL for the defaults. `base` (not owned) runs
 * readers' callbacks. Returns 0 and sets *out, or -EINVAL for a bad option. Release
 * with outlog_free. */
int outlog_new(outlog **out, struct event_base *base, const char *path, const outlog_opts *opts);

/* Opens the file of a finished run for replay: scans it once to rebuild the index and
 * the counters, and ignores a trailing partial or invalid record (a crash in the
 * middle of an append). The log is ended at once; appends fail. opts.max_bytes is
 * unused. outlog_bytes then counts each stream up to the end of its last record in the
 * file: output a write error dropped before a record that was stored counts (the
 * record's offset says where it is), but nothing dropped after the last one, nor past
 * max_bytes, leaves a trace there.
 * Returns 0 and sets *out; -EINVAL for a bad option; the negative errno of open(2) or
 * pread(2). */
int outlog_open_existing(outlog **out, struct event_base *base, const char *path,
                         const outlog_opts *opts);

/* Opens the log of a run that goes on after a restart, for appending: like
 * outlog_open_existing it rebuilds counters and index from the file, then cuts off a
 * trailing partial or invalid record (a crash in the middle of an append) so that new
 * records follow the last whole one, seqs and stream offsets continuing. outlog_bytes
 * then counts as after outlog_open_existing. Without a file it is outlog_new. Returns 0
 * and sets *out; -EINVAL for a bad option; the negative errno of open(2), pread(2) or
 * ftruncate(2). */
int outlog_resume(outlog **out, struct event_base *base, const char *path, const outlog_opts *opts);

/* Drops the owner's reference, ending the log first (outlog_end) so waiting readers
 * learn that nothing more comes. Readers still open keep the log readable until they
 * are freed. Accepts NULL. */
void outlog_free(outlog *l);

/* Appends `len` bytes the child wrote on `stream` (OUTLOG_STDOUT or OUTLOG_STDERR) at
 * `time_ms` (wall clock, ms since the epoch) as one record, or several if
 * len > OUTLOG_CHUNK_MAX. len 0 does nothing. The bytes always count in outlog_bytes;
 * past opts.max_bytes they are dropped (see outlog_opts). Waiting readers are woken
 * (later, from the loop; never inside this call). `data` is not kept.
 * Returns 0; -EINVAL for a bad stream or an ended log; the negative errno of creating
 * the file (first append: -EEXIST, -ENOENT, -EACCES, ...) or of a failed write (-ENOSPC, -EFBIG, -EIO, ...): the records not written are lost (their
 * bytes still count, so later offsets show the gap), the file keeps whole records
 * only, and later appends are tried again. The caller logs the error. */
int outlog_append(outlog *l, int stream, const void *data, size_t len, int64_t time_ms);

/* Appends progress update *p (copied; its updated_at_ms as the caller set it) as one
 * record at `time_ms`: an OutputChunk with seq, time_ms and progress set, stream 0
 * (OUTPUT_STREAM_UNSPECIFIED), no data. It counts in no stream's outlog_bytes and not
 * against the output's max_bytes, so it is stored after a truncation too; past
 * max_bytes of progress records (their own budget) updates are dropped. Readers yield
 * progress records whatever their stream filter. Waiting readers are woken as by
 * outlog_append. Returns 0; -EINVAL for an ended log; -EFBIG past the budget (nothing
 * written); -EMSGSIZE for a record over 1 KiB (a message of about 1000 bytes); or an
 * error of creating or writing the file, as outlog_append (the update is lost, the
 * file keeps whole records only). The caller logs the error. */
int outlog_append_progress(outlog *l, const Prismq__Runner__V1__Progress *p, int64_t time_ms);

/* Most updates one outlog_append_updates call takes. */
#define OUTLOG_UPDATES_MAX 16

/* One read of `stream` holding progress updates: the same records as outlog_append of
 * data[0, at[0]), outlog_append_progress of updates[0], outlog_append of data[at[0],
 * at[1]), ... and of the rest, data[at[n - 1], len), with the same accounting, budgets
 * and truncation, but written with one write(2): the output cut around the updates costs
 * no more writes than a read without any. `at` is ascending, each at[i] <= len <=
 * OUTLOG_CHUNK_MAX; n <= OUTLOG_UPDATES_MAX; with len 0 (updates alone) `stream` may be
 * 0. data is not kept. Returns 0; 1 when updates went past the progress budget (dropped,
 * the rest written); -EINVAL for bad arguments or an ended log (nothing stored); or an
 * error of creating or writing the file, as outlog_append: then nothing of the call is
 * stored (its output's bytes still count). */
int outlog_append_updates(outlog *l, int stream, const void *data, size_t len, const size_t *at,
                          const Prismq__Runner__V1__Progress *const *updates, size_t n,
                          int64_t time_ms);

/* Marks the log finished (the run is terminal): appends fail from now on, and readers
 * waiting are woken. Idempotent. */
void outlog_end(outlog *l);

/* True once outlog_end (or outlog_free) was called, and for outlog_open_existing. */
int outlog_ended(const outlog *l);

/* Bytes the child produced on `stream` (OUTLOG_STDOUT/OUTLOG_STDERR), dropped ones
 * included; 0 for any other stream. Progress records count in neither. */
uint64_t outlog_bytes(const outlog *l, int stream);

/* The seq the next record will get (1 for an empty log). */
uint64_t outlog_next_seq(const outlog *l);

/* Current index entries; exposed for tests of the memory bound. */
size_t outlog_index_entries(const outlog *l);

/* Creates a reader (follower) of `l` that yields the records with seq >= start_seq
 * (0 and 1 both mean from the start; a seq not written yet means from that record on,
 * when it comes), only those of stream `stream_filter` if it is OUTLOG_STDOUT or
 * OUTLOG_STDERR, both if 0; progress records always. The reader holds a reference on `l`.
 * Returns 0 and sets *out, or -EINVAL for a bad filter. Free with outlog_reader_free. */
int outlog_reader_new(outlog_reader **out, outlog *l, uint64_t start_seq, int stream_filter);

/* Frees the reader and drops its reference on the log. A pending wait never fires.
 * Accepts NULL. */
void outlog_reader_free(outlog_reader *r);

/* Appends to `dst` the next whole records (framed, byte for byte as in the file) that
 * pass the reader's filter, about `max_bytes` at most but always at least one record
 * when any is available, even a larger one. Work per call is bounded: records skipped
 * by the filter or the start seq are scanned for about max(max_bytes, 1 MiB).
 * Returns the bytes appended (> 0); 0 when nothing was appended, because the reader has
 * caught up or because the scan budget went on skipped records (then
 * outlog_reader_wait fires at once); -EIO if the file is not what was written; or the
 * negative errno of pread(2). The usual loop: read until 0, then check
 * outlog_reader_done, else outlog_reader_wait. */
ssize_t outlog_reader_read(outlog_reader *r, struct evbuffer *dst, size_t max_bytes);

/* Like outlog_reader_read without copying: sets *out to a file segment of all the
 * whole records past the cursor (framed, as in the file) and moves the cursor past
 * them. For readers with no stream filter whose start seq has been reached; others
 * get -ENOTSUP and use outlog_reader_read (which also gets a reader past the records
 * before its start seq). The segment keeps the log's file open until it is freed
 * (evbuffer_file_segment_free, or by whatever it was handed to): the bytes it covers
 * never change. Returns the segment's length (> 0); 0 when the reader has caught up
 * (*out untouched); -ENOTSUP; -ENOMEM. */
ssize_t outlog_reader_read_segment(outlog_reader *r, struct evbuffer_file_segment **out);

/* Called once per outlog_reader_wait. The reader is the caller's again: fn may read,
 * wait again or free the reader (nothing touches it after fn returns). */
typedef void (*outlog_wake_fn)(outlog_reader *r, void *arg);

/* Asks for one call of fn(r, arg) as soon as there is something past the reader's
 * cursor or the log has ended: at once if that is already so. It always fires from
 * the event loop (a deferred event), never inside this call nor inside outlog_append.
 * Calling it again before it fires replaces fn and arg (still one call). Never fires
 * after outlog_reader_free. */
void outlog_reader_wait(outlog_reader *r, outlog_wake_fn fn, void *arg);

/* True when the reader has read everything written so far: nothing is readable now
 * (outlog_reader_read can also return 0 when its scan budget went on records the
 * filter skipped; then this is false). */
int outlog_reader_caught_up(const outlog_reader *r);

/* True when the log has ended and the reader has read everything: nothing will ever
 * come. */
int outlog_reader_done(const outlog_reader *r);

#endif
