/* procstat on Windows: the same figures from the process's own counters, as Prometheus'
 * Go client reports them there (its process collector for windows): the working set as
 * resident memory, private bytes as virtual memory, the handle count as open
 * descriptors (handles are what Windows has for files and sockets alike) and the
 * per-process handle limit of 16 Mi as their maximum. */
#include "procstat.h"

#include <windows.h>
/* After windows.h, which it needs. */
#include <psapi.h>

/* Windows' documented ceiling on one process's handles. */
#define MAX_HANDLES (16u << 20)
/* 100 ns FILETIME units between 1601-01-01 and the unix epoch. */
#define EPOCH_DIFF 116444736000000000ull

uint64_t procstat_open_fds(void) {
  DWORD n = 0;
  return GetProcessHandleCount(GetCurrentProcess(), &n) ? n : 0;
}

static int memory(PROCESS_MEMORY_COUNTERS_EX *pmc) {
  return GetProcessMemoryInfo(GetCurrentProcess(), (PROCESS_MEMORY_COUNTERS *)pmc, sizeof *pmc)
             ? 0
             : -1;
}

uint64_t procstat_rss_bytes(void) {
  PROCESS_MEMORY_COUNTERS_EX pmc;
  return memory(&pmc) == 0 ? (uint64_t)pmc.WorkingSetSize : 0;
}

static uint64_t ft64(FILETIME f) { return (uint64_t)f.dwHighDateTime << 32 | f.dwLowDateTime; }

static void collect(void *arg, metrics *m) {
  (void)arg;
  PROCESS_MEMORY_COUNTERS_EX pmc;
  if (memory(&pmc) == 0) {
    metrics_set(
        metrics_single(m, METRICS_GAUGE, "process_resident_memory_bytes", PROCSTAT_RSS_HELP),
        (double)pmc.WorkingSetSize);
    metrics_set(
        metrics_single(m, METRICS_GAUGE, "process_virtual_memory_bytes", PROCSTAT_VSIZE_HELP),
        (double)pmc.PrivateUsage);
  }
  metrics_set(metrics_single(m, METRICS_GAUGE, "process_open_fds", PROCSTAT_FDS_HELP),
              (double)procstat_open_fds());
  metrics_set(metrics_single(m, METRICS_GAUGE, "process_max_fds", PROCSTAT_MAX_HELP),
              (double)MAX_HANDLES);
  FILETIME created, exited, kernel, user;
  if (GetProcessTimes(GetCurrentProcess(), &created, &exited, &kernel, &user))
    metrics_set(metrics_single(m, METRICS_COUNTER, "process_cpu_seconds_total", PROCSTAT_CPU_HELP),
                (double)(ft64(kernel) + ft64(user)) * 1e-7);
}

void procstat_register(metrics *m) {
  metrics_single(m, METRICS_GAUGE, "process_resident_memory_bytes", PROCSTAT_RSS_HELP);
  metrics_single(m, METRICS_GAUGE, "process_virtual_memory_bytes", PROCSTAT_VSIZE_HELP);
  metrics_single(m, METRICS_GAUGE, "process_open_fds", PROCSTAT_FDS_HELP);
  metrics_single(m, METRICS_GAUGE, "process_max_fds", PROCSTAT_MAX_HELP);
  metrics_single(m, METRICS_COUNTER, "process_cpu_seconds_total", PROCSTAT_CPU_HELP);
  FILETIME created, exited, kernel, user;
  double start = 0;
  if (GetProcessTimes(GetCurrentProcess(), &created, &exited, &kernel, &user))
    start = (double)(ft64(created) - EPOCH_DIFF) * 1e-7;
  metrics_set(metrics_single(m, METRICS_GAUGE, "process_start_time_seconds", PROCSTAT_START_HELP),
              start);
  metrics_on_render(m, collect, NULL);
}
