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
 * Memory: the server aborts on out-of-memory; no function here reports -ENOMEM.
 *
 * On Windows (proc_win.c), the same interface the Windows way:
 *   - The child: CreateProcessW, never through a shell (no cmd.exe: .bat and .cmd files
 *     are refused), with a command line quoted by the C runtime's rules, so that a C
 *     program's argv (CommandLineToArgvW's) is argv again; argv, envp and cwd are UTF-8.
 *     It is started suspended in a new process group (CREATE_NEW_PROCESS_GROUP) and put
 *     in a Job Object of its own before it runs: the job stands for the process group
 *     (and the cgroup) of Linux. Its processes cannot leave it, and they all die when it
 *     is terminated or when its last handle, the server's, closes, however the server
 *     ends (a kill of the server too). It shares the server's console if there is one
 *     (so that console events reach it), else has none (DETACHED_PROCESS).
 *   - Descriptors: the C runtime's, passed in STARTUPINFO's lpReserved2 table: stdin the
 *     NUL device, stdout and stderr pipes, and the progress pipe and the inputs on their
 *     descriptors, so that _read/_write reach them in a C program (msvcrt's or the
 *     UCRT's). The child inherits those handles and no other
 *     (PROC_THREAD_ATTRIBUTE_HANDLE_LIST).
 *   - Output and exit: a thread per proc waits on the pipes (overlapped reads of up to
 *     256 KiB, two chunks at most per stream waiting for the loop, so the child still
 *     blocks on a full pipe while the loop is busy) and on the process, and wakes the
 *     loop through a loopback socket; callbacks still fire from the loop only. The
 *     thread never calls libevent.
 *   - "The group" is the job everywhere below: a SIGKILL is TerminateJobObject; SIGTERM
 *     and SIGINT are a CTRL_BREAK_EVENT to the child's process group
 *     (GenerateConsoleCtrlEvent), which only reaches it through a console both share.
 *     Wine (8.0) delivers no console event at all (GenerateConsoleCtrlEvent fails): there
 *     proc_terminate ends a run by the kill after grace_ms.
 *   - Exit status: an exit code below 0x80000000 is (code, 0), not cut to 8 bits; one
 *     above that is a status of the system's, mapped to a signal (Linux's numbers, what
 *     the API carries): (-1, SIGKILL 9) when we terminated the job while the main
 *     process ran; STATUS_CONTROL_C_EXIT (the default end on a console event) is (-1, 15)
 *     after proc_terminate or proc_kill(SIGTERM), else (-1, SIGINT 2); access violation,
 *     stack overflow, guard page: SIGSEGV 11; in-page error, misalignment: SIGBUS 7;
 *     illegal or privileged instruction: SIGILL 4; integer or float division by zero,
 *     overflow, invalid operation: SIGFPE 8; breakpoint: SIGTRAP 5; __fastfail (stack
 *     buffer overrun) and an uncaught C++ exception: SIGABRT 6 (mingw's SIGABRT is 22);
 *     any other 0xC0000000-0xDFFFFFFF: SIGABRT 6; anything else (exit(-1)...) is
 *     (code & 0xFF, 0), as POSIX keeps it. A crash ends the process at once, without
 *     an error dialog (JOB_OBJECT_LIMIT_DIE_ON_UNHANDLED_EXCEPTION).
 *   - No zombies and no pid pinning: the job handle is the server's own, so it can be
 *     signalled after the main process exited, and proc_free never has to wait. */
#ifndef PRISMQ_PROC_H
#define PRISMQ_PROC_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef _WIN32
#include <signal.h>
/* mingw's signal.h has no SIGKILL: Linux's number, for proc_kill and term_signal. */
#ifndef SIGKILL
#define SIGKILL 9
#endif
#endif

struct event_base;

typedef struct proc proc;

/* Resource usage of the main process (and of the descendants it waited for), from
 * wait4. On Windows, of the whole job (JobObjectBasicAccountingInformation, the main
 * process's own times where the job counts none, as under Wine), and max_rss_kb is the
 * job's peak committed memory (PeakJobMemoryUsed), not a resident set (0 under Wine,
 * which does not count it). */
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
   * and a relative argv[0] are taken from `cwd`. Required. On Windows see
   * proc_resolve. */
  const char *const *argv;
  /* The child's whole environment, "NAME=value" strings, NULL-terminated. NULL gives
   * an empty environment. Nothing of the server's environment is passed on. On
   * Windows the block keeps envp's order (Windows asks for one sorted by name, and its
   * programs want SYSTEMROOT: the caller's to give). */
  const char *const *envp;
  /* The child's working directory; NULL keeps the server's. */
  const char *cwd;
  /* 0: exit noticed through a pidfd. 1: through a worker thread (see above). Ignored
   * on Windows (always a thread). */
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
   * descriptor is duplicated: the caller keeps its own. Must be -1 on Windows (-EINVAL
   * otherwise): the job is the cgroup there. */
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
  /* Windows only: a bound on the committed memory of the whole job, in bytes
   * (JOB_OBJECT_LIMIT_JOB_MEMORY: an allocation over it fails); 0, the default, for
   * none. Ignored on Linux, where the run's cgroup (cgroup_fd) carries the limit.
   * Wine (8.0) accepts the limit but does not enforce it. */
  uint64_t memory_max;
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
 *   moment it takes to die.
 * On Windows also: -EINVAL for a cgroup_fd other than -1, for argv, envp or cwd that
 * are not UTF-8, or a '"' in argv[0]; -ENOEXEC for a .bat or .cmd program, or one
 * Windows cannot run (ERROR_BAD_EXE_FORMAT); -ENOTDIR for a cwd that is a file; -E2BIG
 * for a command line over 32767 UTF-16 units; -EAGAIN when the system is out of
 * resources; -EIO for any other failure of the system's. When the watcher thread
 * cannot start, the job is terminated before returning (without waiting). */
int proc_spawn(proc **out, struct event_base *base, const proc_opts *opts);

/* Cancels the process: SIGTERM (then SIGCONT, so that stopped members see it) to the
 * whole group now, and SIGKILL to the group if the process is not done grace_ms later
 * (0: on the next loop iteration). Idempotent: later calls, and calls once the process
 * is done, do nothing. on_exit still fires as usual.
 * On Windows: a CTRL_BREAK_EVENT to the run's process group, then TerminateJobObject
 * after grace_ms. A child that keeps the default handling ends at once with
 * STATUS_CONTROL_C_EXIT, reported as (-1, SIGTERM); without a shared console (a server
 * with none, Wine) the event is lost and the kill after grace_ms ends it: (-1, 9). */
void proc_terminate(proc *p, uint32_t grace_ms);

/* Sends `sig` (0 probes) to the whole process group. Returns 0, -ESRCH (the process
 * is done, or no member of the group is left), -EINVAL (bad signal) or -EPERM.
 * On Windows only 0 (the job has an active process), SIGKILL (TerminateJobObject), and
 * SIGTERM, SIGINT and SIGBREAK (a CTRL_BREAK_EVENT, as proc_terminate's; -ENOTSUP when
 * it cannot be sent: no console shared with the child, or Wine) exist; any other is
 * -EINVAL. */
int proc_kill(proc *p, int sig);

/* The pid of the main process, which is also the process group id (on Windows the
 * id of its console process group). */
pid_t proc_pid(const proc *p);

/* Finds the file proc_spawn would execute for `file` (an argv[0]) in the PATH of
 * `envp` (NULL-terminated; "/bin:/usr/bin" without a PATH), relative names from the
 * current directory, into out (cap bytes). Returns 0, -ENOENT, -EACCES (found, not an
 * executable regular file) or -ENAMETOOLONG.
 * On Windows: a name with '/', '\\' or a drive ("C:") is taken as it is (from the
 * current directory, or proc_spawn's cwd, when relative), any other is looked up in the
 * ';'-separated PATH of envp (Path too: names are case-insensitive; empty entries
 * skipped), without a PATH in the system directory then the Windows directory; never
 * in the current directory or the server's own, as CreateProcess would. In each place
 * the name as given, then with ".exe" and ".com" when it has no extension. The result
 * is UTF-8. A directory is -EACCES, a .bat or .cmd file -ENOEXEC (they need cmd.exe). */
int proc_resolve(char *out, size_t cap, const char *file, const char *const *envp);

/* The start time of process `pid` in clock ticks after boot (/proc/PID/stat field 22):
 * with the pid it names one process, as a pid alone may have been reused. Returns 0
 * and sets *out, -ESRCH if there is no such process or it has exited (a zombie), or
 * another negative errno.
 * On Windows: the process's creation time (GetProcessTimes, a FILETIME as a 64-bit
 * count of 100 ns since 1601), -ESRCH once it has exited (even while a handle keeps it
 * known), -EPERM if it may not be queried. */
int proc_pid_start_ticks(pid_t pid, uint64_t *out);

/* Releases the proc; accepts NULL. No callback fires after it. If the process is not
 * done, its group is SIGKILLed, its pipes closed, and its main process is still
 * reaped later from the loop by a detached remnant that frees itself, so no zombie is
 * left as long as the loop runs. Called from inside one of p's callbacks, the release
 * takes place when the callback returns.
 * On Windows the job is terminated and closed at once; the watcher thread cancels its
 * reads and frees what it holds by itself, without the loop. */
void proc_free(proc *p);

#endif
