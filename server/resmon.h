/* resmon: the resource monitor the scheduler asks before it starts a run. It knows
 * nothing of runs or gRPC: it samples the host's CPU and memory use and says whether
 * the configured limits allow a start now, and why not.
 *
 * Sampling never blocks the event loop. CPU use is the share of non-idle time in the
 * deltas of the aggregate "cpu" line of <proc_root>/stat between two consecutive
 * samples, taken by a periodic timer on the event_base: busy = total - (idle + iowait)
 * over total = user + nice + system + idle + iowait + irq + softirq + steal (guest and
 * guest_nice are already counted in user and nice), as psutil computes it. Memory
 * comes from MemTotal and MemAvailable of <proc_root>/meminfo; memory use is
 * (MemTotal - MemAvailable) / MemTotal. A sample is a couple of short reads of procfs
 * files, which never wait.
 *
 * The first sample is taken inside resmon_new, so memory readings exist from the
 * start; CPU use is known from the first periodic sample on (it needs two). If a later
 * sample cannot be read, the previous readings stay in place and a warning is logged
 * (once, and once more when reading works again).
 *
 * On Windows, without proc_root, the same figures come from the system: CPU times from
 * GetSystemTimes, physical memory total and available from GlobalMemoryStatusEx.
 *
 * Single-threaded: every function runs on the thread of the monitor's event_base.
 * Memory: the server aborts on out-of-memory; no function here reports -ENOMEM. */
#ifndef PRISMQ_RESMON_H
#define PRISMQ_RESMON_H

#include <stddef.h>
#include <stdint.h>

struct event_base;

typedef struct resmon resmon;

/* Limits a start must pass; 0 turns a check off. */
typedef struct resmon_limits {
  uint32_t max_cpu_percent;         /* 0..100: refuse starts while CPU use is above it */
  uint32_t max_memory_percent;      /* 0..100: refuse starts while memory use is above it */
  uint32_t min_available_memory_mb; /* refuse starts while less memory is available */
} resmon_limits;

/* The latest readings. */
typedef struct resmon_sample {
  double cpu_percent;        /* 0..100 over the last interval; -1 until known */
  uint64_t mem_total_kb;     /* MemTotal, KiB (> 0) */
  uint64_t mem_available_kb; /* MemAvailable, KiB */
  double mem_used_percent;   /* 0..100 */
} resmon_sample;

/* A periodic sample was taken (successfully or not; see above). Fires from the loop
 * after every tick of the timer, never from inside a resmon_* call and not for the
 * sample taken in resmon_new. The scheduler re-tries its queue here, so that queued
 * runs start by themselves once load goes down. resmon_free may be called from it. */
typedef void (*resmon_sample_fn)(void *arg);

typedef struct resmon_opts {
  resmon_limits limits;
  /* Period of the CPU and memory samples, ms (> 0; default 1000). CPU use is an
   * average over this period. */
  uint32_t interval_ms;
  /* Directory holding stat and meminfo; NULL means "/proc". Tests point it at fake
   * files. Copied. */
  const char *proc_root;
  resmon_sample_fn on_sample; /* may be NULL */
  void *arg;                  /* passed to on_sample */
} resmon_opts;

#define RESMON_OPTS_INIT \
  { .interval_ms = 1000 }

/* Takes a first sample of both files, then starts the periodic timer on `base`, which
 * must outlive the monitor. `opts` may be NULL for the defaults (no limits, no
 * callback) and is only read during the call.
 * Returns 0 and sets *out. On failure *out is untouched and nothing is left running:
 *   -EINVAL   out or base NULL, interval_ms 0, or a percentage limit above 100;
 *   -EBADMSG  stat has no valid aggregate "cpu" line (at least user, nice, system and
 *             idle), or meminfo lacks MemTotal (or has it 0) or MemAvailable;
 *   -EIO      the timer could not be added to base;
 *   other negative errno from opening or reading the files (-ENOENT, -EACCES, ...). */
int resmon_new(resmon **out, struct event_base *base, const resmon_opts *opts);

/* Says whether a run may start now. When a memory limit is on, the memory reading is
 * refreshed first (a short read of meminfo; if it fails, the last reading is used).
 * CPU use is the last periodic reading and is never waited for; while it is not known
 * yet (before the first periodic sample) the CPU check passes.
 * Checks, in this order: available memory at least min_available_memory_mb, memory use
 * not above max_memory_percent, CPU use not above max_cpu_percent.
 * Returns 1 if every enabled check passes (why, if whylen > 0, becomes ""), or 0 with
 * the first failing check described in `why` (NUL-terminated, truncated to whylen;
 * `why` may be NULL when whylen is 0), e.g.
 *   "available memory 120 MB below the minimum of 256 MB"
 *   "memory use 88.3% over the limit of 80%"
 *   "CPU use 93.0% over the limit of 80%" */
int resmon_check(resmon *m, char *why, size_t whylen);

/* The latest readings; the pointer stays valid until resmon_free, its contents change
 * with every sample and with resmon_check's memory refresh. */
const resmon_sample *resmon_last(const resmon *m);

/* Stops the timer and releases the monitor; accepts NULL. on_sample does not fire
 * after it. May be called from on_sample. */
void resmon_free(resmon *m);

#endif
