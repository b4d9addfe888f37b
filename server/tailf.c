#include "tailf.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <limits.h>
#include <search.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/queue.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "xalloc.h"

/* The read buffer, which also takes a batch of inotify events. */
#define BUF_SIZE (64u << 10)

/* Without IN_EXCL_UNLINK: a followed file removed (or renamed over) while its writer
 * goes on is still followed through its descriptor, and its writes still raise events. */
#define WATCH_MASK (IN_CREATE | IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_TO | IN_ONLYDIR)

/* Warnings of unreadable files: at most one per this interval per tailf. */
#define WARN_EVERY_MS 10000

struct tailf {
  struct event_base *base;
  char *dir;                     /* for log lines */
  int dirfd;                     /* O_PATH: files are opened relative to it */
  int ifd;                       /* inotify */
  struct event *ev;              /* ifd readable */
  void *root;                    /* tsearch tree of tailf_file, by name */
  LIST_HEAD(, tailf_file) files; /* all of them, for a queue overflow */
  uint8_t *buf;                  /* BUF_SIZE */
  int buf_busy;                  /* buf holds the bytes a fn is looking at */
  log_limit warn_limit;
};

struct tailf_file {
  const char *name; /* the bytes right after the struct */
  tailf *t;
  int fd;       /* -1 until the file has been there */
  uint64_t off; /* next byte to deliver */
  tailf_fn fn;
  void *arg;
  struct event *ev; /* timer of zero: a read at the next loop iteration */
  int in_fn;        /* a delivery to fn is under way */
  LIST_ENTRY(tailf_file) link;
};

static int file_cmp(const void *a, const void *b) {
  return strcmp(((const tailf_file *)a)->name, ((const tailf_file *)b)->name);
}

static tailf_file *find(const tailf *t, const char *name) {
  tailf_file key = {.name = name};
  tailf_file **found = tfind(&key, &t->root, file_cmp);
  return found ? *found : NULL;
}

/* Schedules a read of f. Always through its timer, never by reading here: the inotify
 * callback and a queue overflow then only mark files, so a fn that frees another file
 * cannot pull a file out from under a loop over several (event_free takes the freed
 * one's timer off libevent's queues). A timer rather than event_active: libevent runs an
 * event activated from its own callback again in the same pass, before polling the
 * descriptors, while a timer added there waits for the next iteration. */
static void kick(tailf_file *f) {
  static const struct timeval now = {0, 0};
  /* Pending also covers a timer that has fired and whose callback is still to run. */
  if (!evtimer_pending(f->ev, NULL) && evtimer_add(f->ev, &now) != 0) abort();
}

/* Logs a failure to read file `name`, or the inotify descriptor when NULL. */
static void warn(tailf *t, const char *name, int err) {
  unsigned long long held;
  if (!log_limit_pass(&t->warn_limit, WARN_EVERY_MS, &held)) return;
  if (name)
    LOG_WARN("tailf: cannot read a followed file dir=%s name=%s: %s (%llu more in the last 10 s)",
             t->dir, name, strerror(-err), held);
  else
    LOG_WARN("tailf: cannot read inotify events dir=%s: %s (%llu more in the last 10 s)", t->dir,
             strerror(-err), held);
}

/* Opens f's name: a regular file, not through a symbolic link. Returns 0 and sets *fd
 * and *st, or a negative errno (-EINVAL for anything but a regular file). */
static int open_name(const tailf_file *f, int *fd, struct stat *st) {
  int d = openat(f->t->dirfd, f->name, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOFOLLOW | O_NOCTTY);
  if (d < 0) return -errno;
  int rc = fstat(d, st) != 0 ? -errno : S_ISREG(st->st_mode) ? 0 : -EINVAL;
  if (rc) {
    close(d);
    return rc;
  }
  *fd = d;
  return 0;
}

/* Hands fn the bytes past f's offset, at most `limit` of them, reading until end of
 * file. Returns the bytes delivered, or when there were none, the negative errno of
 * pread(2). */
static ssize_t deliver(tailf_file *f, uint64_t limit) {
  tailf *t = f->t;
  /* A tailf_poll from inside another file's fn must not overwrite the bytes that fn is
   * still looking at: it reads into a buffer of its own. */
  int shared = !t->buf_busy;
  uint8_t *buf = shared ? t->buf : xmalloc(BUF_SIZE);
  t->buf_busy = 1;
  f->in_fn = 1;
  uint64_t done = 0;
  int rc = 0;
  while (done < limit) {
    size_t want = limit - done < BUF_SIZE ? (size_t)(limit - done) : BUF_SIZE;
    ssize_t n = pread(f->fd, buf, want, (off_t)f->off);
    if (n < 0) {
      if (errno == EINTR) continue;
      rc = -errno;
      break;
    }
    /* A short read is no end of file: only 0 is. */
    if (n == 0) break;
    f->off += (uint64_t)n;
    done += (uint64_t)n;
    f->fn(f, buf, (size_t)n, f->arg);
  }
  f->in_fn = 0;
  if (shared)
    t->buf_busy = 0;
  else
    free(buf);
  return done ? (ssize_t)done : rc;
}

static void file_cb(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  tailf_file *f = arg;
  ssize_t n = 0;
  if (f->fd < 0) {
    struct stat st;
    n = open_name(f, &f->fd, &st);
  }
  if (n == 0) n = deliver(f, TAILF_ROUND_MAX);
  if (n == (ssize_t)TAILF_ROUND_MAX)
    kick(f);                      /* there may be more: the rest at the next iteration */
  else if (n < 0 && n != -ENOENT) /* ENOENT: not there yet, its IN_CREATE will come */
    warn(f->t, f->name, (int)n);
}

/* One read of queued events per call: if more are queued, the descriptor is still
 * readable at the next iteration. */
static void inotify_cb(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  tailf *t = arg;
  ssize_t n;
  do n = read(t->ifd, t->buf, BUF_SIZE);
  while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno != EAGAIN) warn(t, NULL, -errno);
    return;
  }
  /* The kernel hands whole events only, each followed by its padded name. */
  for (size_t at = 0; at + sizeof(struct inotify_event) <= (size_t)n;) {
    const struct inotify_event *e = (const struct inotify_event *)(t->buf + at);
    at += sizeof *e + e->len;
    if (e->mask & IN_Q_OVERFLOW) {
      /* Events were lost: any followed file may have grown unseen. */
      tailf_file *f;
      LIST_FOREACH(f, &t->files, link) kick(f);
    } else if (e->mask & IN_IGNORED) {
      LOG_WARN("tailf: the directory is no longer watched (removed or unmounted) dir=%s", t->dir);
    } else if (e->len) {
      tailf_file *f = find(t, e->name);
      if (f) kick(f);
    }
  }
}

int tailf_new(tailf **out, struct event_base *base, const char *dir) {
  int dirfd = -1, ifd = -1, rc;
  dirfd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (dirfd < 0) {
    rc = -errno;
    goto fail;
  }
  ifd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (ifd < 0) {
    rc = -errno;
    goto fail;
  }
  if (inotify_add_watch(ifd, dir, WATCH_MASK) < 0) {
    rc = -errno;
    goto fail;
  }
  tailf *t = xcalloc(1, sizeof *t);
  t->base = base;
  t->dir = xstrdup(dir);
  t->dirfd = dirfd;
  t->ifd = ifd;
  t->buf = xmalloc(BUF_SIZE);
  LIST_INIT(&t->files);
  t->ev = event_new(base, ifd, EV_READ | EV_PERSIST, inotify_cb, t);
  if (!t->ev || event_add(t->ev, NULL) != 0) abort();
  *out = t;
  return 0;
fail:
  if (ifd >= 0) close(ifd);
  if (dirfd >= 0) close(dirfd);
  return rc;
}

void tailf_free(tailf *t) {
  if (!t) return;
  if (!LIST_EMPTY(&t->files)) abort(); /* their owners would hold freed memory */
  event_free(t->ev);
  close(t->ifd);
  close(t->dirfd);
  free(t->buf);
  free(t->dir);
  free(t);
}

int tailf_add(tailf_file **out, tailf *t, const char *name, uint64_t offset, tailf_fn fn,
              void *arg) {
  size_t len = strlen(name);
  if (!fn || offset > INT64_MAX || len == 0 || len > NAME_MAX || strchr(name, '/') ||
      strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
    return -EINVAL;
  if (find(t, name)) return -EEXIST;
  tailf_file *f = xcalloc(1, sizeof *f + len + 1);
  f->name = memcpy(f + 1, name, len + 1);
  f->t = t;
  f->fd = -1;
  f->off = offset;
  f->fn = fn;
  f->arg = arg;
  f->ev = evtimer_new(t->base, file_cb, f);
  if (!f->ev || !tsearch(f, &t->root, file_cmp)) abort();
  LIST_INSERT_HEAD(&t->files, f, link);
  /* What is there already, or the file if it appeared before the watch saw it. */
  kick(f);
  *out = f;
  return 0;
}

ssize_t tailf_poll(tailf_file *f) {
  if (f->in_fn) return -EBUSY;
  /* Opening by name makes an NFS client revalidate the file's attributes with the server
   * (close-to-open consistency): without it, a size cached from before the writer's last
   * writes would hide them from pread for up to the attribute cache's timeout. */
  struct stat st;
  int fd = -1;
  int rc = open_name(f, &fd, &st);
  if (f->fd < 0) {
    if (rc) return rc;
    f->fd = fd;
  } else {
    /* The first file opened is the one followed; this one only revalidated. A failure
     * to open (removed since) leaves the open one readable. */
    if (fd >= 0) close(fd);
    if (fstat(f->fd, &st) != 0) return -errno;
  }
  /* Bounded by the size now, so that a writer faster than us cannot keep this call. */
  if ((uint64_t)st.st_size <= f->off) return 0;
  return deliver(f, (uint64_t)st.st_size - f->off);
}

uint64_t tailf_offset(const tailf_file *f) { return f->off; }

void tailf_file_free(tailf_file *f) {
  if (!f) return;
  /* From its own fn: the delivery under way would use f after. */
  if (f->in_fn) abort();
  tdelete(f, &f->t->root, file_cmp);
  LIST_REMOVE(f, link);
  event_free(f->ev);
  if (f->fd >= 0) close(f->fd);
  free(f);
}
