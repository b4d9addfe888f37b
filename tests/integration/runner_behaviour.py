"""Runner behaviour tests that must hold in every executing run mode (async and
threaded): BehaviourTests is a mixin; test_runner_async.py and test_runner_threaded.py
make it concrete with behaviour_server_kwargs(mode)."""

import concurrent.futures
import json
import os
import re
import signal
import time

import grpc

import runner_child
from prismq_testlib import WAIT, temp_dir
from runner_common import (CANCELLED, CHILD, COMPLETED, FAILED, PY, QUEUED, RUNNING, STDERR, R,
                           STDOUT, TIMED_OUT, RunnerMixin, alive, child_module,
                           config_yaml, group_alive, mode_env, poll_until, split_final,
                           zombies_of)

MISSING = "/nonexistent/prismq-no-such-binary"
TEST_VAR = "two words $HOME `id` ; *"
SECRET = "PRISMQ_IT_SECRET"

MODULES = [
    child_module("child", env={"PRISMQ_TEST_VAR": TEST_VAR}),
    child_module("solo", max_concurrent=1),
    child_module("capped", timeout_ms=500),
    {"id": "missing", "argv": [MISSING, "x"]},
    {"id": "flags", "argv": [PY, CHILD, "argv"], "pass_parameters": "flags",
     "parameters": [{"name": "first", "required": True},
                    {"name": "second", "default": "two words"},
                    {"name": "third"}]},
    {"id": "incwd", "argv": [PY, CHILD, "env"], "cwd": "{dir}",
     "parameters": [{"name": "dir", "required": True}]},
]


def behaviour_server_kwargs(mode):
    env = mode_env(mode)
    env[SECRET] = "must not reach children"
    return {"config_yaml": config_yaml(MODULES, max_concurrent=8, max_queued=100),
            "env": env}


def chunk_key(c):
    return (c.seq, c.stream, c.offset, c.data, c.time_ms)


class BehaviourTests(RunnerMixin):

    def run_child(self, action, arg=None, module="child", answers=(QUEUED, RUNNING), **kw):
        """Starts a run, checks StartRun's answer (its status one of `answers`), and
        returns the terminal run."""
        run = self.c.start(module, action, arg, **kw)
        self.assertIn(run.status, answers)
        self.assertEqual(run.module_id, module)
        return self.c.wait(run.run_id)

    # -- statuses ------------------------------------------------------------------

    def test_success(self):
        run = self.run_child("ok")
        self.assertStatus(run, COMPLETED)
        self.assertEqual((run.exit_code, run.term_signal, run.error_message), (0, 0, ""))
        self.assertGreater(run.pid, 0)
        self.assertTrue(0 < run.created_at_ms <= run.started_at_ms <= run.finished_at_ms, run)
        self.assertEqual((run.stdout_bytes, run.stderr_bytes), (3, 0))
        self.assertEqual(self.c.output(run.run_id), (b"ok\n", b""))
        self.assertEqual(self.c.get(run.run_id), run)

    def test_nonzero_exit(self):
        stderr = "".join("stderr line %d\n" % i for i in range(100))
        for code in (1, 3, 255):
            with self.subTest(code=code):
                run = self.run_child("exit", code)
                self.assertStatus(run, FAILED)
                self.assertEqual((run.exit_code, run.term_signal), (code, 0))
                msg = run.error_message
                self.assertLessEqual(len(msg.encode()), 500, msg)
                # The last lines of stderr, whole lines only.
                self.assertTrue(msg.startswith("stderr line "), msg)
                self.assertIn(msg.rstrip("\n"), stderr)
                self.assertTrue(stderr.rstrip("\n").endswith(msg.rstrip("\n")), msg)
                self.assertEqual(run.stderr_bytes, len(stderr))

    def test_error_message_is_valid_utf8(self):
        run = self.run_child("exit_raw", 4)  # WaitRun's answer parsed: valid UTF-8
        self.assertStatus(run, FAILED)
        self.assertEqual(run.exit_code, 4)
        self.assertLessEqual(len(run.error_message.encode()), 500)
        self.assertIn("\u00e9\u00e9", run.error_message)
        self.assertEqual(self.c.get(run.run_id), run)

    def test_killed_by_signal(self):
        for sig in (signal.SIGKILL, signal.SIGUSR1):
            with self.subTest(sig=sig.name):
                run = self.run_child("signal", sig.name[3:])
                self.assertStatus(run, FAILED)
                self.assertEqual(run.term_signal, int(sig))
                self.assertEqual(self.c.output(run.run_id)[0], b"signalling\n")

    def test_missing_binary(self):
        # A failed start may be known at once: StartRun may answer FAILED already.
        run = self.run_child(None, module="missing", answers=(QUEUED, RUNNING, FAILED))
        self.assertStatus(run, FAILED)
        self.assertIn(MISSING, run.error_message)
        self.assertRegex(run.error_message, "(?i)no such file|not found")
        data, final = self.c.chunks(run.run_id, follow=True)
        self.assertEqual(data, [])
        self.assertEqual(final, run)

    # -- output ----------------------------------------------------------------------

    def test_streams_apart_and_in_order(self):
        n = 300
        run = self.c.start("child", "interleave", n)
        data, final = self.c.chunks(run.run_id, follow=True)
        self.assertStatus(final, COMPLETED)
        self.assertEqual([c.seq for c in data], list(range(1, len(data) + 1)))
        pos = {STDOUT: 0, STDERR: 0}
        last_time = 0
        for c in data:
            self.assertIn(c.stream, pos)
            self.assertTrue(c.data)
            self.assertEqual(c.offset, pos[c.stream], "seq %d" % c.seq)
            pos[c.stream] += len(c.data)
            self.assertGreaterEqual(c.time_ms, last_time)
            last_time = c.time_ms
            self.assertTrue(final.started_at_ms <= c.time_ms <= final.finished_at_ms,
                            (c.time_ms, final))
        out = b"".join(c.data for c in data if c.stream == STDOUT)
        err = b"".join(c.data for c in data if c.stream == STDERR)
        self.assertEqual(out, b"".join(b"out %d\n" % i for i in range(n)))
        self.assertEqual(err, b"".join(b"err %d\n" % i for i in range(n)))
        self.assertEqual((final.stdout_bytes, final.stderr_bytes), (len(out), len(err)))
        # Replay gives the very same chunks, without the final run.
        replay, none = self.c.chunks(run.run_id)
        self.assertIsNone(none)
        self.assertEqual([chunk_key(c) for c in replay], [chunk_key(c) for c in data])

    def test_stream_filter_and_start_seq(self):
        run = self.c.start("child", "interleave", 50)
        self.c.wait(run.run_id)
        full, _ = self.c.chunks(run.run_id)
        keys = [chunk_key(c) for c in full]
        for stream in (STDOUT, STDERR):
            with self.subTest(stream=stream):
                only, _ = self.c.chunks(run.run_id, stream=stream)
                self.assertEqual([chunk_key(c) for c in only],
                                 [chunk_key(c) for c in full if c.stream == stream])
                only, final = self.c.chunks(run.run_id, stream=stream, follow=True)
                self.assertEqual(len(only), len([c for c in full if c.stream == stream]))
                self.assertStatus(final, COMPLETED)
        for start in (1, 2, 7, len(full), len(full) + 1, len(full) + 100):
            with self.subTest(start_seq=start):
                part, _ = self.c.chunks(run.run_id, start_seq=start)
                self.assertEqual([chunk_key(c) for c in part], keys[start - 1:])
        part, final = self.c.chunks(run.run_id, start_seq=len(full) + 1, follow=True)
        self.assertEqual(part, [])
        self.assertStatus(final, COMPLETED)

    def test_all_256_byte_values(self):
        run = self.c.start("child", "all256", 4096)
        self.assertStatus(self.c.wait(run.run_id), COMPLETED)
        expect = bytes(range(256)) * 4096
        out, err = self.c.output(run.run_id)
        self.assertTrue(out == expect, "stdout differs (%d bytes)" % len(out))
        self.assertTrue(err == expect, "stderr differs (%d bytes)" % len(err))

    def test_output_max_bytes(self):
        srv = self.own_server(config_yaml([child_module("child")], output_max_bytes=100000))
        c = self.client(srv)
        run = c.start("child", "bytes", 300000)
        data, final = c.chunks(run.run_id, follow=True)
        self.assertStatus(final, COMPLETED)
        self.assertEqual(final.stdout_bytes, 300000)  # every byte counted
        out = b"".join(x.data for x in data if x.stream == STDOUT)
        self.assertEqual(len(out), 100000)  # stored up to the limit
        self.assertTrue(out == runner_child.pattern_bytes(100000), "stored stdout differs")
        self.assertEqual(data[-1].stream, STDERR)
        self.assertIn(b"truncated", data[-1].data)
        self.assertEqual([x.seq for x in data if x.stream == STDERR], [data[-1].seq])

    # -- followers -------------------------------------------------------------------

    def test_follow_live_and_replay_of_running_run(self):
        base = self.server.wait_idle().followers
        g = self.gate()
        run = self.c.start("child", "gate", g.path)
        it = self.c.stream(run.run_id, follow=True)
        conn, pid = g.accept()
        self.assertEqual(pid, self.c.get(run.run_id).pid)
        first, _ = self.c.read_until(it, b"waiting\n")
        now = self.c.get(run.run_id)
        self.assertStatus(now, RUNNING)
        self.assertEqual((now.stdout_bytes, now.stderr_bytes), (8, 0))  # live counters
        # Without follow: what exists now, then the end, though the run goes on.
        now, final = self.c.chunks(run.run_id)
        self.assertIsNone(final)
        self.assertEqual(b"".join(c.data for c in now), b"waiting\n")
        # Live followers that have nothing to read yet: a filter on the silent stream,
        # and a start past the end.
        err_only = self.c.stream(run.run_id, follow=True, stream=STDERR)
        ahead = self.c.stream(run.run_id, follow=True, start_seq=2)
        self.server.wait_stats(lambda s: s.followers >= base + 3)
        g.release(conn)
        data, final = split_final(first + list(it))
        self.assertStatus(final, COMPLETED)
        self.assertEqual([(c.seq, c.stream, c.offset, c.data) for c in data],
                         [(1, STDOUT, 0, b"waiting\n"), (2, STDOUT, 8, b"released\n")])
        self.assertEqual(final, self.c.get(run.run_id))
        self.assertEqual(it.code(), grpc.StatusCode.OK)
        self.assertEqual(split_final(list(err_only)), ([], final))
        self.assertEqual(split_final(list(ahead)), (data[1:], final))

    def test_two_followers_of_a_queued_run_see_identical_chunks(self):
        g = self.gate()
        blocker = self.c.start("solo", "gate", g.path)
        conn, _ = g.accept()
        run = self.c.start("solo", "all256", 2048)
        self.assertStatus(run, QUEUED)
        base = self.server.wait_idle().followers
        its = [self.c.stream(run.run_id, follow=True, timeout=WAIT * 3) for _ in range(2)]
        self.server.wait_stats(lambda s: s.followers >= base + 2)
        g.release(conn)
        with concurrent.futures.ThreadPoolExecutor(2) as ex:
            a, b = ex.map(lambda it: split_final(list(it)), its)
        self.assertStatus(a[1], COMPLETED)
        self.assertEqual(a[1], b[1])
        self.assertEqual([chunk_key(c) for c in a[0]], [chunk_key(c) for c in b[0]])
        out = b"".join(c.data for c in a[0] if c.stream == STDOUT)
        self.assertTrue(out == bytes(range(256)) * 2048)
        self.assertStatus(self.c.wait(blocker.run_id), COMPLETED)

    def test_late_follower_gets_all(self):
        g = self.gate()
        run = self.c.start("child", "gate", g.path)
        early = self.c.stream(run.run_id, follow=True)
        conn, _ = g.accept()
        first_e, _ = self.c.read_until(early, b"waiting\n")
        late = [self.c.stream(run.run_id, follow=True) for _ in range(20)]
        firsts = [self.c.read_until(it, b"waiting\n")[0] for it in late]
        g.release(conn)
        e = split_final(first_e + list(early))
        self.assertEqual(len(e[0]), 2)
        for first, it in zip(firsts, late):
            lt = split_final(first + list(it))
            self.assertEqual([chunk_key(c) for c in lt[0]], [chunk_key(c) for c in e[0]])
            self.assertEqual(lt[1], e[1])
        after = self.c.chunks(run.run_id, follow=True)  # later still: the run is over
        self.assertEqual([chunk_key(c) for c in after[0]], [chunk_key(c) for c in e[0]])
        self.assertStatus(after[1], COMPLETED)

    def test_seek_in_a_long_log(self):
        run = self.c.start("child", "interleave", 20000)
        self.assertStatus(self.c.wait(run.run_id), COMPLETED)
        full, _ = self.c.chunks(run.run_id)
        keys = [chunk_key(c) for c in full]
        self.assertEqual(keys[-1][0], len(keys))
        out = b"".join(c.data for c in full if c.stream == STDOUT)
        self.assertEqual(out, b"".join(b"out %d\n" % i for i in range(20000)))
        n = len(keys)
        for start in sorted({2, 1023, 1024, 1025, 4097, n // 2, n - 1, n}):
            with self.subTest(start_seq=start):
                part, _ = self.c.chunks(run.run_id, start_seq=start)
                self.assertEqual([chunk_key(c) for c in part], keys[start - 1:])
        for stream in (STDOUT, STDERR):
            with self.subTest(stream=stream):
                mid = n // 3
                part, _ = self.c.chunks(run.run_id, start_seq=mid, stream=stream)
                self.assertEqual([chunk_key(c) for c in part],
                                 [k for k in keys[mid - 1:] if k[1] == stream])

    # -- cancel, wait, timeout --------------------------------------------------------

    def check_cancel_tree(self, mode, grace_ms=300):
        run = self.c.start("child", "tree", mode)
        it = self.c.stream(run.run_id, follow=True)
        first, out = self.c.read_until(it, b"\n")
        gpid = int(re.match(rb"grandchild (\d+)\n", out).group(1))
        pid = self.c.get(run.run_id).pid
        self.assertIn(gpid, group_alive(pid))
        waiter = self.c.stub.WaitRun.future(R.WaitRunRequest(run_id=run.run_id), timeout=WAIT)
        t0 = time.monotonic()
        done = self.c.cancel(run.run_id, grace_ms=grace_ms)
        took = time.monotonic() - t0
        self.assertStatus(done, CANCELLED)
        if mode == "pipes":  # the grandchild holds the pipes until SIGKILL, after the grace
            self.assertGreaterEqual(took, grace_ms / 1000 - 0.01)
        # SIGKILL has been sent by now; death itself is not an event we can wait on.
        poll_until(lambda: not group_alive(pid), "group %d gone: %s" % (pid, group_alive(pid)),
                   timeout=2)
        self.assertFalse(alive(gpid))
        self.assertStatus(waiter.result(), CANCELLED)
        data, final = split_final(first + list(it))
        self.assertStatus(final, CANCELLED)
        poll_until(lambda: not zombies_of(self.server.pid), "no zombie children of prismqd")
        self.assertEqual(self.c.get(run.run_id), done)

    def test_cancel_tree_with_sigterm_ignoring_grandchild_on_pipes(self):
        self.check_cancel_tree("pipes")

    def test_cancel_tree_with_sigterm_ignoring_detached_grandchild(self):
        self.check_cancel_tree("detached")

    def test_cancel_sends_sigterm_first(self):
        run = self.c.start("child", "trap")
        it = self.c.stream(run.run_id, follow=True)
        first, _ = self.c.read_until(it, b"trapping\n")
        t0 = time.monotonic()
        done = self.c.cancel(run.run_id, grace_ms=20000)
        self.assertLess(time.monotonic() - t0, 10)  # it did not wait out the grace
        self.assertStatus(done, CANCELLED)
        data, final = split_final(first + list(it))
        self.assertEqual(b"".join(c.data for c in data), b"trapping\ngot SIGTERM\n")
        self.assertEqual(final, done)

    def test_concurrent_cancels(self):
        run = self.c.start("child", "tree", "pipes")
        it = self.c.stream(run.run_id, follow=True)
        self.c.read_until(it, b"\n")
        req = R.CancelRunRequest(run_id=run.run_id, grace_ms=500)
        futs = [self.c.stub.CancelRun.future(req, timeout=WAIT) for _ in range(3)]
        answers = [f.result() for f in futs]
        for a in answers:
            self.assertStatus(a, CANCELLED)
        self.assertEqual(answers[0], answers[1])
        self.assertEqual(answers[0], answers[2])
        list(it)

    def test_follower_that_goes_away_is_freed(self):
        base = self.server.wait_idle().followers
        g = self.gate()
        run = self.c.start("child", "gate", g.path)
        its = [self.c.stream(run.run_id, follow=True) for _ in range(3)]
        conn, _ = g.accept()
        for it in its:
            self.c.read_until(it, b"waiting\n")
        self.assertEqual(self.server.stats().followers, base + 3)
        for it in its[:2]:
            it.cancel()
        self.server.wait_stats(lambda s: s.followers == base + 1)
        g.release(conn)
        data, final = split_final(list(its[2]))
        self.assertStatus(final, COMPLETED)
        self.server.wait_stats(lambda s: s.followers == base)

    def test_abandoned_calls_are_freed(self):
        base = self.server.wait_idle()
        g = self.gate()
        run = self.c.start("child", "gate", g.path)
        conn, _ = g.accept()
        for call in (lambda: self.c.stub.WaitRun(R.WaitRunRequest(run_id=run.run_id),
                                                 timeout=0.2),
                     lambda: list(self.c.stream(run.run_id, follow=True, timeout=0.2))):
            self.assertCode(grpc.StatusCode.DEADLINE_EXCEEDED, call)
        self.server.wait_stats(lambda s: s.live_calls == 1 and s.followers == base.followers)
        g.release(conn)
        self.assertStatus(self.c.wait(run.run_id), COMPLETED)

    def test_server_shutdown_ends_running_runs(self):
        srv = self.own_server(config_yaml([child_module("child")], {"shutdown": {"runs": "cancel"}}))
        c = self.client(srv)
        run = c.start("child", "tree", "pipes")
        it = c.stream(run.run_id, follow=True)
        _, out = c.read_until(it, b"\n")
        gpid = int(re.match(rb"grandchild (\d+)\n", out).group(1))
        pid = c.get(run.run_id).pid
        self.assertEqual(srv.stop(), 0)
        poll_until(lambda: not group_alive(pid), "group %d gone" % pid, timeout=2)
        self.assertFalse(alive(gpid))
        try:  # the follow ends with the server; how exactly is not the point here
            list(it)
        except grpc.RpcError:
            pass

    def test_cancel_queued_run(self):
        g = self.gate()
        a = self.c.start("solo", "gate", g.path)
        conn, _ = g.accept()
        b = self.c.start("solo", "gate", g.path)
        self.assertStatus(b, QUEUED)
        it = self.c.stream(b.run_id, follow=True)
        waiter = self.c.stub.WaitRun.future(R.WaitRunRequest(run_id=b.run_id), timeout=WAIT)
        now = self.c.stub.WaitRun(R.WaitRunRequest(run_id=b.run_id, timeout_ms=50),
                                  timeout=WAIT)
        self.assertStatus(now, QUEUED)
        done = self.c.cancel(b.run_id)
        self.assertStatus(done, CANCELLED)
        self.assertEqual((done.pid, done.started_at_ms), (0, 0))
        self.assertEqual(split_final(list(it)), ([], done))
        self.assertEqual(waiter.result(), done)
        self.assertEqual(self.c.chunks(b.run_id), ([], None))
        self.assertCode(grpc.StatusCode.FAILED_PRECONDITION, self.c.cancel, b.run_id)
        g.release(conn)
        self.assertStatus(self.c.wait(a.run_id), COMPLETED)
        # The next child to reach the gate is a new run's, not the cancelled one's.
        c = self.c.start("solo", "gate", g.path)
        conn, pid = g.accept()
        self.assertEqual(pid, self.c.get(c.run_id).pid)
        g.release(conn)
        self.assertStatus(self.c.wait(c.run_id), COMPLETED)
        self.assertEqual(self.c.get(b.run_id), done)

    def test_cancel_finished_run(self):
        run = self.run_child("ok")
        e = self.assertCode(grpc.StatusCode.FAILED_PRECONDITION, self.c.cancel, run.run_id)
        self.assertIn(run.run_id, e.details())
        self.assertEqual(self.c.get(run.run_id), run)

    def test_wait_run_timeout_returns_current_state(self):
        g = self.gate()
        run = self.c.start("child", "gate", g.path)
        conn, _ = g.accept()
        t0 = time.monotonic()
        now = self.c.stub.WaitRun(R.WaitRunRequest(run_id=run.run_id, timeout_ms=300),
                                  timeout=WAIT)
        self.assertGreaterEqual(time.monotonic() - t0, 0.29)
        self.assertStatus(now, RUNNING)
        g.release(conn)
        self.assertStatus(self.c.wait(run.run_id), COMPLETED)

    def test_timeouts(self):
        cases = [  # (module, request timeout_ms, at least ms)
            ("child", 300, 300),   # the request's own
            ("capped", 60000, 500),  # capped by the module's 500
            ("capped", 0, 500),    # the module's
            ("capped", 200, 200),  # the request's, shorter than the module's
        ]
        runs = [self.c.start(m, "sleep", 30, timeout_ms=t) for m, t, _ in cases]
        for (m, t, least), run in zip(cases, runs):
            with self.subTest(module=m, timeout_ms=t):
                done = self.c.wait(run.run_id)
                self.assertStatus(done, TIMED_OUT)
                took = done.finished_at_ms - done.started_at_ms
                self.assertGreaterEqual(took, least - 5)
                self.assertLess(took, 10000)

    # -- concurrency -------------------------------------------------------------------

    def test_module_max_concurrent(self):
        g = self.gate()
        solo = [self.c.start("solo", "gate", g.path) for _ in range(3)]
        conn, pid = g.accept()
        states = [self.c.get(r.run_id) for r in solo]
        self.assertEqual(sorted(s.status for s in states), [QUEUED, QUEUED, RUNNING])
        # Another module is not held back by solo's limit.
        other = self.c.start("child", "gate", g.path)
        oconn, opid = g.accept()
        self.assertEqual(opid, self.c.get(other.run_id).pid)
        conns = [conn]
        for _ in range(2):
            g.release(conns[-1])
            nconn, npid = g.accept()
            conns.append(nconn)
            states = [self.c.get(r.run_id) for r in solo]
            self.assertEqual([s.status for s in states].count(RUNNING), 1, states)
            self.assertIn(npid, [s.pid for s in states if s.status == RUNNING])
        g.release(conns[-1])
        g.release(oconn)
        for r in solo + [other]:
            self.assertStatus(self.c.wait(r.run_id), COMPLETED)

    def test_global_max_concurrent(self):
        srv = self.own_server(config_yaml([child_module("child")], max_concurrent=2))
        c = self.client(srv)
        g = self.gate()
        label = {"test": "global"}
        runs = [c.start("child", "gate", g.path, labels=label) for _ in range(5)]
        conns = [g.accept() for _ in range(2)]

        def count(status):
            return len(c.list(statuses=[status], labels=label).runs)

        self.assertEqual((count(RUNNING), count(QUEUED)), (2, 3))
        self.assertEqual(sorted(c.get(r.run_id).status for r in runs),
                         [QUEUED, QUEUED, QUEUED, RUNNING, RUNNING])
        self.assertEqual(srv.stats().runs_active, 5)
        started = [pid for _, pid in conns]
        for left in (2, 1, 0):
            g.release(conns.pop(0)[0])
            conns.append(g.accept())
            started.append(conns[-1][1])
            self.assertEqual((count(RUNNING), count(QUEUED)), (2, left))
        for conn, _ in conns:
            g.release(conn)
        done = [c.wait(r.run_id) for r in runs]
        for r in done:
            self.assertStatus(r, COMPLETED)
        # A queue: the queued runs started in the order they were created.
        self.assertEqual(started[2:], [r.pid for r in done[2:]])
        srv.wait_stats(lambda s: s.runs_active == 0)

    # -- the child's process environment -----------------------------------------------

    def test_child_sees_only_fds_0_1_2(self):
        run = self.run_child("fds")
        self.assertStatus(run, COMPLETED)
        fds = json.loads(self.c.output(run.run_id)[0])
        self.assertEqual(sorted(fds), ["0", "1", "2"], fds)

    def test_child_environment(self):
        run = self.run_child("env")
        self.assertStatus(run, COMPLETED)
        env = json.loads(self.c.output(run.run_id)[0])["env"]
        self.assertLessEqual(set(env), {"PATH", "HOME", "LANG", "PRISMQ_TEST_VAR"}, env)
        self.assertIn("PATH", env)
        self.assertEqual(env["PRISMQ_TEST_VAR"], TEST_VAR)
        self.assertNotIn(SECRET, env)
        for k in ("HOME", "LANG"):
            if k in os.environ:
                self.assertEqual(env.get(k), os.environ[k], k)

    def test_child_cwd_template(self):
        d = temp_dir("prismq cwd ")
        run = self.run_child(None, module="incwd", params={"dir": d})
        self.assertStatus(run, COMPLETED)
        self.assertEqual(json.loads(self.c.output(run.run_id)[0])["cwd"], os.path.realpath(d))

    def test_parameters_as_flags_and_no_shell(self):
        tricky = "$(echo pwned) `id` *; | x > /tmp/nope"
        run = self.run_child(None, module="flags", params={"first": tricky})
        self.assertStatus(run, COMPLETED)
        self.assertEqual(json.loads(self.c.output(run.run_id)[0]),
                         ["--first", tricky, "--second", "two words"])
        run = self.run_child(None, module="flags",
                             params={"third": "3", "first": "1", "second": "2"})
        self.assertEqual(json.loads(self.c.output(run.run_id)[0]),
                         ["--first", "1", "--second", "2", "--third", "3"])
        run = self.run_child("argv", tricky)
        self.assertEqual(json.loads(self.c.output(run.run_id)[0]), [tricky])
