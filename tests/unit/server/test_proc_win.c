/* proc on Windows (proc_win.c), run under Wine on the build machine. The children are
 * this binary itself, re-executed with "--child=<role>" as in test_proc.c, so every
 * behaviour is checked against a program whose actions we know. Where Wine does not
 * do what Windows documents (console events, job memory limits and accounting), the
 * test asserts what Windows documents when the system does it, and says what it
 * skipped otherwise. "--bench" measures instead (start rate, output throughput). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <io.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <windows.h>
/* After windows.h. */
#include <shellapi.h>
#include <tlhelp32.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "compat.h"
#include "proc.h"

#define ECHO_OUT_LEN 300000u /* several pipe buffers' worth */
#define ECHO_ERR_LEN 100000u
#define FLOOD_LEN    (4u << 20) /* for backpressure: far more than a pipe and a slot hold */
#define GUARD_MS     30000      /* bound on every wait; Wine starts processes slowly */
#define BURN_CPU_MS  300
#define NCONCURRENT  50

static char g_self[MAX_PATH * 4];
static int g_wine;        /* running under Wine */
static int g_ctrl_events; /* console events can reach a child (Windows with a console) */

/* ---- the child side ---- */

static uint8_t pattern(int stream, size_t i) {
  return stream == PROC_STDOUT ? (uint8_t)i : (uint8_t)(i * 7 + 3);
}

static void write_all(int fd, const void *data, size_t len) {
  const uint8_t *d = data;
  while (len) {
    int w = _write(fd, d, len > 65536 ? 65536u : (unsigned)len);
    if (w <= 0) ExitProcess(101);
    d += w;
    len -= (size_t)w;
  }
}

static void put_pattern(int fd, size_t *off, size_t total, size_t chunk) {
  static uint8_t buf[65536];
  size_t n = total - *off < chunk ? total - *off : chunk;
  for (size_t i = 0; i < n; i++) buf[i] = pattern(fd, *off + i);
  write_all(fd, buf, n);
  *off += n;
}

/* Odd chunk sizes by default; `big` writes 64 KiB at a time (throughput). */
static void child_echo_both(size_t out_len, size_t err_len, int big) {
  size_t o = 0, e = 0;
  while (o < out_len || e < err_len) {
    put_pattern(1, &o, out_len, big ? 65536 : 4093);
    put_pattern(2, &e, err_len, 1021);
  }
}

static void print_utf8(const wchar_t *w, const char *end) {
  char buf[4096];
  int n = WideCharToMultiByte(CP_UTF8, 0, w, -1, buf, sizeof buf, NULL, NULL);
  if (n <= 0) ExitProcess(102);
  write_all(1, buf, (size_t)n - 1);
  write_all(1, end, strlen(end));
}

/* Its arguments as CommandLineToArgvW parses them back, one per line between <>. */
static void child_argv(void) {
  int n;
  wchar_t **av = CommandLineToArgvW(GetCommandLineW(), &n);
  if (!av) ExitProcess(103);
  for (int i = 2; i < n; i++) {
    write_all(1, "<", 1);
    print_utf8(av[i], ">\n");
  }
}

static void child_env(void) {
  wchar_t *env = GetEnvironmentStringsW();
  for (wchar_t *e = env; *e; e += wcslen(e) + 1)
    /* Wine's ntdll adds its own WINE* variables, SystemDrive and SystemRoot to every
     * process's environment; Windows passes the block as it is. */
    if (!g_wine || (wcsncmp(e, L"WINE", 4) != 0 && wcsncmp(e, L"SystemDrive=", 12) != 0 &&
                    wcsncmp(e, L"SystemRoot=", 11) != 0))
      print_utf8(e, "\n");
  FreeEnvironmentStringsW(env);
}

/* Which of the C runtime's descriptors 0..9 are open, what stdin is, and whether the
 * handle value `leak` (inheritable in the parent) reached it. */
static void child_fds(const char *leak) {
  char line[128];
  int o = 0;
  for (int fd = 0; fd < 10; fd++)
    if (_get_osfhandle(fd) != -1) o += snprintf(line + o, sizeof line - (size_t)o, "%d ", fd);
  HANDLE in = (HANDLE)_get_osfhandle(0);
  DWORD flags;
  HANDLE h = leak ? (HANDLE)(uintptr_t)strtoull(leak, NULL, 0) : NULL;
  o += snprintf(line + o, sizeof line - (size_t)o, "stdin=%s leak=%s\n",
                GetFileType(in) == FILE_TYPE_CHAR ? "char" : "other",
                h && GetHandleInformation(h, &flags) ? "yes" : "no");
  write_all(1, line, (size_t)o);
}

/* Reads descriptors 3 and 5 to their end. */
static void child_inputs(void) {
  char buf[64], line[160];
  int o = 0;
  for (int fd = 3; fd <= 5; fd += 2) {
    int n = _read(fd, buf, sizeof buf), end = _read(fd, buf, 1);
    if (n < 0 || end != 0) ExitProcess(112);
    o += snprintf(line + o, sizeof line - (size_t)o, "%d:%.*s ", fd, n, buf);
  }
  write_all(1, line, (size_t)o);
}

static uint64_t own_cpu_ms(void) {
  FILETIME c, e, k, u;
  GetProcessTimes(GetCurrentProcess(), &c, &e, &k, &u);
  return ((((uint64_t)u.dwHighDateTime << 32) | u.dwLowDateTime) +
          (((uint64_t)k.dwHighDateTime << 32) | k.dwLowDateTime)) /
         10000u;
}

static BOOL WINAPI ignore_ctrl(DWORD type) {
  (void)type;
  return TRUE;
}

/* Starts this binary as `role` holding our stdout and stderr (hold) or with them on
 * NUL, prints "gpid=<its pid>". */
static void child_spawn_grandchild(int hold) {
  wchar_t cmd[MAX_PATH * 2 + 32];
  GetModuleFileNameW(NULL, cmd + 1, MAX_PATH * 2);
  cmd[0] = L'"';
  wcscat(cmd, L"\" --child=pause-quiet");
  STARTUPINFOW si;
  PROCESS_INFORMATION pi;
  memset(&si, 0, sizeof si);
  si.cb = sizeof si;
  si.dwFlags = STARTF_USESTDHANDLES;
  SECURITY_ATTRIBUTES sa = {sizeof sa, NULL, TRUE};
  HANDLE nul = CreateFileW(L"NUL", GENERIC_READ | GENERIC_WRITE, 3, &sa, OPEN_EXISTING, 0, NULL);
  si.hStdInput = nul;
  si.hStdOutput = hold ? (HANDLE)_get_osfhandle(1) : nul;
  si.hStdError = hold ? (HANDLE)_get_osfhandle(2) : nul;
  /* Letting go means not inheriting them at all: ours came inheritable, and Wine
   * gives a child its parent's std handles even when they are not. */
  if (!hold) {
    for (int fd = 0; fd <= 3; fd++)
      if (_get_osfhandle(fd) != -1)
        SetHandleInformation((HANDLE)_get_osfhandle(fd), HANDLE_FLAG_INHERIT, 0);
    SetStdHandle(STD_OUTPUT_HANDLE, nul);
    SetStdHandle(STD_ERROR_HANDLE, nul);
  }
  if (!CreateProcessW(NULL, cmd, NULL, NULL, TRUE, 0, NULL, NULL, &si, &pi)) ExitProcess(105);
  char line[32];
  int n = snprintf(line, sizeof line, "gpid=%lu\n", (unsigned long)pi.dwProcessId);
  write_all(1, line, (size_t)n);
}

static int child_main(const char *role, char **args) {
  _setmode(1, _O_BINARY);
  _setmode(2, _O_BINARY);
  if (!strcmp(role, "exit")) ExitProcess((UINT)strtoul(args[0], NULL, 0));
  if (!strcmp(role, "echo-both"))
    child_echo_both(ECHO_OUT_LEN, ECHO_ERR_LEN, 0);
  else if (!strcmp(role, "flood"))
    child_echo_both(strtoul(args[0], NULL, 0), 0, 1);
  else if (!strcmp(role, "argv"))
    child_argv();
  else if (!strcmp(role, "env"))
    child_env();
  else if (!strcmp(role, "cwd")) {
    wchar_t buf[MAX_PATH];
    GetCurrentDirectoryW(MAX_PATH, buf);
    print_utf8(buf, "\n");
  } else if (!strcmp(role, "fds"))
    child_fds(args[0]);
  else if (!strcmp(role, "inputs"))
    child_inputs();
  else if (!strcmp(role, "progress")) {
    write_all(3, "1/2 half\n", 9);
    write_all(1, "out\n", 4);
  } else if (!strcmp(role, "pause") || !strcmp(role, "ignore-break")) {
    if (!strcmp(role, "ignore-break")) SetConsoleCtrlHandler(ignore_ctrl, TRUE);
    write_all(1, "ready\n", 6);
    Sleep(INFINITE);
  } else if (!strcmp(role, "pause-quiet")) {
    Sleep(INFINITE);
  } else if (!strcmp(role, "tree")) {
    child_spawn_grandchild(1);
    Sleep(INFINITE);
  } else if (!strcmp(role, "orphan")) {
    child_spawn_grandchild(!strcmp(args[0], "hold"));
    ExitProcess(3);
  } else if (!strcmp(role, "burn")) {
    while (own_cpu_ms() < BURN_CPU_MS) {
    }
  } else if (!strcmp(role, "alloc")) {
    size_t sz = (size_t)strtoul(args[0], NULL, 0) << 20;
    char *m = VirtualAlloc(NULL, sz, MEM_COMMIT | MEM_RESERVE, PAGE_READWRITE);
    if (!m) ExitProcess(3);
    for (size_t i = 0; i < sz; i += 4096) m[i] = 1;
  } else
    ExitProcess(100);
  ExitProcess(0);
}

/* ---- the test side ---- */

typedef struct run {
  struct event_base *base;
  struct event *guard;
  int timed_out;
  uint32_t orphan_kill_ms;
  uint64_t memory_max;
  int progress_pipe;
  const proc_input *inputs;
  size_t ninputs;
  proc *p;
  pid_t pid;
  struct evbuffer *out[3];
  const char *want;
  int exits, status, sig;
  proc_usage usage;
  int kill_rc_in_exit;
  int free_in_output, free_in_exit, freed;
  int stall; /* on_output: stop the loop after a chunk (backpressure) */
} run;

static void on_guard(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  ((run *)arg)->timed_out = 1;
}

static void on_output(proc *p, int stream, const uint8_t *data, size_t len, void *arg) {
  run *r = arg;
  assert_false(r->freed);
  assert_ptr_equal(p, r->p);
  assert_true(stream == PROC_STDOUT || stream == PROC_STDERR ||
              (stream == PROC_PROGRESS && r->progress_pipe));
  assert_true(len > 0 && len <= (256u << 10)); /* proc_win.c's PROC_READ_MAX */
  evbuffer_add(r->out[stream - 1], data, len);
  if (r->stall) event_base_loopbreak(r->base);
  if (r->free_in_output) {
    proc_free(p);
    r->p = NULL;
    r->freed = 1;
  }
}

static void on_exit_cb(proc *p, int exit_status, int term_signal, const proc_usage *u, void *arg) {
  run *r = arg;
  assert_false(r->freed);
  assert_ptr_equal(p, r->p);
  r->exits++;
  r->status = exit_status;
  r->sig = term_signal;
  r->usage = *u;
  r->kill_rc_in_exit = proc_kill(p, 0);
  if (r->free_in_exit) {
    proc_free(p);
    r->p = NULL;
    r->freed = 1;
  }
}

static void run_init(run *r) {
  memset(r, 0, sizeof *r);
  r->orphan_kill_ms = 2000;
  r->base = event_base_new();
  assert_non_null(r->base);
  r->guard = evtimer_new(r->base, on_guard, r);
  for (int s = 0; s < 3; s++) r->out[s] = evbuffer_new();
}

static void run_fini(run *r) {
  proc_free(r->p);
  for (int s = 0; s < 3; s++) evbuffer_free(r->out[s]);
  event_free(r->guard);
  event_base_free(r->base);
}

static int run_spawn_opts(run *r, const char *const *argv, const char *const *envp, const char *cwd,
                          int cgroup_fd) {
  proc_opts o = PROC_OPTS_INIT;
  o.argv = argv;
  o.envp = envp;
  o.cwd = cwd;
  o.orphan_kill_ms = r->orphan_kill_ms;
  o.cgroup_fd = cgroup_fd;
  o.progress_pipe = r->progress_pipe;
  o.inputs = r->inputs;
  o.ninputs = r->ninputs;
  o.memory_max = r->memory_max;
  o.on_output = on_output;
  o.on_exit = on_exit_cb;
  o.arg = r;
  proc *sentinel = (proc *)&sentinel;
  r->p = sentinel;
  int rc = proc_spawn(&r->p, r->base, &o);
  if (rc < 0) {
    assert_ptr_equal(r->p, sentinel); /* *out untouched */
    r->p = NULL;
    return rc;
  }
  r->pid = proc_pid(r->p);
  assert_true(r->pid > 0);
  return 0;
}

static int run_spawn(run *r, const char *const *argv, const char *const *envp, const char *cwd) {
  return run_spawn_opts(r, argv, envp, cwd, -1);
}

static void run_child(run *r, const char *role, const char *arg) {
  char flag[64];
  snprintf(flag, sizeof flag, "--child=%s", role);
  const char *argv[] = {g_self, flag, arg, NULL};
  assert_int_equal(run_spawn(r, argv, NULL, NULL), 0);
}

static int has_exited(run *r) { return r->exits > 0; }
static int has_want(run *r) {
  return evbuffer_search(r->out[0], r->want, strlen(r->want), NULL).pos >= 0;
}

static void drive(run *r, int (*pred)(run *)) {
  struct timeval tv = {GUARD_MS / 1000, 0};
  r->timed_out = 0;
  evtimer_add(r->guard, &tv);
  while (!pred(r) && !r->timed_out) event_base_loop(r->base, EVLOOP_ONCE);
  evtimer_del(r->guard);
  assert_false(r->timed_out);
}

static void wait_text(run *r, const char *want) {
  r->want = want;
  drive(r, has_want);
}

static const char *buf_str(struct evbuffer *b) {
  evbuffer_add(b, "", 1);
  return (const char *)evbuffer_pullup(b, -1);
}

static const char *stdout_str(run *r) { return buf_str(r->out[0]); }

static void assert_exited(run *r, int status, int sig) {
  drive(r, has_exited);
  event_base_loop(r->base, EVLOOP_NONBLOCK); /* a second on_exit would show up here */
  assert_int_equal(r->exits, 1);
  assert_int_equal(r->status, status);
  assert_int_equal(r->sig, sig);
  assert_int_equal(r->kill_rc_in_exit, -ESRCH);
}

static int64_t now_ms(void) { return (int64_t)GetTickCount64(); }

/* libevent's timers may fire up to a tick (16 ms on Windows) early. */
static void assert_waited(int64_t t0, int64_t ms) {
  int64_t waited = now_ms() - t0;
  if (waited < ms - 20) fail_msg("waited %lld ms, expected %lld", (long long)waited, (long long)ms);
}

static DWORD parse_gpid(run *r) {
  unsigned long gpid = 0;
  assert_int_equal(sscanf(stdout_str(r), "gpid=%lu", &gpid), 1);
  return (DWORD)gpid;
}

/* Waits (bounded) for process h to end and returns its exit code. */
static DWORD wait_gone(HANDLE h) {
  DWORD code = 0;
  assert_int_equal(WaitForSingleObject(h, GUARD_MS), WAIT_OBJECT_0);
  assert_true(GetExitCodeProcess(h, &code));
  CloseHandle(h);
  return code;
}

/* The number of threads of this process. */
static int thread_count(void) {
  HANDLE snap = CreateToolhelp32Snapshot(TH32CS_SNAPTHREAD, 0);
  THREADENTRY32 te = {.dwSize = sizeof te};
  int n = 0;
  for (BOOL ok = Thread32First(snap, &te); ok; ok = Thread32Next(snap, &te))
    if (te.th32OwnerProcessID == GetCurrentProcessId()) n++;
  CloseHandle(snap);
  return n;
}

/* The number of handles open in this process. Wine's GetProcessHandleCount says 0:
 * there, the valid handle values below 64 Ki are counted. */
static int handle_count(void) {
  DWORD hc = 0, flags;
  if (GetProcessHandleCount(GetCurrentProcess(), &hc) && hc) return (int)hc;
  int n = 0;
  for (uintptr_t v = 4; v < (1u << 16); v += 4)
    if (GetHandleInformation((HANDLE)v, &flags)) n++;
  return n;
}

/* Waits until this process has at most `want` threads (the watchers leave on their
 * own: there is no event for it). Returns the count. */
static int threads_settle(int want) {
  int n = thread_count();
  for (int64_t t0 = now_ms(); n > want && now_ms() - t0 < GUARD_MS; n = thread_count()) Sleep(10);
  return n;
}

/* ---- the cases ---- */

static void test_exit_codes(void **state) {
  (void)state;
  static const struct {
    const char *code;
    int status, sig;
  } cases[] = {
      {"0", 0, 0},
      {"3", 3, 0},
      {"255", 255, 0},
      {"1000", 1000, 0},
      {"0xFFFFFFFF", 255, 0}, /* exit(-1) */
      {"0xC0000005", -1, 11},
      {"0xC00000FD", -1, 11},
      {"0xC0000094", -1, 8},
      {"0xC000001D", -1, 4},
      {"0xC000013A", -1, 2},
      {"0xC0000135", -1, 6},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    run r;
    run_init(&r);
    run_child(&r, "exit", cases[i].code);
    assert_exited(&r, cases[i].status, cases[i].sig);
    assert_int_equal(evbuffer_get_length(r.out[0]) + evbuffer_get_length(r.out[1]), 0);
    run_fini(&r);
  }
}

static void assert_stream(struct evbuffer *b, int stream, size_t len) {
  assert_int_equal(evbuffer_get_length(b), len);
  const uint8_t *d = evbuffer_pullup(b, -1);
  for (size_t i = 0; i < len; i++)
    if (d[i] != pattern(stream, i))
      fail_msg("stream %d differs at byte %lu", stream, (unsigned long)i);
}

static void test_output(void **state) {
  (void)state;
  run r;
  run_init(&r);
  run_child(&r, "echo-both", NULL);
  assert_exited(&r, 0, 0);
  assert_stream(r.out[0], PROC_STDOUT, ECHO_OUT_LEN);
  assert_stream(r.out[1], PROC_STDERR, ECHO_ERR_LEN);
  run_fini(&r);
}

static int job_running(run *r) { return proc_kill(r->p, 0) == 0; }

/* While the loop does not run, the child blocks on its full pipe: it cannot have
 * written its 4 MiB (one chunk in flight, a pipe's buffer); then everything arrives. */
static void test_backpressure(void **state) {
  (void)state;
  char len[32];
  snprintf(len, sizeof len, "%u", FLOOD_LEN);
  run r;
  run_init(&r);
  r.stall = 1;
  run_child(&r, "flood", len);
  struct timeval tv = {GUARD_MS / 1000, 0};
  evtimer_add(r.guard, &tv);
  event_base_dispatch(r.base); /* until the first chunk */
  evtimer_del(r.guard);
  assert_true(evbuffer_get_length(r.out[0]) > 0);
  Sleep(500); /* the loop is "busy": the child fills what it can meanwhile */
  assert_true(job_running(&r));
  r.stall = 0;
  assert_exited(&r, 0, 0);
  assert_stream(r.out[0], PROC_STDOUT, FLOOD_LEN);
  run_fini(&r);
}

static int spawn_rc(const char *const *argv, const char *const *envp, const char *cwd) {
  run r;
  run_init(&r);
  int rc = run_spawn(&r, argv, envp, cwd);
  if (rc == 0) assert_exited(&r, 7, 0);
  run_fini(&r);
  return rc;
}

typedef struct scratch {
  char dir[MAX_PATH], exe[MAX_PATH + 32], bat[MAX_PATH + 32], path_env[MAX_PATH + 32];
} scratch;

/* A directory with a copy of this binary (pq-child.exe) and a batch file. */
static void scratch_init(scratch *s) {
  char tmp[MAX_PATH];
  GetTempPathA(sizeof tmp, tmp);
  snprintf(s->dir, sizeof s->dir, "%spq-proc-%lu", tmp, (unsigned long)GetCurrentProcessId());
  assert_true(CreateDirectoryA(s->dir, NULL) || GetLastError() == ERROR_ALREADY_EXISTS);
  snprintf(s->exe, sizeof s->exe, "%s\\pq-child.exe", s->dir);
  snprintf(s->bat, sizeof s->bat, "%s\\pq-batch.bat", s->dir);
  snprintf(s->path_env, sizeof s->path_env, "PATH=C:\\nonexistent;;%s", s->dir);
  assert_true(CopyFileA(g_self, s->exe, FALSE));
  FILE *f = fopen(s->bat, "w");
  assert_non_null(f);
  fputs("@exit 7\r\n", f);
  fclose(f);
}

static void scratch_fini(scratch *s) {
  DeleteFileA(s->exe);
  DeleteFileA(s->bat);
  RemoveDirectoryA(s->dir);
}

static void test_spawn_errors(void **state) {
  (void)state;
  scratch s;
  scratch_init(&s);
  const char *env[] = {s.path_env, NULL};
  const char *missing[] = {"C:\\nonexistent\\pq-none.exe", NULL};
  assert_int_equal(spawn_rc(missing, NULL, NULL), -ENOENT);
  const char *none[] = {"pq-none", NULL};
  assert_int_equal(spawn_rc(none, env, NULL), -ENOENT);
  const char *bat[] = {s.bat, NULL};
  assert_int_equal(spawn_rc(bat, NULL, NULL), -ENOEXEC);
  const char *bat_by_name[] = {"pq-batch.bat", NULL};
  assert_int_equal(spawn_rc(bat_by_name, env, NULL), -ENOEXEC);
  const char *no_ext[] = {"pq-batch", NULL}; /* only .exe and .com are appended */
  assert_int_equal(spawn_rc(no_ext, env, NULL), -ENOENT);
  const char *dir[] = {s.dir, NULL};
  assert_int_equal(spawn_rc(dir, NULL, NULL), -EACCES);
  const char *empty[] = {"", NULL};
  assert_int_equal(spawn_rc(empty, env, NULL), -ENOENT);
  const char *ok[] = {g_self, "--child=exit", "7", NULL};
  assert_int_equal(spawn_rc(ok, NULL, "C:\\nonexistent"), -ENOENT);
  const char *no_argv0[] = {NULL};
  assert_int_equal(spawn_rc(no_argv0, NULL, NULL), -EINVAL);
  const char *bad_utf8[] = {g_self, "\xff", NULL};
  assert_int_equal(spawn_rc(bad_utf8, NULL, NULL), -EINVAL);
  run r;
  run_init(&r);
  assert_int_equal(run_spawn_opts(&r, ok, NULL, NULL, 3), -EINVAL); /* no cgroups here */
  run_fini(&r);
  scratch_fini(&s);
}

/* Found by name in envp's PATH (".exe" appended), relative names from cwd, without a
 * PATH in the system directory; never in the server's PATH. */
static void test_path_lookup(void **state) {
  (void)state;
  scratch s;
  scratch_init(&s);
  const char *argv[] = {"pq-child", "--child=exit", "7", NULL};
  const char *env[] = {"A=1", s.path_env, NULL};
  assert_int_equal(spawn_rc(argv, env, NULL), 0);
  const char *lower[] = {"Path=C:\\nonexistent", NULL};
  assert_int_equal(spawn_rc(argv, lower, NULL), -ENOENT);
  assert_int_equal(spawn_rc(argv, NULL, NULL), -ENOENT);
  const char *rel[] = {".\\pq-child.exe", "--child=exit", "7", NULL};
  assert_int_equal(spawn_rc(rel, NULL, s.dir), 0);
  const char *rel_slash[] = {"./pq-child", "--child=exit", "7", NULL};
  assert_int_equal(spawn_rc(rel_slash, NULL, s.dir), 0);

  char out[MAX_PATH * 4];
  assert_int_equal(proc_resolve(out, sizeof out, "cmd", NULL), 0);
  assert_int_equal(_stricmp(out + strlen(out) - 8, "\\cmd.exe"), 0);
  assert_int_equal(proc_resolve(out, sizeof out, "pq-child", env), 0);
  char want[MAX_PATH * 2];
  snprintf(want, sizeof want, "%s\\pq-child.exe", s.dir);
  assert_string_equal(out, want);
  assert_int_equal(proc_resolve(out, 8, "pq-child", env), -ENAMETOOLONG);
  scratch_fini(&s);
}

/* The command line is quoted so that the child's CommandLineToArgvW gives argv back. */
static void test_argv(void **state) {
  (void)state;
  static const char *const args[] = {
      "",
      "a b",
      "a\"b",
      "back\\\\",
      "tail\\\\\"x",
      "\\\"",
      "\"",
      "a\tb",
      "x\\y\\",
      "\\\\server\\share\\",
      "plain",
      "\xc5\xbc\xc3\xb3\xc5\x82\xc4\x87 \xe2\x82\xac \xf0\x9f\x98\x80", /* żółć € 😀 */
      "  ",
      "end\\",
  };
  size_t n = sizeof args / sizeof *args;
  const char *argv[2 + sizeof args / sizeof *args + 1];
  argv[0] = g_self;
  argv[1] = "--child=argv";
  for (size_t i = 0; i < n; i++) argv[2 + i] = args[i];
  argv[2 + n] = NULL;
  run r;
  run_init(&r);
  assert_int_equal(run_spawn(&r, argv, NULL, NULL), 0);
  assert_exited(&r, 0, 0);
  char want[1024];
  size_t o = 0;
  for (size_t i = 0; i < n; i++)
    o += (size_t)snprintf(want + o, sizeof want - o, "<%s>\n", args[i]);
  assert_string_equal(stdout_str(&r), want);
  run_fini(&r);
}

static void test_env(void **state) {
  (void)state;
  run r;
  run_init(&r);
  const char *argv[] = {g_self, "--child=env", NULL};
  const char *env[] = {"A=1", "B=two words", "EMPTY=", "U=\xc3\xa9t\xc3\xa9", NULL};
  assert_int_equal(run_spawn(&r, argv, env, NULL), 0);
  assert_exited(&r, 0, 0);
  assert_string_equal(stdout_str(&r), "A=1\nB=two words\nEMPTY=\nU=\xc3\xa9t\xc3\xa9\n");
  run_fini(&r);

  run_init(&r);
  assert_int_equal(run_spawn(&r, argv, NULL, NULL), 0);
  assert_exited(&r, 0, 0);
  assert_string_equal(stdout_str(&r), "");
  run_fini(&r);
}

static void test_cwd(void **state) {
  (void)state;
  scratch s;
  scratch_init(&s);
  run r;
  run_init(&r);
  const char *argv[] = {g_self, "--child=cwd", NULL};
  assert_int_equal(run_spawn(&r, argv, NULL, s.dir), 0);
  assert_exited(&r, 0, 0);
  char want[MAX_PATH + 2];
  snprintf(want, sizeof want, "%s\n", s.dir);
  assert_int_equal(_stricmp(stdout_str(&r), want), 0);
  run_fini(&r);
  scratch_fini(&s);
}

/* Only 0, 1, 2 (and the progress pipe's 3) reach the child, stdin is NUL, and an
 * inheritable handle of ours does not leak (the inherit list). */
static void test_fds(void **state) {
  (void)state;
  SECURITY_ATTRIBUTES sa = {sizeof sa, NULL, TRUE};
  HANDLE leak = CreateEventW(&sa, TRUE, FALSE, NULL);
  assert_non_null(leak);
  char hv[32];
  snprintf(hv, sizeof hv, "%llu", (unsigned long long)(uintptr_t)leak);
  for (int progress = 0; progress < 2; progress++) {
    run r;
    run_init(&r);
    r.progress_pipe = progress;
    run_child(&r, "fds", hv);
    assert_exited(&r, 0, 0);
    assert_string_equal(stdout_str(&r),
                        progress ? "0 1 2 3 stdin=char leak=no\n" : "0 1 2 stdin=char leak=no\n");
    assert_int_equal(evbuffer_get_length(r.out[1]), 0);
    run_fini(&r);
  }
  CloseHandle(leak);
}

static void test_progress_pipe(void **state) {
  (void)state;
  run r;
  run_init(&r);
  r.progress_pipe = 1;
  run_child(&r, "progress", NULL);
  assert_exited(&r, 0, 0);
  assert_string_equal(stdout_str(&r), "out\n");
  assert_string_equal(buf_str(r.out[2]), "1/2 half\n");
  run_fini(&r);
}

static void test_inputs(void **state) {
  (void)state;
  const proc_input in[] = {{5, "five", 4}, {3, "three", 5}};
  run r;
  run_init(&r);
  r.inputs = in;
  r.ninputs = 2;
  run_child(&r, "inputs", NULL);
  assert_exited(&r, 0, 0);
  assert_string_equal(stdout_str(&r), "3:three 5:five ");
  run_fini(&r);

  /* A full page, read whole. */
  static char page[PROC_MAX_INPUT_LEN];
  memset(page, 'x', sizeof page);
  const proc_input big[] = {{3, page, sizeof page}, {5, "", 0}};
  run_init(&r);
  r.inputs = big;
  r.ninputs = 2;
  const char *argv[] = {g_self, "--child=fds", NULL};
  assert_int_equal(run_spawn(&r, argv, NULL, NULL), 0);
  assert_exited(&r, 0, 0);
  assert_string_equal(stdout_str(&r), "0 1 2 3 5 stdin=char leak=no\n");
  run_fini(&r);

  const proc_input bad[] = {{3, "x", 1}}; /* the progress pipe's */
  run_init(&r);
  r.progress_pipe = 1;
  r.inputs = bad;
  r.ninputs = 1;
  const char *ok[] = {g_self, "--child=exit", "0", NULL};
  assert_int_equal(run_spawn(&r, ok, NULL, NULL), -EINVAL);
  run_fini(&r);
}

static void test_kill(void **state) {
  (void)state;
  run r;
  run_init(&r);
  run_child(&r, "pause", NULL);
  wait_text(&r, "ready\n");
  assert_int_equal(proc_kill(r.p, 0), 0);
  assert_int_equal(proc_kill(r.p, -1), -EINVAL);
  assert_int_equal(proc_kill(r.p, 10), -EINVAL);
  assert_int_equal(proc_kill(r.p, SIGKILL), 0);
  assert_exited(&r, -1, SIGKILL);
  assert_int_equal(proc_kill(r.p, SIGKILL), -ESRCH);
  proc_terminate(r.p, 0); /* done: a no-op */
  run_fini(&r);
}

/* A child keeping the default handling ends on the CTRL_BREAK (Windows with a
 * console): (-1, SIGTERM) at once. Where events cannot reach it (Wine), the grace kill
 * ends it: (-1, SIGKILL) after grace_ms. */
static void test_terminate(void **state) {
  (void)state;
  run r;
  run_init(&r);
  run_child(&r, "pause", NULL);
  wait_text(&r, "ready\n");
  int64_t t0 = now_ms();
  proc_terminate(r.p, g_ctrl_events ? 10000 : 300);
  proc_terminate(r.p, 0); /* idempotent: does not shorten the grace */
  if (g_ctrl_events) {
    assert_exited(&r, -1, SIGTERM);
  } else {
    print_message("console events do not reach children here: the grace kill ends it\n");
    assert_exited(&r, -1, SIGKILL);
    assert_waited(t0, 300);
  }
  run_fini(&r);
}

/* A child that ignores CTRL_BREAK is killed once the grace period is over. */
static void test_terminate_ignored(void **state) {
  (void)state;
  run r;
  run_init(&r);
  run_child(&r, "ignore-break", NULL);
  wait_text(&r, "ready\n");
  int64_t t0 = now_ms();
  proc_terminate(r.p, 300);
  assert_exited(&r, -1, SIGKILL);
  assert_waited(t0, 300);
  run_fini(&r);
}

static HANDLE open_gpid(run *r) {
  HANDLE h = OpenProcess(SYNCHRONIZE | PROCESS_QUERY_LIMITED_INFORMATION, FALSE, parse_gpid(r));
  assert_non_null(h);
  return h;
}

/* The main process exits, a grandchild keeps the pipes: the job is killed after
 * orphan_kill_ms, on_exit reports the main process's own status, the grandchild is
 * gone. */
static void test_orphan(void **state) {
  (void)state;
  run r;
  run_init(&r);
  r.orphan_kill_ms = 200;
  int64_t t0 = now_ms();
  run_child(&r, "orphan", "hold");
  wait_text(&r, "\n");
  HANDLE g = open_gpid(&r);
  uint64_t ticks;
  assert_exited(&r, 3, 0);
  assert_waited(t0, 200);
  assert_int_equal(wait_gone(g), 137);
  assert_int_equal(proc_pid_start_ticks((pid_t)parse_gpid(&r), &ticks), -ESRCH);
  run_fini(&r);
}

/* A grandchild that let go of the pipes does not delay the end, but does not outlive
 * it: the job is terminated when done. */
static void test_job_killed_when_done(void **state) {
  (void)state;
  run r;
  run_init(&r);
  r.orphan_kill_ms = 60000;
  run_child(&r, "orphan", "release");
  wait_text(&r, "\n");
  HANDLE g = open_gpid(&r);
  assert_exited(&r, 3, 0);
  assert_int_equal(wait_gone(g), 137);
  run_fini(&r);
}

/* proc_terminate of a tree: the main process and its grandchild (holding the pipes)
 * both die, at the latest by the grace kill. */
static void test_terminate_tree(void **state) {
  (void)state;
  run r;
  run_init(&r);
  r.orphan_kill_ms = 60000; /* only the grace period may end it */
  run_child(&r, "tree", NULL);
  wait_text(&r, "\n");
  HANDLE g = open_gpid(&r);
  proc_terminate(r.p, 300);
  drive(&r, has_exited);
  assert_int_equal(r.exits, 1);
  assert_int_equal(r.status, -1);
  assert_true(r.sig == SIGKILL || (g_ctrl_events && r.sig == SIGTERM));
  assert_int_equal(wait_gone(g), 137);
  run_fini(&r);
}

static void test_usage(void **state) {
  (void)state;
  run r;
  run_init(&r);
  run_child(&r, "burn", NULL);
  assert_exited(&r, 0, 0);
  assert_true(r.usage.user_cpu_ms + r.usage.sys_cpu_ms >= BURN_CPU_MS - 20);
  if (r.usage.max_rss_kb == 0)
    print_message("the job reports no peak memory here (Wine)\n");
  else
    assert_true(r.usage.max_rss_kb >= 100);
  run_fini(&r);
}

/* memory_max bounds the job's committed memory: a 256 MiB allocation fails at 64 MiB. */
static void test_memory_max(void **state) {
  (void)state;
  run r;
  run_init(&r);
  r.memory_max = 64u << 20;
  run_child(&r, "alloc", "256");
  drive(&r, has_exited);
  int status = r.status;
  run_fini(&r);
  if (status == 0 && g_wine) {
    print_message("Wine does not enforce JOB_OBJECT_LIMIT_JOB_MEMORY: not tested\n");
    skip();
  }
  assert_int_equal(status, 3);

  run_init(&r); /* without a limit it succeeds */
  run_child(&r, "alloc", "256");
  assert_exited(&r, 0, 0);
  run_fini(&r);
}

static void test_free_running(void **state) {
  (void)state;
  run r;
  run_init(&r);
  run_child(&r, "pause", NULL);
  wait_text(&r, "ready\n");
  HANDLE h = OpenProcess(SYNCHRONIZE | PROCESS_QUERY_LIMITED_INFORMATION, FALSE, (DWORD)r.pid);
  assert_non_null(h);
  proc_free(r.p);
  r.p = NULL;
  r.freed = 1;
  assert_int_equal(wait_gone(h), 137);
  event_base_loop(r.base, EVLOOP_NONBLOCK);
  assert_int_equal(r.exits, 0);
  run_fini(&r);
}

static void test_free_in_output(void **state) {
  (void)state;
  run r;
  run_init(&r);
  r.free_in_output = 1;
  run_child(&r, "echo-both", NULL);
  HANDLE h = OpenProcess(SYNCHRONIZE | PROCESS_QUERY_LIMITED_INFORMATION, FALSE, (DWORD)r.pid);
  assert_non_null(h);
  struct timeval tv = {GUARD_MS / 1000, 0};
  evtimer_add(r.guard, &tv);
  while (!r.freed && !r.timed_out) event_base_loop(r.base, EVLOOP_ONCE);
  evtimer_del(r.guard);
  assert_true(r.freed);
  assert_int_equal(wait_gone(h), 137);
  event_base_loop(r.base, EVLOOP_NONBLOCK);
  assert_int_equal(r.exits, 0);
  run_fini(&r);
}

static void test_free_in_exit(void **state) {
  (void)state;
  run r;
  run_init(&r);
  r.free_in_exit = 1;
  run_child(&r, "echo-both", NULL);
  assert_exited(&r, 0, 0);
  assert_true(r.freed);
  proc_free(NULL);
  run_fini(&r);
}

static void test_start_ticks(void **state) {
  (void)state;
  uint64_t ticks = 0;
  FILETIME c, e, k, u;
  assert_int_equal(proc_pid_start_ticks((pid_t)GetCurrentProcessId(), &ticks), 0);
  assert_true(GetProcessTimes(GetCurrentProcess(), &c, &e, &k, &u));
  uint64_t own = ((uint64_t)c.dwHighDateTime << 32) | c.dwLowDateTime;
  assert_true(own > 0);
  assert_true(ticks == own);

  run r;
  run_init(&r);
  run_child(&r, "pause", NULL);
  wait_text(&r, "ready\n");
  uint64_t child = 0;
  int rc = proc_pid_start_ticks(r.pid, &child);
  assert_int_equal(proc_kill(r.p, SIGKILL), 0);
  assert_exited(&r, -1, SIGKILL);
  assert_int_equal(rc, 0);
  assert_true(child >= own);
  ticks = 7;
  /* Exited (our handle still keeps its id known until proc_free) and never was. */
  assert_int_equal(proc_pid_start_ticks(r.pid, &ticks), -ESRCH);
  run_fini(&r);
  assert_int_equal(proc_pid_start_ticks((pid_t)0xFFFFFFF0u, &ticks), -ESRCH);
  assert_int_equal(proc_pid_start_ticks(0, &ticks), -ESRCH);
  assert_int_equal(ticks, 7);
}

/* 50 at once on one loop, all complete with their output; then their watcher threads
 * are gone, and no handle is left open. */
typedef struct many {
  run r[NCONCURRENT];
  int left;
} many;

static int all_done(run *r) {
  for (int i = 0; i < NCONCURRENT; i++)
    if (!r[i].exits) return 0;
  return 1;
}

static void test_concurrent(void **state) {
  (void)state;
  static many m;
  int before = thread_count();
  run warm;
  run_init(&warm); /* the first run's one-time allocations (winsock...) */
  run_child(&warm, "exit", "0");
  assert_exited(&warm, 0, 0);
  run_fini(&warm);
  int threads0 = threads_settle(before), handles0 = handle_count();

  struct event_base *base = event_base_new();
  for (int i = 0; i < NCONCURRENT; i++) {
    run *r = &m.r[i];
    run_init(r);
    event_base_free(r->base); /* all on one loop */
    event_free(r->guard);
    r->base = base;
    r->guard = evtimer_new(base, on_guard, r);
    char code[16];
    snprintf(code, sizeof code, "%d", i);
    const char *argv[] = {g_self, "--child=argv", code, NULL};
    assert_int_equal(run_spawn(r, argv, NULL, NULL), 0);
  }
  drive(&m.r[0], all_done);
  for (int i = 0; i < NCONCURRENT; i++) {
    char want[32];
    snprintf(want, sizeof want, "<%d>\n", i);
    assert_int_equal(m.r[i].status, 0);
    assert_string_equal(stdout_str(&m.r[i]), want);
    proc_free(m.r[i].p);
    m.r[i].p = NULL;
    for (int s = 0; s < 3; s++) evbuffer_free(m.r[i].out[s]);
    event_free(m.r[i].guard);
  }
  event_base_free(base);
  int threads = threads_settle(threads0);
  assert_int_equal(threads, threads0);
  assert_int_equal(handle_count(), handles0);
}

/* ---- measurements ---- */

static double secs_since(LARGE_INTEGER t0) {
  LARGE_INTEGER t, f;
  QueryPerformanceCounter(&t);
  QueryPerformanceFrequency(&f);
  return (double)(t.QuadPart - t0.QuadPart) / (double)f.QuadPart;
}

static void bench_start_rate(int n) {
  LARGE_INTEGER t0;
  QueryPerformanceCounter(&t0);
  for (int i = 0; i < n; i++) {
    run r;
    run_init(&r);
    run_child(&r, "exit", "0");
    assert_exited(&r, 0, 0);
    run_fini(&r);
  }
  double t_proc = secs_since(t0);
  wchar_t cmd[MAX_PATH * 2 + 32];
  GetModuleFileNameW(NULL, cmd + 1, MAX_PATH * 2);
  cmd[0] = L'"';
  wcscat(cmd, L"\" --child=exit 0");
  QueryPerformanceCounter(&t0);
  for (int i = 0; i < n; i++) {
    STARTUPINFOW si = {.cb = sizeof si};
    PROCESS_INFORMATION pi;
    if (!CreateProcessW(NULL, cmd, NULL, NULL, FALSE, 0, NULL, NULL, &si, &pi)) abort();
    WaitForSingleObject(pi.hProcess, INFINITE);
    CloseHandle(pi.hThread);
    CloseHandle(pi.hProcess);
  }
  double t_plain = secs_since(t0);
  printf("start rate: proc_spawn %.1f/s, CreateProcess+Wait %.1f/s (%d each)\n", n / t_proc,
         n / t_plain, n);
}

static void bench_throughput(unsigned mib) {
  char len[32];
  snprintf(len, sizeof len, "%u", mib << 20);
  run r;
  run_init(&r);
  LARGE_INTEGER t0;
  QueryPerformanceCounter(&t0);
  run_child(&r, "flood", len);
  assert_exited(&r, 0, 0);
  double t_proc = secs_since(t0);
  assert_int_equal(evbuffer_get_length(r.out[0]), (size_t)mib << 20);
  run_fini(&r);

  SECURITY_ATTRIBUTES sa = {sizeof sa, NULL, TRUE};
  HANDLE rd, wr;
  CreatePipe(&rd, &wr, &sa, 65536);
  SetHandleInformation(rd, HANDLE_FLAG_INHERIT, 0);
  wchar_t cmd[MAX_PATH * 2 + 64];
  GetModuleFileNameW(NULL, cmd + 1, MAX_PATH * 2);
  cmd[0] = L'"';
  swprintf(cmd + wcslen(cmd), 64, L"\" --child=flood %u", mib << 20);
  STARTUPINFOW si = {.cb = sizeof si, .dwFlags = STARTF_USESTDHANDLES};
  si.hStdOutput = si.hStdError = wr;
  PROCESS_INFORMATION pi;
  QueryPerformanceCounter(&t0);
  if (!CreateProcessW(NULL, cmd, NULL, NULL, TRUE, 0, NULL, NULL, &si, &pi)) abort();
  CloseHandle(wr);
  static uint8_t buf[65536];
  size_t total = 0;
  for (DWORD n; ReadFile(rd, buf, sizeof buf, &n, NULL) && n;) total += n;
  WaitForSingleObject(pi.hProcess, INFINITE);
  double t_plain = secs_since(t0);
  CloseHandle(rd);
  CloseHandle(pi.hThread);
  CloseHandle(pi.hProcess);
  assert_int_equal(total, (size_t)mib << 20);
  printf("throughput (%u MiB, child start included): proc %.0f MB/s, plain ReadFile %.0f MB/s\n",
         mib, (double)(mib << 20) / 1e6 / t_proc, (double)(mib << 20) / 1e6 / t_plain);
}

int main(int argc, char **argv) {
  g_wine = GetProcAddress(GetModuleHandleA("ntdll.dll"), "wine_get_version") != NULL;
  if (argc >= 2 && strncmp(argv[1], "--child=", 8) == 0) return child_main(argv[1] + 8, argv + 2);
  wchar_t self[MAX_PATH * 2];
  DWORD n = GetModuleFileNameW(NULL, self, MAX_PATH * 2);
  if (n == 0 || n >= MAX_PATH * 2 ||
      !WideCharToMultiByte(CP_UTF8, 0, self, -1, g_self, sizeof g_self, NULL, NULL))
    return 1;
  if (compat_net_init() < 0) return 1;
  DWORD pids[1];
  g_ctrl_events = !g_wine && GetConsoleProcessList(pids, 1) > 0;
  if (argc >= 2 && strcmp(argv[1], "--bench") == 0) {
    bench_start_rate(argc >= 3 ? atoi(argv[2]) : 100);
    bench_throughput(argc >= 4 ? (unsigned)atoi(argv[3]) : 64);
    return 0;
  }
  if (!g_ctrl_events)
    fprintf(stderr, "console events cannot reach children here%s\n",
            g_wine ? " (Wine)" : " (no console)");
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_exit_codes),
      cmocka_unit_test(test_output),
      cmocka_unit_test(test_backpressure),
      cmocka_unit_test(test_spawn_errors),
      cmocka_unit_test(test_path_lookup),
      cmocka_unit_test(test_argv),
      cmocka_unit_test(test_env),
      cmocka_unit_test(test_cwd),
      cmocka_unit_test(test_fds),
      cmocka_unit_test(test_progress_pipe),
      cmocka_unit_test(test_inputs),
      cmocka_unit_test(test_kill),
      cmocka_unit_test(test_terminate),
      cmocka_unit_test(test_terminate_ignored),
      cmocka_unit_test(test_orphan),
      cmocka_unit_test(test_job_killed_when_done),
      cmocka_unit_test(test_terminate_tree),
      cmocka_unit_test(test_usage),
      cmocka_unit_test(test_memory_max),
      cmocka_unit_test(test_free_running),
      cmocka_unit_test(test_free_in_output),
      cmocka_unit_test(test_free_in_exit),
      cmocka_unit_test(test_start_ticks),
      cmocka_unit_test(test_concurrent),
  };
  int rc = cmocka_run_group_tests_name("test_proc_win", tests, NULL, NULL);
  libevent_global_shutdown();
  return rc;
}
