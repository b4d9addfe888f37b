/* wchild: the program the Wine tests (test_wine.py) have prismqd.exe run, doing what a
 * test asks of it, named by its first argument:
 *   lines N MS    prints "line 1".."line N" on stdout, one every MS ms, then exits 0;
 *   exit CODE     prints "exiting CODE" on stderr, then exits with CODE;
 *   say TEXT      prints TEXT and a newline on stdout, then exits 0;
 *   paramchange SERVICE
 *                 sends the service SERVICE the control SERVICE_CONTROL_PARAMCHANGE (what
 *                 Wine's sc.exe cannot), exits 0 when it was accepted;
 *   tree MARK     starts "wchild sleep MARK" (which inherits stdout and stderr), prints
 *                 "grandchild started", then sleeps until killed;
 *   sleep MARK    sleeps until killed (MARK names it in the process list);
 *   stubborn      ignores Ctrl-C and Ctrl-Break, prints "ready", sleeps until killed;
 *   polite        exits 7 on Ctrl-Break, saying "got break" on stdout; prints "ready"
 *                 first and sleeps until then. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <windows.h>

static void say(FILE *f, const char *s) {
  fputs(s, f);
  fputc('\n', f);
  fflush(f);
}

static BOOL WINAPI ignore_all(DWORD type) {
  (void)type;
  return TRUE;
}

static BOOL WINAPI on_break(DWORD type) {
  if (type != CTRL_BREAK_EVENT) return FALSE;
  say(stdout, "got break");
  ExitProcess(7);
}

static int paramchange(const char *name) {
  SC_HANDLE scm = OpenSCManagerA(NULL, NULL, SC_MANAGER_CONNECT);
  SC_HANDLE svc = scm ? OpenServiceA(scm, name, SERVICE_PAUSE_CONTINUE) : NULL;
  SERVICE_STATUS st;
  int ok = svc && ControlService(svc, SERVICE_CONTROL_PARAMCHANGE, &st);
  if (!ok) fprintf(stderr, "wchild: paramchange %s: error %lu\n", name, GetLastError());
  if (svc) CloseServiceHandle(svc);
  if (scm) CloseServiceHandle(scm);
  return ok ? 0 : 1;
}

static int start_grandchild(const char *mark) {
  char self[MAX_PATH], cmd[2 * MAX_PATH + 64];
  if (!GetModuleFileNameA(NULL, self, sizeof self)) return -1;
  snprintf(cmd, sizeof cmd, "\"%s\" sleep %s", self, mark);
  STARTUPINFOA si = {.cb = sizeof si};
  PROCESS_INFORMATION pi;
  if (!CreateProcessA(NULL, cmd, NULL, NULL, TRUE, 0, NULL, NULL, &si, &pi)) return -1;
  CloseHandle(pi.hThread);
  CloseHandle(pi.hProcess);
  return 0;
}

int main(int argc, char **argv) {
  const char *role = argc > 1 ? argv[1] : "";
  if (!strcmp(role, "lines") && argc == 4) {
    int n = atoi(argv[2]), ms = atoi(argv[3]);
    for (int i = 1; i <= n; i++) {
      printf("line %d\n", i);
      fflush(stdout);
      if (ms) Sleep((DWORD)ms);
    }
    return 0;
  }
  if (!strcmp(role, "paramchange") && argc == 3) return paramchange(argv[2]);
  if (!strcmp(role, "say") && argc == 3) {
    say(stdout, argv[2]);
    return 0;
  }
  if (!strcmp(role, "exit") && argc == 3) {
    fprintf(stderr, "exiting %s\n", argv[2]);
    return atoi(argv[2]);
  }
  if (!strcmp(role, "tree") && argc == 3) {
    if (start_grandchild(argv[2]) < 0) return 100;
    say(stdout, "grandchild started");
  } else if (!strcmp(role, "stubborn")) {
    SetConsoleCtrlHandler(ignore_all, TRUE);
    say(stdout, "ready");
  } else if (!strcmp(role, "polite")) {
    SetConsoleCtrlHandler(on_break, TRUE);
    say(stdout, "ready");
  } else if (strcmp(role, "sleep") != 0) {
    fprintf(stderr, "wchild: unknown role %s\n", role);
    return 2;
  }
  Sleep(INFINITE);
  return 0;
}
