/* prismqd: the PrismQ Runner server. Parses the command line, builds the layers
 * (listeners → call layer → services) on one event loop and runs it until SIGTERM or
 * SIGINT, then shuts down gracefully. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#ifndef _WIN32
#include <malloc.h>
#include <sys/resource.h>
#endif

#include <event2/event.h>

#include "admin.h"
#include "authz.h"
#include "call.h"
#include "cgroup.h"
#include "compat.h"
#include "config.h"
#include "front.h"
#include "health.h"
#include "log.h"
#include "metrics.h"
#include "prismq_descriptors.h"
#include "prismq_version.h"
#include "procstat.h"
#include "reflection.h"
#include "retention.h"
#include "runner.h"
#include "runtab.h"
#include "scheduler.h"
#include "sdnotify.h"

#define MAX_LISTEN     16
#define RUNNER_SERVICE "prismq.runner.v1.Runner"
/* A graceful shutdown ends this long after its runs' grace (shutdown.grace_ms, then
 * the cancel's own SIGTERM-to-SIGKILL grace), whatever is left. */
#define SHUTDOWN_MARGIN_MS 5000
/* Allocations from this size on come from mmap; free heap beyond this at its top is
 * given back (see main). */
#define MALLOC_MMAP_MIN (4 << 20)
#define MALLOC_TRIM_MIN (16 << 20)
/* The soft RLIMIT_NOFILE we raise to, at most. */
#define NOFILE_MAX 65536

struct server {
  struct event_base *base;
  config *cfg;
  runtab *rt;
  cgroup_root *cg;
  sched *sch;
  retention *ret;
  call_server *calls;
  health *health;
  runner *runner;
  admin *admin;
  reflection *reflection;
  metrics *metrics; /* every figure /metrics shows */
  front *front;
  sdnotify *notify; /* systemd's readiness protocol; NULL when not run by it */
  struct event *sigterm, *sigint, *sighup;
  struct event *log_flush;   /* writes the log lines of one pass of the loop together */
  struct event *table_check; /* health: whether the run table can be written */
  const struct cmdline *cl;  /* for SIGHUP's reload */
  int table_ok;
  int stopping;
  int calls_idle, runs_idle;
};

/* What the command line asks for. */
struct cmdline {
  const char *listen_urls[MAX_LISTEN];
  size_t nlisten;
  int nlisten_given; /* --listen replaces the configuration's, also after a reload */
  const char *level, *config_path, *data_dir, *log_file;
  const char *tls_cert, *tls_key, *tls_client_ca; /* replace the config's tls: files */
};

static void usage(FILE *f) {
  fprintf(
      f,
      "usage: prismqd [--config FILE] [--listen URL]... [--data-dir DIR] [--log-level LEVEL]\n"
      "               [--log-file FILE] [--tls-cert FILE --tls-key FILE [--tls-client-ca FILE]]\n"
#ifdef _WIN32
      "       prismqd --service [OPTION]...   (as a Windows service)\n"
#endif
      "       prismqd --version\n"
      "  --config FILE     YAML configuration (default: the built-in demo configuration)\n"
      "  --listen URL      tcp://HOST:PORT, tls://HOST:PORT, unix:///path, unix-abstract:NAME\n"
      "                    (repeatable; replaces the config's)\n"
      "  --data-dir DIR    where runs.db and run output go (replaces the config's)\n"
      "  --log-level L     DEBUG, INFO, WARNING or ERROR (default: env LOG_LEVEL, else INFO)\n"
      "  --log-file FILE   append the log to FILE instead of writing it on stderr\n"
      "  --tls-cert FILE, --tls-key FILE, --tls-client-ca FILE\n"
      "                    replace the config's tls.cert, tls.key, tls.client_ca\n"
      "  --version         print the version and the git commit built from, and exit\n"
      "environment: LOG_LEVEL, PRISMQ_RUN_MODE=async|threaded|dry-run\n");
}

/* Parses argv into *cl. Returns -1 to go on, else the exit status. */
static int parse_cmdline(struct cmdline *cl, int argc, char **argv) {
  static const struct option longopts[] = {
      {"config", required_argument, NULL, 'c'},
      {"data-dir", required_argument, NULL, 'd'},
      {"listen", required_argument, NULL, 'l'},
      {"log-level", required_argument, NULL, 'L'},
      {"log-file", required_argument, NULL, 'F'},
      {"tls-cert", required_argument, NULL, 'C'},
      {"tls-key", required_argument, NULL, 'K'},
      {"tls-client-ca", required_argument, NULL, 'A'},
      {"help", no_argument, NULL, 'h'},
      {"version", no_argument, NULL, 'V'},
      {NULL, 0, NULL, 0},
  };
  for (int ch; (ch = getopt_long(argc, argv, "h", longopts, NULL)) != -1;) {
    switch (ch) {
    case 'l':
      if (cl->nlisten == MAX_LISTEN) {
        fprintf(stderr, "prismqd: at most %d --listen\n", MAX_LISTEN);
        return 2;
      }
      cl->listen_urls[cl->nlisten++] = optarg;
      break;
    case 'L': cl->level = optarg; break;
    case 'F': cl->log_file = optarg; break;
    case 'c': cl->config_path = optarg; break;
    case 'd': cl->data_dir = optarg; break;
    case 'C': cl->tls_cert = optarg; break;
    case 'K': cl->tls_key = optarg; break;
    case 'A': cl->tls_client_ca = optarg; break;
    case 'h': usage(stdout); return 0;
    case 'V': printf("prismqd %s (commit %s)\n", PRISMQ_VERSION, PRISMQ_COMMIT); return 0;
    default: usage(stderr); return 2;
    }
  }
  if (optind < argc) {
    fprintf(stderr, "prismqd: unexpected argument %s\n", argv[optind]);
    usage(stderr);
    return 2;
  }
  return -1;
}

/* --log-file: the log, and whatever else the server says on stderr, appended to the file
 * instead (a Windows service, for one, has no stderr). Returns -1 to go on, else the
 * exit status after saying why on stderr. */
static int open_log_file(const char *path) {
  int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
  if (fd < 0 || dup2(fd, 2) < 0) {
    fprintf(stderr, "prismqd: --log-file %s: %s\n", path, strerror(errno));
    if (fd >= 0) close(fd);
    return 2;
  }
  if (fd != 2) close(fd);
  return -1;
}

/* A file named on the command line replaces the configuration's. */
static void override_str(char **field, const char *value) {
  if (!value) return;
  free(*field);
  *field = strdup(value);
  if (!*field) abort();
}

/* Loads the configuration and applies the command line's replacements to it.
 * Returns 0, or a negative errno with err saying why. */
static int load_config(config **out, const struct cmdline *cl, char *err, size_t errlen) {
  int rc = cl->config_path
               ? config_load_file(out, cl->config_path, err, errlen)
               : config_load_string(out, config_default_yaml, strlen(config_default_yaml),
                                    "built-in config", err, errlen);
  if (rc < 0) return rc;
  config *cfg = *out;
  override_str(&cfg->tls.cert, cl->tls_cert);
  override_str(&cfg->tls.key, cl->tls_key);
  override_str(&cfg->tls.client_ca, cl->tls_client_ca);
  if (cl->tls_cert || cl->tls_key || cl->tls_client_ca) cfg->has_tls = 1;
  return 0;
}

/* The loop ends once both the calls and the runs are done. */
static void maybe_exit(struct server *srv) {
  if (srv->calls_idle && srv->runs_idle) event_base_loopexit(srv->base, NULL);
}

static void on_calls_idle(void *arg) {
  struct server *srv = arg;
  srv->calls_idle = 1;
  maybe_exit(srv);
}

static void on_runs_idle(void *arg) {
  struct server *srv = arg;
  srv->runs_idle = 1;
  maybe_exit(srv);
}

/* The drain proper, from the loop's next pass: the NOT_SERVING that health watchers
 * were just sent has gone out by then, ahead of the end of their streams. */
static void begin_drain(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  struct server *srv = arg;
  const config_shutdown *sd = &srv->cfg->shutdown;
  /* Running runs finish (shutdown.runs: wait) or end as a cancel does (terminate,
   * wait, kill), so that no process outlives the server; queued runs stay queued for
   * the next start. Unary calls may finish meanwhile (a WaitRun sees its run end);
   * streams end at once. */
  uint32_t runs_ms = (sd->cancel_runs ? 0 : sd->grace_ms) + SCHED_DEFAULT_GRACE_MS;
  call_server_shutdown(srv->calls, runs_ms, on_calls_idle, srv);
  sched_shutdown(srv->sch, sd->cancel_runs, sd->grace_ms, on_runs_idle, srv);
  uint64_t limit_ms = (uint64_t)runs_ms + SHUTDOWN_MARGIN_MS;
  struct timeval limit = compat_timeout_ms(limit_ms);
  event_base_loopexit(srv->base, &limit);
}

static void on_signal(evutil_socket_t sig, short what, void *arg) {
  (void)what;
  struct server *srv = arg;
  if (srv->stopping) {
    LOG_WARN("second signal %d: stopping now", (int)sig);
    event_base_loopexit(srv->base, NULL);
    return;
  }
  srv->stopping = 1;
  const config_shutdown *sd = &srv->cfg->shutdown;
  LOG_INFO("shutting down on signal %d runs=%s grace_ms=%u", (int)sig,
           sd->cancel_runs ? "cancel" : "wait", sd->grace_ms);
  sdnotify_send(srv->notify, "STOPPING=1\nSTATUS=shutting down (runs: %s, grace_ms: %u)",
                sd->cancel_runs ? "cancel" : "wait", sd->grace_ms);
  health_set(srv->health, NULL, 0);
  front_close(srv->front);
  static const struct timeval now = {0, 0};
  if (event_base_once(srv->base, -1, EV_TIMEOUT, begin_drain, srv, &now) < 0)
    begin_drain(-1, 0, srv);
}

/* READY=1, with what is served for `systemctl status`, and `note` after it. */
static void notify_ready(struct server *srv, const char *note) {
  sdnotify_send(srv->notify, "READY=1\nSTATUS=serving %zu modules%s", srv->cfg->nmodules, note);
}

/* Whether two optional strings are equal (both NULL counts). */
static int same_str(const char *a, const char *b) { return a == b || (a && b && !strcmp(a, b)); }

/* Settings read only at start-up: a reload that changes them says so. */
static void warn_restart_only(const config *old, const config *fresh) {
  const config_limits *a = &old->limits, *b = &fresh->limits;
  if (strcmp(old->data_dir, fresh->data_dir) != 0 ||
      strcmp(old->cgroup_root, fresh->cgroup_root) != 0 ||
      a->max_streams_per_connection != b->max_streams_per_connection ||
      a->max_header_list_bytes != b->max_header_list_bytes ||
      a->max_message_bytes != b->max_message_bytes || a->idle_timeout_ms != b->idle_timeout_ms)
    LOG_WARN(
        "configuration reload: data_dir, cgroups and the per-connection limits (streams, headers, "
        "message size, idle timeout) change only at a restart");
  const config_slurm *x = &old->slurm, *y = &fresh->slurm;
  if (!same_str(x->spool_dir, y->spool_dir) || !same_str(x->bin_dir, y->bin_dir) ||
      x->poll_interval_ms != y->poll_interval_ms)
    LOG_WARN(
        "configuration reload: slurm.spool_dir, bin_dir and poll_interval are read at the "
        "first Slurm run and change only at a restart (slurm.max_jobs applies now)");
}

/* SIGHUP's reload: the configuration file is read again. If it is valid, it becomes
 * the current snapshot: new runs, ListModules and authorization use it at once,
 * listeners are added and removed, certificates are reloaded (open connections keep
 * theirs), and runs already taken keep the snapshot they were taken under. If not, the
 * old one stays. Returns 0 if the new one applies, -1 if the old one stays. */
static int reload_config(struct server *srv) {
  char err[512];
  config *fresh = NULL;
  if (load_config(&fresh, srv->cl, err, sizeof err) < 0) {
    LOG_ERROR("configuration reload failed, keeping the current one: %s", err);
    return -1;
  }
  const struct cmdline *cl = srv->cl;
  const char *const *urls =
      cl->nlisten_given ? cl->listen_urls : (const char *const *)fresh->listen;
  size_t nurls = cl->nlisten_given ? cl->nlisten : fresh->nlisten;
  if (front_reload(srv->front, fresh, urls, nurls, err, sizeof err) < 0 ||
      sched_set_config(srv->sch, fresh, err, sizeof err) < 0) {
    LOG_ERROR("configuration reload failed, keeping the current one: %s", err);
    config_free(fresh);
    return -1;
  }
  warn_restart_only(srv->cfg, fresh);
  config_free(srv->cfg);
  srv->cfg = fresh;
  LOG_INFO("configuration reloaded modules=%zu listeners=%zu", fresh->nmodules, nurls);
  return 0;
}

/* The service manager (systemctl reload) waits from RELOADING=1 to READY=1, which
 * comes once the reload is done, whether it applied or not. */
static void on_sighup(evutil_socket_t sig, short what, void *arg) {
  (void)sig;
  (void)what;
  struct server *srv = arg;
  if (srv->stopping) return;
  sdnotify_reloading(srv->notify, "reloading the configuration");
  int rc = reload_config(srv);
  notify_ready(srv, rc == 0 ? "" : "; the last reload was refused, see the log");
}

/* The call layer's authorization: what the current configuration's authz section grants. */
/* GetStats's counters: the Runner's, and the connections the front holds beside the
 * call layer's (there is no front before the listeners open). */
static void server_counters(admin_counters *out, void *arg) {
  struct server *srv = arg;
  runner_counters(out, srv->runner);
  out->conns = srv->front ? front_live_conns(srv->front) : 0;
}

/* /metrics: the server's own figures beside the core's, the call layer's and the
 * process's (metrics_open). */
static void server_metrics(void *arg, metrics *m) {
  struct server *srv = arg;
  static const char *const proto[] = {"protocol", NULL};
  metrics_family *conns =
      metrics_family_get(m, METRICS_GAUGE, "prismq_connections",
                         "Client connections open now, by protocol.", proto, NULL, 0);
  const char *h2[] = {"grpc"}, *h1[] = {"http"};
  admin_counters c = {0, 0, 0, 0};
  server_counters(&c, srv);
  metrics_set(metrics_series_get(conns, h2), (double)call_server_live_conns(srv->calls));
  metrics_set(metrics_series_get(conns, h1), (double)c.conns);
  metrics_set(metrics_single(m, METRICS_GAUGE, "prismq_followers",
                             "Calls following a run's output now (gRPC and HTTP)."),
              (double)c.followers);
}

/* The registry, with what is known before the core opens: the build, the process. */
static void metrics_open(struct server *srv) {
  static const char *const build[] = {"version", "commit", NULL};
  metrics_new(&srv->metrics);
  const char *v[] = {PRISMQ_VERSION, PRISMQ_COMMIT};
  metrics_set(
      metrics_series_get(metrics_family_get(srv->metrics, METRICS_GAUGE, "prismq_build_info",
                                            "The prismqd build: always 1.", build, NULL, 0),
                         v),
      1);
  procstat_register(srv->metrics);
  metrics_on_render(srv->metrics, server_metrics, srv);
}

static unsigned peer_roles(void *arg, const conn_peer *p) {
  const struct server *srv = arg;
  return authz_roles(srv->cfg, p->identity, p->local);
}

/* Health follows the run table: a server that cannot record runs is not serving
 * them (while draining, nothing is). */
static void note_table(struct server *srv, int ok) {
  if (ok == srv->table_ok) return;
  srv->table_ok = ok;
  if (ok)
    LOG_INFO("run table writable again");
  else
    LOG_ERROR("run table cannot be written: health NOT_SERVING until it can");
  if (srv->stopping) return;
  health_set(srv->health, "", ok);
  health_set(srv->health, RUNNER_SERVICE, ok);
}

/* Nothing an answer tells may be lost in a crash after it: the run table's waiting
 * updates (group commit, runtab.h) are committed before any connection sends. */
static int sync_run_table(void *arg) {
  struct server *srv = arg;
  int rc = runtab_sync(srv->rt);
  note_table(srv, runtab_writable(srv->rt));
  return rc;
}

/* Also between sends: a table that fails, or comes back (probed), while nobody calls
 * shows in health within a second. */
static void on_table_check(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  struct server *srv = arg;
  note_table(srv, runtab_probe(srv->rt));
}

static void on_log_flush(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  (void)arg;
  log_flush();
}

static void request_log_flush(void *ev) { event_active(ev, 0, 0); }

/* LOG_LEVEL (or --log-level) and PRISMQ_RUN_MODE. Returns -1 to go on, else the
 * exit status after saying why. */
static int read_environment(const struct cmdline *cl, enum sched_mode *mode) {
  if (cl->level && *cl->level) {
    enum log_level lvl;
    if (log_level_parse(&lvl, cl->level) != 0) {
      fprintf(stderr, "prismqd: bad log level \"%s\" (want DEBUG, INFO, WARNING or ERROR)\n",
              cl->level);
      return 2;
    }
    log_set_level(lvl);
  }
  const char *m = getenv("PRISMQ_RUN_MODE");
  if (sched_mode_parse(mode, m) != 0) {
    fprintf(stderr, "prismqd: bad PRISMQ_RUN_MODE \"%s\" (want async, threaded or dry-run)\n", m);
    return 2;
  }
  return -1;
}

/* What the process needs of its environment before anything starts. Windows has no
 * SIGPIPE or file size limit, its C library's allocator no such thresholds, and its
 * handles no soft limit: nothing to do there. */
static void setup_process(void) {
#ifndef _WIN32
  /* A peer that goes away mid-write must not kill the server. */
  signal(SIGPIPE, SIG_IGN);
  /* Nor a file size limit: a write past it fails with EFBIG, which is handled (the
   * run's output is counted as dropped). Runs get every signal at its default. */
  signal(SIGXFSZ, SIG_IGN);
  /* Output moves through buffers of 64-128 KiB that come and go at the rate of the
   * output. glibc's defaults serve 128 KiB from mmap and hand the top of the heap back
   * once 128 KiB are free there: a munmap or brk per buffer, each a TLB flush on every
   * CPU the process has run on. Fixed limits keep such buffers on the heap and the
   * heap's top. */
  mallopt(M_MMAP_THRESHOLD, MALLOC_MMAP_MIN);
  mallopt(M_TRIM_THRESHOLD, MALLOC_TRIM_MIN);
  /* Connections, runs' pipes and output files all take descriptors: raise the soft
   * limit towards the hard one, but not past NOFILE_MAX, which the runs inherit (some
   * programs loop over every possible descriptor). */
  struct rlimit nofile;
  if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < NOFILE_MAX &&
      nofile.rlim_cur < nofile.rlim_max) {
    nofile.rlim_cur = nofile.rlim_max < NOFILE_MAX ? nofile.rlim_max : NOFILE_MAX;
    setrlimit(RLIMIT_NOFILE, &nofile);
  }
#endif
}

/* Runs in cgroups where the machine allows (cgroups.root); else in process groups,
 * said once, with what that does not cover. */
static void open_cgroups(struct server *srv, const char *data_dir) {
#ifdef _WIN32
  (void)srv;
  (void)data_dir;
  LOG_INFO("runs in Job Objects of their own (Windows has no cgroups; cgroups.root is unused)");
#else
  const char *where = srv->cfg->cgroup_root;
  char err[512];
  if (strcmp(where, "off") == 0) {
    LOG_INFO(
        "cgroups off (cgroups.root: off): runs are process groups; a process that leaves its group "
        "(setsid) escapes cancel, timeout and shutdown");
    return;
  }
  if (cgroup_root_open(&srv->cg, srv->base, where, data_dir, err, sizeof err) < 0) {
    LOG_WARN(
        "no cgroups for runs, using process groups: %s; a process that leaves its group (setsid) "
        "escapes cancel, timeout and shutdown",
        err);
    return;
  }
  unsigned ctl = cgroup_root_controllers(srv->cg);
  LOG_INFO("runs in cgroups under %s memory_controller=%s cpu_controller=%s",
           cgroup_root_path(srv->cg), ctl & CGROUP_MEMORY ? "yes" : "no",
           ctl & CGROUP_CPU ? "yes" : "no");
  for (size_t i = 0; i < srv->cfg->nmodules; i++) {
    const config_module *m = &srv->cfg->modules[i];
    if ((m->memory_max && !(ctl & CGROUP_MEMORY)) || (m->cpu_max_percent && !(ctl & CGROUP_CPU)))
      LOG_WARN(
          "module %s: memory_max/cpu_max not applied, the controller is not available under %s",
          m->id, cgroup_root_path(srv->cg));
  }
#endif
}

/* The loop and the core: the data directory, the run table, the scheduler. Returns 0,
 * or the exit status (1, or 2 for a data directory that cannot be used) after logging
 * why. */
static int open_core(struct server *srv, const char *data_dir, enum sched_mode mode) {
  char err[512], dbpath[4096];
  int rc = compat_net_init(); /* winsock, before the loop makes its socket pairs */
  if (rc < 0) {
    LOG_ERROR("cannot use sockets: %s", compat_strerror(-rc));
    return 1;
  }
  /* Two system calls fewer (docs/performance.md, "The event loop's system calls"):
   * - libevent's default clock (coarse on Linux) rather than EVENT_BASE_FLAG_PRECISE_TIMER,
   *   whose timerfd costs a timerfd_settime per pass of the loop. Every timeout is added
   *   with compat_timeout_ms, which allows for the coarse clock, so none fires early.
   * - epoll changes gathered until the loop next waits: what is disabled and enabled
   *   again in one pass (evhttp's reads and writes, once per request) costs nothing.
   *   libevent warns against it where a descriptor is dup'ed into the same loop; no
   *   descriptor of ours is, and one closed and reused in a pass is handled (a MOD that
   *   finds nothing becomes an ADD). */
  struct event_config *ecfg = event_config_new();
  if (ecfg) {
    event_config_set_flag(ecfg, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
    srv->base = event_base_new_with_config(ecfg);
    event_config_free(ecfg);
  }
  if (!srv->base) {
    LOG_ERROR("cannot create the event loop");
    return 1;
  }
  snprintf(dbpath, sizeof dbpath, "%s/runs.db", data_dir);
  if (sched_init_data_dir(data_dir, err, sizeof err) < 0 ||
      runtab_open(&srv->rt, dbpath, err, sizeof err) < 0) {
    LOG_ERROR("%s", err);
    return 2;
  }
  open_cgroups(srv, data_dir);
  runtab_set_metrics(srv->rt, srv->metrics);
  sched_opts so = SCHED_OPTS_INIT;
  so.metrics = srv->metrics;
  so.cg = srv->cg;
  so.cfg = srv->cfg;
  so.data_dir = data_dir;
  so.mode = mode;
  so.rt = srv->rt;
  if (sched_new(&srv->sch, srv->base, &so, err, sizeof err) < 0) {
    LOG_ERROR("%s", err);
    return 2;
  }
  /* Old runs go by the configuration's retention section, on the wall clock (or one
   * shifted by PRISMQ_TEST_CLOCK_OFFSET_MS, a test hook: see retention.h). */
  retention_opts ro = RETENTION_OPTS_INIT;
  ro.rt = srv->rt;
  ro.data_dir = data_dir;
  ro.limits = srv->cfg->retention;
  rc = retention_new(&srv->ret, srv->base, &ro, err, sizeof err);
  if (rc < 0) {
    LOG_ERROR("%s", err);
    return rc == -EINVAL ? 2 : 1;
  }
  return 0;
}

/* The call layer with the configuration's limits and authorization, and the services
 * on it. Returns 0 or -ENOMEM. */
static int open_services(struct server *srv) {
  const config_limits *lim = &srv->cfg->limits;
  call_server_opts co = CALL_SERVER_OPTS_INIT;
  co.before_send = sync_run_table;
  co.before_send_arg = srv;
  co.max_recv_msg = lim->max_message_bytes;
  co.max_streams = lim->max_streams_per_connection;
  co.max_header_list = lim->max_header_list_bytes;
  co.idle_timeout_ms = lim->idle_timeout_ms;
  co.roles = peer_roles;
  co.roles_arg = srv;
  co.role_name = authz_role_name;
  co.metrics = srv->metrics;
  static const char *const health_services[] = {RUNNER_SERVICE, "prismq.admin.v1.Admin", NULL};
  if (call_server_new(&srv->calls, srv->base, &co) < 0 ||
      health_new(&srv->health, srv->calls, health_services) < 0 ||
      runner_new(&srv->runner, srv->calls, srv->sch) < 0 ||
      admin_new(&srv->admin, srv->calls, server_counters, srv) < 0 ||
      reflection_new(&srv->reflection, srv->calls, prismq_descriptor_set,
                     prismq_descriptor_set_len) < 0)
    return -ENOMEM;
  return 0;
}

/* SIGTERM, SIGINT, SIGHUP, and the event that writes a pass's log lines. Returns 0 or
 * -ENOMEM. On Windows (sdnotify.h): Ctrl-C (SIGINT) and Ctrl-Break or the service's Stop
 * (SIGBREAK) stop, the service's PARAMCHANGE (SIGTERM there) reloads. */
static int open_events(struct server *srv) {
  srv->sigterm = evsignal_new(srv->base, SDNOTIFY_STOP_SIGNAL, on_signal, srv);
  srv->sighup = evsignal_new(srv->base, SDNOTIFY_RELOAD_SIGNAL, on_sighup, srv);
  srv->sigint = evsignal_new(srv->base, SIGINT, on_signal, srv);
  srv->log_flush = event_new(srv->base, -1, 0, on_log_flush, NULL);
  srv->table_check = event_new(srv->base, -1, EV_PERSIST, on_table_check, srv);
  if (!srv->sigterm || !srv->sighup || !srv->sigint || !srv->log_flush || !srv->table_check)
    return -ENOMEM;
  srv->table_ok = 1;
  struct timeval second = compat_timeout_ms(1000);
  evtimer_add(srv->table_check, &second);
  evsignal_add(srv->sigterm, NULL);
  evsignal_add(srv->sighup, NULL);
  evsignal_add(srv->sigint, NULL);
  return 0;
}

/* Frees whatever of the server was built, in reverse order. */
static void server_free(struct server *srv) {
  front_free(srv->front);
  if (srv->sigterm) event_free(srv->sigterm);
  if (srv->sigint) event_free(srv->sigint);
  if (srv->sighup) event_free(srv->sighup);
  if (srv->log_flush) event_free(srv->log_flush);
  if (srv->table_check) event_free(srv->table_check);
  call_server_free(srv->calls);
  health_free(srv->health);
  admin_free(srv->admin);
  reflection_free(srv->reflection);
  runner_free(srv->runner);
  sched_free(srv->sch);
  retention_free(srv->ret);
  cgroup_root_free(srv->cg);
  runtab_free(srv->rt);
  if (srv->base) event_base_free(srv->base);
  sdnotify_free(srv->notify);
  metrics_free(srv->metrics);
  config_free(srv->cfg);
}

/* The server's life, from its command line to its exit status. */
static int server_main(int argc, char **argv) {
  struct cmdline cl = {.level = getenv("LOG_LEVEL")};
  enum sched_mode smode;
  int status = parse_cmdline(&cl, argc, argv);
  if (status < 0 && cl.log_file) status = open_log_file(cl.log_file);
  if (status < 0) status = read_environment(&cl, &smode);
  if (status >= 0) return status;
  struct server srv;
  memset(&srv, 0, sizeof srv);
  char err[512];
  if (load_config(&srv.cfg, &cl, err, sizeof err) < 0) {
    fprintf(stderr, "prismqd: %s\n", err);
    return 2;
  }
  srv.cl = &cl;
  cl.nlisten_given = cl.nlisten > 0;
  if (cl.nlisten == 0)
    for (size_t i = 0; i < srv.cfg->nlisten && cl.nlisten < MAX_LISTEN; i++)
      cl.listen_urls[cl.nlisten++] = srv.cfg->listen[i];
  const char *data_dir = cl.data_dir ? cl.data_dir : srv.cfg->data_dir;
  setup_process();
  if (sdnotify_new(&srv.notify, err, sizeof err) < 0)
    LOG_WARN("%s: the service manager will not hear of readiness, reloads or shutdown", err);

  metrics_open(&srv);
  status = open_core(&srv, data_dir, smode);
  if (status == 0 && (open_services(&srv) < 0 || open_events(&srv) < 0)) status = 1;
  if (status == 0 && front_new(&srv.front, srv.base, srv.cfg, srv.calls, srv.metrics,
                               cl.listen_urls, cl.nlisten, err, sizeof err) < 0) {
    LOG_ERROR("%s", err);
    status = 2;
  }
  if (status == 0) {
    const char *mode = getenv("PRISMQ_RUN_MODE");
    LOG_INFO("prismqd ready pid=%d mode=%s modules=%zu data_dir=%s", (int)getpid(),
             mode && *mode ? mode : "async", srv.cfg->nmodules, data_dir);
    /* Listeners are bound (front_new) and the runs of an earlier server recovered
     * (sched_new): clients may come. */
    notify_ready(&srv, "");
    /* A line per run start and end is a write and a wake-up of the log's reader each,
     * a visible share of the start rate with stderr on a pipe. Batched, the lines of one pass of
     * the loop leave in one write, at the end of that pass (the flush event is
     * activated behind the callbacks already active). */
    log_batch(request_log_flush, srv.log_flush);
    event_base_dispatch(srv.base);
    log_batch(NULL, NULL);
    LOG_INFO("prismqd stopped");
  }
  server_free(&srv);
  return status;
}

int main(int argc, char **argv) {
#ifdef _WIN32
  /* As a Windows service, the service control manager's thread runs the server. */
  if (argc > 1 && strcmp(argv[1], "--service") == 0) {
    argv[1] = argv[0];
    return sdnotify_service(argc - 1, argv + 1, server_main);
  }
#endif
  return server_main(argc, argv);
}
