#!/usr/bin/env python3
"""The Slurm executor against sbatch in a plain loop, on the same single-node test
cluster (tests/integration/slurm_cluster.py; docs/slurm.md, "Capacity").

  slurm_bench.py [--jobs N (50)] [--single K (20)] [--active M,... (10,50)] [--cpus C (64)]

PRISMQ_BIN names the directory of the prismqd to measure (default build/bin). Starts a
SlurmCluster with C CPUs (default 64, so that jobs do not queue for a CPU), then:
  reference  slurm_ref.py's figures: N jobs `echo x` submitted by sbatch in a plain loop
             (time per submission, first byte in each output file after its sbatch
             began, all COMPLETED), and K jobs one at a time (first output unqueued);
  loop       prismqd with a slurm module `echo x` (poll_interval 1 s): N StartRun calls
             in a loop, timed until every job is submitted (the server logs its job id)
             and until every run is COMPLETED; first byte in each output file after its
             StartRun began (inotify, as the reference);
  single     K runs one at a time, each followed with StreamOutput from the StartRun on:
             first output as a client sees it, and what the server adds to it: from
             the job's first write into its file (inotify) to the follower's first chunk;
  capacity   for each M: M runs `sleep 600` at once, with the Slurm commands behind
             counting shims (bin_dir): sbatch, squeue, scancel and sacct calls per second
             over 10 s of steady state, and prismqd's CPU time per second then.
Prints one JSON line; exits 1 when Slurm is unavailable or a run fails.
"""

import argparse
import json
import os
import shutil
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests", "integration"))
sys.path.insert(0, HERE)
from prismq_testlib import Server, protos, temp_dir  # noqa: E402
from slurm_cluster import SlurmCluster, SlurmUnavailable  # noqa: E402
import slurm_ref  # noqa: E402

import grpc  # noqa: E402

SLURM_CMDS = ("sbatch", "squeue", "scancel", "sacct")


def config(spool, bin_dir=None):
    extra = "  bin_dir: %s\n" % bin_dir if bin_dir else ""
    return ("slurm:\n  spool_dir: %s\n  poll_interval: 1s\n  max_jobs: 10000\n%s"
            "limits:\n  max_queued: 10000\n"
            "modules:\n"
            "  - {id: x, executor: slurm, argv: [echo, x]}\n"
            "  - {id: wait, executor: slurm, argv: [sleep, '600']}\n" % (spool, extra))


def shims(log):
    """A directory of scripts that note each call of a Slurm command in `log`, then run it."""
    d = temp_dir("prismq-slurm-shims-")
    for name in SLURM_CMDS:
        real = shutil.which(name)
        path = os.path.join(d, name)
        with open(path, "w", encoding="ascii") as f:
            f.write("#!/bin/sh\necho %s >> %s\nexec %s \"$@\"\n" % (name, log, real))
        os.chmod(path, 0o755)
    return d


def wait_log_count(srv, pattern, n, timeout):
    deadline = time.monotonic() + timeout
    while srv.log_text().count(pattern) < n:
        if time.monotonic() >= deadline:
            raise RuntimeError("%d of %d '%s' within %.0f s" %
                               (srv.log_text().count(pattern), n, pattern, timeout))
        time.sleep(0.01)
    return time.monotonic()


def wait_done(stub, pb, run_ids, timeout):
    deadline = time.monotonic() + timeout
    for rid in run_ids:
        left = max(1, int((deadline - time.monotonic()) * 1000))
        r = stub.WaitRun(pb.runner_pb2.WaitRunRequest(run_id=rid, timeout_ms=left),
                         timeout=left / 1000 + 5)
        if r.status != pb.runner_pb2.RUN_STATUS_COMPLETED:
            raise RuntimeError("run %s ended %s: %s" % (rid, r.status, r.error_message))


def phase_loop(cluster, stub, pb, srv, jobs):
    watch = slurm_ref.FirstWrites(cluster.spool_dir)
    try:
        started, ids = {}, []
        t0 = time.monotonic()
        for _ in range(jobs):
            t = time.monotonic()
            r = stub.StartRun(pb.runner_pb2.StartRunRequest(module_id="x"))
            started[r.run_id] = t
            ids.append(r.run_id)
        calls_s = time.monotonic() - t0
        submitted = wait_log_count(srv, "Slurm job submitted", jobs, 60 + jobs) - t0
        wait_done(stub, pb, ids, 60 + 5 * jobs)
        all_done = time.monotonic() - t0
        # Output files go with their runs: their first writes were seen by then.
        lat = [watch.first[rid + ".out"] - started[rid] for rid in ids if rid + ".out" in watch.first]
        if len(lat) != jobs:
            raise RuntimeError("first writes seen for %d of %d runs" % (len(lat), jobs))
    finally:
        watch.close()
    return {"jobs": jobs, "start_calls_s": round(calls_s, 3), "submit_s": round(submitted, 3),
            "submits_per_s": round(jobs / submitted, 1),
            "first_output_s": slurm_ref.summary(lat), "all_completed_s": round(all_done, 3),
            "completed_per_s": round(jobs / all_done, 2)}


def phase_single(cluster, stub, pb, k):
    watch = slurm_ref.FirstWrites(cluster.spool_dir)
    lat, added = [], []
    try:
        for _ in range(k):
            t = time.monotonic()
            r = stub.StartRun(pb.runner_pb2.StartRunRequest(module_id="x"))
            req = pb.runner_pb2.StreamOutputRequest(run_id=r.run_id, follow=True)
            first = None
            for chunk in stub.StreamOutput(req, timeout=60):
                if chunk.data and first is None:
                    first = time.monotonic()
            if first is None:
                raise RuntimeError("run %s gave no output" % r.run_id)
            lat.append(first - t)
            # What the server's follow path adds: from the job's first write into its
            # file to the follower's first chunk.
            added.append(first - watch.first[r.run_id + ".out"])
            wait_done(stub, pb, [r.run_id], 60)
    finally:
        watch.close()
    return {"jobs": k, "first_output_s": slurm_ref.summary(lat),
            "file_to_follower_s": slurm_ref.summary(added)}


def cpu_ticks(pid):
    with open("/proc/%d/stat" % pid, encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def phase_capacity(cluster, m):
    log = os.path.join(temp_dir("prismq-slurm-cap-"), "calls")
    open(log, "w").close()
    with Server(config(cluster.spool_dir, shims(log)), env=cluster.env()) as srv:
        stub = pb_stub(srv)
        pb = protos()
        for _ in range(m):
            stub.StartRun(pb.runner_pb2.StartRunRequest(module_id="wait"))
        wait_log_count(srv, "Slurm job running", m, 60 + 3 * m)
        time.sleep(1)  # the last start's poll pass is over: steady state from here
        with open(log, encoding="ascii") as f:
            before = f.read().split()
        c0, t0 = cpu_ticks(srv.pid), time.monotonic()
        time.sleep(10)
        c1, t1 = cpu_ticks(srv.pid), time.monotonic()
        with open(log, encoding="ascii") as f:
            during = f.read().split()[len(before):]
        cluster.cancel_all()
    secs = t1 - t0
    return {"active": m, "seconds": round(secs, 2),
            "per_s": {c: round(during.count(c) / secs, 2) for c in SLURM_CMDS},
            "submissions": before.count("sbatch"),
            "server_cpu_ms_per_s": round((c1 - c0) * 1000 / os.sysconf("SC_CLK_TCK") / secs, 2)}


def pb_stub(srv):
    return protos().runner_pb2_grpc.RunnerStub(grpc.insecure_channel(srv.addr))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=50)
    ap.add_argument("--single", type=int, default=20)
    ap.add_argument("--active", default="10,50", help="runs at once for the capacity phase")
    ap.add_argument("--cpus", type=int, default=64)
    args = ap.parse_args()
    try:
        cluster = SlurmCluster(cpus=args.cpus).start()
    except SlurmUnavailable as e:
        print("slurm_bench: no Slurm cluster: %s" % e, file=sys.stderr)
        return 1
    try:
        ref = slurm_ref.measure(cluster, args.jobs, args.single)
        pb = protos()
        with Server(config(cluster.spool_dir), env=cluster.env()) as srv:
            stub = pb_stub(srv)
            loop = phase_loop(cluster, stub, pb, srv, args.jobs)
            single = phase_single(cluster, stub, pb, args.single)
        capacity = [phase_capacity(cluster, int(m)) for m in args.active.split(",") if m]
        out = {"bench": "slurm", "cpus": cluster.cpus, "reference": ref,
               "prismqd": {"loop": loop, "single": single, "capacity": capacity},
               "ratios": {
                   "time_per_submission": round(loop["submit_s"] / ref["loop"]["submit_s"], 3),
                   "time_to_all_completed": round(loop["all_completed_s"]
                                                  / ref["loop"]["all_completed_s"], 3),
                   "first_output_mean_s_added": round(
                       single["first_output_s"]["mean"]
                       - ref["single"]["first_output_s"]["mean"], 4)}}
        print(json.dumps(out))
        return 0
    except (RuntimeError, grpc.RpcError) as e:
        print("slurm_bench: %s" % e, file=sys.stderr)
        return 1
    finally:
        cluster.stop()


if __name__ == "__main__":
    sys.exit(main())
