/* procstat (prefix procstat_): this process's resource figures from /proc/self, for
 * Admin/GetStats and for the standard process_* metrics of Prometheus' client
 * libraries (process_resident_memory_bytes, process_open_fds...), which dashboards and
 * alerts already know. */
#ifndef PRISMQ_PROCSTAT_H
#define PRISMQ_PROCSTAT_H

#include <stdint.h>

#include "metrics.h"

/* Open file descriptors, not counting the one that lists them; 0 if unknown. */
uint64_t procstat_open_fds(void);

/* Resident memory in bytes; 0 if unknown. */
uint64_t procstat_rss_bytes(void);

/* The help texts of the process_* families, those of Prometheus' client libraries (the
 * Linux and the Windows procstat register the same). */
#define PROCSTAT_RSS_HELP   "Resident memory size in bytes."
#define PROCSTAT_VSIZE_HELP "Virtual memory size in bytes."
#define PROCSTAT_FDS_HELP   "Number of open file descriptors."
#define PROCSTAT_MAX_HELP   "Maximum number of open file descriptors."
#define PROCSTAT_CPU_HELP   "Total user and system CPU time spent in seconds."
#define PROCSTAT_START_HELP "Start time of the process since unix epoch in seconds."

/* Registers process_resident_memory_bytes, process_virtual_memory_bytes,
 * process_open_fds, process_max_fds, process_cpu_seconds_total and
 * process_start_time_seconds in m, read from /proc at each rendering. */
void procstat_register(metrics *m);

#endif
