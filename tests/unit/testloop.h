/* testloop: runs a test's event loop until a condition holds, each wait bounded by a
 * guard timer that fails the test instead of hanging it (the RUN_UNTIL of testh2.h,
 * for tests with no client of their own). Include after cmocka.h. */
#ifndef PRISMQ_TESTLOOP_H
#define PRISMQ_TESTLOOP_H

#include <event2/event.h>

/* Bound on one wait: generous, for valgrind and loaded machines. */
#define TESTLOOP_GUARD_SECONDS 20

struct testloop {
  struct event_base *base;
  struct event *guard;
  int timed_out;
};

static inline void testloop_guard_cb(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  ((struct testloop *)arg)->timed_out = 1;
}

/* Readies *tl on `base` (not owned). */
static inline void testloop_init(struct testloop *tl, struct event_base *base) {
  tl->base = base;
  tl->timed_out = 0;
  tl->guard = evtimer_new(base, testloop_guard_cb, tl);
  assert_non_null(tl->guard);
}

/* A new event base with precise timers, as prismqd's: timeouts must not fire early on
 * libevent's coarse clock. NULL on failure. */
static inline struct event_base *testloop_base_new(void) {
  struct event_config *ec = event_config_new();
  if (!ec) return NULL;
  event_config_set_flag(ec, EVENT_BASE_FLAG_PRECISE_TIMER);
  struct event_base *base = event_base_new_with_config(ec);
  event_config_free(ec);
  return base;
}

static inline void testloop_fini(struct testloop *tl) {
  if (tl->guard) event_free(tl->guard);
  tl->guard = NULL;
}

/* Arms the guard for one wait. */
static inline void testloop_arm(struct testloop *tl) {
  struct timeval tv = {TESTLOOP_GUARD_SECONDS, 0};
  tl->timed_out = 0;
  assert_int_equal(evtimer_add(tl->guard, &tv), 0);
}

/* Runs the loop until `cond` holds; fails the test (naming the condition) if it does
 * not within TESTLOOP_GUARD_SECONDS. The guard is always pending meanwhile, so the loop
 * never runs dry. */
#define LOOP_UNTIL(tl, cond)                                                         \
  do {                                                                               \
    testloop_arm(tl);                                                                \
    while (!(cond)) {                                                                \
      if ((tl)->timed_out)                                                           \
        fail_msg("still waiting after %d s for: %s", TESTLOOP_GUARD_SECONDS, #cond); \
      event_base_loop((tl)->base, EVLOOP_ONCE);                                      \
    }                                                                                \
    evtimer_del((tl)->guard);                                                        \
  } while (0)

#endif
