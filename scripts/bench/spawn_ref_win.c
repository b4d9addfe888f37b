/* spawn_ref_win: the plain-Windows baselines of the Wine benchmarks (wine_bench.py), what
 * spawn_ref and a raw pipe are on Linux: what a process start and a pipe cost under the
 * same Wine, without a server.
 *
 *   spawn_ref_win rate N INFLIGHT
 *       starts "spawn_ref_win true" N times, INFLIGHT at once (one thread each, starting
 *       the next as soon as its child has been waited for): CreateProcessW with stdout
 *       and stderr on two pipes, both read to EOF, then WaitForSingleObject and the exit
 *       code; prints {"runs":N,"seconds":S,"runs_per_s":R,"failed":F}
 *   spawn_ref_win pipe BYTES
 *       starts "spawn_ref_win emit BYTES" with stdout on a pipe and reads it to EOF
 *       (ReadFile, 64 KiB at a time); prints {"bytes":B,"seconds":S,"bytes_per_s":R,"ok":0|1}
 *   spawn_ref_win true          exits 0
 *   spawn_ref_win emit BYTES    writes BYTES zero bytes on stdout, 64 KiB at a time
 *
 * Exits 0 when no run failed, 1 otherwise, 2 on usage or set-up errors. Built by
 * scripts/bench/run.sh with mingw-w64. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <windows.h>

#define CHUNK       (64u << 10)
#define MAX_THREADS 64

static wchar_t self[MAX_PATH];

static void die(const char *what) {
  fprintf(stderr, "spawn_ref_win: %s failed: error %lu\n", what, (unsigned long)GetLastError());
  exit(2);
}

static double now_s(void) {
  LARGE_INTEGER f, c;
  QueryPerformanceFrequency(&f);
  QueryPerformanceCounter(&c);
  return (double)c.QuadPart / (double)f.QuadPart;
}

/* Starts "self ARGS" with stdout (and stderr, when err is not NULL) on new pipes whose
 * read ends it returns. */
static HANDLE start(const wchar_t *args, HANDLE *out, HANDLE *err) {
  SECURITY_ATTRIBUTES sa = {sizeof sa, NULL, TRUE};
  HANDLE ow, ew = NULL;
  if (!CreatePipe(out, &ow, &sa, CHUNK)) die("CreatePipe");
  SetHandleInformation(*out, HANDLE_FLAG_INHERIT, 0);
  if (err) {
    if (!CreatePipe(err, &ew, &sa, CHUNK)) die("CreatePipe");
    SetHandleInformation(*err, HANDLE_FLAG_INHERIT, 0);
  }
  wchar_t cmd[2 * MAX_PATH];
  _snwprintf(cmd, sizeof cmd / sizeof cmd[0], L"\"%ls\" %ls", self, args);
  STARTUPINFOW si = {.cb = sizeof si, .dwFlags = STARTF_USESTDHANDLES};
  si.hStdInput = INVALID_HANDLE_VALUE;
  si.hStdOutput = ow;
  si.hStdError = err ? ew : ow;
  PROCESS_INFORMATION pi;
  if (!CreateProcessW(NULL, cmd, NULL, NULL, TRUE, 0, NULL, NULL, &si, &pi)) die("CreateProcessW");
  CloseHandle(pi.hThread);
  CloseHandle(ow);
  if (ew) CloseHandle(ew);
  return pi.hProcess;
}

/* Reads h to EOF, closes it; returns the bytes read. */
static uint64_t drain(HANDLE h, char *buf) {
  uint64_t total = 0;
  DWORD n;
  while (ReadFile(h, buf, CHUNK, &n, NULL) && n > 0) total += n;
  CloseHandle(h);
  return total;
}

static int wait_ok(HANDLE proc) {
  DWORD code = 1;
  WaitForSingleObject(proc, INFINITE);
  GetExitCodeProcess(proc, &code);
  CloseHandle(proc);
  return code == 0;
}

static volatile LONG left, failed;

static DWORD WINAPI starter(void *arg) {
  (void)arg;
  char *buf = malloc(CHUNK);
  if (!buf) die("malloc");
  while (InterlockedDecrement(&left) >= 0) {
    HANDLE out, err, p = start(L"true", &out, &err);
    drain(out, buf);
    drain(err, buf);
    if (!wait_ok(p)) InterlockedIncrement(&failed);
  }
  free(buf);
  return 0;
}

static int rate(long n, int inflight) {
  HANDLE t[MAX_THREADS];
  left = n;
  double t0 = now_s();
  for (int i = 0; i < inflight; i++)
    if (!(t[i] = CreateThread(NULL, 0, starter, NULL, 0, NULL))) die("CreateThread");
  WaitForMultipleObjects((DWORD)inflight, t, TRUE, INFINITE);
  double s = now_s() - t0;
  printf("{\"runs\":%ld,\"seconds\":%.3f,\"runs_per_s\":%.1f,\"failed\":%ld}\n", n, s, n / s,
         (long)failed);
  return failed ? 1 : 0;
}

static int pipe_copy(unsigned long long bytes) {
  char *buf = malloc(CHUNK);
  wchar_t args[64];
  if (!buf) die("malloc");
  _snwprintf(args, sizeof args / sizeof args[0], L"emit %llu", bytes);
  double t0 = now_s();
  HANDLE out, p = start(args, &out, NULL);
  uint64_t got = drain(out, buf);
  int ok = wait_ok(p) && got == bytes;
  double s = now_s() - t0;
  printf("{\"bytes\":%llu,\"seconds\":%.3f,\"bytes_per_s\":%.0f,\"ok\":%d}\n",
         (unsigned long long)got, s, (double)got / s, ok);
  free(buf);
  return ok ? 0 : 1;
}

static int emit(unsigned long long bytes) {
  char *buf = calloc(1, CHUNK);
  HANDLE h = GetStdHandle(STD_OUTPUT_HANDLE);
  if (!buf) return 2;
  while (bytes > 0) {
    DWORD w, n = bytes < CHUNK ? (DWORD)bytes : CHUNK;
    if (!WriteFile(h, buf, n, &w, NULL)) return 1;
    bytes -= w;
  }
  free(buf);
  return 0;
}

int main(int argc, char **argv) {
  if (!GetModuleFileNameW(NULL, self, MAX_PATH)) die("GetModuleFileNameW");
  if (argc == 2 && !strcmp(argv[1], "true")) return 0;
  if (argc == 3 && !strcmp(argv[1], "emit")) return emit(strtoull(argv[2], NULL, 10));
  if (argc == 3 && !strcmp(argv[1], "pipe")) return pipe_copy(strtoull(argv[2], NULL, 10));
  if (argc == 4 && !strcmp(argv[1], "rate")) {
    int inflight = atoi(argv[3]);
    if (inflight < 1 || inflight > MAX_THREADS) inflight = 1;
    return rate(atol(argv[2]), inflight);
  }
  fprintf(stderr, "usage: spawn_ref_win rate N INFLIGHT | pipe BYTES | true | emit BYTES\n");
  return 2;
}
