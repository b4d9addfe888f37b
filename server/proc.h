/* proc: one child process run on a libevent event_base, the core under the run
 * scheduler. It knows nothing of gRPC or runs: it starts a command, hands its output
 * over as it comes, and reports how it ended. Modelled on libuv's process handle and
 * tmux's job.c (an options struct, an exit callback with (status, signal)).
 *
 * The child: spawned with posix_spawn in a new process group of its own (pgid = pid),
 * stdin from /dev/null, stdout and stderr on two pipes (and, with progress_pipe, its
 * descriptor 3 on a third; with inputs, the descriptors they name), no other descriptor inherited, signal mask empty and every
 * signal disposition at default, the caller's environment and working directory.
 *
 * Output: the pipes are read on the loop, up to 64 KiB per read, and every chunk goes
 * straight to on_output; nothing is buffered here, so the pace of the consumer bounds
 * memory (the child blocks on a full pipe while the loop is busy).
 *
 * Completion: a process is done when its main process has exited AND all its pipes have
 * reached end-of-file. If the main process has exited but something else in its group
 * (a grandchild) still holds the pipes, the whole group is SIGKILLed after
 * orphan_kill_ms and reading goes on to end-of-file; should the pipes still be open
 * orphan_kill_ms after that (a process that left the group holds them), they are
 * closed and the run completes anyway. When done, the group always gets a SIGKILL, so
 * no member outlives the process, then the main process is reaped (wait4, giving the
 * resource usage) and on_exit fires, exactly once. The group is signalled only while
 * the main process is not yet reaped: its zombie keeps the pid, so the process group
 * id can never have been reused by someone else.
 *
 * Exit detection: by default a pidfd (pidfd_open) watched by the loop. With `threaded`
 * (PRISMQ_RUN_MODE=threaded), and on its own where pidfd_open is missing (-ENOSYS:
 * kernels before 5.3, valgrind), a worker thread per process blocks in waitid(WNOWAIT) and wakes the loop through an eventfd; the
 * reaping and the callbacks still happen on the loop, with the same semantics. Neither
 * mode needs libevent's thread support.
 *
 * Threading and re-entrancy: a proc lives on one event_base thread; no function here is
 * thread-safe. Callbacks fire only from the loop, never from inside a proc_* call. From
 * a callback the user may call proc_terminate, proc_kill, proc_pid and proc_free on the
 * same proc (proc_free then takes effect when the callback returns).
 *
 * Memory: the server aborts on out-of-memory; no function here reports -ENOMEM. */
#ifndef PRISMQ_PROC_H
#define PRISMQ_PROC_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct event_base;

typedef struct proc proc;

/* Resource usage of the main process (and of the descendants it waited for), from
 * wait4. */
typedef struct proc_usage {
  uint64_t user_cpu_ms; /* user CPU time, ms */
  uint64_t sys_cpu_ms;  /* system CPU time, ms */
  uint64_t max_rss_kb;  /* peak resident set size, KiB */
} proc_usage;

/* Stream numbers given to on_output, as the child's descriptors. */
enum { PROC_STDOUT = 1, PROC_STDERR = 2, PROC_PROGRESS = 3 };

/* The child wrote `len` (> 0) bytes on `stream` (PROC_STDOUT, PROC_STDERR, or
 * PROC_PROGRESS with progress_pipe). `data` is valid only during the call. Chunks of
 * one stream arrive in order; nothing orders one stream against another. */
typedef void (*proc_output_fn)(proc *p, int stream, const uint8_t *data, size_t len, void *arg);

/* Data for the child to read on a descriptor of its own (proc_opts.inputs). */
typedef struct proc_input {
  int fd;           /* the child's descriptor: 3..PROC_MAX_INPUT_FD, not a pipe's of output */
  const void *data; /* len bytes, at most PROC_MAX_INPUT_LEN; only read during proc_spawn */
  size_t len;
} proc_input;

/* Limits of proc_opts.inputs. PROC_MAX_INPUT_LEN is what any pipe holds (one page),
 * so that the data is written whole before the child starts, without blocking. */
#define PROC_MAX_INPUTS    8
#define PROC_MAX_INPUT_FD  63
#define PROC_MAX_INPUT_LEN 4096

/* The process is done (see Completion above). `exit_status` is the exit code
 * (WEXITSTATUS) and `term_signal` 0, or `exit_status` is -1 and `term_signal` the
 * signal that killed it (WTERMSIG). If something else in the program reaped the child
 * first, the status is lost (logged): `exit_status` is -1, `term_signal` 0 and `u` all
 * zeros.
 * `u` is valid only during the call. Fires exactly once, never after proc_free. The
 * proc stays valid until proc_free, which may be called from here. */
typedef void (*proc_exit_fn)(proc *p, int exit_status, int term_signal, const proc_usage *u,
                             void *arg);

typedef struct proc_opts {
  /* Program and arguments, NULL-terminated; argv[0] is the program. An argv[0]
   * without '/' is looked up, as execvpe would, in the PATH of `envp` (default
   * "/bin:/usr/bin" when envp has no PATH), never in the server's; relative entries
   * and a relative argv[0] are taken from `cwd`. Required. */
  const char *const *argv;
  /* The child's whole environment, "NAME=value" strings, NULL-terminated. NULL gives
   * an empty environment. Nothing of the server's environment is passed on. */
  const char *const *envp;
  /* The child's working directory; NULL keeps the server's. */
  const char *cwd;
  /* 0: exit noticed through a pidfd. 1: through a worker thread (see above). */
  int threaded;
  /* How long a group member may hold the pipes open after the main process exited
   * before the group is SIGKILLed (default 2000). */
  uint32_t orphan_kill_ms;
  /* -1 (default), or an open cgroup v2 directory (cgroup.h): the child is started in
   * it (a vfork-style clone whose child joins the cgroup before anything else,
   * instead of posix_spawn, with the same set-up), and
   * from then on every signal to "the group" also goes to every member of the cgroup
   * (SIGKILL through cgroup.kill), so nothing started by the process escapes by leaving
   * the process group; on_exit's CPU times are the cgroup's (the whole tree). The
   * descriptor is duplicated: the caller keeps its own. */
  int cgroup_fd;
  /* Non-zero: a third pipe, whose write end is the child's descriptor 3, read as stream
   * PROC_PROGRESS (a channel for what the child reports besides its output). */
  int progress_pipe;
  /* ninputs (at most PROC_MAX_INPUTS) descriptors the child gets to read: each a pipe
   * holding its data, whose write end is closed before the child starts, so the child
   * reads the data, then end-of-file. Used for secrets, which then appear neither in
   * argv nor in the environment. A child with inputs is started as one in a cgroup is
   * (the vfork-style clone below), with or without a cgroup. */
  const proc_input *inputs;
  size_t ninputs;
  proc_output_fn on_output; /* may be NULL: output is then read and dropped */
  proc_exit_fn on_exit;     /* may be NULL */
  void *arg;                /* passed to both callbacks */
} proc_opts;

#define PROC_OPTS_INIT \
  { .orphan_kill_ms = 2000, .cgroup_fd = -1 }

/* Starts opts->argv as described above, watched on `base` (which must outlive the
 * proc, and keep running until a proc_free'd process has been reaped). `opts` and the
 * strings it points to are only read during the call.
 * Returns 0 and sets *out; the callbacks then fire from the loop. On failure *out is
 * untouched, no process is left behind and no callback fires:
 *   -EINVAL  argv or argv[0] missing, or base/out NULL, or a bad input (its
 *            descriptor, or too many, or too long);
 *   -ENOENT  the program was not found (or cwd does not exist);
 *   -EACCES  the program was found but is not an executable regular file (or cwd or a
 *            directory on the way is not searchable);
 *   other negative errno from opening cwd, pipe2, eventfd, posix_spawn (e.g. -ENOEXEC,
 *   -E2BIG), pidfd_open or
 *   pthread_create (-EAGAIN). When pidfd_open or pthread_create fail the child has
 *   already started: it is SIGKILLed and reaped before returning, which blocks for the
 *   moment it takes to die. */
int proc_spawn(proc **out, struct event_base *base, const proc_opts *opts);

/* Cancels the process: SIGTERM (then SIGCONT, so that stopped members see it) to the
 * whole group now, and SIGKILL to the group if the process is not done grace_ms later
 * (0: on the next loop iteration). Idempotent: later calls, and calls once the process
 * is done, do nothing. on_exit still fires as usual. */
void proc_terminate(proc *p, uint32_t grace_ms);

/* Sends `sig` (0 probes) to the whole process group. Returns 0, -ESRCH (the process
 * is done, or no member of the group is left), -EINVAL (bad signal) or -EPERM. */
int proc_kill(proc *p, int sig);

/* The pid of the main process, which is also the process group id. */
pid_t proc_pid(const proc *p);

/* Finds the file proc_spawn would execute for `file` (an argv[0]) in the PATH of
 * `envp` (NULL-terminated; "/bin:/usr/bin" without a PATH), relative names from the
 * current directory, into out (cap bytes). Returns 0, -ENOENT, -EACCES (found, not an
 * executable regular file) or -ENAMETOOLONG. */
int proc_resolve(char *out, size_t cap, const char *file, const char *const *envp);

/* The start time of process `pid` in clock ticks after boot (/proc/PID/stat field 22):
 * with the pid it names one process, as a pid alone may have been reused. Returns 0
 * and sets *out, -ESRCH if there is no such process or it has exited (a zombie), or
 * another negative errno. */
int proc_pid_start_ticks(pid_t pid, uint64_t *out);

/* Releases the proc; accepts NULL. No callback fires after it. If the process is not
 * done, its group is SIGKILLed, its pipes closed, and its main process is still
 * reaped later from the loop by a detached remnant that frees itself, so no zombie is
 * left as long as the loop runs. Called from inside one of p's callbacks, the release
 * takes place when the callback returns. */
void proc_free(proc *p);

#endif
