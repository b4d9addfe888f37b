/* cgroup: runs in cgroups (v2), so that a process tree cannot escape its run.
 *
 * A process group is not a container: a child that calls setsid() (a daemon that
 * double-forks) leaves it, and then escapes cancel, timeout and shutdown. A cgroup
 * cannot be left by an unprivileged process, cgroup.kill ends every member at once,
 * and its cpu.stat counts the CPU time of the whole tree.
 *
 * Layout: the server keeps its runs under one directory of its own, the root,
 * "<hierarchy>/<the server's cgroup>/prismq.<hash of the data directory>", so two
 * servers on one machine never touch each other's runs, and the same data directory
 * finds its runs again after a restart. Each run gets "<root>/<run_id>"; the child
 * joins it before it execs (see proc.h), so nothing of the run ever runs outside it.
 *
 * Limits: where the memory and cpu controllers can be enabled below the root, a run's
 * cgroup gets memory.max and cpu.max.
 *
 * The core module knows no protocol. Single-threaded: the loop's thread. Out of
 * memory aborts (server code). */
#ifndef PRISMQ_CGROUP_H
#define PRISMQ_CGROUP_H

#include <stddef.h>
#include <stdint.h>

struct event_base;
typedef struct cgroup_root cgroup_root;

/* Controllers enabled for the runs' cgroups (cgroup_root_controllers). */
enum { CGROUP_MEMORY = 1, CGROUP_CPU = 2 };

/* Opens (making it if needed) the root for data directory `data_dir` in the cgroup v2
 * hierarchy `where`: "auto" (the cgroup2 mount at /sys/fs/cgroup or
 * /sys/fs/cgroup/unified, and within it the server's own cgroup from /proc/self/cgroup)
 * or the absolute path of a cgroup2 directory the server may write (a delegated one).
 * Enables the memory and cpu controllers below the root where it can.
 * Returns 0 and sets *out (free with cgroup_root_free); -ENOTSUP with err saying why
 * when there is no usable hierarchy (none mounted, read-only, no cgroup.kill: kernels
 * before 5.14); or another negative errno
 * with err. `base` runs the retries of cgroup_remove. */
int cgroup_root_open(cgroup_root **out, struct event_base *base, const char *where,
                     const char *data_dir, char *err, size_t errlen);

/* Ends what an earlier server on this data directory left behind: every cgroup under
 * the root is killed and removed (cgroup_remove). For start-up, before any run starts.
 * Returns how many there were. */
size_t cgroup_root_sweep(cgroup_root *r);

/* Kills everything in the cgroup at `path` (any cgroup2 directory), its own cgroups
 * included. Returns 1 if it had members (in it or below it), 0 if it had none or does
 * not exist, or a negative errno. */
int cgroup_kill_path(const char *path);

/* Tries the pending removals once more (what still cannot go stays, for the next start's
 * sweep), removes the root if it is empty, and frees. Accepts NULL. */
void cgroup_root_free(cgroup_root *r);

/* The root's absolute path. */
const char *cgroup_root_path(const cgroup_root *r);

/* CGROUP_MEMORY | CGROUP_CPU: the controllers the runs' cgroups have. */
unsigned cgroup_root_controllers(const cgroup_root *r);

/* Makes the cgroup "<root>/<name>" (it must not exist), with memory.max =
 * memory_max bytes if non-zero and cpu.max = cpu_max_percent of one CPU if non-zero
 * (each only where its controller is enabled: the caller checks
 * cgroup_root_controllers first). On success returns 0 and sets *dirfd to an
 * O_DIRECTORY|O_CLOEXEC descriptor of it (the caller closes it); otherwise a negative
 * errno, with err saying what failed, and nothing is left behind. */
int cgroup_create(int *dirfd, cgroup_root *r, const char *name, uint64_t memory_max,
                  uint32_t cpu_max_percent, char *err, size_t errlen);

/* Removes "<root>/<name>" after killing anything still in it. A cgroup whose killed
 * members have not all exited yet cannot be removed at once: it is retried from the
 * loop (every 100 ms, for up to 10 s, then logged). Missing is fine. */
void cgroup_remove(cgroup_root *r, const char *name);

/* Sends `sig` to every process in the cgroup at `dirfd`: SIGKILL through cgroup.kill,
 * any other signal to each pid in cgroup.procs. Returns 0 (also for an empty cgroup),
 * or the negative errno of reading or writing the cgroup's files. */
int cgroup_signal(int dirfd, int sig);

/* The CPU time of everything that ever ran in the cgroup (cpu.stat user_usec and
 * system_usec), in ms. Returns 0, or a negative errno (*user_ms, *sys_ms untouched). */
int cgroup_cpu(int dirfd, uint64_t *user_ms, uint64_t *sys_ms);

#endif
