"""The Slurm executor (server/exec_slurm.c, docs/slurm.md) against a real single-node
Slurm 22.05 cluster (slurm_cluster.py) and the real prismqd:

  SlurmRuns       one server for the class (poll_interval 200ms):
                  live output of a job, byte-exact, with replay from any seq; exit codes,
                  a job killed by a signal, a program that does not exist, parameters
                  quoted into the job's script; the node and start of a job shorter than
                  a poll; a cancel that the job's TERM trap answers within the grace, and
                  one that only Slurm's SIGKILL ends; a full node: a run QUEUED with its
                  job id and reason Resources, cancelled while pending; prismqd's own
                  timeout (request and module) and the --time it gives; the module's
                  sbatch options as Slurm shows them; Slurm's own time limit (60 to 90 s:
                  slow, and always run).
  SlurmRestart    servers of the test's own on one data directory: kill -9 of prismqd
                  while jobs run, pend and wait to be submitted, the next server taking
                  them up by job id with their output byte-exact; kill -9 after Slurm took
                  a job but before sbatch answered (the next server finds it by name and
                  submits nothing twice), and a cancel in that moment; a graceful stop
                  that leaves the jobs running for the next server.

Every run's files in the spool directory (RUN_ID.sh/.out/.err) are gone once it ended.
Skipped, with the reason, only where Slurm cannot be installed or started
(SlurmUnavailable). Every wait is bounded: run states are read with WaitRun, or polled
with GetRun (every 50 ms) with a deadline; Slurm's job states and the spool files, which
have no event to wait on, are polled with a deadline too.
"""

import json
import os
import shutil
import signal
import sys
import threading
import time
import unittest

import grpc

from prismq_testlib import WAIT, Server, temp_dir
from runner_common import (CANCELLED, COMPLETED, FAILED, QUEUED, RUNNING, STDERR, STDOUT,
                           TERMINAL, TIMED_OUT, Client, R, split_final, status_name)
from slurm_cluster import SlurmCluster

JOB_WAIT = 30.0      # a job's state change on the cluster, or its run's
POLL = 0.05
POLL_INTERVAL = "200ms"

# Shell snippets: argv elements are templates, so no braces but the parameters'.
LINES = "for i in 1 2 3; do echo line$i; sleep 0.5; done"
READY_SLEEP = "echo ready; exec sleep 600"
TRAP_EXIT = "trap 'echo got TERM; exit 143' TERM; echo ready; while :; do sleep 0.1; done"
IGNORE_TERM = "trap '' TERM; echo ready; while :; do sleep 0.1; done"
# Prints "$1 line I" for I = 0..39: 0..19 50 ms apart, then waits for the file $2 to
# exist, then 20..39 100 ms apart.
COUNT = ("i=0\n"
         "while [ $i -lt 40 ]; do\n"
         "  if [ $i -eq 20 ]; then while [ ! -e \"$2\" ]; do sleep 0.05; done; fi\n"
         "  echo \"$1 line $i\"\n"
         "  i=$((i+1))\n"
         "  if [ $i -le 20 ]; then sleep 0.05; else sleep 0.1; fi\n"
         "done\n")
# "started", then waits for the file $1 to exist, then "finished".
GATED = "echo started; while [ ! -e \"$1\" ]; do sleep 0.05; done; echo finished"


def count_output(word):
    return b"".join(b"%s line %d\n" % (word.encode(), i) for i in range(40))


def sh(mid, script, params=(), **extra):
    """A module running `sh -c SCRIPT mid {p1} {p2}...` on Slurm ($1, $2... are the
    parameters, all required strings)."""
    m = {"id": mid, "executor": "slurm",
         "argv": ["sh", "-c", script, mid] + ["{%s}" % p for p in params],
         "parameters": [{"name": p, "required": True} for p in params]}
    m.update(extra)
    return m


def config(cluster, modules, **slurm):
    """A config text (JSON is YAML) with the cluster's spool dir and these modules."""
    section = {"spool_dir": cluster.spool_dir, "poll_interval": POLL_INTERVAL}
    section.update(slurm)
    # No cgroups: no run is local, and the server would leave its empty root behind.
    return json.dumps({"slurm": section, "cgroups": {"root": "off"}, "modules": modules},
                      indent=1)


def chunk_key(c):
    return (c.seq, c.stream, c.offset, c.data, c.time_ms)


def stdout_of(chunks):
    return b"".join(c.data for c in chunks if c.stream == STDOUT)


class Follower(threading.Thread):
    """Reads a follow=True StreamOutput on a thread: `got` holds (time.monotonic() at
    receipt, chunk) pairs; `error` the RpcError it ended with, if any."""

    def __init__(self, client, run_id, timeout=120):
        super().__init__(daemon=True)
        self.run_id = run_id
        self.it = client.stream(run_id, follow=True, timeout=timeout)
        self.got = []
        self.error = None
        self.done = False
        self._cond = threading.Condition()
        self.start()

    def run(self):
        try:
            for c in self.it:
                with self._cond:
                    self.got.append((time.monotonic(), c))
                    self._cond.notify_all()
        except grpc.RpcError as e:
            self.error = e
        with self._cond:
            self.done = True
            self._cond.notify_all()

    def chunks(self):
        with self._cond:
            return [c for _, c in self.got]

    def wait_for(self, pred, what, timeout=JOB_WAIT):
        """Waits until pred(chunks so far) is true; returns those chunks."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                chunks = [c for _, c in self.got]
                if pred(chunks):
                    return chunks
                left = deadline - time.monotonic()
                if self.done or left <= 0:
                    raise AssertionError("follower of %s: no %s (%s); stdout %r, error %s" % (
                        self.run_id, what, "stream ended" if self.done else "timed out",
                        stdout_of(chunks), self.error))
                self._cond.wait(left)

    def wait_text(self, needle, timeout=JOB_WAIT):
        return self.wait_for(lambda cs: needle in stdout_of(cs), repr(needle), timeout)

    def finish(self, timeout=JOB_WAIT):
        """Waits for the stream's end; returns (data chunks, final run)."""
        self.join(timeout)
        if self.is_alive():
            self.it.cancel()
            raise AssertionError("follower of %s did not end within %.0f s" % (self.run_id,
                                                                              timeout))
        if self.error is not None:
            raise AssertionError("follower of %s ended with %s" % (self.run_id, self.error))
        return split_final(self.chunks())


class SlurmCase(unittest.TestCase):
    """A Slurm cluster for the class (skipped without one) and, when modules() gives
    modules, a server on it (cls.server). Each test starts on an empty node, and a
    failed test prints the logs of the servers it used (and of the cluster's daemons)."""

    @classmethod
    def modules(cls, cluster):
        return None

    @classmethod
    def setUpClass(cls):
        cls.cluster = SlurmCluster().start_or_skip()
        cls.server = None
        mods = cls.modules(cls.cluster)
        if mods is not None:
            try:
                cls.server = Server(config(cls.cluster, mods), env=cls.cluster.env()).start()
            except BaseException:
                cls.cluster.stop()
                raise

    @classmethod
    def tearDownClass(cls):
        try:
            if cls.server is not None:
                code = cls.server.stop()
                if code != 0:
                    sys.stderr.write("--- prismqd log ---\n%s--- end ---\n"
                                     % cls.server.log_text())
                assert code == 0, "prismqd exited with %s" % code
        finally:
            cls.cluster.stop()

    def setUp(self):
        self.servers = []  # (server, index of its first log line of this test)
        if self.server is not None:
            self.servers.append((self.server, self.server.log_len()))
        # Cleanups run last first: the clients cancel their runs, then the node empties.
        self.addCleanup(self.empty_node)
        self.c = self.client(self.server) if self.server is not None else None

    def run(self, result=None):
        bad = (len(result.failures) + len(result.errors)) if result is not None else 0
        out = super().run(result)
        if result is not None and len(result.failures) + len(result.errors) > bad:
            for srv, start in getattr(self, "servers", ()):
                sys.stderr.write("--- prismqd (pid %s) log during %s ---\n%s--- end ---\n"
                                 % (srv.pid, self.id(), srv.log_text(start)))
            ctld = os.path.join(self.cluster.tmp or "", "slurmctld.log")
            if os.path.exists(ctld):
                with open(ctld, encoding="utf-8", errors="replace") as f:
                    sys.stderr.write("--- slurmctld.log (tail) ---\n%s--- end ---\n"
                                     % "".join(f.readlines()[-40:]))
        return out

    def empty_node(self):
        self.cluster.cancel_all()
        deadline = time.monotonic() + JOB_WAIT
        while self.cluster.active_jobs():
            self.assertLess(time.monotonic(), deadline, "jobs still active after scancel")
            time.sleep(POLL)

    # -- servers and clients ---------------------------------------------------------

    def client(self, server):
        c = Client(server)
        self.addCleanup(c.close)
        return c

    def own_server(self, cfg, data_dir):
        """A server of this test on `data_dir`, on the cluster; stopped at the end of the
        test unless the test stopped it (its exit code is the test's to judge)."""
        srv = Server(cfg, extra_args=("--data-dir", data_dir), env=self.cluster.env()).start()
        self.servers.append((srv, 0))
        self.addCleanup(srv.stop)
        return srv

    def held_sbatch(self):
        """A bin_dir whose sbatch submits the job at once but answers (prints the job
        id) only once the returned gate file exists; squeue, scancel and sacct are
        Slurm's. Returns (bin_dir, gate path)."""
        d = temp_dir("prismq-slurmbin-")
        gate = os.path.join(d, "gate")
        for prog in ("squeue", "scancel", "sacct"):
            real = shutil.which(prog)
            if real:
                os.symlink(real, os.path.join(d, prog))
        path = os.path.join(d, "sbatch")
        with open(path, "w") as f:
            f.write("#!/bin/sh\n"
                    "out=$(%s \"$@\"); rc=$?\n"
                    "while [ ! -e %s ]; do sleep 0.05; done\n"
                    "printf '%%s\\n' \"$out\"\n"
                    "exit $rc\n" % (shutil.which("sbatch"), gate))
        os.chmod(path, 0o755)
        return d, gate

    def wait_job_named(self, run_id, timeout=JOB_WAIT):
        """Polls squeue until Slurm has a job of the run; returns its id."""
        name = "prismq-" + run_id
        deadline = time.monotonic() + timeout
        while True:
            ids = [str(j["job_id"]) for j in self.cluster.squeue_json()["jobs"]
                   if j["name"] == name]
            if ids:
                return ids[0]
            if time.monotonic() >= deadline:
                raise AssertionError("no Slurm job named %s within %.0f s" % (name, timeout))
            time.sleep(POLL)

    # -- waits -------------------------------------------------------------------------

    def wait_run(self, c, run_id, pred, what, timeout=JOB_WAIT):
        """Polls GetRun until pred(run); returns that run."""
        deadline = time.monotonic() + timeout
        while True:
            run = c.get(run_id)
            if pred(run):
                return run
            if time.monotonic() >= deadline:
                raise AssertionError("run %s: not %s within %.0f s; last: %s" % (
                    run_id, what, timeout, str(run).replace("\n", " ")))
            time.sleep(POLL)

    def wait_file(self, path, needle, timeout=JOB_WAIT):
        """Polls a job's output file (written by the node: no event) until it holds
        `needle`."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                with open(path, "rb") as f:
                    data = f.read()
            except FileNotFoundError:
                data = b""
            if needle in data:
                return data
            if time.monotonic() >= deadline:
                raise AssertionError("no %r in %s within %.0f s: %r" % (needle, path, timeout,
                                                                         data[-300:]))
            time.sleep(POLL)

    # -- assertions ---------------------------------------------------------------------

    def assertStatus(self, run, status):
        self.assertEqual(status_name(run.status), status_name(status), str(run))

    def assertRanOnNode(self, run):
        """An ended run whose job ran: its node, and a start no later than its end."""
        self.assertEqual(run.node, self.cluster.node, str(run))
        self.assertGreater(run.started_at_ms, 0, str(run))
        self.assertLessEqual(run.started_at_ms, run.finished_at_ms, str(run))

    def assertSpoolClean(self, run_id):
        left = sorted(n for n in os.listdir(self.cluster.spool_dir) if n.startswith(run_id))
        self.assertEqual(left, [], "files of the ended run %s left in the spool directory"
                         % run_id)

    def assertWholeOutput(self, c, run_id, stdout, stderr=b""):
        """The replay from seq 0 holds exactly these bytes, in chunks numbered 1, 2, ...
        whose offsets follow each other in each stream; returns the chunks."""
        data, final = c.chunks(run_id)
        self.assertIsNone(final)
        self.assertEqual([ch.seq for ch in data], list(range(1, len(data) + 1)))
        pos = {STDOUT: 0, STDERR: 0}
        for ch in data:
            self.assertEqual(ch.offset, pos[ch.stream], "chunk %d" % ch.seq)
            pos[ch.stream] += len(ch.data)
        self.assertEqual(stdout_of(data), stdout)
        self.assertEqual(b"".join(ch.data for ch in data if ch.stream == STDERR), stderr)
        return data

    def assertOneJob(self, run):
        """Slurm knows exactly one job of the run (none was submitted twice)."""
        name = "prismq-" + run.run_id
        jobs = [str(j["job_id"]) for j in self.cluster.squeue_json()["jobs"]
                if j["name"] == name]
        self.assertEqual(jobs, [run.job_id], "Slurm jobs named %s" % name)


class SlurmRuns(SlurmCase):

    @classmethod
    def modules(cls, cluster):
        return [
            sh("lines", LINES),
            sh("fail", 'echo before; echo "boom $1" >&2; exit 3', ["word"]),
            sh("signal", "echo before; kill -9 $$"),
            {"id": "missing", "executor": "slurm", "argv": ["prismq-no-such-program", "x"]},
            sh("trap", TRAP_EXIT),
            sh("stubborn", IGNORE_TERM),
            sh("sleeper", READY_SLEEP),
            sh("capped", READY_SLEEP, timeout_ms=1500),
            sh("fill", 'echo "ready $PQ_FILL"; exec sleep 600',
               slurm={"partition": "debug", "cpus": cluster.cpus, "memory": "64M",
                      "env": {"PQ_FILL": "filled"}}),
            sh("small", "echo small"),
            sh("limited", READY_SLEEP, slurm={"time_limit": "1m"}),
        ]

    def test_live_output_and_replay(self):
        run = self.c.start("lines")
        self.assertStatus(run, QUEUED)
        self.assertEqual(run.executor, "slurm")
        follower = Follower(self.c, run.run_id)
        follower.wait_for(lambda cs: len(cs) >= 1, "first chunk")
        first_at, first = follower.got[0]
        self.assertEqual(first.data[:6], b"line1\n")
        # The job goes on for a second after its first line: the output is live.
        at_first = self.c.get(run.run_id)
        self.assertNotIn(at_first.status, TERMINAL, str(at_first))
        self.assertTrue(at_first.job_id, str(at_first))
        data, final = follower.finish()
        end_at = follower.got[-1][0]
        self.assertStatus(final, COMPLETED)
        self.assertGreaterEqual(end_at - first_at, 0.5, "first chunk and end came together")
        self.assertGreaterEqual(final.finished_at_ms - first.time_ms, 500)
        self.assertEqual(stdout_of(data), b"line1\nline2\nline3\n")
        self.assertEqual((final.exit_code, final.term_signal, final.error_message), (0, 0, ""))
        self.assertEqual((final.executor, final.node, final.pending_reason),
                         ("slurm", self.cluster.node, ""))
        self.assertEqual((final.stdout_bytes, final.stderr_bytes), (18, 0))
        self.assertGreater(final.started_at_ms, 0)
        self.assertLessEqual(final.started_at_ms, final.finished_at_ms)
        self.assertEqual(self.c.wait(run.run_id), final)
        info = self.cluster.job_state(final.job_id)
        self.assertEqual((info["JobState"], info["ExitCode"], info["JobName"]),
                         ("COMPLETED", "0:0", "prismq-" + run.run_id))
        # Replay: the same chunks, numbered from 1; from a middle seq, the tail.
        replay = self.assertWholeOutput(self.c, run.run_id, b"line1\nline2\nline3\n")
        self.assertEqual([chunk_key(c) for c in replay], [chunk_key(c) for c in data])
        mid = len(replay) // 2 + 1
        part, _ = self.c.chunks(run.run_id, start_seq=mid)
        self.assertEqual([chunk_key(c) for c in part], [chunk_key(c) for c in replay[mid - 1:]])
        self.assertSpoolClean(run.run_id)

    def test_exit_code_signal_and_missing_program(self):
        word = "it's $HOME `true` \"q\" \\ 100% ;|&"
        runs = {"fail": self.c.start("fail", params={"word": word}),
                "signal": self.c.start("signal"),
                "missing": self.c.start("missing")}
        done = {k: self.c.wait(r.run_id, JOB_WAIT) for k, r in runs.items()}

        run = done["fail"]
        self.assertStatus(run, FAILED)
        self.assertEqual((run.exit_code, run.term_signal), (3, 0))
        self.assertEqual(run.error_message, "boom " + word)  # the stderr tail
        self.assertEqual(self.c.output(run.run_id),
                         (b"before\n", ("boom %s\n" % word).encode()))
        self.assertEqual(self.cluster.job_state(run.job_id)["ExitCode"], "3:0")

        run = done["signal"]
        self.assertStatus(run, FAILED)
        self.assertEqual((run.exit_code, run.term_signal), (-1, 9))
        self.assertIn("killed by signal 9", run.error_message)
        self.assertEqual(self.c.output(run.run_id)[0], b"before\n")
        self.assertEqual(self.cluster.job_state(run.job_id)["ExitCode"], "0:9")

        run = done["missing"]
        self.assertStatus(run, FAILED)
        self.assertEqual((run.exit_code, run.term_signal), (127, 0))
        self.assertIn("not found", run.error_message)
        self.assertIn("prismq-no-such-program", run.error_message)
        for run in done.values():
            self.assertRanOnNode(run)
            self.assertSpoolClean(run.run_id)

    def test_short_job_has_its_node_and_start(self):
        # A job that starts and ends between two polls (squeue never shows it RUNNING)
        # still ran on a node, at some time: the run says where, and has a start.
        for i in range(3):
            with self.subTest(i=i):
                run = self.c.wait(self.c.start("small").run_id, JOB_WAIT)
                self.assertStatus(run, COMPLETED)
                self.assertEqual(self.c.output(run.run_id), (b"small\n", b""))
                self.assertRanOnNode(run)

    def test_cancel_running_job_answered_by_its_trap(self):
        run = self.c.start("trap")
        follower = Follower(self.c, run.run_id)
        follower.wait_text(b"ready\n")
        t0 = time.monotonic()
        done = self.c.cancel(run.run_id, grace_ms=10000, timeout=JOB_WAIT)
        took = time.monotonic() - t0
        self.assertStatus(done, CANCELLED)
        # SIGTERM reached the script at once: it ended well within the grace, no SIGKILL.
        self.assertLess(took, 8.0)
        data, final = follower.finish()
        self.assertEqual(final, done)
        self.assertEqual(stdout_of(data), b"ready\ngot TERM\n")
        self.assertEqual(self.c.get(run.run_id), done)
        self.assertSpoolClean(run.run_id)

    def test_cancel_running_job_that_ignores_term(self):
        run = self.c.start("stubborn")
        follower = Follower(self.c, run.run_id)
        follower.wait_text(b"ready\n")
        t0 = time.monotonic()
        done = self.c.cancel(run.run_id, grace_ms=500, timeout=JOB_WAIT)
        took = time.monotonic() - t0
        self.assertStatus(done, CANCELLED)
        # The grace, then Slurm's KillWait (5 s) before its SIGKILL.
        self.assertGreaterEqual(took, 0.5)
        self.assertLess(took, 15.0)
        info = self.cluster.job_state(done.job_id)
        self.assertEqual((info["JobState"], info["ExitCode"]), ("CANCELLED", "0:9"))
        self.assertEqual(follower.finish()[1], done)
        self.assertEqual(self.c.output(done.run_id)[0], b"ready\n")
        self.assertSpoolClean(run.run_id)

    def test_full_node_pending_then_cancelled(self):
        fill = self.c.start("fill")
        follower = Follower(self.c, fill.run_id)
        follower.wait_text(b"ready filled\n")
        fill_run = self.wait_run(self.c, fill.run_id, lambda r: r.status == RUNNING, "RUNNING")
        self.assertEqual(fill_run.node, self.cluster.node)
        info = self.cluster.job_state(fill_run.job_id)
        # The module's sbatch options, as Slurm has them.
        self.assertEqual((info["JobState"], info["NumCPUs"], info["Partition"],
                          info["MinMemoryNode"]),
                         ("RUNNING", str(self.cluster.cpus), "debug", "64M"))

        small = self.c.start("small")
        pending = self.wait_run(self.c, small.run_id,
                                lambda r: r.pending_reason == "Resources",
                                "pending for Resources", timeout=20)
        self.assertStatus(pending, QUEUED)
        self.assertTrue(pending.job_id)
        self.assertEqual((pending.node, pending.started_at_ms), ("", 0))
        self.assertEqual(self.cluster.job_state(pending.job_id)["JobState"], "PENDING")

        t0 = time.monotonic()
        done = self.c.cancel(small.run_id, timeout=JOB_WAIT)
        self.assertStatus(done, CANCELLED)
        self.assertLess(time.monotonic() - t0, 5.0)
        self.assertEqual(done.job_id, pending.job_id)
        self.assertEqual(done.started_at_ms, 0)
        self.assertEqual(self.cluster.job_state(done.job_id)["JobState"], "CANCELLED")
        self.assertEqual(self.c.output(done.run_id), (b"", b""))
        self.assertSpoolClean(done.run_id)

        done = self.c.cancel(fill.run_id, grace_ms=1000, timeout=JOB_WAIT)
        self.assertStatus(done, CANCELLED)
        self.assertEqual(follower.finish()[1], done)
        self.assertSpoolClean(done.run_id)

    def test_timeouts(self):
        asked = self.c.start("sleeper", timeout_ms=2000)
        module = self.c.start("capped")
        for run, ms in ((asked, 2000), (module, 1500)):
            with self.subTest(timeout_ms=ms):
                done = self.c.wait(run.run_id, JOB_WAIT)
                self.assertStatus(done, TIMED_OUT)
                self.assertEqual(done.timeout_ms, ms)
                self.assertEqual(done.error_message, "timed out after %d ms" % ms)
                self.assertGreater(done.started_at_ms, 0)
                # From RUNNING on; ended by SIGTERM (sleep does not trap it), well before
                # a SIGKILL would be needed.
                self.assertGreaterEqual(done.finished_at_ms - done.started_at_ms, ms)
                self.assertLess(done.finished_at_ms - done.started_at_ms, ms + 5000)
                self.assertEqual(self.c.output(done.run_id)[0], b"ready\n")
                # --time: timeout + grace (5 s) + poll, in whole minutes.
                self.assertEqual(self.cluster.job_state(done.job_id)["TimeLimit"], "00:01:00")
                self.assertSpoolClean(done.run_id)

    def test_slurm_time_limit(self):
        # Slow: Slurm checks limits every 30 s, so a 1-minute limit ends the job 60 to 90 s
        # after it started.
        run = self.c.start("limited")
        done = self.c.wait(run.run_id, 150)
        self.assertStatus(done, TIMED_OUT)
        self.assertTrue(done.error_message.startswith(
            "timed out: the job reached its Slurm time limit"), done.error_message)
        self.assertEqual(done.timeout_ms, 0)
        self.assertGreaterEqual(done.finished_at_ms - done.started_at_ms, 58000)
        self.assertEqual(self.c.output(done.run_id)[0], b"ready\n")
        info = self.cluster.job_state(done.job_id)
        self.assertEqual((info["JobState"], info["TimeLimit"]), ("TIMEOUT", "00:01:00"))
        self.assertSpoolClean(done.run_id)


class SlurmRestart(SlurmCase):
    """Servers of each test's own, restarted on the same data directory."""

    def test_kill9_jobs_taken_up_by_the_next_server(self):
        # A and B fill the node (one CPU each), C is submitted and pending, D waits in
        # prismqd for a job slot (max_jobs 3). A and B stop half-way until their gates
        # open; prismqd is killed before, the gates open while it is down, and the next
        # server on the same data directory (and spool directory) takes everything up.
        self.assertEqual(self.cluster.cpus, 2, "the test fills a node of 2 CPUs")
        gates = temp_dir("prismq-gate-")
        open_gate = os.path.join(gates, "open")
        with open(open_gate, "w"):
            pass
        cfg = config(self.cluster, [sh("count", COUNT, ["word", "gate"])], max_jobs=3)
        data_dir = os.path.join(temp_dir(), "var")
        s1 = self.own_server(cfg, data_dir)
        c1 = self.client(s1)
        words = ("a", "b", "c", "d")
        gate = {w: os.path.join(gates, w) for w in ("a", "b")}
        gate.update(c=open_gate, d=open_gate)
        # One after the other: Slurm numbers (and so schedules) jobs in the order their
        # sbatch reaches it.
        runs, followers = {}, {}
        for w in ("a", "b"):
            runs[w] = c1.start("count", params={"word": w, "gate": gate[w]})
            followers[w] = Follower(c1, runs[w].run_id)
            followers[w].wait_text(b"%s line 19\n" % w.encode())
            self.wait_run(c1, runs[w].run_id, lambda r: r.status == RUNNING, "RUNNING")
        runs["c"] = c1.start("count", params={"word": "c", "gate": gate["c"]})
        c_run = self.wait_run(c1, runs["c"].run_id, lambda r: r.pending_reason == "Resources",
                              "pending for Resources", timeout=20)
        self.assertStatus(c_run, QUEUED)
        self.assertTrue(c_run.job_id)
        runs["d"] = c1.start("count", params={"word": "d", "gate": gate["d"]})
        d_run = c1.get(runs["d"].run_id)
        self.assertStatus(d_run, QUEUED)
        self.assertEqual(d_run.job_id, "")  # not submitted: max_jobs
        before = {w: c1.get(runs[w].run_id) for w in words}

        self.assertEqual(s1.stop(signal.SIGKILL), -signal.SIGKILL)
        for f in followers.values():
            f.join(WAIT)
        for w in ("a", "b"):
            self.assertEqual(self.cluster.job_state(before[w].job_id)["JobState"], "RUNNING")
        self.assertEqual(self.cluster.job_state(before["c"].job_id)["JobState"], "PENDING")
        names = [j["name"] for j in self.cluster.squeue_json()["jobs"]]
        self.assertNotIn("prismq-" + runs["d"].run_id, names)  # the killed server had not
        # The jobs go on without a server: some of their second halves are written then.
        for w in ("a", "b"):
            with open(gate[w], "w"):
                pass
        for w in ("a", "b"):
            self.wait_file(os.path.join(self.cluster.spool_dir, runs[w].run_id + ".out"),
                           b"%s line 25\n" % w.encode())

        s2 = self.own_server(cfg, data_dir)
        c2 = self.client(s2)
        for w in words:
            done = c2.wait(runs[w].run_id, 60)
            self.assertStatus(done, COMPLETED)
            self.assertEqual(done.exit_code, 0)
            self.assertRanOnNode(done)
            if w != "d":
                self.assertEqual(done.job_id, before[w].job_id)  # taken up by its id
            self.assertOneJob(done)
            self.assertEqual((done.stdout_bytes, done.stderr_bytes),
                             (len(count_output(w)), 0))
            self.assertWholeOutput(c2, done.run_id, count_output(w))
            # Followed after the fact: the same, with the end.
            data, final = Follower(c2, done.run_id).finish()
            self.assertEqual(stdout_of(data), count_output(w))
            self.assertEqual(final, done)
            self.assertSpoolClean(done.run_id)
        self.assertEqual(s2.stop(), 0)

    def test_kill9_while_sbatch_answers(self):
        # Killed after Slurm took the job but before sbatch told its id: the next server
        # finds the job by its name and takes it up, rather than submit it again.
        bin_dir, gate = self.held_sbatch()
        cfg = config(self.cluster, [sh("count", COUNT, ["word", "gate"])], bin_dir=bin_dir)
        data_dir = os.path.join(temp_dir(), "var")
        s1 = self.own_server(cfg, data_dir)
        c1 = self.client(s1)
        run = c1.start("count", params={"word": "e", "gate": gate})
        job_id = self.wait_job_named(run.run_id)
        now = c1.get(run.run_id)
        self.assertStatus(now, QUEUED)
        self.assertEqual(now.job_id, "")  # sbatch has not answered
        self.assertEqual(s1.stop(signal.SIGKILL), -signal.SIGKILL)
        with open(gate, "w"):  # the job's second half, and the held sbatch, go on
            pass

        s2 = self.own_server(cfg, data_dir)
        c2 = self.client(s2)
        done = c2.wait(run.run_id, JOB_WAIT)
        self.assertStatus(done, COMPLETED)
        self.assertEqual(done.job_id, job_id)
        self.assertOneJob(done)
        self.assertRanOnNode(done)
        self.assertWholeOutput(c2, done.run_id, count_output("e"))
        self.assertSpoolClean(done.run_id)
        self.assertEqual(s2.stop(), 0)

    def test_cancel_while_sbatch_answers(self):
        # A cancel before the job id is known: the job is cancelled once it is.
        bin_dir, gate = self.held_sbatch()
        cfg = config(self.cluster, [sh("sleeper", READY_SLEEP)], bin_dir=bin_dir)
        srv = self.own_server(cfg, os.path.join(temp_dir(), "var"))
        c = self.client(srv)
        run = c.start("sleeper")
        job_id = self.wait_job_named(run.run_id)
        fut = c.stub.CancelRun.future(R.CancelRunRequest(run_id=run.run_id, grace_ms=1000),
                                      timeout=JOB_WAIT)
        srv.wait_log(r"run cancel requested run_id=%s" % run.run_id)
        self.assertFalse(fut.done())  # it waits for the job's end
        with open(gate, "w"):
            pass
        done = fut.result()
        self.assertStatus(done, CANCELLED)
        self.assertEqual(done.job_id, job_id)
        self.cluster.wait_state(job_id, "CANCELLED", JOB_WAIT)
        self.assertOneJob(done)
        self.assertSpoolClean(done.run_id)
        self.assertEqual(srv.stop(), 0)

    def test_graceful_stop_leaves_jobs_running(self):
        gates = temp_dir("prismq-gate-")
        gate = {w: os.path.join(gates, w) for w in ("early", "late")}
        cfg = config(self.cluster, [sh("gated", GATED, ["gate"])])
        data_dir = os.path.join(temp_dir(), "var")
        s1 = self.own_server(cfg, data_dir)
        c1 = self.client(s1)
        runs = {w: c1.start("gated", params={"gate": gate[w]}) for w in gate}
        for w in gate:
            Follower(c1, runs[w].run_id).wait_text(b"started\n")
        before = {w: self.wait_run(c1, runs[w].run_id, lambda r: r.status == RUNNING,
                                   "RUNNING") for w in gate}
        self.assertEqual(s1.stop(signal.SIGTERM), 0)
        for w in gate:
            info = self.cluster.job_state(before[w].job_id)
            self.assertEqual(info["JobState"], "RUNNING", "the stop ended job %s" % w)
        # One job ends while no server runs, the other after the next one started.
        with open(gate["early"], "w"):
            pass
        self.cluster.wait_state(before["early"].job_id, "COMPLETED", JOB_WAIT)

        s2 = self.own_server(cfg, data_dir)
        c2 = self.client(s2)
        late = c2.get(runs["late"].run_id)
        self.assertNotIn(late.status, TERMINAL, str(late))
        self.assertEqual(late.job_id, before["late"].job_id)
        follower = Follower(c2, runs["late"].run_id)
        follower.wait_text(b"started\n")
        with open(gate["late"], "w"):
            pass
        for w in gate:
            done = c2.wait(runs[w].run_id, JOB_WAIT)
            self.assertStatus(done, COMPLETED)
            self.assertEqual((done.job_id, done.exit_code), (before[w].job_id, 0))
            self.assertRanOnNode(done)
            self.assertOneJob(done)
            self.assertWholeOutput(c2, done.run_id, b"started\nfinished\n")
            self.assertSpoolClean(done.run_id)
        data, final = follower.finish()
        self.assertEqual(stdout_of(data), b"started\nfinished\n")
        self.assertStatus(final, COMPLETED)
        self.assertEqual(s2.stop(), 0)


if __name__ == "__main__":
    unittest.main()
