/* sdnotify: tells the service manager how the server is doing (systemd's Type=notify):
 * READY=1 once it serves, RELOADING=1 and READY=1 around a reload, STOPPING=1 when its
 * shutdown begins, with an optional STATUS= line for `systemctl status`.
 *
 * The protocol is sd_notify(3)'s: each message is one datagram of newline-separated
 * KEY=VALUE assignments, sent to the AF_UNIX socket named by the environment variable
 * NOTIFY_SOCKET, an absolute path or "@name" for an abstract socket (sd_notify(3),
 * NOTES; the socket is part of systemd's interface stability promise). It is
 * hand-written: libsystemd is not one of the project's dependencies, and the protocol
 * is one sendto(2) of a small datagram.
 *
 * Notifying never fails the server and never blocks it: a message that cannot be sent
 * is dropped, and the first such failure is logged (common/log.h). Without
 * NOTIFY_SOCKET there is nothing to notify, and nothing is done. The runs never see
 * the variable (they do not inherit the server's environment: scheduler.c), nor the
 * socket (close-on-exec).
 *
 * Single-threaded: the loop's thread. */
#ifndef PRISMQ_SDNOTIFY_H
#define PRISMQ_SDNOTIFY_H

#include <signal.h>
#include <stddef.h>

#include "compat.h"

typedef struct sdnotify sdnotify;

/* Reads NOTIFY_SOCKET and opens a non-blocking, close-on-exec datagram socket to send
 * to it. Sets *out to the notifier (free with sdnotify_free), or to NULL when
 * NOTIFY_SOCKET is unset or empty: every function below accepts NULL and then does
 * nothing. Returns 0; or -EINVAL (NOTIFY_SOCKET is neither an absolute path nor
 * "@name", or too long for a socket address) or the negative errno of socket(2), with
 * err saying why, and *out untouched: the caller says so and goes on without. */
int sdnotify_new(sdnotify **out, char *err, size_t errlen);

/* Sends one message: `fmt` and its arguments, printf-style, giving the assignments,
 * e.g. sdnotify_send(n, "READY=1\nSTATUS=%s", text). A STATUS value must not hold a
 * newline (it would end the assignment). The message is dropped if it cannot be sent
 * at once (no listener, a full queue) or is longer than 1023 bytes; only the first
 * failure is logged. */
void sdnotify_send(sdnotify *n, const char *fmt, ...) COMPAT_PRINTF(2, 3);

/* Sends RELOADING=1 with MONOTONIC_USEC (CLOCK_MONOTONIC now, in microseconds), which
 * systemd uses to tell this reload from an earlier one, and `status` as STATUS= when
 * it is not NULL. Follow it with READY=1 once the reload is done, applied or not. */
void sdnotify_reloading(sdnotify *n, const char *status);

/* Closes the socket and frees. Accepts NULL. */
void sdnotify_free(sdnotify *n);

/* The signals the server stops and reloads its configuration on. Windows has no SIGHUP,
 * and nothing there sends SIGTERM: the stop is Ctrl-Break's SIGBREAK (what the service's
 * Stop raises too) and the reload the service's PARAMCHANGE control, which raises
 * SIGTERM (sdnotify_service). */
#ifdef _WIN32
#define SDNOTIFY_STOP_SIGNAL   SIGBREAK
#define SDNOTIFY_RELOAD_SIGNAL SIGTERM
#else
#define SDNOTIFY_STOP_SIGNAL   SIGTERM
#define SDNOTIFY_RELOAD_SIGNAL SIGHUP
#endif

#ifdef _WIN32
/* Windows: runs fn(argc, argv) as the service the service control manager started (the
 * service's command line is `prismqd --service ...`, argv here without --service),
 * on the SCM's service thread. While it runs, sdnotify_new's notifier tells the SCM what
 * systemd would be told (READY=1: running; STOPPING=1: stop pending; RELOADING=1: the
 * same, running), the SCM's Stop and the system's shutdown raise SDNOTIFY_STOP_SIGNAL,
 * and its PARAMCHANGE SDNOTIFY_RELOAD_SIGNAL. The service stops
 * with fn's status. Returns that status, or 1 when the process was not started by the
 * SCM (said on stderr). */
int sdnotify_service(int argc, char **argv, int (*fn)(int argc, char **argv));
#endif

#endif
