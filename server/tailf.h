/* tailf: follows files of one directory as they grow ("tail -f" for many files at once),
 * and hands their new bytes to a callback from a libevent event loop. Made for an
 * executor whose jobs write their stdout/stderr into files of a shared spool directory.
 *
 * Watching: one inotify instance (Linux) per tailf, with one watch on the whole directory
 * (IN_CREATE, IN_MODIFY, IN_CLOSE_WRITE, IN_MOVED_TO), so thousands of followed files cost
 * one inotify descriptor; each followed file costs one read-only descriptor of its own
 * once it exists. An event for a followed name, or an inotify queue overflow (then for
 * every followed file, as any may have grown unseen), schedules a read of that file on
 * the loop. Events for names nobody follows are dropped.
 *
 * Bounded work: a file's read takes at most TAILF_ROUND_MAX bytes per loop iteration,
 * through one 64 KiB buffer per tailf; when more is left it goes on at the next
 * iteration (after the loop has polled its descriptors again), so one fast-growing file
 * neither starves the loop nor the other files. Memory does not grow with file sizes:
 * per followed file, a small struct, its name and one timer event.
 *
 * Files: only regular files are read, and never through a symbolic link (the directory
 * may be writable by the jobs: a link there must not make the server read another
 * file). A file is opened (O_RDONLY, close-on-exec, non-blocking) once it is there, and
 * stays open until tailf_file_free: should another file take its name later (renamed
 * over it), the one opened first goes on being followed. Reads are pread(2) at a tracked
 * offset; short reads and EINTR just mean reading on. A file cut below the bytes already
 * delivered (which our writers never do) delivers nothing until it grows past that
 * offset again, and then only the bytes from there on: the offset never goes back.
 *
 * Errors of opening or reading (other than the file not being there yet) are logged,
 * rate-limited, as WARNING lines naming the directory and the file; the file is tried
 * again at its next event or tailf_poll.
 *
 * Network file systems: inotify sees only the writes made on this host, so for a
 * directory written from other hosts (NFS) the caller calls tailf_poll periodically, and
 * once more when it knows the writer is done.
 *
 * Single-threaded: every function runs on the thread of the tailf's event_base, which
 * must outlive it. The server aborts on out-of-memory: nothing here returns -ENOMEM. */
#ifndef PRISMQ_TAILF_H
#define PRISMQ_TAILF_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct event_base;

typedef struct tailf tailf;           /* one inotify instance watching one directory */
typedef struct tailf_file tailf_file; /* one followed file in it */

/* Most bytes a file's read delivers per loop iteration. */
#define TAILF_ROUND_MAX (256u << 10)

/* `len` (> 0) bytes appended to f's file, which began at offset tailf_offset(f) - len
 * (tailf_offset already counts them during the call). `data` is valid only during the
 * call. Fires from the loop, or from inside tailf_poll(f); never after
 * tailf_file_free(f). From here the callee may call any function of this module on other
 * files of the same tailf (tailf_add, tailf_poll, tailf_file_free, ...), but must not
 * free f itself (that aborts): mark it and free it later. */
typedef void (*tailf_fn)(tailf_file *f, const uint8_t *data, size_t len, void *arg);

/* Watches directory `dir` (which must exist) on `base`. Returns 0 and sets *out, or a
 * negative errno: of opening `dir` (-ENOENT, -ENOTDIR, -EACCES, ...), of inotify_init1
 * (-EMFILE: the user's inotify instances are used up) or of inotify_add_watch (-ENOSPC:
 * the user's inotify watches are used up). Free with tailf_free. */
int tailf_new(tailf **out, struct event_base *base, const char *dir);

/* Stops watching and releases the tailf. Every file added must have been freed before
 * (aborts otherwise: their owners still hold them). Accepts NULL. */
void tailf_free(tailf *t);

/* Follows the file `name` of t's directory from byte `offset` on: fn(f, ..., arg) gets
 * every byte from there as it is appended, in order, each byte once. The file need not
 * exist yet: it is opened when it appears. Bytes already there past `offset` are
 * delivered from the loop soon after, never inside this call. `name` is copied.
 * Returns 0 and sets *out; -EINVAL if `name` is not a plain name in the directory (empty,
 * ".", "..", containing '/', longer than NAME_MAX), `offset` is past INT64_MAX or fn is
 * NULL; -EEXIST if t already follows `name`. Free with tailf_file_free. */
int tailf_add(tailf_file **out, tailf *t, const char *name, uint64_t offset, tailf_fn fn,
              void *arg);

/* Reads, inside this call, whatever the file has past what was delivered (up to its size
 * at the start of the call), calling fn as needed: the one way fn fires outside the
 * loop. For a directory where inotify misses writes (see above); calling it once after
 * the writer has closed the file delivers everything it wrote. The file is opened
 * anew by name first, so that a network file system revalidates its cached size
 * (close-to-open consistency); the descriptor kept is still the first one. May be called
 * from another file's fn, not from f's own. Returns the bytes delivered (0: nothing new);
 * -EBUSY when called from inside f's fn; or, when nothing was delivered, the negative
 * errno of opening or reading, which is not logged (the file is tried again at its next
 * event or call): -ENOENT (the file has never been there yet), -EINVAL (not a regular
 * file), -ELOOP (a symbolic link), ... */
ssize_t tailf_poll(tailf_file *f);

/* The offset of the next byte to deliver: the starting offset plus the bytes delivered
 * so far. */
uint64_t tailf_offset(const tailf_file *f);

/* Stops following and closes the file: fn never fires after it, even when called from
 * inside another file's fn with reads of other files still to come. Must not be called
 * from inside f's own fn (aborts). Accepts NULL. */
void tailf_file_free(tailf_file *f);

#endif
