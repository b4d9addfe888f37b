/* sdnotify on Windows: the service manager there is the service control manager (SCM).
 * Run as a service (prismqd --service, sdnotify_service), what systemd would be told
 * becomes the service's status: READY=1 SERVICE_RUNNING, STOPPING=1
 * SERVICE_STOP_PENDING; the SCM's Stop (and the system's shutdown) becomes SIGBREAK,
 * prismqd's graceful stop, its PARAMCHANGE SIGTERM, the reload, and the service stops
 * with the server's exit status. Not run
 * as a service, there is nothing to tell and every function does nothing. */
#include "sdnotify.h"

#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <windows.h>

/* Only the SCM's dispatcher thread (the control handler) and the loop's thread (the
 * notifier) use these; SetServiceStatus may be called from either. */
static SERVICE_STATUS_HANDLE g_handle;
static int (*g_fn)(int argc, char **argv);
static int g_argc;
static char **g_argv;
static int g_status;

/* The notifier sdnotify_new hands out when run as a service: a token, not an object. */
struct sdnotify {
  char unused;
};
static sdnotify g_notifier;

static void report(DWORD state, DWORD exit_code) {
  SERVICE_STATUS st = {.dwServiceType = SERVICE_WIN32_OWN_PROCESS, .dwCurrentState = state};
  if (state == SERVICE_RUNNING)
    st.dwControlsAccepted =
        SERVICE_ACCEPT_STOP | SERVICE_ACCEPT_SHUTDOWN | SERVICE_ACCEPT_PARAMCHANGE;
  if (exit_code) {
    st.dwWin32ExitCode = ERROR_SERVICE_SPECIFIC_ERROR;
    st.dwServiceSpecificExitCode = exit_code;
  }
  /* Pending states promise the next report within this long. */
  if (state == SERVICE_START_PENDING || state == SERVICE_STOP_PENDING) st.dwWaitHint = 60000;
  SetServiceStatus(g_handle, &st);
}

/* On the dispatcher thread: a stop or a reload is a signal raised here, whose handler
 * (libevent's, main.c's open_events) wakes the loop. */
static DWORD WINAPI control(DWORD ctl, DWORD type, void *data, void *ctx) {
  (void)type;
  (void)data;
  (void)ctx;
  switch (ctl) {
  case SERVICE_CONTROL_STOP:
  case SERVICE_CONTROL_SHUTDOWN:
    report(SERVICE_STOP_PENDING, 0);
    raise(SDNOTIFY_STOP_SIGNAL);
    return NO_ERROR;
  case SERVICE_CONTROL_PARAMCHANGE: raise(SDNOTIFY_RELOAD_SIGNAL); return NO_ERROR;
  case SERVICE_CONTROL_INTERROGATE: return NO_ERROR;
  default: return ERROR_CALL_NOT_IMPLEMENTED;
  }
}

static void WINAPI service_main(DWORD argc, wchar_t **argv) {
  (void)argc;
  (void)argv; /* the service's own command line (g_argv) is what counts */
  g_handle = RegisterServiceCtrlHandlerExW(L"", control, NULL);
  if (!g_handle) {
    g_status = 1;
    return;
  }
  report(SERVICE_START_PENDING, 0);
  g_status = g_fn(g_argc, g_argv);
  report(SERVICE_STOPPED, (DWORD)g_status);
}

int sdnotify_service(int argc, char **argv, int (*fn)(int argc, char **argv)) {
  wchar_t name[] = L"";
  SERVICE_TABLE_ENTRYW table[] = {{name, service_main}, {NULL, NULL}};
  g_fn = fn;
  g_argc = argc;
  g_argv = argv;
  if (!StartServiceCtrlDispatcherW(table)) {
    fprintf(stderr, "prismqd: --service: not started by the service control manager (error %lu)\n",
            (unsigned long)GetLastError());
    return 1;
  }
  return g_status;
}

int sdnotify_new(sdnotify **out, char *err, size_t errlen) {
  (void)err;
  (void)errlen;
  *out = g_handle ? &g_notifier : NULL;
  return 0;
}

void sdnotify_send(sdnotify *n, const char *fmt, ...) {
  char msg[1024];
  va_list ap;
  if (!n) return;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (strstr(msg, "STOPPING=1"))
    report(SERVICE_STOP_PENDING, 0);
  else if (strstr(msg, "READY=1"))
    report(SERVICE_RUNNING, 0);
}

/* The SCM has no state for a reload: the service stays RUNNING through it. */
void sdnotify_reloading(sdnotify *n, const char *status) {
  (void)n;
  (void)status;
}

void sdnotify_free(sdnotify *n) { (void)n; }
