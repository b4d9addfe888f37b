"""Retention: prismqd deletes old terminal runs and their output files on its own.

By age, with the clock shifted by the PRISMQ_TEST_CLOCK_OFFSET_MS test hook (every
finished run is hours old at once): a run goes once finished, with its output file,
while active runs (running, queued), as old as they are, stay until they end. By
count (max_runs): a follower still reading a run when it is swept reads its output to
the end (the file is unlinked, the server's descriptor still reads it) and is then
told the run is gone (NOT_FOUND). A bad clock offset stops the server at start."""

import hashlib
import itertools
import os
import unittest

import grpc

from prismq_testlib import WAIT, Server, ServerTestCase
from runner_child import pattern_sha256
from runner_common import (COMPLETED, QUEUED, RUNNING, STDOUT, R, RunnerMixin,
                           child_module, config_yaml, mode_env)

MODULES = [child_module("c"), child_module("one", max_concurrent=1)]
SWEEP_MS = 200
HOUR_MS = 3600 * 1000


class RetentionMixin(RunnerMixin):

    def output_path(self, run_id):
        return os.path.join(self.server.data_dir, "output", run_id + ".out")

    def wait_output(self, run_id):
        """Waits until a gate child's "waiting" is in its run's output file."""
        out = self.c.stream(run_id, follow=True)
        self.c.read_until(out, b"waiting")
        out.cancel()
        self.assertTrue(os.path.exists(self.output_path(run_id)))

    def gone(self, run_id):
        try:
            self.c.get(run_id)
        except grpc.RpcError as e:
            self.assertEqual(e.code(), grpc.StatusCode.NOT_FOUND, e.details())
            return True
        return False

    def wait_swept(self, run_id):
        """Waits, sweep by sweep (their log lines), until run_id is gone."""
        while True:
            i = self.server.log_len()
            if self.gone(run_id):
                return
            self.server.wait_log(r"INFO retention sweep deleted=", start=i)

    def next_sweep(self):
        """Waits for the next sweep to end."""
        self.server.wait_log(r"INFO retention sweep deleted=", start=self.server.log_len())


class RetentionByAge(RetentionMixin, ServerTestCase):
    server_kwargs = {
        "config_yaml": config_yaml(MODULES, {"retention": {
            "sweep_interval": SWEEP_MS, "max_age": HOUR_MS, "max_runs": 0}}),
        "env": dict(mode_env("async"), PRISMQ_TEST_CLOCK_OFFSET_MS=str(2 * HOUR_MS)),
    }

    def test_finished_runs_go_active_runs_stay(self):
        self.server.wait_log(r"retention on sweep_interval_ms=200 max_age_ms=3600000 max_runs=0 "
                             r"\(test clock offset PRISMQ_TEST_CLOCK_OFFSET_MS set\)")
        g = self.gate()
        running = self.c.start("one", "gate", g.path)
        running_conn, _ = g.accept()
        self.wait_output(running.run_id)
        queued = self.c.start("one", "ok")
        done = self.c.start("c", "gate", g.path)
        done_conn, _ = g.accept()
        self.wait_output(done.run_id)
        g.release(done_conn)
        self.wait_swept(done.run_id)
        self.assertFalse(os.path.exists(self.output_path(done.run_id)))
        listed = [r.run_id for r in self.c.stub.ListRuns(R.ListRunsRequest(), timeout=WAIT).runs]
        self.assertNotIn(done.run_id, listed)

        # Two hours old for the server, but active: untouched by the sweeps since.
        self.next_sweep()
        self.assertStatus(self.c.get(running.run_id), RUNNING)
        self.assertStatus(self.c.get(queued.run_id), QUEUED)
        self.assertTrue(os.path.exists(self.output_path(running.run_id)))
        self.assertCountEqual(listed, [running.run_id, queued.run_id])

        # Once they end, they go too.
        g.release(running_conn)
        self.assertStatus(self.c.wait(queued.run_id), COMPLETED)
        self.wait_swept(running.run_id)
        self.wait_swept(queued.run_id)
        for run in (running, queued):
            self.assertFalse(os.path.exists(self.output_path(run.run_id)))
        self.assertEqual(self.server.stats().runs_total, 0)


class RetentionByCount(RetentionMixin, ServerTestCase):
    KEEP = 3
    server_kwargs = {
        "config_yaml": config_yaml(MODULES, {"retention": {
            "sweep_interval": SWEEP_MS, "max_age": 0, "max_runs": KEEP}}),
        "env": mode_env("async"),
    }

    def test_follower_of_a_swept_run(self):
        # More output than the transport buffers, so the follower is still reading
        # when the run goes.
        size = 64 << 20
        big = self.c.start("c", "bytes", size)
        self.assertStatus(self.c.wait(big.run_id), COMPLETED)
        it = self.c.stream(big.run_id, follow=True, timeout=3 * WAIT)
        first = next(it)
        newer = [self.c.start("c", "ok") for _ in range(self.KEEP)]
        for run in newer:
            self.assertStatus(self.c.wait(run.run_id), COMPLETED)
        self.wait_swept(big.run_id)
        self.assertFalse(os.path.exists(self.output_path(big.run_id)))

        h, n = hashlib.sha256(), 0
        with self.assertRaises(grpc.RpcError) as cm:
            for c in itertools.chain([first], it):
                self.assertFalse(c.HasField("run"), "the run is gone: no final run")
                if c.stream == STDOUT:
                    h.update(c.data)
                    n += len(c.data)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.NOT_FOUND, cm.exception.details())
        self.assertIn("deleted", cm.exception.details())
        self.assertEqual(n, size)
        self.assertEqual(h.hexdigest(), pattern_sha256(size).hexdigest())

        # The newer runs, within max_runs, stay; the server goes on.
        for run in newer:
            self.assertStatus(self.c.get(run.run_id), COMPLETED)
        self.assertLessEqual(self.server.stats().runs_total, self.KEEP)
        self.assertStatus(self.c.wait(self.c.start("c", "ok").run_id), COMPLETED)


class BadClockOffset(unittest.TestCase):

    def test_refused_at_start(self):
        srv = Server(config_yaml=config_yaml(MODULES),
                     env={"PRISMQ_TEST_CLOCK_OFFSET_MS": "soon"})
        with self.assertRaises(RuntimeError) as cm:
            srv.start()
        self.assertIn('PRISMQ_TEST_CLOCK_OFFSET_MS="soon": not a number of milliseconds (0 to 100 years)',
                      str(cm.exception))


if __name__ == "__main__":
    unittest.main()
