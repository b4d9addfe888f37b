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

/* Registers process_resident_memory_bytes, process_virtual_memory_bytes,
 * process_open_fds, process_max_fds, process_cpu_seconds_total and
 * process_start_time_seconds in m, read from /proc at each rendering. */
void procstat_register(metrics *m);

#endif
