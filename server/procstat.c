#include "procstat.h"

#include <dirent.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

uint64_t procstat_open_fds(void) {
  DIR *d = opendir("/proc/self/fd");
  if (!d) return 0;
  uint64_t n = 0;
  for (struct dirent *e; (e = readdir(d));)
    if (e->d_name[0] != '.') n++;
  closedir(d);
  return n > 0 ? n - 1 : 0; /* not counting the descriptor of the listing itself */
}

/* /proc/self/statm's first two fields, in pages: total and resident. */
static int statm(unsigned long *size, unsigned long *resident) {
  FILE *f = fopen("/proc/self/statm", "re");
  if (!f) return -1;
  int ok = fscanf(f, "%lu %lu", size, resident) == 2;
  fclose(f);
  return ok ? 0 : -1;
}

uint64_t procstat_rss_bytes(void) {
  unsigned long size, resident;
  if (statm(&size, &resident) < 0) return 0;
  return (uint64_t)resident * (uint64_t)sysconf(_SC_PAGESIZE);
}

/* When the process started, in seconds since the epoch: its start in clock ticks after
 * boot (/proc/self/stat field 22) placed on the wall clock by the time since boot. */
static double start_time(void) {
  FILE *f = fopen("/proc/self/stat", "re");
  if (!f) return 0;
  char buf[1024];
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  /* Fields after the command name, which may hold spaces and ')' itself. */
  char *p = strrchr(buf, ')');
  unsigned long long ticks = 0;
  if (!p || sscanf(p + 2,
                   "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d %*d "
                   "%*d %*d %llu",
                   &ticks) != 1)
    return 0;
  struct timespec up, wall;
  clock_gettime(CLOCK_BOOTTIME, &up);
  clock_gettime(CLOCK_REALTIME, &wall);
  double boot = (double)wall.tv_sec + (double)wall.tv_nsec * 1e-9 -
                ((double)up.tv_sec + (double)up.tv_nsec * 1e-9);
  return boot + (double)ticks / (double)sysconf(_SC_CLK_TCK);
}

/* The families procstat_register made are found again by name at each rendering (a
 * few lookups a scrape, and no state to keep beside the registry). */

static void collect(void *arg, metrics *m) {
  (void)arg;
  unsigned long size = 0, resident = 0;
  double page = (double)sysconf(_SC_PAGESIZE);
  if (statm(&size, &resident) == 0) {
    metrics_set(
        metrics_single(m, METRICS_GAUGE, "process_resident_memory_bytes", PROCSTAT_RSS_HELP),
        (double)resident * page);
    metrics_set(
        metrics_single(m, METRICS_GAUGE, "process_virtual_memory_bytes", PROCSTAT_VSIZE_HELP),
        (double)size * page);
  }
  metrics_set(metrics_single(m, METRICS_GAUGE, "process_open_fds", PROCSTAT_FDS_HELP),
              (double)procstat_open_fds());
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
    metrics_set(metrics_single(m, METRICS_GAUGE, "process_max_fds", PROCSTAT_MAX_HELP),
                (double)rl.rlim_cur);
  struct rusage ru;
  if (getrusage(RUSAGE_SELF, &ru) == 0)
    metrics_set(metrics_single(m, METRICS_COUNTER, "process_cpu_seconds_total", PROCSTAT_CPU_HELP),
                (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6 +
                    (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec * 1e-6);
}

void procstat_register(metrics *m) {
  /* Registered now, so that they keep their place in the rendering. */
  metrics_single(m, METRICS_GAUGE, "process_resident_memory_bytes", PROCSTAT_RSS_HELP);
  metrics_single(m, METRICS_GAUGE, "process_virtual_memory_bytes", PROCSTAT_VSIZE_HELP);
  metrics_single(m, METRICS_GAUGE, "process_open_fds", PROCSTAT_FDS_HELP);
  metrics_single(m, METRICS_GAUGE, "process_max_fds", PROCSTAT_MAX_HELP);
  metrics_single(m, METRICS_COUNTER, "process_cpu_seconds_total", PROCSTAT_CPU_HELP);
  metrics_set(metrics_single(m, METRICS_GAUGE, "process_start_time_seconds", PROCSTAT_START_HELP),
              start_time());
  metrics_on_render(m, collect, NULL);
}
