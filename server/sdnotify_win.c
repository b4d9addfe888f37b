/* sdnotify on Windows: there is no systemd, hence no NOTIFY_SOCKET to tell. A Windows
 * service's state is the service control manager's (docs/windows.md), not this module's;
 * every function does what sdnotify.h says it does without NOTIFY_SOCKET: nothing. */
#include "sdnotify.h"

int sdnotify_new(sdnotify **out, char *err, size_t errlen) {
  (void)err;
  (void)errlen;
  *out = NULL;
  return 0;
}

void sdnotify_send(sdnotify *n, const char *fmt, ...) {
  (void)n;
  (void)fmt;
}

void sdnotify_reloading(sdnotify *n, const char *status) {
  (void)n;
  (void)status;
}

void sdnotify_free(sdnotify *n) { (void)n; }
