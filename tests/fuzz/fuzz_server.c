/* fuzz_server: bytes from a client into prismqd's whole input path, TLS off.
 *
 * Per input, a server is put together as prismqd's main() does it: a run table (in
 * memory; an empty one is kept for the next input), a scheduler in dry-run mode (PRISMQ_RUN_MODE=dry-run: a run records the
 * argv it would run and completes; nothing executes) over the built-in
 * configuration, the call layer with the run table's commit before every send and the
 * configuration's authorization, and the Health, Runner, Admin and reflection services. The
 * input reaches it over a bufferevent pair (conn_new_bufferevent) as a client's bytes;
 * the loop runs until nothing is left to do; then everything is torn down.
 *
 * What must hold beyond "no crash, no undefined behaviour, no leak": no descriptor is
 * left open, no process is ever started (no child is left, and posix_spawn, posix_spawnp
 * and fork are replaced here by a failed check), and the loop always comes to rest.
 *
 * Input: byte 0 is a mode:
 *   bit 0     send the HTTP/2 client preface and an empty SETTINGS frame first
 *   bit 1     then end the client's side (EOF), as a peer that closes
 *   bit 2     then shut down gracefully (GOAWAY, runs cancelled), as on SIGTERM
 *   bits 3-4  send the rest whole, or in pieces of 9, 100 or 1000 bytes, the loop
 *             running until idle after each piece
 * and the rest is what the client sends. Run ids are random, so the input cannot
 * name a run it started: each occurrence of RUN_ID_MARK (26 bytes, as long as a run
 * id) is replaced, when it is reached, by the id of the newest run, if there is one. */
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "admin.h"
#include "authz.h"
#include "call.h"
#include "config.h"
#include "conn.h"
#include "fuzzkit.h"
#include "health.h"
#include "ids.h"
#include "prismq_descriptors.h"
#include "reflection.h"
#include "runner.h"
#include "runtab.h"
#include "scheduler.h"

#define RUN_ID_MARK "@@NEWEST_RUN_ID@@@@@@@@@@@"
_Static_assert(sizeof RUN_ID_MARK - 1 == ID_RUN_LEN, "RUN_ID_MARK is as long as a run id");

static const uint8_t client_preface[] =
    "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    "\x00\x00\x00\x04\x00\x00\x00\x00\x00"; /* SETTINGS, empty */
static const size_t piece_sizes[4] = {0, 9, 100, 1000};

static config *cfg;
static const char *data_dir;
static char output_dir[4096];
/* An empty run table kept from the last input that recorded no run: opening one costs
 * more than all the rest of an input, and an empty table left behind is as new. */
static runtab *spare_rt;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  fz_setup();
  char err[512];
  if (config_load_string(&cfg, config_default_yaml, strlen(config_default_yaml), "built-in", err,
                         sizeof err) != 0)
    fz_fail("built-in configuration: %s", err);
  data_dir = fz_tempdir("server");
  snprintf(output_dir, sizeof output_dir, "%s/output", data_dir);
  if (sched_init_data_dir(data_dir, err, sizeof err) != 0) fz_fail("%s", err);
  return 0;
}

struct server {
  struct event_base *base;
  runtab *rt;
  sched *sch;
  call_server *calls;
  health *health;
  runner *runner;
  admin *admin;
  reflection *reflection;
  struct bufferevent *client; /* our end of the pair */
};

/* Dry-run mode must start nothing. A process started and reaped within one input
 * would leave no child behind for fz_check_no_child: the calls that start one (proc.c
 * uses posix_spawn) fail the input themselves. */
int posix_spawn(pid_t *restrict pid, const char *restrict path,
                const posix_spawn_file_actions_t *restrict fa,
                const posix_spawnattr_t *restrict attr, char *const argv[restrict],
                char *const envp[restrict]) {
  (void)pid, (void)fa, (void)attr, (void)argv, (void)envp;
  fz_fail("dry-run mode started a process: posix_spawn %s", path);
}

int posix_spawnp(pid_t *restrict pid, const char *restrict file,
                 const posix_spawn_file_actions_t *restrict fa,
                 const posix_spawnattr_t *restrict attr, char *const argv[restrict],
                 char *const envp[restrict]) {
  (void)pid, (void)fa, (void)attr, (void)argv, (void)envp;
  fz_fail("dry-run mode started a process: posix_spawnp %s", file);
}

pid_t fork(void) { fz_fail("dry-run mode started a process: fork"); }

/* prismqd's hooks (server/main.c). */
static int sync_run_table(void *rt) { return runtab_sync(rt); }
static unsigned peer_roles(void *c, const conn_peer *p) {
  return authz_roles(c, p->identity, p->local);
}
static void on_idle(void *arg) { (void)arg; }

/* What the server answers is read and dropped, so that it never waits on us. */
static void client_read(struct bufferevent *bev, void *arg) {
  (void)arg;
  struct evbuffer *in = bufferevent_get_input(bev);
  evbuffer_drain(in, evbuffer_get_length(in));
}

/* Runs the loop until no callback is active. Timers in the future (deadlines,
 * WaitRun) are left pending: the teardown cancels them. */
static void run_until_idle(struct event_base *base) {
  for (int i = 0; i < 1000; i++) {
    event_base_loop(base, EVLOOP_NONBLOCK);
    if (event_base_get_num_events(base, EVENT_BASE_COUNT_ACTIVE) == 0) return;
  }
  fz_fail("the event loop never comes to rest");
}

static void server_start(struct server *s) {
  char err[512];
  memset(s, 0, sizeof *s);
  s->base = event_base_new();
  FZ_CHECK(s->base, "event_base_new");
  s->rt = spare_rt;
  spare_rt = NULL;
  if (!s->rt && runtab_open(&s->rt, ":memory:", err, sizeof err) != 0)
    fz_fail("runtab_open: %s", err);
  sched_opts so = SCHED_OPTS_INIT;
  so.cfg = cfg;
  so.rt = s->rt;
  so.data_dir = data_dir;
  so.mode = SCHED_DRY_RUN;
  if (sched_new(&s->sch, s->base, &so, err, sizeof err) != 0) fz_fail("sched_new: %s", err);
  call_server_opts co = CALL_SERVER_OPTS_INIT;
  co.before_send = sync_run_table;
  co.before_send_arg = s->rt;
  co.roles = peer_roles;
  co.roles_arg = cfg;
  co.role_name = authz_role_name;
  FZ_CHECK(call_server_new(&s->calls, s->base, &co) == 0, "call_server_new");
  static const char *const health_services[] = {"prismq.runner.v1.Runner", "prismq.admin.v1.Admin",
                                                NULL};
  FZ_CHECK(health_new(&s->health, s->calls, health_services) == 0, "health_new");
  FZ_CHECK(runner_new(&s->runner, s->calls, s->sch) == 0, "runner_new");
  FZ_CHECK(admin_new(&s->admin, s->calls, runner_counters, s->runner) == 0, "admin_new");
  FZ_CHECK(reflection_new(&s->reflection, s->calls, prismq_descriptor_set,
                          prismq_descriptor_set_len) == 0,
           "reflection_new");

  struct bufferevent *pair[2];
  FZ_CHECK(bufferevent_pair_new(s->base, BEV_OPT_CLOSE_ON_FREE, pair) == 0, "bufferevent_pair_new");
  conn *transport;
  FZ_CHECK(conn_new_bufferevent(&transport, pair[0]) == 0, "conn_new_bufferevent");
  FZ_CHECK(call_server_accept(s->calls, transport) == 0, "call_server_accept");
  s->client = pair[1];
  bufferevent_setcb(s->client, client_read, NULL, NULL, NULL);
  bufferevent_enable(s->client, EV_READ | EV_WRITE);
}

static void server_stop(struct server *s) {
  bufferevent_free(s->client);
  call_server_free(s->calls);
  health_free(s->health);
  admin_free(s->admin);
  reflection_free(s->reflection);
  runner_free(s->runner);
  int runs = sched_total(s->sch) > 0;
  sched_free(s->sch);
  if (runs)
    runtab_free(s->rt);
  else
    spare_rt = s->rt;
  event_base_free(s->base);
}

/* Sends `n` bytes in pieces of `piece` (0: whole), the server running after each. */
static void send_bytes(struct server *s, const uint8_t *p, size_t n, size_t piece) {
  while (n > 0) {
    size_t k = piece && piece < n ? piece : n;
    FZ_CHECK(bufferevent_write(s->client, p, k) == 0, "bufferevent_write");
    run_until_idle(s->base);
    p += k;
    n -= k;
  }
}

/* The newest run's id into id (ID_RUN_LEN bytes); returns 0 if there is no run. */
static int newest_run(struct server *s, char *id) {
  sched_run **runs = NULL;
  size_t n = 0;
  int more = 0;
  if (sched_list(s->sch, NULL, NULL, 1, &runs, &n, &more) != 0 || n == 0) return 0;
  memcpy(id, runs[0]->run_id, ID_RUN_LEN);
  runtab_list_free(runs, n);
  return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size == 0) return 0;
  uint8_t mode = data[0];
  size_t piece = piece_sizes[(mode >> 3) & 3];
  data++;
  size--;

  int fd_mark = fz_lowest_free_fd();
  struct server s;
  server_start(&s);
  if (mode & 1) send_bytes(&s, client_preface, sizeof client_preface - 1, 0);
  while (size > 0) {
    const uint8_t *mark = memmem(data, size, RUN_ID_MARK, ID_RUN_LEN);
    size_t before = mark ? (size_t)(mark - data) : size;
    send_bytes(&s, data, before, piece);
    data += before;
    size -= before;
    if (!mark) break;
    char id[ID_RUN_LEN];
    send_bytes(&s, newest_run(&s, id) ? (const uint8_t *)id : mark, ID_RUN_LEN, piece);
    data += ID_RUN_LEN;
    size -= ID_RUN_LEN;
  }
  if (mode & 2) {
    /* Fails, harmlessly, if the server has already closed the connection. */
    bufferevent_flush(s.client, EV_WRITE, BEV_FINISHED);
    run_until_idle(s.base);
  }
  if (mode & 4) {
    call_server_shutdown(s.calls, 0, on_idle, NULL);
    sched_shutdown(s.sch, 1, 0, on_idle, NULL);
    run_until_idle(s.base);
  }
  server_stop(&s);

  fz_check_no_child();
  int fd = fz_lowest_free_fd();
  FZ_CHECK(fd == fd_mark, "a descriptor was left open (lowest free %d, was %d)", fd, fd_mark);
  fz_clear_dir(output_dir);
  return 0;
}
