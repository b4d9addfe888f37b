/* proc on Windows: the interface of proc.h with CreateProcessW, a Job Object per
 * process, and pipes read by a thread of the proc's own (the way libuv's
 * src/win/process.c and process-stdio.c do it). proc.h's "On Windows" paragraph says
 * what differs for callers; this file says how.
 *
 * Threads. libevent watches sockets only on Windows (select) and is built here without
 * thread support, so the pipes and the process handle are watched by a thread per proc,
 * the "watcher", which never calls libevent: it hands what it saw to the loop through a
 * mutex-protected slot per stream and a compat_wakeup (a loopback socket the loop
 * watches). One watcher per proc, not one blocking reader per pipe: our ends of the
 * pipes are overlapped named pipes, and the watcher waits in one WaitForMultipleObjects
 * on the process, every outstanding read and an event the loop sets ("kick"). That
 * costs one thread instead of four, and gives the loop a race-free way to stop a read
 * (a pipe held open by a process outside the job would otherwise block a ReadFile
 * forever, and CancelSynchronousIo cannot tell whether the thread has entered the call
 * yet).
 *
 * Backpressure. A stream has two buffers (PROC_READ_MAX). The watcher reads into one while the
 * other waits for the loop (so the loop's delivery and the next read overlap: every
 * handoff costs a wake-up of the loop and one of the watcher, under Wine a round trip to
 * its server each), and reads no further while both are full; the loop frees a buffer
 * once on_output returned. Memory stays bounded, and a child writing faster than the
 * loop consumes blocks on its full pipe, as on Linux.
 *
 * Lifetime. The watcher and the proc share a refcounted `watch` (the pipes' read ends,
 * the buffers, the process handle, the wakeup). proc_free and completion only tell the
 * watcher to stop and drop the proc's reference, never waiting for it: the watcher
 * cancels its outstanding reads (CancelIoEx, whose completion it waits for before the
 * buffers may go), drops its own reference, and the last one out frees the watch. So
 * the loop never blocks on a thread, and a proc freed while running leaves a remnant
 * that frees itself within a moment (its job is terminated at once). */
#include "proc.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <wchar.h>

#include <windows.h>

#include <event2/event.h>

#include "compat.h"
#include "log.h"
#include "xalloc.h"

/* One read per stream at a time, as much as the pipe's buffer holds, into one of NBUF
 * buffers. 256 KiB, more than Linux's 64 KiB pipes: each chunk costs a handoff to the
 * loop and back, under Wine round trips to its server, and fewer, larger chunks
 * streamed 0.3x a plain pipe copy there against 0.19x with 64 KiB ones
 * (docs/windows.md). */
#define PROC_READ_MAX (256u << 10)
#define NBUF          2

/* CreateProcessW's limit on the command line, in UTF-16 units with the NUL. */
#define PROC_CMDLINE_MAX 32767

/* The exit code TerminateJobObject gives the processes we kill (128 + 9, what a POSIX
 * shell shows for a SIGKILL). It means SIGKILL only when we killed the job while the
 * main process was still running (proc.killed_running). */
#define PROC_KILL_CODE 137

/* Signal numbers as the API carries them: Linux's, whatever mingw's signal.h says
 * (its SIGABRT is 22; it has no SIGTRAP, SIGBUS or SIGKILL). */
enum {
  LX_SIGINT = 2,
  LX_SIGILL = 4,
  LX_SIGTRAP = 5,
  LX_SIGABRT = 6,
  LX_SIGBUS = 7,
  LX_SIGFPE = 8,
  LX_SIGKILL = 9,
  LX_SIGSEGV = 11,
  LX_SIGTERM = 15,
};

/* The C runtime's descriptor flags in STARTUPINFO's lpReserved2 table (msvcrt's and
 * the UCRT's ioinit read it; libuv's process-stdio.c writes it the same way). */
#define CRT_FOPEN 0x01
#define CRT_FPIPE 0x08
#define CRT_FDEV  0x40

/* ---- the watcher ---- */

typedef struct stream {
  HANDLE rd;          /* our end: overlapped; the watcher's while it runs */
  OVERLAPPED ov;      /* the read in flight; hEvent manual-reset */
  uint8_t *buf[NBUF]; /* PROC_READ_MAX bytes each, used in turn; made at first use */
  int reading;        /* watcher only: a read into buf[(next + full) % NBUF] is on ov */
  /* Under watch.lock: */
  size_t len[NBUF]; /* of the chunks the loop has not delivered yet */
  int next;         /* the buffer the loop delivers next */
  int full;         /* how many buffers hold chunks, from next on */
  int eof;          /* end of file (or a read error): no more chunks */
  int drop;         /* the loop gave up on the stream: cancel its read */
} stream;

typedef struct watch {
  SRWLOCK lock;
  volatile LONG refs; /* the proc's and the watcher's */
  HANDLE process;
  HANDLE kick; /* auto-reset: the loop emptied a slot, dropped a stream, or says stop */
  compat_wakeup *wake;
  int nstreams;
  stream st[3];
  /* Under lock: */
  int exited; /* the main process has exited */
  int stop;   /* the proc is gone: cancel everything and leave */
} watch;

static void watch_unref(watch *w) {
  if (InterlockedDecrement(&w->refs) > 0) return;
  for (int s = 0; s < w->nstreams; s++) {
    if (w->st[s].rd != INVALID_HANDLE_VALUE) CloseHandle(w->st[s].rd);
    if (w->st[s].ov.hEvent) CloseHandle(w->st[s].ov.hEvent);
    for (int b = 0; b < NBUF; b++) free(w->st[s].buf[b]);
  }
  if (w->process) CloseHandle(w->process);
  if (w->kick) CloseHandle(w->kick);
  compat_wakeup_free(w->wake);
  free(w);
}

/* The read on st ended (its event is set): a chunk for the loop, or the end. */
static void read_done(watch *w, stream *st) {
  DWORD got = 0;
  BOOL ok = GetOverlappedResult(st->rd, &st->ov, &got, FALSE);
  DWORD err = ok ? 0 : GetLastError();
  st->reading = 0;
  if (ok && got == 0) return; /* a zero-length write: read again */
  if (!ok && err != ERROR_BROKEN_PIPE && err != ERROR_OPERATION_ABORTED)
    LOG_WARN("proc output read failed err=%lu", (unsigned long)err);
  AcquireSRWLockExclusive(&w->lock);
  if (ok)
    st->len[(st->next + st->full++) % NBUF] = got;
  else
    st->eof = 1;
  ReleaseSRWLockExclusive(&w->lock);
  compat_wakeup_signal(w->wake);
}

/* Starts a read on st. A read that completes at once also sets the event: read_done
 * picks it up from the wait like any other. */
static void read_start(watch *w, stream *st) {
  uint8_t **buf = &st->buf[(st->next + st->full) % NBUF];
  if (!*buf) *buf = xmalloc(PROC_READ_MAX); /* at its first use: a silent stream needs one */
  if (ReadFile(st->rd, *buf, PROC_READ_MAX, NULL, &st->ov) || GetLastError() == ERROR_IO_PENDING) {
    st->reading = 1;
    return;
  }
  DWORD err = GetLastError();
  if (err != ERROR_BROKEN_PIPE) LOG_WARN("proc output read failed err=%lu", (unsigned long)err);
  st->eof = 1; /* under the lock: watch_main holds it */
  compat_wakeup_signal(w->wake);
}

/* Cancels st's outstanding read and waits for the cancellation, after which the
 * system no longer writes to st's buffers. */
static void read_cancel(stream *st) {
  DWORD got;
  if (!st->reading) return;
  CancelIoEx(st->rd, &st->ov);
  GetOverlappedResult(st->rd, &st->ov, &got, TRUE);
  st->reading = 0;
}

/* Under the lock: starts the reads the slots have room for, cancels dropped ones, and
 * lists what to wait for (h, with what each is in idx: -2 kick, -1 process, else a
 * stream). Returns the count. */
static DWORD watch_arm(watch *w, HANDLE *h, int *idx) {
  DWORD n = 0;
  h[n] = w->kick;
  idx[n++] = -2;
  if (!w->exited) {
    h[n] = w->process;
    idx[n++] = -1;
  }
  for (int s = 0; s < w->nstreams; s++) {
    stream *st = &w->st[s];
    if (st->drop) {
      read_cancel(st);
      st->eof = 1;
    }
    if (!st->eof && st->full < NBUF && !st->reading) read_start(w, st);
    if (st->reading) {
      h[n] = st->ov.hEvent;
      idx[n++] = s;
    }
  }
  return n;
}

static DWORD WINAPI watch_main(void *arg) {
  watch *w = arg;
  for (;;) {
    HANDLE h[5];
    int idx[5];
    AcquireSRWLockExclusive(&w->lock);
    int stop = w->stop;
    DWORD n = stop ? 0 : watch_arm(w, h, idx);
    ReleaseSRWLockExclusive(&w->lock);
    if (stop) break;
    DWORD r = WaitForMultipleObjects(n, h, FALSE, INFINITE);
    if (r >= WAIT_OBJECT_0 + n) {
      /* Only bad handles get here: not a state to spin in. */
      LOG_ERROR("proc watcher wait failed err=%lu", (unsigned long)GetLastError());
      abort();
    }
    int i = idx[r - WAIT_OBJECT_0];
    if (i == -1) {
      AcquireSRWLockExclusive(&w->lock);
      w->exited = 1;
      ReleaseSRWLockExclusive(&w->lock);
      compat_wakeup_signal(w->wake);
    } else if (i >= 0) {
      read_done(w, &w->st[i]);
    }
  }
  for (int s = 0; s < w->nstreams; s++) read_cancel(&w->st[s]);
  watch_unref(w);
  return 0;
}

/* ---- the proc, on the loop ---- */

struct proc {
  struct event_base *base;
  DWORD pid;
  HANDLE job;
  watch *w;
  uint32_t orphan_kill_ms;
  proc_output_fn on_output;
  proc_exit_fn on_exit;
  void *arg;

  int open[3]; /* the loop's view of each stream: not yet at end of file nor dropped */
  struct event *wake_ev;
  struct event *term_ev;   /* proc_terminate's grace period */
  struct event *orphan_ev; /* main process gone, pipes still open */
  int ctrl_sig;            /* what the last console event stood for (SIGTERM/SIGINT) */

  int in_cb;                   /* depth of user callbacks running: defer the release */
  unsigned exited : 1;         /* the loop has seen the main process exit */
  unsigned done : 1;           /* on_exit delivered */
  unsigned user_gone : 1;      /* proc_free was called */
  unsigned term_sent : 1;      /* proc_terminate was called */
  unsigned killed : 1;         /* the job has been terminated */
  unsigned killed_running : 1; /* ... while the main process ran: PROC_KILL_CODE is ours */
};

static void kill_job(proc *p) {
  if (!p->exited) p->killed_running = 1;
  p->killed = 1;
  if (!TerminateJobObject(p->job, PROC_KILL_CODE))
    LOG_WARN("proc job kill failed pid=%lu err=%lu", (unsigned long)p->pid,
             (unsigned long)GetLastError());
}

/* The number of processes alive in the job (0 if it cannot be asked). */
static DWORD job_active(const proc *p) {
  JOBOBJECT_BASIC_ACCOUNTING_INFORMATION ai;
  if (!QueryInformationJobObject(p->job, JobObjectBasicAccountingInformation, &ai, sizeof ai, NULL))
    return WaitForSingleObject(p->w->process, 0) == WAIT_TIMEOUT ? 1 : 0;
  return ai.ActiveProcesses;
}

/* Sends CTRL_BREAK to the process group of the run (its main process's id), standing
 * for `sig`. Returns 0 or -ENOTSUP (no console shared with the child: a server without
 * a console, or Wine, whose GenerateConsoleCtrlEvent fails). */
static int send_ctrl(proc *p, int sig) {
  p->ctrl_sig = sig;
  if (GenerateConsoleCtrlEvent(CTRL_BREAK_EVENT, p->pid)) return 0;
  LOG_DEBUG("proc console event failed pid=%lu err=%lu", (unsigned long)p->pid,
            (unsigned long)GetLastError());
  return -ENOTSUP;
}

/* Tells the watcher that the loop gave up stream s. */
static void drop_stream(proc *p, int s) {
  if (!p->open[s]) return;
  p->open[s] = 0;
  AcquireSRWLockExclusive(&p->w->lock);
  p->w->st[s].drop = 1;
  ReleaseSRWLockExclusive(&p->w->lock);
  SetEvent(p->w->kick);
}

static int streams_open(const proc *p) {
  for (int s = 0; s < p->w->nstreams; s++)
    if (p->open[s]) return 1;
  return 0;
}

/* Frees the loop's side and lets the watcher go: it frees the rest itself. The job is
 * terminated if anything of it may run (closing the handle would too: KILL_ON_JOB_CLOSE). */
static void destroy(proc *p) {
  if (p->wake_ev) event_free(p->wake_ev);
  if (p->term_ev) event_free(p->term_ev);
  if (p->orphan_ev) event_free(p->orphan_ev);
  if (p->job) {
    if (!p->done) TerminateJobObject(p->job, PROC_KILL_CODE);
    CloseHandle(p->job);
  }
  if (p->w) {
    AcquireSRWLockExclusive(&p->w->lock);
    p->w->stop = 1;
    ReleaseSRWLockExclusive(&p->w->lock);
    SetEvent(p->w->kick);
    watch_unref(p->w);
  }
  free(p);
}

/* An exit code as (exit_status, term_signal): see proc.h's "On Windows". */
static void map_status(const proc *p, DWORD code, int *status, int *sig) {
  static const struct {
    DWORD code;
    int sig;
  } crashes[] = {
      {0xC0000005, LX_SIGSEGV}, /* STATUS_ACCESS_VIOLATION */
      {0xC00000FD, LX_SIGSEGV}, /* STATUS_STACK_OVERFLOW */
      {0x80000001, LX_SIGSEGV}, /* STATUS_GUARD_PAGE_VIOLATION */
      {0xC0000006, LX_SIGBUS},  /* STATUS_IN_PAGE_ERROR */
      {0x80000002, LX_SIGBUS},  /* STATUS_DATATYPE_MISALIGNMENT */
      {0xC000001D, LX_SIGILL},  /* STATUS_ILLEGAL_INSTRUCTION */
      {0xC0000096, LX_SIGILL},  /* STATUS_PRIVILEGED_INSTRUCTION */
      {0xC0000094, LX_SIGFPE},  /* STATUS_INTEGER_DIVIDE_BY_ZERO */
      {0xC0000095, LX_SIGFPE},  /* STATUS_INTEGER_OVERFLOW */
      {0xC000008E, LX_SIGFPE},  /* STATUS_FLOAT_DIVIDE_BY_ZERO */
      {0xC0000090, LX_SIGFPE},  /* STATUS_FLOAT_INVALID_OPERATION */
      {0xC0000091, LX_SIGFPE},  /* STATUS_FLOAT_OVERFLOW */
      {0x80000003, LX_SIGTRAP}, /* STATUS_BREAKPOINT */
      {0xC0000409, LX_SIGABRT}, /* STATUS_STACK_BUFFER_OVERRUN: __fastfail */
      {0xE06D7363, LX_SIGABRT}, /* an uncaught C++ exception (MSVC's) */
  };
  *status = -1;
  *sig = 0;
  if (code == PROC_KILL_CODE && p->killed_running) {
    *sig = LX_SIGKILL;
    return;
  }
  if (code == 0xC000013A) { /* STATUS_CONTROL_C_EXIT: a console event's default */
    *sig = p->ctrl_sig ? p->ctrl_sig : LX_SIGINT;
    return;
  }
  for (size_t i = 0; i < sizeof crashes / sizeof *crashes; i++)
    if (crashes[i].code == code) {
      *sig = crashes[i].sig;
      return;
    }
  if (code >= 0xC0000000 && code < 0xE0000000) /* another error of the system's */
    *sig = LX_SIGABRT;
  else if (code > INT_MAX) /* exit(-1) and such: the low byte, as POSIX keeps it */
    *status = (int)(code & 0xFF);
  else
    *status = (int)code;
}

/* The whole job's CPU time and peak committed memory. */
static void job_usage(const proc *p, proc_usage *u) {
  JOBOBJECT_BASIC_ACCOUNTING_INFORMATION ai;
  JOBOBJECT_EXTENDED_LIMIT_INFORMATION li;
  if (QueryInformationJobObject(p->job, JobObjectBasicAccountingInformation, &ai, sizeof ai,
                                NULL)) {
    u->user_cpu_ms = (uint64_t)ai.TotalUserTime.QuadPart / 10000u;
    u->sys_cpu_ms = (uint64_t)ai.TotalKernelTime.QuadPart / 10000u;
  }
  /* Where the job does not count (Wine), the main process's own times at least. */
  FILETIME c, e, k, us;
  if (u->user_cpu_ms + u->sys_cpu_ms == 0 && GetProcessTimes(p->w->process, &c, &e, &k, &us)) {
    u->user_cpu_ms = (((uint64_t)us.dwHighDateTime << 32) | us.dwLowDateTime) / 10000u;
    u->sys_cpu_ms = (((uint64_t)k.dwHighDateTime << 32) | k.dwLowDateTime) / 10000u;
  }
  if (QueryInformationJobObject(p->job, JobObjectExtendedLimitInformation, &li, sizeof li, NULL))
    u->max_rss_kb = (uint64_t)li.PeakJobMemoryUsed / 1024u;
}

static void settle(proc *p);

static void finish(proc *p) {
  DWORD code = 0;
  int status = -1, sig = 0;
  proc_usage u = {0};
  /* No member outlives the run. The main process has exited: its code is its own. */
  TerminateJobObject(p->job, PROC_KILL_CODE);
  p->killed = 1;
  if (GetExitCodeProcess(p->w->process, &code))
    map_status(p, code, &status, &sig);
  else
    LOG_ERROR("proc exit code lost pid=%lu err=%lu", (unsigned long)p->pid,
              (unsigned long)GetLastError());
  job_usage(p, &u);
  p->done = 1;
  /* Nothing more to watch: the watcher may go now rather than at proc_free. */
  AcquireSRWLockExclusive(&p->w->lock);
  p->w->stop = 1;
  ReleaseSRWLockExclusive(&p->w->lock);
  SetEvent(p->w->kick);
  event_del(p->term_ev);
  event_del(p->orphan_ev);
  LOG_DEBUG("proc done pid=%lu code=0x%lx exit_status=%d term_signal=%d", (unsigned long)p->pid,
            (unsigned long)code, status, sig);
  if (p->on_exit) {
    p->in_cb++;
    p->on_exit(p, status, sig, &u, p->arg);
    p->in_cb--;
  }
  settle(p);
}

/* Moves the proc on after any change of state; p may be gone when it returns, so it
 * is the last thing every event callback does. */
static void settle(proc *p) {
  if (p->in_cb) return; /* the callback's dispatcher settles once it returns */
  if (p->user_gone) {
    destroy(p); /* nothing to reap on Windows: the watcher cleans up after itself */
    return;
  }
  if (p->done || !p->exited) return;
  if (streams_open(p)) {
    if (!evtimer_pending(p->orphan_ev, NULL)) {
      struct timeval tv = compat_timeout_ms(p->orphan_kill_ms);
      evtimer_add(p->orphan_ev, &tv);
    }
    return;
  }
  finish(p);
}

/* Delivers stream s's next chunk or its end, if any. A chunk after it that is there
 * already wakes the loop again (one chunk per stream per wake, as on Linux one read per
 * readiness). Returns 0 once a callback freed p. */
static int deliver(proc *p, int s) {
  watch *w = p->w;
  stream *st = &w->st[s];
  AcquireSRWLockExclusive(&w->lock);
  int full = st->full, next = st->next, eof = st->eof;
  size_t len = full ? st->len[next] : 0;
  ReleaseSRWLockExclusive(&w->lock);
  if (full) {
    /* The watcher leaves a full buffer alone until the loop frees it. */
    if (p->on_output && len) {
      p->in_cb++;
      p->on_output(p, s + 1, st->buf[next], len, p->arg);
      p->in_cb--;
    }
    AcquireSRWLockExclusive(&w->lock);
    st->next = (next + 1) % NBUF;
    int more = --st->full > 0 || st->eof;
    ReleaseSRWLockExclusive(&w->lock);
    SetEvent(w->kick);
    if (more) compat_wakeup_signal(w->wake);
    return !p->user_gone;
  }
  if (eof) p->open[s] = 0;
  return 1;
}

/* The watcher has news: take it before looking, so that news after the look wakes us
 * again. One chunk per stream per wake, like proc.c's one read per readiness. */
static void wake_cb(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  proc *p = arg;
  compat_wakeup_take(p->w->wake);
  for (int s = 0; s < p->w->nstreams; s++)
    if (p->open[s] && !deliver(p, s)) break;
  if (!p->user_gone) {
    AcquireSRWLockExclusive(&p->w->lock);
    if (p->w->exited) p->exited = 1;
    ReleaseSRWLockExclusive(&p->w->lock);
  }
  settle(p);
}

static void term_cb(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  kill_job(arg);
}

/* First expiry: something of the job holds the pipes after the main process exited;
 * kill the job. Second: the pipes are still open although the job is dead (a process
 * outside it got a handle to them); stop waiting for them. */
static void orphan_cb(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  proc *p = arg;
  if (!p->killed) {
    kill_job(p);
    struct timeval tv = compat_timeout_ms(p->orphan_kill_ms);
    evtimer_add(p->orphan_ev, &tv);
    return;
  }
  LOG_WARN("proc output held open by a process outside the job, closing it pid=%lu",
           (unsigned long)p->pid);
  for (int s = 0; s < p->w->nstreams; s++) drop_stream(p, s);
  settle(p);
}

/* ---- errors and text ---- */

/* A Windows error as the errno value proc.h documents for the same failure. */
static int errno_of_win(DWORD e) {
  switch (e) {
  case ERROR_FILE_NOT_FOUND:
  case ERROR_PATH_NOT_FOUND:
  case ERROR_INVALID_DRIVE:
  case ERROR_INVALID_NAME:
  case ERROR_BAD_NETPATH:
  case ERROR_BAD_NET_NAME:
  case ERROR_MOD_NOT_FOUND: return ENOENT;
  case ERROR_ACCESS_DENIED:
  case ERROR_SHARING_VIOLATION: return EACCES;
  case ERROR_BAD_EXE_FORMAT:
  case ERROR_EXE_MACHINE_TYPE_MISMATCH:
  case ERROR_BAD_FORMAT: return ENOEXEC;
  case ERROR_DIRECTORY: return ENOTDIR;
  case ERROR_FILENAME_EXCED_RANGE: return ENAMETOOLONG;
  case ERROR_INVALID_PARAMETER: return EINVAL;
  case ERROR_NOT_ENOUGH_MEMORY:
  case ERROR_OUTOFMEMORY:
  case ERROR_NO_SYSTEM_RESOURCES:
  case ERROR_TOO_MANY_OPEN_FILES: return EAGAIN;
  default: return EIO;
  }
}

static int last_err(void) { return -errno_of_win(GetLastError()); }

/* UTF-8 to a new UTF-16 string (free it). Returns 0 or -EINVAL (not UTF-8). */
static int to_wide(wchar_t **out, const char *s) {
  int n = MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, s, -1, NULL, 0);
  if (n <= 0) return -EINVAL;
  wchar_t *w = xmalloc((size_t)n * sizeof *w);
  MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, s, -1, w, n);
  *out = w;
  return 0;
}

/* ---- finding the program ---- */

static int is_sep(wchar_t c) { return c == L'\\' || c == L'/'; }

static int is_absolute(const wchar_t *s) { return is_sep(s[0]) || (s[0] && s[1] == L':'); }

/* Whether the last component of s has an extension. */
static int has_ext(const wchar_t *s) {
  for (size_t i = wcslen(s); i > 0 && !is_sep(s[i - 1]); i--)
    if (s[i - 1] == L'.') return 1;
  return 0;
}

/* Whether s ends with ext, as Win32 reads names: without case, trailing dots and
 * spaces dropped ("x.bat." and "x.bat " are x.bat). */
static int ends_with(const wchar_t *s, const wchar_t *ext) {
  size_t n = wcslen(s), e = wcslen(ext);
  while (n > 0 && (s[n - 1] == L'.' || s[n - 1] == L' ')) n--;
  return n >= e && _wcsnicmp(s + n - e, ext, e) == 0;
}

/* 0 if `path` is a file CreateProcessW runs without a shell, else -errno. */
static int check_exec(const wchar_t *path) {
  DWORD a = GetFileAttributesW(path);
  if (a == INVALID_FILE_ATTRIBUTES) return last_err();
  if (a & FILE_ATTRIBUTE_DIRECTORY) return -EACCES;
  /* Batch files run only through cmd.exe, which we never start. */
  if (ends_with(path, L".bat") || ends_with(path, L".cmd")) return -ENOEXEC;
  return 0;
}

/* Tries dir\file (dir may be NULL or empty: file alone; a relative result is taken
 * from cwd), then with .exe and .com when file has no extension. Returns 0 with the
 * path in out (cap units), or the first error other than -ENOENT, or -ENOENT. */
static int try_dir(wchar_t *out, size_t cap, const wchar_t *cwd, const wchar_t *dir, size_t dlen,
                   const wchar_t *file) {
  static const wchar_t *const exts[] = {L"", L".exe", L".com"};
  int rc = -ENOENT;
  for (size_t i = 0; i < (has_ext(file) ? 1u : 3u); i++) {
    int n = dlen ? snwprintf(out, cap, L"%.*ls%ls%ls%ls", (int)dlen, dir,
                             is_sep(dir[dlen - 1]) ? L"" : L"\\", file, exts[i])
                 : snwprintf(out, cap, L"%ls%ls", file, exts[i]);
    if (n < 0 || (size_t)n >= cap) return -ENAMETOOLONG;
    if (cwd && !is_absolute(out)) {
      wchar_t rel[MAX_PATH * 4];
      snwprintf(rel, sizeof rel / sizeof *rel, L"%ls", out);
      n = snwprintf(out, cap, L"%ls%ls%ls", cwd, is_sep(cwd[wcslen(cwd) - 1]) ? L"" : L"\\", rel);
      if (n < 0 || (size_t)n >= cap) return -ENAMETOOLONG;
    }
    int r = check_exec(out);
    if (r == 0) return 0;
    if (r != -ENOENT && rc == -ENOENT) rc = r;
  }
  return rc;
}

/* The PATH of envp as a new UTF-16 string, or NULL without one. Windows' names are
 * case-insensitive ("Path"). */
static wchar_t *env_path(const char *const *envp) {
  wchar_t *w = NULL;
  for (const char *const *e = envp; e && *e; e++)
    if (_strnicmp(*e, "PATH=", 5) == 0) return to_wide(&w, *e + 5) == 0 ? w : NULL;
  return NULL;
}

/* Finds the program for `file` (proc.h's proc_resolve, on Windows): into out (cap
 * units), relative names and relative PATH entries taken from cwd (NULL: ours). */
static int resolve(wchar_t *out, size_t cap, const wchar_t *cwd, const wchar_t *file,
                   const char *const *envp) {
  if (!*file) return -ENOENT;
  if (wcschr(file, L'/') || wcschr(file, L'\\') || (file[0] && file[1] == L':'))
    return try_dir(out, cap, cwd, NULL, 0, file);
  wchar_t *path = env_path(envp), sys[2][MAX_PATH];
  int rc = -ENOENT, r = -ENOENT;
  if (path) {
    for (const wchar_t *dir = path;; dir++) {
      size_t dlen = wcscspn(dir, L";");
      if (dlen && (r = try_dir(out, cap, cwd, dir, dlen, file)) != -ENOENT) {
        if (r == 0) break;
        if (rc == -ENOENT) rc = r;
      }
      dir += dlen;
      if (!*dir) break;
    }
  } else {
    /* Without a PATH: the system directory, then the Windows directory. */
    UINT n0 = GetSystemDirectoryW(sys[0], MAX_PATH), n1 = GetWindowsDirectoryW(sys[1], MAX_PATH);
    if (n0 && n0 < MAX_PATH) r = try_dir(out, cap, NULL, sys[0], n0, file);
    if (r != 0 && n1 && n1 < MAX_PATH) r = try_dir(out, cap, NULL, sys[1], n1, file);
    if (r != -ENOENT) rc = r;
  }
  free(path);
  return r == 0 ? 0 : rc;
}

int proc_resolve(char *out, size_t cap, const char *file, const char *const *envp) {
  wchar_t *wfile = NULL, found[MAX_PATH * 4];
  int rc = to_wide(&wfile, file);
  if (rc < 0) return -ENOENT;
  rc = resolve(found, sizeof found / sizeof *found, NULL, wfile, envp);
  free(wfile);
  if (rc < 0) return rc;
  int n = WideCharToMultiByte(CP_UTF8, 0, found, -1, out, cap > INT_MAX ? INT_MAX : (int)cap, NULL,
                              NULL);
  return n > 0 ? 0 : -ENAMETOOLONG;
}

/* ---- the command line and the environment ---- */

/* Appends arg to the command line at *pos as the C runtime's parser
 * (CommandLineToArgvW) reads it back: quoted if it is empty or has a blank or a quote,
 * backslashes doubled only before a quote (and before the closing one). argv[0] is
 * parsed differently (up to the next quote, no escapes): it is quoted plainly, and a
 * quote in it (never in a Windows file name) is refused. Returns 0, -EINVAL or -E2BIG. */
static int quote_arg(wchar_t *cmd, size_t *pos, const wchar_t *arg, int first) {
  size_t o = *pos, cap = PROC_CMDLINE_MAX - 1;
  int quote = !*arg || wcspbrk(arg, L" \t\n\v\"") != NULL;
#define PUT(c)                   \
  do {                           \
    if (o >= cap) return -E2BIG; \
    cmd[o++] = (c);              \
  } while (0)
  if (first && wcschr(arg, L'"')) return -EINVAL;
  if (o) PUT(L' ');
  if (quote) PUT(L'"');
  for (const wchar_t *c = arg;; c++) {
    size_t bs = 0;
    while (!first && *c == L'\\') {
      bs++;
      c++;
    }
    /* Before a quote, or the closing quote, each backslash is doubled. */
    size_t times = (*c == L'"' || (!*c && quote)) ? 2 * bs : bs;
    for (size_t i = 0; i < times; i++) PUT(L'\\');
    if (!*c) break;
    if (*c == L'"') PUT(L'\\');
    PUT(*c);
  }
  if (quote) PUT(L'"');
#undef PUT
  cmd[o] = 0;
  *pos = o;
  return 0;
}

/* The command line for argv (free it). Returns 0, -EINVAL (not UTF-8, a quote in
 * argv[0], or an argument that a program reading its command line in the ANSI code page
 * would split otherwise: compat_ansi_safe) or -E2BIG. */
static int build_cmdline(wchar_t **out, const char *const *argv) {
  wchar_t *cmd = xmalloc(PROC_CMDLINE_MAX * sizeof *cmd);
  size_t pos = 0;
  cmd[0] = 0;
  for (size_t i = 0; argv[i]; i++) {
    wchar_t *w = NULL;
    int rc = compat_ansi_safe(argv[i], "\"\\ \t") ? to_wide(&w, argv[i]) : -EINVAL;
    if (rc == 0) rc = quote_arg(cmd, &pos, w, i == 0);
    free(w);
    if (rc < 0) {
      free(cmd);
      return rc;
    }
  }
  *out = cmd;
  return 0;
}

/* The environment block of envp, as given (free it): "NAME=value" strings in UTF-16,
 * each NUL-terminated, then a NUL. An empty one is two NULs. Returns 0 or -EINVAL. */
static int build_env(wchar_t **out, const char *const *envp) {
  size_t len = 2, pos = 0;
  for (const char *const *e = envp; e && *e; e++) {
    int n = MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, *e, -1, NULL, 0);
    if (n <= 0) return -EINVAL;
    len += (size_t)n;
  }
  wchar_t *block = xcalloc(len, sizeof *block);
  for (const char *const *e = envp; e && *e; e++)
    pos += (size_t)MultiByteToWideChar(CP_UTF8, 0, *e, -1, block + pos, (int)(len - pos));
  *out = block;
  return 0;
}

/* ---- the child's handles ---- */

/* What proc_spawn builds for the child and lets go of once it has started. */
typedef struct spawn_ctx {
  wchar_t *cwd, *cmdline, *env, app[MAX_PATH * 4];
  HANDLE nul;                           /* the child's stdin */
  HANDLE out[3];                        /* the write ends of stdout, stderr, progress */
  HANDLE in[PROC_MAX_INPUTS];           /* the read ends of the inputs */
  HANDLE list[1 + 3 + PROC_MAX_INPUTS]; /* the handles it inherits, and no other */
  size_t nlist;
  uint8_t *crt; /* the C runtime's descriptor table */
  LPPROC_THREAD_ATTRIBUTE_LIST attrs;
} spawn_ctx;

static void ctx_init(spawn_ctx *c) {
  memset(c, 0, sizeof *c);
  c->nul = INVALID_HANDLE_VALUE;
  for (int s = 0; s < 3; s++) c->out[s] = INVALID_HANDLE_VALUE;
  for (size_t i = 0; i < PROC_MAX_INPUTS; i++) c->in[i] = INVALID_HANDLE_VALUE;
}

static void ctx_free(spawn_ctx *c) {
  if (c->attrs) {
    DeleteProcThreadAttributeList(c->attrs);
    free(c->attrs);
  }
  free(c->crt);
  if (c->nul != INVALID_HANDLE_VALUE) CloseHandle(c->nul);
  for (int s = 0; s < 3; s++)
    if (c->out[s] != INVALID_HANDLE_VALUE) CloseHandle(c->out[s]);
  for (size_t i = 0; i < PROC_MAX_INPUTS; i++)
    if (c->in[i] != INVALID_HANDLE_VALUE) CloseHandle(c->in[i]);
  free(c->cwd);
  free(c->cmdline);
  free(c->env);
}

/* A pipe for stream s: our end overlapped (a named pipe of a unique name, as
 * anonymous pipes cannot be), into st; the child's end, blocking, into *child. Neither
 * is inheritable yet. Returns 0 or -errno. */
static int open_stream(stream *st, HANDLE *child) {
  static volatile LONG serial;
  uint64_t nonce = 0;
  wchar_t name[96];
  compat_random(&nonce, sizeof nonce);
  snwprintf(name, sizeof name / sizeof *name, L"\\\\.\\pipe\\prismq-proc-%lu-%ld-%016llx",
            (unsigned long)GetCurrentProcessId(), (long)InterlockedIncrement(&serial),
            (unsigned long long)nonce);
  st->rd = CreateNamedPipeW(
      name, PIPE_ACCESS_INBOUND | FILE_FLAG_OVERLAPPED | FILE_FLAG_FIRST_PIPE_INSTANCE,
      PIPE_TYPE_BYTE | PIPE_READMODE_BYTE | PIPE_WAIT | PIPE_REJECT_REMOTE_CLIENTS, 1, 0,
      PROC_READ_MAX, 0, NULL);
  if (st->rd == INVALID_HANDLE_VALUE) return last_err();
  /* Connected at once: nobody else can have taken the one instance before our open
   * succeeds, and if someone did, the open fails. */
  *child = CreateFileW(name, GENERIC_WRITE | FILE_READ_ATTRIBUTES, 0, NULL, OPEN_EXISTING, 0, NULL);
  if (*child == INVALID_HANDLE_VALUE) return last_err();
  st->ov.hEvent = CreateEventW(NULL, TRUE, FALSE, NULL);
  if (!st->ov.hEvent) return last_err();
  return 0;
}

/* A pipe holding data, its write end closed: the read end into *rd. The pipe's buffer
 * is bigger than PROC_MAX_INPUT_LEN, so the write is whole before the child starts. */
static int open_input(HANDLE *rd, const proc_input *in) {
  HANDLE wr = INVALID_HANDLE_VALUE;
  if (!CreatePipe(rd, &wr, NULL, 2 * PROC_MAX_INPUT_LEN)) {
    *rd = INVALID_HANDLE_VALUE;
    return last_err();
  }
  DWORD n = 0;
  BOOL ok = in->len == 0 || WriteFile(wr, in->data, (DWORD)in->len, &n, NULL);
  int rc = ok && n == in->len ? 0 : ok ? -EIO : last_err();
  CloseHandle(wr);
  return rc;
}

/* Whether opts->inputs are valid for a child with nstreams output pipes. */
static int inputs_valid(const proc_opts *opts, int nstreams) {
  if (opts->ninputs > PROC_MAX_INPUTS || (opts->ninputs && !opts->inputs)) return 0;
  for (size_t i = 0; i < opts->ninputs; i++) {
    const proc_input *in = &opts->inputs[i];
    if (in->fd <= nstreams || in->fd > PROC_MAX_INPUT_FD || in->len > PROC_MAX_INPUT_LEN ||
        (in->len && !in->data))
      return 0;
    for (size_t j = 0; j < i; j++)
      if (opts->inputs[j].fd == in->fd) return 0;
  }
  return 1;
}

/* Puts handle h on the child's descriptor fd of the C runtime's table and on the list
 * of what it inherits (made inheritable now: only this child gets it, through the
 * list, and it is closed once the child has started). */
static int give(spawn_ctx *c, int fd, HANDLE h, uint8_t flags) {
  int count;
  memcpy(&count, c->crt, sizeof count);
  c->crt[sizeof count + (size_t)fd] = flags;
  memcpy(c->crt + sizeof count + (size_t)count + (size_t)fd * sizeof h, &h, sizeof h);
  c->list[c->nlist++] = h;
  return SetHandleInformation(h, HANDLE_FLAG_INHERIT, HANDLE_FLAG_INHERIT) ? 0 : last_err();
}

/* The child's handles: NUL on 0, the pipes on 1, 2 (3), the inputs on theirs, in the
 * C runtime's table (int count, count flag bytes, count handles, unaligned) and the
 * inherit list. */
static int child_handles(spawn_ctx *c, watch *w, const proc_opts *opts) {
  int count = w->nstreams + 1, rc;
  for (size_t i = 0; i < opts->ninputs; i++)
    if (opts->inputs[i].fd + 1 > count) count = opts->inputs[i].fd + 1;
  size_t size = sizeof count + (size_t)count * (1 + sizeof(HANDLE));
  c->crt = xcalloc(1, size);
  memcpy(c->crt, &count, sizeof count);
  for (int fd = 0; fd < count; fd++) {
    HANDLE none = INVALID_HANDLE_VALUE;
    memcpy(c->crt + sizeof count + (size_t)count + (size_t)fd * sizeof none, &none, sizeof none);
  }
  c->nul = CreateFileW(L"NUL", GENERIC_READ, FILE_SHARE_READ | FILE_SHARE_WRITE, NULL,
                       OPEN_EXISTING, 0, NULL);
  if (c->nul == INVALID_HANDLE_VALUE) return last_err();
  if ((rc = give(c, 0, c->nul, CRT_FOPEN | CRT_FDEV)) < 0) return rc;
  for (int s = 0; s < w->nstreams; s++) {
    if ((rc = open_stream(&w->st[s], &c->out[s])) < 0 ||
        (rc = give(c, s + 1, c->out[s], CRT_FOPEN | CRT_FPIPE)) < 0)
      return rc;
  }
  for (size_t i = 0; i < opts->ninputs; i++) {
    if ((rc = open_input(&c->in[i], &opts->inputs[i])) < 0 ||
        (rc = give(c, opts->inputs[i].fd, c->in[i], CRT_FOPEN | CRT_FPIPE)) < 0)
      return rc;
  }
  return 0;
}

/* The attribute list restricting inheritance to c->list. */
static int inherit_list(spawn_ctx *c) {
  SIZE_T size = 0;
  InitializeProcThreadAttributeList(NULL, 1, 0, &size);
  c->attrs = xmalloc(size);
  if (!InitializeProcThreadAttributeList(c->attrs, 1, 0, &size)) {
    free(c->attrs);
    c->attrs = NULL;
    return last_err();
  }
  if (!UpdateProcThreadAttribute(c->attrs, 0, PROC_THREAD_ATTRIBUTE_HANDLE_LIST, c->list,
                                 c->nlist * sizeof *c->list, NULL, NULL))
    return last_err();
  return 0;
}

/* ---- starting ---- */

/* The job: everything in it dies when it is terminated or its last handle closes (the
 * server's end, however it ends), no process may leave it, an unhandled exception ends
 * a process at once instead of waiting on an error dialog, and memory_max bounds the
 * committed memory of the whole job. */
static int make_job(HANDLE *job, uint64_t memory_max) {
  JOBOBJECT_EXTENDED_LIMIT_INFORMATION li;
  memset(&li, 0, sizeof li);
  li.BasicLimitInformation.LimitFlags =
      JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE | JOB_OBJECT_LIMIT_DIE_ON_UNHANDLED_EXCEPTION;
  if (memory_max) {
    li.BasicLimitInformation.LimitFlags |= JOB_OBJECT_LIMIT_JOB_MEMORY;
    li.JobMemoryLimit = (SIZE_T)memory_max;
  }
  *job = CreateJobObjectW(NULL, NULL);
  if (!*job) return last_err();
  if (!SetInformationJobObject(*job, JobObjectExtendedLimitInformation, &li, sizeof li))
    return last_err();
  return 0;
}

/* Whether this process has a console the child can share (and so get console events
 * through). Without one (a service), the child starts with no console at all
 * (DETACHED_PROCESS): no conhost per run, and none holding its pipes, which Wine's
 * headless conhost for CREATE_NO_WINDOW does (the run would then wait for the orphan
 * kill whenever a grandchild keeps that console). */
static int have_console(void) {
  DWORD pids[1];
  return GetConsoleProcessList(pids, 1) > 0;
}

/* Starts the child suspended, puts it in the job, lets it run. */
static int start_child(proc *p, spawn_ctx *c) {
  STARTUPINFOEXW si;
  PROCESS_INFORMATION pi;
  memset(&si, 0, sizeof si);
  si.StartupInfo.cb = sizeof si;
  si.StartupInfo.dwFlags = STARTF_USESTDHANDLES;
  si.StartupInfo.hStdInput = c->nul;
  si.StartupInfo.hStdOutput = c->out[0];
  si.StartupInfo.hStdError = c->out[1];
  int count;
  memcpy(&count, c->crt, sizeof count);
  si.StartupInfo.cbReserved2 = (WORD)(sizeof count + (size_t)count * (1 + sizeof(HANDLE)));
  si.StartupInfo.lpReserved2 = c->crt;
  si.lpAttributeList = c->attrs;
  DWORD flags = CREATE_SUSPENDED | CREATE_NEW_PROCESS_GROUP | CREATE_UNICODE_ENVIRONMENT |
                EXTENDED_STARTUPINFO_PRESENT | (have_console() ? 0 : DETACHED_PROCESS);
  if (!CreateProcessW(c->app, c->cmdline, NULL, NULL, TRUE, flags, c->env, c->cwd, &si.StartupInfo,
                      &pi))
    return last_err();
  if (!AssignProcessToJobObject(p->job, pi.hProcess)) {
    int rc = last_err();
    TerminateProcess(pi.hProcess, PROC_KILL_CODE);
    CloseHandle(pi.hThread);
    CloseHandle(pi.hProcess);
    return rc;
  }
  p->pid = pi.dwProcessId;
  p->w->process = pi.hProcess;
  ResumeThread(pi.hThread);
  CloseHandle(pi.hThread);
  return 0;
}

/* The proc and its watch, nothing started. */
static proc *proc_new(struct event_base *base, const proc_opts *opts) {
  proc *p = xcalloc(1, sizeof *p);
  watch *w = xcalloc(1, sizeof *w);
  p->base = base;
  p->w = w;
  p->orphan_kill_ms = opts->orphan_kill_ms;
  p->on_output = opts->on_output;
  p->on_exit = opts->on_exit;
  p->arg = opts->arg;
  InitializeSRWLock(&w->lock);
  w->refs = 1; /* the proc's; the watcher's comes with it */
  w->nstreams = opts->progress_pipe ? 3 : 2;
  for (int s = 0; s < w->nstreams; s++) {
    w->st[s].rd = INVALID_HANDLE_VALUE;
    p->open[s] = 1;
  }
  p->term_ev = evtimer_new(base, term_cb, p);
  p->orphan_ev = evtimer_new(base, orphan_cb, p);
  if (!p->term_ev || !p->orphan_ev) {
    LOG_ERROR("proc out of memory");
    abort();
  }
  return p;
}

/* Watching: the kick event, the wakeup on the loop, the watcher thread. */
static int watch_start(proc *p) {
  watch *w = p->w;
  int rc;
  if (!(w->kick = CreateEventW(NULL, FALSE, FALSE, NULL))) return last_err();
  if ((rc = compat_wakeup_new(&w->wake)) < 0) return rc;
  p->wake_ev = event_new(p->base, compat_wakeup_fd(w->wake), EV_READ | EV_PERSIST, wake_cb, p);
  if (!p->wake_ev || event_add(p->wake_ev, NULL) < 0) return -EIO;
  InterlockedIncrement(&w->refs);
  /* A small stack: the watcher's buffers are on the heap. */
  HANDLE t = CreateThread(NULL, 64u << 10, watch_main, w, STACK_SIZE_PARAM_IS_A_RESERVATION, NULL);
  if (!t) {
    InterlockedDecrement(&w->refs);
    return last_err();
  }
  CloseHandle(t); /* detached: it frees the watch when it is the last one out */
  return 0;
}

/* What proc_spawn checks before starting anything: the arguments, and the program
 * (in c->app), the command line, the environment and cwd converted. */
static int spawn_prepare(spawn_ctx *c, const proc_opts *opts) {
  wchar_t *file = NULL;
  int rc;
  if (opts->cwd) {
    if ((rc = to_wide(&c->cwd, opts->cwd)) < 0) return rc;
    DWORD a = GetFileAttributesW(c->cwd);
    if (a == INVALID_FILE_ATTRIBUTES) return last_err();
    if (!(a & FILE_ATTRIBUTE_DIRECTORY)) return -ENOTDIR;
  }
  if ((rc = to_wide(&file, opts->argv[0])) < 0) return -ENOENT;
  rc = resolve(c->app, sizeof c->app / sizeof *c->app, c->cwd, file, opts->envp);
  free(file);
  if (rc < 0) return rc;
  if ((rc = build_cmdline(&c->cmdline, opts->argv)) < 0) return rc;
  return build_env(&c->env, opts->envp);
}

int proc_spawn(proc **out, struct event_base *base, const proc_opts *opts) {
  if (!out || !base || !opts || !opts->argv || !opts->argv[0] || opts->cgroup_fd != -1 ||
      !inputs_valid(opts, opts->progress_pipe ? 3 : 2))
    return -EINVAL;
  spawn_ctx c;
  ctx_init(&c);
  proc *p = NULL;
  int rc;
  if ((rc = spawn_prepare(&c, opts)) < 0) goto fail;
  p = proc_new(base, opts);
  if ((rc = make_job(&p->job, opts->memory_max)) < 0 || (rc = child_handles(&c, p->w, opts)) < 0 ||
      (rc = inherit_list(&c)) < 0 || (rc = start_child(p, &c)) < 0)
    goto fail;
  ctx_free(&c); /* the child has its ends: ours go, so that its exit ends the pipes */
  if ((rc = watch_start(p)) < 0) goto fail_started;
  LOG_DEBUG("proc spawned pid=%lu", (unsigned long)p->pid);
  *out = p;
  return 0;

fail_started:
  LOG_ERROR("proc cannot watch the child, killing it pid=%lu err=%s", (unsigned long)p->pid,
            compat_strerror(-rc));
  destroy(p); /* terminates the job */
  return rc;
fail:
  ctx_free(&c);
  if (p) destroy(p);
  return rc;
}

void proc_terminate(proc *p, uint32_t grace_ms) {
  if (p->done || p->term_sent) return;
  p->term_sent = 1;
  send_ctrl(p, LX_SIGTERM);
  struct timeval tv = compat_timeout_ms(grace_ms);
  evtimer_add(p->term_ev, &tv);
}

int proc_kill(proc *p, int sig) {
  if (sig < 0 || (sig != 0 && sig != SIGKILL && sig != SIGTERM && sig != SIGINT && sig != SIGBREAK))
    return -EINVAL;
  if (p->done || job_active(p) == 0) return -ESRCH;
  if (sig == SIGKILL) {
    kill_job(p);
    return 0;
  }
  if (sig == 0) return 0;
  return send_ctrl(p, sig == SIGINT ? LX_SIGINT : LX_SIGTERM);
}

pid_t proc_pid(const proc *p) { return (pid_t)p->pid; }

int proc_pid_start_ticks(pid_t pid, uint64_t *out) {
  if (pid <= 0 || (uint64_t)pid > UINT32_MAX) return -ESRCH;
  HANDLE h = OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, FALSE, (DWORD)pid);
  if (!h) return GetLastError() == ERROR_ACCESS_DENIED ? -EPERM : -ESRCH;
  DWORD code = 0;
  FILETIME c, e, k, u;
  int rc = 0;
  if (!GetExitCodeProcess(h, &code) || !GetProcessTimes(h, &c, &e, &k, &u))
    rc = last_err();
  else if (code != STILL_ACTIVE)
    rc = -ESRCH;
  else
    *out = ((uint64_t)c.dwHighDateTime << 32) | c.dwLowDateTime;
  CloseHandle(h);
  return rc;
}

void proc_free(proc *p) {
  if (!p) return;
  p->user_gone = 1;
  if (!p->done) {
    kill_job(p);
    for (int s = 0; s < p->w->nstreams; s++) drop_stream(p, s);
    event_del(p->term_ev);
    event_del(p->orphan_ev);
  }
  settle(p);
}
