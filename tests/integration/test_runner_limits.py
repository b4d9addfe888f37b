"""Runner limits: the queue limit counts only runs that must wait; ListRuns pages stay
under stock clients' 4 MiB message limit; StartRun requests are capped in size and in
sub-messages; a timed-out run stays TIMED_OUT when cancelled; replays of finished runs
share a bounded set of open logs and give the same chunks each time."""

import os
import unittest

import grpc

from prismq_testlib import ServerTestCase
from runner_behaviour import chunk_key
from runner_common import (COMPLETED, QUEUED, RUNNING, TIMED_OUT, R, RunnerMixin,
                           child_module, config_yaml, mode_env)
from test_wire import MiB, peak_rss_kb, sanitized

START_RUN = "/prismq.runner.v1.Runner/StartRun"

# A module whose main process leaves on SIGTERM while a member of its group ignores
# SIGTERM and keeps the output pipes: the run ends only when the server kills the
# group, about two seconds after the SIGTERM.
STUBBORN = {"id": "stubborn", "timeout_ms": 300,
            "argv": ["/bin/sh", "-c",
                     "(trap '' TERM; exec sleep 30) & trap 'exit 0' TERM; echo ready; wait"]}


def big_labels(n, size, tag):
    """n labels: "batch" = tag, and n - 1 of `size` bytes each."""
    labels = {"l%02d" % i: chr(ord("a") + i % 26) * size for i in range(n - 1)}
    labels["batch"] = tag
    return labels


class QueueLimits(RunnerMixin, ServerTestCase):
    MODE = "async"
    MODULES = [child_module("a", max_concurrent=1), child_module("b")]
    server_kwargs = {"config_yaml": config_yaml(MODULES, max_concurrent=4, max_queued=2),
                     "env": mode_env(MODE)}

    def test_queue_limit_counts_only_runs_that_wait(self):
        g = self.gate()
        a1 = self.c.start("a", "gate", g.path)
        self.assertStatus(a1, RUNNING)
        a1_conn, _ = g.accept()
        queued = [self.c.start("a", "gate", g.path) for _ in range(2)]
        for run in queued:
            self.assertStatus(run, QUEUED)
        # The queue is full for a run that would wait for module a's slot...
        self.assertCode(grpc.StatusCode.RESOURCE_EXHAUSTED, self.c.start, "a", "gate", g.path,
                        mentions=("max_queued",))
        # ...but not for one that can start now: three global slots are free.
        b = self.c.start("b", "gate", g.path)
        self.assertStatus(b, RUNNING)
        b_conn, _ = g.accept()
        g.release(b_conn)
        g.release(a1_conn)
        for _ in queued:  # they run one after the other
            g.release(g.accept()[0])
        for run in [a1, b] + queued:
            self.assertStatus(self.c.wait(run.run_id), COMPLETED)

    def test_no_queue_refuses_only_runs_that_wait(self):
        srv = self.own_server(config_yaml(self.MODULES, max_concurrent=4, max_queued=0))
        c = self.client(srv)
        g = self.gate()
        a1 = c.start("a", "gate", g.path)
        self.assertStatus(a1, RUNNING)
        a1_conn, _ = g.accept()
        self.assertCode(grpc.StatusCode.RESOURCE_EXHAUSTED, c.start, "a", "gate", g.path,
                        mentions=("max_queued",))
        b = c.start("b", "gate", g.path)
        self.assertStatus(b, RUNNING)
        g.release(g.accept()[0])
        g.release(a1_conn)
        for run in (a1, b):
            self.assertStatus(c.wait(run.run_id), COMPLETED)


class RequestLimits(RunnerMixin, ServerTestCase):
    MODE = "dry-run"  # runs complete as StartRun answers: fast to make many
    server_kwargs = {"config_yaml": config_yaml([child_module("child")], max_queued=100),
                     "env": mode_env(MODE)}

    def test_list_pages_fit_stock_clients(self):
        # 80 runs of about 58 KB each (just under the StartRun cap) make 4.6 MB: one page
        # of them would be over grpcio's default 4 MiB receive limit.
        tag = "pages-%d" % os.getpid()
        labels = big_labels(64, 900, tag)
        self.assertLess(R.StartRunRequest(module_id="child", parameters={"action": "ok"},
                                          labels=labels).ByteSize(), 64 << 10)
        ids = {self.c.start("child", "ok", labels=labels).run_id for _ in range(80)}
        self.assertEqual(len(ids), 80)
        seen, token, pages = [], "", 0
        while True:
            page = self.c.list(page_size=1000, page_token=token, labels={"batch": tag})
            pages += 1
            if pages == 1:
                self.assertLess(len(page.runs), 80)
                self.assertNotEqual(page.next_page_token, "")
            self.assertLess(page.ByteSize(), 4 * MiB)
            seen += [r.run_id for r in page.runs]
            token = page.next_page_token
            if not token:
                break
            self.assertLess(pages, 10, "pages do not end")
        self.assertEqual(len(seen), len(set(seen)), "a run listed twice")
        self.assertEqual(set(seen), ids)

    def test_start_request_size_capped(self):
        labels = big_labels(64, 1100, "big")  # about 71 KB
        self.assertGreater(R.StartRunRequest(module_id="child", parameters={"action": "ok"},
                                             labels=labels).ByteSize(), 64 << 10)
        self.assertCode(grpc.StatusCode.INVALID_ARGUMENT, self.c.start, "child", "ok",
                        labels=labels, mentions=("StartRunRequest", "over the limit"))

    def test_sub_messages_capped(self):
        labels = {"k%d" % i: "" for i in range(2000)}
        self.assertCode(grpc.StatusCode.INVALID_ARGUMENT, self.c.start, "child", "ok",
                        labels=labels, mentions=("labels", "too many fields"))
        # 60 KiB of empty map entries (two bytes each) is some 30,000 sub-messages:
        # refused before decoding. (A bigger StartRunRequest is refused for its size.)
        raw = R.StartRunRequest(module_id="child").SerializeToString()
        raw += b"\x22\x00" * ((60 * 1024 - len(raw)) // 2)
        peak = peak_rss_kb(self.server.pid)
        call = self.c.ch.unary_unary(START_RUN)
        with self.assertRaises(grpc.RpcError) as cm:
            call(raw, timeout=30)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.INVALID_ARGUMENT,
                         cm.exception.details())
        self.assertIn("too many fields", cm.exception.details())
        if not sanitized(self.server.pid):
            self.assertLess(peak_rss_kb(self.server.pid) - peak, 32 * MiB // 1024)

    def test_unknown_fields_capped_before_decoding(self):
        # Two million unknown fields in 4 MiB: protobuf-c would keep every one of
        # them (some 180 MB); every service refuses them before decoding.
        raw = b"\x78\x00" * (2 * MiB)
        for path in ("/grpc.health.v1.Health/Check", "/prismq.runner.v1.Runner/GetRun",
                     "/prismq.admin.v1.Admin/GetStats"):
            peak = peak_rss_kb(self.server.pid)
            with self.assertRaises(grpc.RpcError) as cm:
                self.c.ch.unary_unary(path)(raw, timeout=30)
            self.assertEqual(cm.exception.code(), grpc.StatusCode.INVALID_ARGUMENT, path)
            self.assertIn("too many fields", cm.exception.details())
            if not sanitized(self.server.pid):
                self.assertLess(peak_rss_kb(self.server.pid) - peak, 32 * MiB // 1024, path)

    def test_replays_share_a_bounded_set_of_logs(self):
        # Each run's output (its argv, in dry-run mode) names its index, so a replay
        # served from another run's log would show.
        runs = [self.c.start("child", "ok", i) for i in range(20)]
        base = self.server.stats().open_fds
        for order in (range(20), reversed(range(20)), range(20)):
            for i in order:
                out, err = self.c.output(runs[i].run_id)
                self.assertTrue(out.endswith(b" ok %d\n" % i), out)
                self.assertEqual(err, b"")
            self.assertLessEqual(self.server.stats().open_fds, base + 8)


class RunEnd(RunnerMixin, ServerTestCase):
    MODE = "async"
    server_kwargs = {"config_yaml": config_yaml([child_module("child"), STUBBORN]),
                     "env": mode_env(MODE)}

    def test_timed_out_run_stays_timed_out_when_cancelled(self):
        mark = self.server.log_len()
        run = self.c.start("stubborn")
        self.server.wait_log(r"run timed out run_id=%s" % run.run_id, start=mark)
        # The run is still ending (its group holds out against SIGTERM); a cancel now,
        # however long its grace, changes neither how nor when it ends.
        self.c.cancel(run.run_id, grace_ms=4000000000)
        final = self.c.wait(run.run_id)
        self.assertStatus(final, TIMED_OUT)
        self.assertIn("timed out", final.error_message)

    def test_replay_twice_gives_the_same_chunks(self):
        run = self.c.start("child", "interleave", 50)
        self.assertStatus(self.c.wait(run.run_id), COMPLETED)
        first, final = self.c.chunks(run.run_id)  # opens the finished run's log
        self.assertIsNone(final)
        self.assertGreater(len(first), 1)
        second, _ = self.c.chunks(run.run_id)  # the log kept open since
        self.assertEqual([chunk_key(c) for c in second], [chunk_key(c) for c in first])
        self.assertEqual(b"".join(c.data for c in first if c.stream == R.OUTPUT_STREAM_STDOUT),
                         b"".join(b"out %d\n" % i for i in range(50)))


if __name__ == "__main__":
    unittest.main()
