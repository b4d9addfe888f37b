#!/usr/bin/env python3
"""The reference figures for the Slurm executor: sbatch called in a plain loop on a
single-node test cluster (tests/integration/slurm_cluster.py, docs/slurm.md).

  slurm_ref.py [--jobs N] [--single K] [--cpus C]

Starts a SlurmCluster (installing Slurm if needed; root), then
  loop    submits N (default 50) jobs `echo x`, each writing into spool_dir/<id>.out,
          with `sbatch --parsable` one after the other as fast as it returns:
          submits_per_s = N / time of the loop; first_output_s per job = from the start
          of its sbatch to the first byte in its output file; all_completed_s = from the
          start of the loop until every job is COMPLETED (checked in squeue --json).
  single  then K (default 5) jobs one at a time on the empty node (each submitted once the
          previous one is COMPLETED): first_output_s without queueing.
The output files are watched with inotify (ctypes; IN_MODIFY on spool_dir, timed when the
event is read by a thread blocked on it), not polled. The node runs `cpus` jobs at once
(1 CPU each; default this machine's CPUs, --cpus more to take the queueing out), so in
the loop most jobs wait for a CPU: their first output includes that.
Prints one JSON line with the figures (seconds); exits 1 if Slurm is unavailable or a job
does not complete.
"""

import argparse
import ctypes
import json
import os
import select
import statistics
import struct
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                "tests", "integration"))
from slurm_cluster import SlurmCluster, SlurmUnavailable  # noqa: E402

IN_MODIFY = 0x2
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000
_EVENT = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len; then name


class FirstWrites:
    """Times (time.monotonic) of the first IN_MODIFY of each file in a directory."""

    def __init__(self, path):
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._fd = self._libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if self._fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        if self._libc.inotify_add_watch(self._fd, path.encode(), IN_MODIFY) < 0:
            raise OSError(ctypes.get_errno(), "inotify_add_watch " + path)
        self.first = {}
        self._stop_r, self._stop_w = os.pipe()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while True:
            ready, _, _ = select.select([self._fd, self._stop_r], [], [])
            now = time.monotonic()
            if self._stop_r in ready:
                return
            try:
                buf = os.read(self._fd, 65536)
            except BlockingIOError:
                continue
            off = 0
            while off < len(buf):
                _, _, _, n = _EVENT.unpack_from(buf, off)
                name = buf[off + _EVENT.size:off + _EVENT.size + n].rstrip(b"\0").decode()
                off += _EVENT.size + n
                self.first.setdefault(name, now)

    def close(self):
        os.write(self._stop_w, b"x")
        self._thread.join()
        for fd in (self._fd, self._stop_r, self._stop_w):
            os.close(fd)


def summary(values):
    values = sorted(values)
    return {"n": len(values), "mean": round(statistics.fmean(values), 4),
            "p50": round(values[len(values) // 2], 4),
            "p95": round(values[min(len(values) - 1, int(len(values) * 0.95))], 4),
            "min": round(values[0], 4), "max": round(values[-1], 4)}


def wait_completed(cluster, jobs, timeout):
    """Polls squeue --json until every job of `jobs` is COMPLETED; raises RuntimeError
    when one ends otherwise or on timeout."""
    deadline = time.monotonic() + timeout
    want = {int(j) for j in jobs}
    while True:
        states = {j["job_id"]: j["job_state"] for j in cluster.squeue_json()["jobs"]
                  if j["job_id"] in want}
        bad = {j: s for j, s in states.items() if s in ("FAILED", "CANCELLED", "TIMEOUT",
                                                        "NODE_FAIL", "OUT_OF_MEMORY")}
        if bad:
            raise RuntimeError("jobs ended badly: %s" % bad)
        if len(states) == len(want) and all(s == "COMPLETED" for s in states.values()):
            return
        if time.monotonic() >= deadline:
            raise RuntimeError("not all jobs COMPLETED within %.0f s: %s" % (timeout, states))
        time.sleep(0.02)


def submit(cluster, started, job_ids):
    t = time.monotonic()
    job = cluster.sbatch(["--output", os.path.join(cluster.spool_dir, "%j.out")], "echo x")
    started[job] = t
    job_ids.append(job)
    return job


def latencies(watch, started):
    missing = [j for j in started if j + ".out" not in watch.first]
    if missing:
        raise RuntimeError("no write seen in the output of jobs %s" % missing)
    return [watch.first[j + ".out"] - started[j] for j in started]


def measure(cluster, jobs, single):
    """The loop and single figures on a started cluster (see the top): a dict with
    "loop" and "single". Raises RuntimeError when a job does not complete."""
    watch = FirstWrites(cluster.spool_dir)
    try:
        started, loop_jobs = {}, []
        t0 = time.monotonic()
        for _ in range(jobs):
            submit(cluster, started, loop_jobs)
        loop_s = time.monotonic() - t0
        wait_completed(cluster, loop_jobs, 60 + 5 * jobs)
        all_done_s = time.monotonic() - t0
        loop_lat = latencies(watch, started)
        single_started = {}
        for _ in range(single):
            job = submit(cluster, single_started, [])
            wait_completed(cluster, [job], 60)
        single_lat = latencies(watch, single_started)
    finally:
        watch.close()
    return {"loop": {"jobs": jobs, "submit_s": round(loop_s, 3),
                     "submits_per_s": round(jobs / loop_s, 1),
                     "first_output_s": summary(loop_lat),
                     "all_completed_s": round(all_done_s, 3),
                     "completed_per_s": round(jobs / all_done_s, 2)},
            "single": {"jobs": single, "first_output_s": summary(single_lat)}
            if single else None}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=50, help="jobs submitted in the loop (50)")
    ap.add_argument("--single", type=int, default=5, help="jobs submitted one at a time (5)")
    ap.add_argument("--cpus", type=int, default=None,
                    help="CPUs of the Slurm node (default: this machine's)")
    args = ap.parse_args()

    try:
        cluster = SlurmCluster(cpus=args.cpus).start()
    except SlurmUnavailable as e:
        print("slurm_ref: no Slurm cluster: %s" % e, file=sys.stderr)
        return 1
    try:
        version = cluster.squeue_json()["meta"]["Slurm"]["release"]
        out = {"bench": "slurm_ref", "slurm": version, "cpus": cluster.cpus,
               "cluster_start_s": round(cluster.start_seconds, 3)}
        out.update(measure(cluster, args.jobs, args.single))
        out["watch"] = "inotify IN_MODIFY"
        print(json.dumps(out))
        return 0
    except RuntimeError as e:
        print("slurm_ref: %s" % e, file=sys.stderr)
        return 1
    finally:
        cluster.stop()


if __name__ == "__main__":
    sys.exit(main())
