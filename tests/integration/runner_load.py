"""Runner tests with volume, per executing run mode: 100 MiB byte-exact, 1,000 runs
without zombies or leaked descriptors, a stalled follower under 200 MiB of output.
LoadTests is a mixin; test_runner_load_async.py and test_runner_load_threaded.py make it
concrete with load_server_kwargs(mode)."""

import concurrent.futures
import hashlib
import threading
import time

import runner_child
from runner_common import (COMPLETED, STDOUT, R, RunnerMixin, child_module, config_yaml,
                           mode_env, poll_until, thread_count, zombies_of)

MIB = 1 << 20


def load_server_kwargs(mode):
    modules = [child_module("child"), {"id": "true", "argv": ["/bin/true"]}]
    return {"config_yaml": config_yaml(modules, max_concurrent=8, max_queued=2000),
            "env": mode_env(mode)}


class LoadTests(RunnerMixin):

    def drain_hash(self, it):
        """Reads a stream: (sha256 hex of stdout, bytes, final run), checking seq and
        offsets as it goes (all stdout here)."""
        h = hashlib.sha256()
        n = 0
        seq = 0
        final = None
        for c in it:
            if c.HasField("run"):
                self.assertIsNone(final, "two final chunks")
                final = c.run
                continue
            self.assertIsNone(final, "a chunk after the final one")
            seq += 1
            self.assertEqual((c.seq, c.stream, c.offset), (seq, STDOUT, n))
            h.update(c.data)
            n += len(c.data)
        return h.hexdigest(), n, final

    def test_100_mib_follow_and_replay_byte_exact(self):
        size = 100 * MIB
        expect = runner_child.pattern_sha256(size).hexdigest()
        run = self.c.start("child", "bytes", size)
        # Two live followers on one connection, read at the same time.
        its = [self.c.stream(run.run_id, follow=True, timeout=90) for _ in range(2)]
        with concurrent.futures.ThreadPoolExecutor(2) as ex:
            results = list(ex.map(self.drain_hash, its))
        for digest, n, final in results:
            self.assertEqual(n, size)
            self.assertEqual(digest, expect, "live output differs")
            self.assertStatus(final, COMPLETED)
            self.assertEqual(final.stdout_bytes, size)
        digest, n, final = self.drain_hash(self.c.stream(run.run_id, timeout=90))
        self.assertEqual((n, final), (size, None))
        self.assertEqual(digest, expect, "replayed output differs")

    def test_1000_runs_leave_no_zombies_and_stable_fds(self):
        pid = self.server.pid
        warm = [self.c.start("true") for _ in range(16)]
        for r in warm:
            self.assertStatus(self.c.wait(r.run_id), COMPLETED)
        base = self.server.wait_stats(lambda s: s.live_calls == 1 and s.runs_active == 0)
        threads = thread_count(pid)
        stub = self.c.stub
        starts = [stub.StartRun.future(R.StartRunRequest(module_id="true"), timeout=60)
                  for _ in range(1000)]
        ids = [f.result().run_id for f in starts]
        self.assertEqual(len(set(ids)), 1000)
        waits = [stub.WaitRun.future(R.WaitRunRequest(run_id=i, timeout_ms=60000), timeout=90)
                 for i in ids]
        runs = [f.result() for f in waits]
        bad = [r for r in runs if r.status != COMPLETED or r.exit_code != 0]
        self.assertEqual(bad, [], "runs not COMPLETED with exit 0")
        self.assertEqual(zombies_of(pid), [])
        after = self.server.wait_stats(
            lambda s: s.live_calls == 1 and s.runs_active == 0 and s.open_fds <= base.open_fds)
        self.assertEqual(after.runs_total - base.runs_total, 1000)
        poll_until(lambda: thread_count(pid) <= threads,
                   "prismqd back to %d threads (has %d)" % (threads, thread_count(pid)))
        self.assertEqual(zombies_of(pid), [])

    def test_stalled_follower_keeps_rss_bounded(self):
        size = 200 * MIB
        base = self.server.wait_idle()
        run = self.c.start("child", "bytes", size)
        stalled = self.c.stream(run.run_id, follow=True, timeout=120)  # nothing read yet
        self.server.wait_stats(lambda s: s.followers >= base.followers + 1)
        t0 = time.monotonic()
        peak = [base.rss_kb]
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                peak[0] = max(peak[0], self.server.stats().rss_kb)
                stop.wait(0.1)

        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            # The writer is not held back by a follower that reads nothing.
            done = self.c.wait(run.run_id, timeout=60)
            self.assertStatus(done, COMPLETED)
            self.assertEqual(done.stdout_bytes, size)
            # The stall itself is the point of the test: 10 s without a read.
            time.sleep(max(0.0, 10 - (time.monotonic() - t0)))
        finally:
            stop.set()
            sampler.join()
        growth_kb = peak[0] - base.rss_kb
        self.assertLess(growth_kb, 64 * 1024, "rss grew by %d KiB" % growth_kb)
        # The stalled follower still gets every byte.
        digest, n, final = self.drain_hash(stalled)
        self.assertEqual(n, size)
        self.assertEqual(digest, runner_child.pattern_sha256(size).hexdigest())
        self.assertEqual(final, done)
