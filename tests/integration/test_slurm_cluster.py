"""The single-node Slurm cluster that the Slurm executor's tests will run on
(slurm_cluster.py, docs/slurm.md): it starts, and Slurm 22.05 behaves on it the way the
executor is going to rely on.

  Jobs       a job's stdout and stderr files in spool_dir get its output, and it ends
             COMPLETED with ExitCode 0:0; `exit 3` ends FAILED, ExitCode 3:0, Reason
             NonZeroExitCode (squeue --json: exit_code 768, the wait status); a script
             killed by SIGUSR1 ends FAILED, ExitCode 0:10, Reason JobLaunchFailure.
  Signals    `scancel --signal=TERM --full` reaches the batch script's trap and its
             children at once, without ending the job by itself (slurmstepd writes its
             "CANCELLED AT" line into the job's stderr all the same); a script that
             outlives SIGTERM is ended by `scancel --signal=KILL --full`: CANCELLED,
             ExitCode 0:9, children gone.
  Time limit --time=1 ends the job TIMEOUT / TimeLimit after SIGTERM: 60 to 90 s after
             it starts (limits are whole minutes, checked every 30 s), so it only runs
             with PRISMQ_SLURM_TIMELIMIT=1.
  Full node  one 1-CPU job per CPU all run at once on the one node (select/cons_tres,
             CR_Core); one more stays PENDING with Reason Resources; squeue --json lists
             them with their states; scancel ends them all.
  Clusters   a second cluster runs beside the first (ctest runs two tests at once).
  Leftovers  a child left running by a batch script escapes Slurm (linuxproc tracks
             processes through their parents; the job ends COMPLETED with it running);
             stop() kills it, even in a job submitted with env() only.
  env()      a child given env() reaches the cluster with the stock commands.

Skipped, with the reason, only where Slurm cannot be installed or started
(SlurmUnavailable). Every wait is a poll with a deadline.
"""

import os
import re
import subprocess
import sys
import time
import unittest

from slurm_cluster import SlurmCluster

WAIT = 30.0  # one job state change, or output appearing
TIMELIMIT = os.environ.get("PRISMQ_SLURM_TIMELIMIT") == "1"


def read(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


def wait_text(path, needle, timeout=WAIT):
    """Polls the file until it holds `needle`; returns its text."""
    deadline = time.monotonic() + timeout
    while needle not in read(path):
        if time.monotonic() >= deadline:
            raise AssertionError("no %r in %s within %.0f s: %r" % (needle, path, timeout,
                                                                     read(path)))
        time.sleep(0.02)
    return read(path)


def sleep_arg(n):
    """A `sleep` argument (about an hour) unique to test n of this process, to find that
    sleep in /proc while other test processes run the same tests."""
    return "%d.%d" % (3600 + n, os.getpid())


def pids_with_arg(arg):
    """Pids of the live (not zombie) processes with `arg` among their arguments."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % entry, "rb") as f:
                if arg.encode() in f.read().split(b"\0"):
                    out.append(int(entry))
        except OSError:
            pass
    return out


def wait_pids(arg, count, timeout=WAIT):
    """Polls until `count` live processes have `arg` among their arguments (a child
    has been forked and exec'd); returns their pids."""
    deadline = time.monotonic() + timeout
    while len(pids_with_arg(arg)) != count:
        if time.monotonic() >= deadline:
            raise AssertionError("%d processes with argument %s, not %d, after %.0f s"
                                 % (len(pids_with_arg(arg)), arg, count, timeout))
        time.sleep(0.02)
    return pids_with_arg(arg)


# A batch script that says when it gets SIGTERM and goes on waiting for a child that
# ignores it (sleep: from sleep_arg, to find the child in /proc).
STUBBORN = """trap 'echo got-TERM' TERM
echo started
(trap '' TERM; exec sleep {sleep}) &
child=$!
while kill -0 $child 2>/dev/null; do wait $child; done
echo ended
"""


class SlurmClusterTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.cluster = SlurmCluster().start_or_skip()

    @classmethod
    def tearDownClass(cls):
        cls.cluster.stop()

    def tearDown(self):
        # Each test starts on an empty node, whatever the last one left.
        self.cluster.cancel_all()
        deadline = time.monotonic() + WAIT
        while self.cluster.active_jobs():
            self.assertLess(time.monotonic(), deadline, "jobs still active after scancel")
            time.sleep(0.05)

    def submit(self, name, script, args=()):
        """Submits `script` with its stdout in spool_dir/NAME.out and its stderr in
        NAME.err; returns (job id, stdout path, stderr path)."""
        out = os.path.join(self.cluster.spool_dir, name + ".out")
        err = os.path.join(self.cluster.spool_dir, name + ".err")
        job = self.cluster.sbatch(["--job-name", name, "--output", out, "--error", err] +
                                  list(args), script)
        return job, out, err

    def test_completed_job_output(self):
        job, out, err = self.submit("ok", "echo line-1; echo line-2 >&2; echo line-3")
        info = self.cluster.wait_state(job, "COMPLETED", WAIT)
        self.assertEqual(info["ExitCode"], "0:0")
        self.assertEqual(info["NodeList"], self.cluster.node)
        self.assertEqual(info["StdOut"], out)
        self.assertEqual(read(out), "line-1\nline-3\n")
        self.assertEqual(read(err), "line-2\n")

    def test_failed_job_exit_code(self):
        job, out, _ = self.submit("fail", "echo before; exit 3")
        info = self.cluster.wait_state(job, {"FAILED", "COMPLETED"}, WAIT)
        self.assertEqual((info["JobState"], info["ExitCode"], info["Reason"]),
                         ("FAILED", "3:0", "NonZeroExitCode"))
        self.assertEqual(read(out), "before\n")
        # An ended job stays in squeue --json (MinJobAge) with its raw wait status.
        jobs = {j["job_id"]: j for j in self.cluster.squeue_json()["jobs"]}
        self.assertEqual(jobs[int(job)]["job_state"], "FAILED")
        self.assertEqual(jobs[int(job)]["exit_code"], 3 << 8)

    def test_killed_by_signal(self):
        job, out, _ = self.submit("signalled", "echo before; kill -USR1 $$; echo after")
        info = self.cluster.wait_state(job, {"FAILED", "COMPLETED", "CANCELLED"}, WAIT)
        # Slurm's word for a batch script that a signal ended.
        self.assertEqual((info["JobState"], info["ExitCode"], info["Reason"]),
                         ("FAILED", "0:10", "JobLaunchFailure"))
        self.assertEqual(read(out), "before\n")

    def test_term_full_reaches_trap_and_children(self):
        arg = sleep_arg(1)
        script = ("trap 'echo got-TERM; exit 7' TERM\n"
                  "echo started\nsleep %s &\nwait\necho not-reached\n" % arg)
        job, out, err = self.submit("term", script)
        wait_text(out, "started")
        wait_pids(arg, 1)
        self.cluster.run(["scancel", "--signal=TERM", "--full", job])
        info = self.cluster.wait_state(job, {"FAILED", "COMPLETED", "CANCELLED"}, WAIT)
        # The trap ran (the shell's wait returned at once: sleep got SIGTERM too) and its
        # exit status is the job's.
        self.assertEqual(read(out), "started\ngot-TERM\n")
        self.assertEqual((info["JobState"], info["ExitCode"]), ("FAILED", "7:0"))
        wait_pids(arg, 0)  # dead of SIGTERM too
        # slurmstepd says CANCELLED in the job's stderr even though this only signalled it.
        self.assertRegex(read(err), r"\*\*\* JOB %s ON \S+ CANCELLED AT " % job)

    def test_term_then_kill(self):
        arg = sleep_arg(2)
        job, out, _ = self.submit("stubborn", STUBBORN.format(sleep=arg))
        wait_text(out, "started")
        wait_pids(arg, 1)  # exec'd, SIGTERM ignored
        self.cluster.run(["scancel", "--signal=TERM", "--full", job])
        wait_text(out, "got-TERM")
        # SIGTERM alone does not end a job: the script and its child go on.
        self.assertEqual(self.cluster.job_state(job)["JobState"], "RUNNING")
        self.assertEqual(len(pids_with_arg(arg)), 1)
        t0 = time.monotonic()
        self.cluster.run(["scancel", "--signal=KILL", "--full", job])
        info = self.cluster.wait_state(job, "CANCELLED", WAIT)
        took = time.monotonic() - t0
        self.assertEqual(info["ExitCode"], "0:9")
        self.assertEqual(pids_with_arg(arg), [])
        # -s KILL is a cancel: SIGTERM again, KillWait (5 s, slurmd's least), SIGKILL; the
        # second "got-TERM" shows it.
        self.assertEqual(read(out).count("got-TERM"), 2)
        self.assertNotIn("ended", read(out))
        self.assertLess(took, 5 + WAIT)
        sys.stderr.write("(scancel --signal=KILL --full: CANCELLED %.2f s later) " % took)

    @unittest.skipUnless(TIMELIMIT, "Slurm ends a job over its time limit only 60 to 90 s "
                         "after it starts (whole minutes, checked every 30 s): set "
                         "PRISMQ_SLURM_TIMELIMIT=1 to run this test")
    def test_time_limit(self):
        arg = sleep_arg(3)
        job, out, err = self.submit("timelimit", STUBBORN.format(sleep=arg), ["--time=1"])
        wait_text(out, "started")
        wait_pids(arg, 1)
        t0 = time.monotonic()
        info = self.cluster.wait_state(job, {"TIMEOUT", "CANCELLED", "FAILED", "COMPLETED"}, 150)
        sys.stderr.write("(--time=1: TIMEOUT %.1f s after the job's first output) "
                         % (time.monotonic() - t0))
        self.assertEqual((info["JobState"], info["Reason"], info["ExitCode"]),
                         ("TIMEOUT", "TimeLimit", "0:9"))
        self.assertIn("got-TERM", read(out))
        self.assertRegex(read(err), r"CANCELLED AT \S+ DUE TO TIME LIMIT")
        self.assertEqual(pids_with_arg(arg), [])

    def test_full_node_pending_resources(self):
        cpus = self.cluster.cpus
        running = [self.submit("fill%d" % i, "sleep 300")[0] for i in range(cpus)]
        for job in running:
            info = self.cluster.wait_state(job, "RUNNING", WAIT)
            self.assertEqual((info["NodeList"], info["NumCPUs"]), (self.cluster.node, "1"))
        pending, out, _ = self.submit("late", "echo late")
        self.cluster.wait_state(pending, "PENDING", WAIT, reason="Resources")

        doc = self.cluster.squeue_json()
        self.assertEqual(doc["errors"], [])
        states = {str(j["job_id"]): (j["job_state"], j["state_reason"]) for j in doc["jobs"]}
        for job in running:
            self.assertEqual(states[job], ("RUNNING", "None"))
        self.assertEqual(states[pending], ("PENDING", "Resources"))
        self.assertEqual(sorted(self.cluster.active_jobs(), key=int),
                         sorted(running + [pending], key=int))

        self.cluster.cancel_all()
        for job in running + [pending]:
            info = self.cluster.wait_state(job, "CANCELLED", WAIT)
            # SIGTERM goes to the sleep, then to the shell: killed by it (0:15) or, when
            # the sleep's end came first, the shell's `exit 143` (143:0).
            self.assertIn(info["ExitCode"], ("0:0",) if job == pending else ("0:15", "143:0"))
        self.assertEqual(read(out), "")

    def test_second_cluster_beside(self):
        with SlurmCluster() as other:
            self.assertNotEqual(other.node, self.cluster.node)
            self.assertNotEqual(other.conf_path, self.cluster.conf_path)
            mine, out, _ = self.submit("beside", "echo mine")
            theirs = other.sbatch(["--output", os.path.join(other.spool_dir, "x.out")],
                                  "echo theirs")
            self.assertEqual(other.wait_state(theirs, "COMPLETED", WAIT)["NodeList"], other.node)
            self.assertEqual(self.cluster.wait_state(mine, "COMPLETED", WAIT)["NodeList"],
                             self.cluster.node)
            self.assertEqual(read(os.path.join(other.spool_dir, "x.out")), "theirs\n")
            self.assertEqual(read(out), "mine\n")

    def test_leftover_child_escapes_and_stop_kills_it(self):
        # A child that outlives its batch script is reparented to init, where
        # proctrack/linuxproc loses it: the job is COMPLETED with the child still running.
        # stop() kills it all the same, for a job submitted the way prismqd will submit
        # (its own sbatch, env() only, nothing of this module's).
        arg = sleep_arg(4)
        other = SlurmCluster().start()
        try:
            env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
            env.update(other.env())
            res = subprocess.run(
                ["sbatch", "--parsable", "--export=NONE", "--output",
                 os.path.join(other.spool_dir, "left.out")],
                input="#!/bin/sh\nsleep %s &\necho started\n" % arg, env=env,
                capture_output=True, text=True, timeout=WAIT, check=True)
            other.wait_state(res.stdout.strip(), "COMPLETED", WAIT)
            pid = wait_pids(arg, 1)[0]
            with open("/proc/%d/stat" % pid, encoding="ascii") as f:
                self.assertEqual(f.read().rsplit(")", 1)[1].split()[1], "1")  # ppid
        finally:
            other.stop()
        wait_pids(arg, 0, timeout=5)  # SIGKILL sent by stop(): dying

    def test_env_for_children(self):
        env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
        env.update(self.cluster.env())
        res = subprocess.run(["sinfo", "-h", "-o", "%P %T %N"], env=env, capture_output=True,
                             text=True, timeout=WAIT, check=True)
        self.assertEqual(res.stdout.split(), ["debug*", "idle", self.cluster.node])
        res = subprocess.run(["scontrol", "show", "config"], env=env, capture_output=True,
                             text=True, timeout=WAIT, check=True)
        self.assertRegex(res.stdout, r"(?m)^ClusterName\s*=\s*%s$" % re.escape(
            self.cluster.cluster_name))


if __name__ == "__main__":
    unittest.main()
