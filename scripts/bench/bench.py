"""PrismQ Runner benchmarks: prismqd against references measured in the same run, as ratios.

Run through scripts/bench/run.sh, which installs the bench packages and builds prismqd,
grpc_ref_server, spawn_ref, tls_handshake, bench_client and gen_runs first:

  bench.py --build-dir DIR --out RESULTS.json [--only PHASE[,PHASE...]]

Phases (in order): unary, start, firstbyte, stream, progress, fanout, memory, instructions, tls,
bigtable. Prints
a table on stdout and writes every figure, the commands behind them and the machine to
RESULTS.json. Exits 0 when every measurement ran and its correctness checks passed (a
missed performance target does not fail the run; the table and the JSON say so), 1
otherwise.

Environment: BENCH_UNARY_SECONDS (seconds per h2load run, default 2; 3 runs per server and case),
BENCH_PIN=0 to skip the pinned unary runs, BENCH_BIGTABLE_RUNS (runs in the bigtable phase's
generated table, default 1000000).
"""

import argparse
import contextlib
import json
import os
import platform
import re
import hashlib
import select
import shlex
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import time
import urllib.request

import grpc

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
import prismq_testlib as tl  # noqa: E402  (after the path set-up)

MIB = 1 << 20
GIB = 1 << 30
H2_HEADERS = ["-H", "content-type: application/grpc", "-H", "te: trailers"]
HEALTH_PATH = "/grpc.health.v1.Health/Check"
GETRUN_PATH = "/prismq.runner.v1.Runner/GetRun"
UNARY_SECONDS = float(os.environ.get("BENCH_UNARY_SECONDS", "2"))
UNARY_REPS = 3
PIN = os.environ.get("BENCH_PIN", "1") != "0" and os.cpu_count() >= 2
SERVER_CPU, LOAD_CPU = "0", "1"
PHASES = ("unary", "start", "firstbyte", "stream", "progress", "fanout", "memory", "instructions", "tls",
          "bigtable", "http", "sse")
TLS_HANDSHAKE_SECONDS = 2
TLS_REPS = 3
BIGTABLE_RUNS = int(os.environ.get("BENCH_BIGTABLE_RUNS", "1000000"))
BIGTABLE_STARTUP_REPS = 3
BIGTABLE_GETRUN_CALLS = 10000
BIGTABLE_LIST_SECONDS = 2  # per ListRuns case and server: sizes the number of calls
BIGTABLE_PAGE = 100  # runs per ListRuns page (the server's default page size)
# How much more RSS than on the empty table prismqd may have on the big one after the same
# calls: SQLite's page cache (sqlite_default_cache_kb, 2 MiB) fills on the big table only,
# plus 2 MiB of slack. Anything kept per run would show as hundreds of MiB.
BIGTABLE_RSS_SLACK_MIB = 4.0
# The generated runs span 30 days: without this, retention's defaults (max_age 7d,
# max_runs 100000) would delete most of them while they are measured. (A figure of the
# retention sweep itself configures its own.)
BIGTABLE_CONFIG = "retention: {sweep_interval: 0}\n"
# ListRuns first pages (default page size) measured in the bigtable phase: (key, filter
# arguments of bench_client listruns, whether a target applies). gen_runs gives 10 % of
# the runs FAILED (4), 1.5 % TIMED_OUT (6), each team label 5 %, env=prod 50 %.
BIGTABLE_LISTS = (
    ("status_failed", ["status=4"], True),
    ("label_team", ["label=team=team-07"], True),
    ("label_env_prod", ["label=env=prod"], False),
    ("status_failed_timed_out", ["status=4", "status=6"], False),
    ("status_and_label", ["status=4", "label=team=team-07"], False),
)

# The progress phase: PROGRESS_BYTES of text lines, one progress line in PROGRESS_EVERY,
# streamed by a module with a progress pattern (the example) and by one without.
PROGRESS_BYTES = 512 * MIB
PROGRESS_EVERY = 1000
PROGRESS_LINE = b"%09d: one line of the output of a long job, nothing to say\n"  # 64 bytes
PROGRESS_PATTERN = r"^PROGRESS (?P<done>\d+)/(?P<total>\d+)(?: (?P<message>.*))?$"

# The modules every benchmark server has; FAN_FILE and LINES_FILE are filled in at start-up.
BENCH_MODULES = """
  - id: "true"
    argv: ["/bin/true"]
  - id: echo
    argv: ["/bin/echo", "x"]
  - id: emit
    argv: ["head", "-c", "{bytes}", "/dev/zero"]
    parameters:
      - {name: bytes, required: true, pattern: "[0-9]+"}
  - id: fan
    argv: ["cat", "FAN_FILE"]
  - id: sleep
    argv: ["sleep", "{seconds}"]
    parameters:
      - {name: seconds, required: true, pattern: "[0-9]+"}
  - id: lines
    argv: ["cat", "LINES_FILE"]
  - id: lines_progress
    argv: ["cat", "LINES_FILE"]
    progress: {pattern: 'PROGRESS_PATTERN'}
  - id: lines_scan
    argv: ["cat", "LINES_FILE"]
    progress: {pattern: '^PROGRESS (?P<done>\\d+)/(?P<total>\\d+) never$'}
""".replace("PROGRESS_PATTERN", PROGRESS_PATTERN)


class BenchError(Exception):
    """A measurement could not be made or its correctness check failed."""


class Bench:
    def __init__(self, build_dir, out):
        self.build = os.path.abspath(build_dir)
        self.bdir = os.path.join(self.build, "bench")
        self.out = out
        self.tmp = tl.temp_dir("prismq-bench-")
        self.fan_file = os.path.join(self.tmp, "fan.bin")
        self.lines_file = os.path.join(self.tmp, "lines.txt")
        self.results = {"machine": machine(), "commands": {}, "targets": []}
        self.errors = []
        self.nwrap = 0
        tl.BIN_DIR = os.path.join(self.build, "bin")
        tl.PROTO_DIR = os.path.join(ROOT, "proto")
        tl.WAIT = 120.0  # valgrind start-up, and shutdown with 10,000 queued runs
        self.pb = tl.protos()

    # ---- helpers ------------------------------------------------------------------

    def tool(self, name):
        return os.path.join(self.bdir, name)

    def config(self, max_concurrent=64, max_queued=20000, extra=""):
        """prismqd's configuration; extra is more top-level YAML."""
        mods = BENCH_MODULES.replace("FAN_FILE", self.fan_file).replace("LINES_FILE", self.lines_file)
        return ("limits: {max_concurrent: %d, max_queued: %d, output_max_bytes: 0}\n%smodules:%s"
                % (max_concurrent, max_queued, extra, mods))

    def server(self, wrapper=None, env=None, extra_args=(), data_dir=None, **cfg):
        """A started prismqd; wrapper is a command prefix (valgrind), env more
        environment variables, extra_args more command-line arguments, data_dir the
        data directory (default: a new one)."""
        bin_dir = os.path.join(self.build, "bin")
        if wrapper:
            self.nwrap += 1
            bin_dir = os.path.join(self.tmp, "wrap-%d" % self.nwrap)
            os.makedirs(bin_dir)
            path = os.path.join(bin_dir, "prismqd")
            with open(path, "w") as f:
                f.write("#!/bin/sh\nexec %s \"$@\"\n" % shlex.join(wrapper + [os.path.join(self.build, "bin", "prismqd")]))
            os.chmod(path, 0o755)
        tl.BIN_DIR = bin_dir
        try:
            srv = tl.Server(config_yaml=self.config(**cfg), env=env, extra_args=extra_args)
            if data_dir:
                srv.data_dir = data_dir
            return srv.start()
        finally:
            tl.BIN_DIR = os.path.join(self.build, "bin")

    def runner(self, srv):
        ch = srv.channel()
        return ch, self.pb.runner_pb2_grpc.RunnerStub(ch)

    def run_to_end(self, stub, module, timeout=300, **params):
        pb = self.pb.runner_pb2
        r = stub.StartRun(pb.StartRunRequest(module_id=module, parameters=params), timeout=30)
        return stub.WaitRun(pb.WaitRunRequest(run_id=r.run_id, timeout_ms=timeout * 1000),
                            timeout=timeout + 10)

    def cmd(self, key, argv, timeout=600):
        """Runs argv, records it under key, returns its JSON result line."""
        self.results["commands"][key] = shlex.join(argv)
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        if p.returncode != 0:
            raise BenchError("%s failed (exit %d): %s %s" % (key, p.returncode, p.stdout.strip(),
                                                               p.stderr.strip()[-2000:]))
        return json.loads(p.stdout.strip().splitlines()[-1])

    def body_file(self, name, req):
        """Writes the packed request `req` as one gRPC message (h2load's -d body); returns
        the path."""
        path = os.path.join(self.tmp, name + ".bin")
        with open(path, "wb") as f:
            f.write(b"\0" + len(req).to_bytes(4, "big") + req)
        return path

    def target(self, name, value, op, bound, unit, note=""):
        ok = value is not None and (value >= bound if op == ">=" else value <= bound)
        self.results["targets"].append({"name": name, "value": value, "op": op, "target": bound,
                                        "unit": unit, "pass": ok, "note": note})

    # ---- 1. unary -----------------------------------------------------------------

    def h2load(self, url, body, n, c, m, log=None, pin=False):
        """One h2load run; with `log`, a per-request log file for the percentiles."""
        argv = ["h2load", "-n", str(n), "-c", str(c), "-m", str(m), "-t", "1", "-d", body] + H2_HEADERS
        if log:
            argv += ["--log-file", log]
            if os.path.exists(log):
                os.unlink(log)  # h2load appends
        argv.append(url)
        if pin and PIN:
            argv = ["taskset", "-c", LOAD_CPU] + argv
        p = subprocess.run(argv, capture_output=True, text=True, timeout=300)
        if p.returncode != 0:
            raise BenchError("h2load failed: %s" % p.stderr.strip())
        return argv, parse_h2load(p.stdout, log)

    def unary_one(self, key, url, body, msg_bytes, n, c, m, pin, logged=False):
        """One h2load run of n requests, checked; returns its parsed figures. Only a
        logged run has p50_us and p99_us."""
        log = os.path.join(self.tmp, "h2load.log") if logged else None
        argv, r = self.h2load(url, body, n, c, m, log, pin)
        self.results["commands"]["unary.%s%s" % (key, ".logged" if logged else "")] = shlex.join(argv)
        # h2load counts any HTTP 2xx as a success, even with grpc-status != 0; an error
        # answer is Trailers-Only (no DATA), so the DATA byte count proves every request
        # got a real response message of the expected size.
        want = n * (5 + msg_bytes)
        rows = r["log_rows"] if logged else n
        if r["succeeded"] != n or r["status_2xx"] != n or rows != n or r["data_bytes"] != want:
            raise BenchError("unary %s: %d/%d succeeded, %d 2xx, %d log rows, %d DATA bytes (want %d)"
                             % (key, r["succeeded"], n, r["status_2xx"], rows, r["data_bytes"], want))
        r["requests"] = n
        return r

    def pin_servers(self, pids, pin):
        """Puts every thread of each server on SERVER_CPU (pin) or on all CPUs."""
        cpus = SERVER_CPU if pin else "0-%d" % (os.cpu_count() - 1)
        for pid in pids:
            subprocess.run(["taskset", "-a", "-p", "-c", cpus, str(pid)], check=True, capture_output=True, timeout=30)

    def unary_compare(self, key, targets, c, m, pin):
        """Two or more servers on one method and concurrency: a warm-up run each sizes the
        request count (about UNARY_SECONDS per run), then UNARY_REPS runs of each, in turn,
        for QPS and mean latency, then one more run each with h2load's per-request log,
        for p50 and p99. (The log costs h2load a write(2) per request; at -m 1 h2load is
        the busier process against prismqd, so the log would add to prismqd's mean
        latency and not to gRPC C++'s: 50 -> 64 us against 112 -> 112 us for Health.)
        targets: [(label, url, body, msg_bytes)], the first being the one measured against
        the others. Returns ({label: figures}, {other label: ratios}), the ratios being
        medians of the per-rep ratios first / other."""
        n = {}
        for label, url, body, _ in targets:
            _, warm = self.h2load(url, body, 3000, c, m, None, pin)
            n[label] = int(min(1_000_000, max(5000, warm["qps"] * UNARY_SECONDS)))
        reps = {label: [] for label, _, _, _ in targets}
        for _ in range(UNARY_REPS):
            for label, url, body, size in targets:
                reps[label].append(self.unary_one("%s.%s" % (label, key), url, body, size, n[label], c, m, pin))
        logged = {label: self.unary_one("%s.%s" % (label, key), url, body, size, n[label], c, m, pin, True)
                  for label, url, body, size in targets}
        out = {}
        for label, rs in reps.items():
            out[label] = {f: statistics.median(r[f] for r in rs) for f in ("qps", "mean_us")}
            out[label].update({f: logged[label][f] for f in ("p50_us", "p99_us")})
            out[label]["reps"] = rs
            out[label]["logged_run"] = logged[label]
        first = targets[0][0]
        ratios = {}
        for label, _, _, _ in targets[1:]:
            pairs = list(zip(reps[first], reps[label]))
            lp, lg = logged[first], logged[label]
            ratios[label] = {"qps": statistics.median(p["qps"] / g["qps"] for p, g in pairs),
                             "mean_latency": statistics.median(p["mean_us"] / g["mean_us"] for p, g in pairs),
                             "p50_latency": lp["p50_us"] / lg["p50_us"],
                             "p99_latency": lp["p99_us"] / lg["p99_us"]}
        return out, ratios

    def ref_server(self, *args):
        """A started grpc_ref_server with options args; returns (Popen, "127.0.0.1:PORT")."""
        argv = [self.tool("grpc_ref_server")] + list(args)
        ref = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        line = read_line(ref.stdout, 30)
        mt = re.search(r"listening on 127\.0\.0\.1:(\d+)", line or "")
        if not mt:
            stop_proc(ref)
            raise BenchError("grpc_ref_server did not start: %r" % line)
        return ref, "127.0.0.1:" + mt.group(1)

    def check_unary(self, label, channel, run):
        """One grpcio Health/Check and one GetRun of the completed run on channel: the
        answers must be right (h2load cannot tell). Returns the response sizes, which the
        h2load runs' DATA counts are checked with: {"health": bytes, "getrun": bytes}."""
        pb = self.pb
        h = pb.health_pb2_grpc.HealthStub(channel).Check(pb.health_pb2.HealthCheckRequest(), timeout=10)
        if h.status != pb.health_pb2.HealthCheckResponse.SERVING:
            raise BenchError("%s Health/Check: %s" % (label, h))
        g = pb.runner_pb2_grpc.RunnerStub(channel).GetRun(pb.runner_pb2.GetRunRequest(run_id=run.run_id), timeout=10)
        if g.run_id != run.run_id or g.status != pb.runner_pb2.RUN_STATUS_COMPLETED:
            raise BenchError("%s GetRun: %s" % (label, g))
        return {"health": len(h.SerializeToString()), "getrun": len(g.SerializeToString())}

    def getrun_target(self, srv):
        """A completed run on srv for GetRun to fetch; returns the Run."""
        ch, stub = self.runner(srv)
        with ch:
            run = self.run_to_end(stub, "emit", bytes="100")
        if run.status != self.pb.runner_pb2.RUN_STATUS_COMPLETED:
            raise BenchError("the GetRun target run did not complete: %s" % run)
        return run

    def phase_unary(self):
        pb = self.pb
        srv = self.server()
        ref = None
        try:
            ref, ref_addr = self.ref_server()
            run = self.getrun_target(srv)
            getrun_req = pb.runner_pb2.GetRunRequest(run_id=run.run_id).SerializeToString()
            health_req = pb.health_pb2.HealthCheckRequest().SerializeToString()
            bodies = {"health": self.body_file("health", health_req), "getrun": self.body_file("getrun", getrun_req)}
            sizes = {}
            for label, addr in (("prismqd", srv.addr), ("grpc_cpp", ref_addr)):
                with grpc.insecure_channel(addr) as c2:
                    sizes[label] = self.check_unary(label, c2, run)
            res = {"pinned_runs": PIN, "reps": UNARY_REPS, "response_bytes": sizes, "prismqd": {}, "grpc_cpp": {},
                   "ratios": {}}
            # Headline: both servers free to use every CPU (gRPC C++ with its thread pool,
            # as deployed by default). Then, for context, pinned: server on one CPU, h2load
            # on another (a per-core comparison).
            runs = [("%s_c4_m%d%s" % (method, m, "_pinned" if pin else ""), path, method, m, pin)
                    for pin in ((False, True) if PIN else (False,))
                    for method, path in (("health", HEALTH_PATH), ("getrun", GETRUN_PATH)) for m in (1, 25)]
            for key, path, method, m, pin in runs:
                self.pin_servers((srv.pid, ref.pid), pin)
                targets = [(label, "http://%s%s" % (addr, path), bodies[method], sizes[label][method])
                           for label, addr in (("prismqd", srv.addr), ("grpc_cpp", ref_addr))]
                figures, ratios = self.unary_compare(key, targets, 4, m, pin)
                res["ratios"][key] = ratios["grpc_cpp"]
                for label, f in figures.items():
                    res[label][key] = f
            self.results["unary"] = res
            for method in ("health", "getrun"):
                self.target("unary %s QPS vs gRPC C++ (-c4 -m25)" % method,
                            res["ratios"][method + "_c4_m25"]["qps"], ">=", 2.0, "x")
                self.target("unary %s mean latency vs gRPC C++ (-c4 -m1)" % method,
                            res["ratios"][method + "_c4_m1"]["mean_latency"], "<=", 0.5, "x")
        finally:
            if ref:
                stop_proc(ref)
            srv.stop()

    # ---- HTTP/1.1 + JSON beside gRPC (docs/http.md) ------------------------------------

    def h1load(self, key, url, n, c, m):
        """One h2load --h1 run of n GETs (m pipelined per connection), every one answered
        2xx; returns its parsed figures."""
        argv = ["h2load", "--h1", "-n", str(n), "-c", str(c), "-m", str(m), "-t", "1", url]
        self.results["commands"]["http." + key] = shlex.join(argv)
        p = subprocess.run(argv, capture_output=True, text=True, timeout=300)
        r = parse_h2load(p.stdout) if p.returncode == 0 else None
        if not r or r["succeeded"] != n or r["status_2xx"] != n:
            raise BenchError("h2load --h1 %s: %s" % (key, (p.stdout + p.stderr).strip()[-300:]))
        return r

    def phase_http(self):
        """GetRun as HTTP/1.1 JSON (GET /v1/runs/ID, h2load --h1) against gRPC GetRun
        (h2load) on the same prismqd, in turn, UNARY_REPS times: 4 connections, one request
        in flight on each (-m1), then 25 (HTTP/1.1 pipelined, HTTP/2 multiplexed)."""
        srv = self.server()
        try:
            run = self.getrun_target(srv)
            req = self.pb.runner_pb2.GetRunRequest(run_id=run.run_id).SerializeToString()
            body = self.body_file("getrun", req)
            res = {}
            for m in (1, 25):
                key = "getrun_c4_m%d" % m
                grpc_r, http_r = [], []
                for _ in range(UNARY_REPS):
                    grpc_r.append(self.h2load("http://%s%s" % (srv.addr, GETRUN_PATH), body, 20000, 4, m)[1])
                    http_r.append(self.h1load(key, "http://%s/v1/runs/%s" % (srv.addr, run.run_id), 20000, 4, m))
                res[key] = {"grpc_qps": statistics.median(r["qps"] for r in grpc_r),
                            "http_qps": statistics.median(r["qps"] for r in http_r),
                            "ratio": statistics.median(h["qps"] / g["qps"] for g, h in zip(grpc_r, http_r))}
            self.results["http"] = res
            # The target compares like with like: 4 requests in flight, one per connection.
            # -m25 is recorded only: HTTP/1.1 has no multiplexing, and evhttp answers a
            # connection's pipelined requests one at a time, each with its own writes,
            # where gRPC's 25 answers share them (docs/performance.md).
            self.target("HTTP/1.1 JSON GetRun QPS vs gRPC GetRun (-c4 -m1)",
                        res["getrun_c4_m1"]["ratio"], ">=", 0.5, "x")
        finally:
            srv.stop()

    def http_follow(self, srv, nbytes, accept):
        """Starts a run of emit bytes=nbytes over HTTP/1.1 and follows its output live with
        curl (`accept`: text/event-stream or application/octet-stream) to its end. Returns
        {"bytes_per_s": output bytes per second from the start, "body_bytes": what curl got}."""
        req = json.dumps({"moduleId": "emit", "parameters": {"bytes": str(nbytes)}}).encode()
        t0 = time.monotonic()
        with urllib.request.urlopen(urllib.request.Request(
                "http://%s/v1/runs" % srv.addr, data=req,
                headers={"Content-Type": "application/json"}), timeout=60) as r:
            run_id = json.load(r)["runId"]
        p = subprocess.run(["curl", "-sS", "-N", "-o", "/dev/null", "-w", "%{size_download}",
                            "-H", "Accept: " + accept,
                            "http://%s/v1/runs/%s/output?follow=true" % (srv.addr, run_id)],
                           capture_output=True, text=True, timeout=600)
        elapsed = time.monotonic() - t0
        if p.returncode != 0:
            raise BenchError("curl follow (%s): %s" % (accept, p.stderr.strip()[-300:]))
        return {"bytes_per_s": nbytes / elapsed, "body_bytes": int(p.stdout)}

    def phase_sse(self):
        """Following a run's output live over HTTP/1.1, as Server-Sent Events (each chunk
        a JSON event, its bytes in base64) and as raw bytes, against gRPC StreamOutput
        (bench_client stream) on the same prismqd; each follow starts its own run of emit
        bytes=256 MiB; in turn, 3 times."""
        nbytes = 256 * MIB
        srv = self.server()
        try:
            grpc = ("grpc", lambda: self.cmd("sse.grpc", [self.tool("bench_client"), srv.addr, "stream",
                                                           str(nbytes), "emit", "bytes=%d" % nbytes]))
            res = {"sse": self.alternate(3, grpc, ("sse", lambda: self.http_follow(
                       srv, nbytes, "text/event-stream")), "bytes_per_s"),
                   "raw": self.alternate(3, grpc, ("raw", lambda: self.http_follow(
                       srv, nbytes, "application/octet-stream")), "bytes_per_s")}
        finally:
            srv.stop()
        self.results["sse"] = res
        self.target("SSE follower vs gRPC follower (output bytes/s)", res["sse"]["ratio"], ">=", 0.5, "x")

    # ---- 2. start rate, 3. first byte, 4. streaming ----------------------------------

    def alternate(self, reps, ref, mine, field):
        """Runs ref and mine (each a (key, fn) whose fn returns a dict) in turn, reps times,
        so that the drift of a shared machine hits both alike. Returns {"reps": {key:
        [result...]}, "median": {key: median of field}, "ratio": median over the reps of
        mine[field] / ref[field]}."""
        out = {ref[0]: [], mine[0]: []}
        for _ in range(reps):
            for k, fn in (ref, mine):
                out[k].append(fn())
        return {"reps": out, "median": {k: statistics.median(x[field] for x in v) for k, v in out.items()},
                "ratio": statistics.median(b[field] / a[field] for a, b in zip(out[ref[0]], out[mine[0]]))}

    def phase_start(self):
        srv = self.server()
        try:
            client = [self.tool("bench_client"), srv.addr]
            r = self.alternate(
                5, ("plain", lambda: self.cmd("start.plain", [self.tool("spawn_ref"), "rate", "1500", "32", "/bin/true"])),
                ("prismqd", lambda: self.cmd("start.prismqd", client + ["starts", "1500", "32", "true"])), "runs_per_s")
        finally:
            srv.stop()
        self.results["start_rate"] = r
        self.target("start rate vs posix_spawn loop (32 in flight)", r["ratio"], ">=", 0.7, "x")

    def phase_firstbyte(self):
        srv = self.server()
        try:
            client = [self.tool("bench_client"), srv.addr]
            r = self.alternate(
                5, ("plain", lambda: self.cmd("firstbyte.plain", [self.tool("spawn_ref"), "firstbyte", "200", "/bin/echo", "x"])),
                ("prismqd", lambda: self.cmd("firstbyte.prismqd", client + ["firstbyte", "200", "echo"])), "median_us")
        finally:
            srv.stop()
        r["p99_us"] = {k: statistics.median(x["p99_us"] for x in v) for k, v in r["reps"].items()}
        r["median_diff_us"] = statistics.median(b["median_us"] - a["median_us"]
                                                for a, b in zip(r["reps"]["plain"], r["reps"]["prismqd"]))
        self.results["first_byte"] = r
        self.target("first byte: median minus plain loop's median", r["median_diff_us"] / 1000, "<=", 1.0, "ms")

    def raw_pipe(self):
        argv = ["bash", "-c", "head -c %d /dev/zero | cat > /dev/null" % GIB]
        self.results["commands"]["stream.raw"] = shlex.join(argv)
        t0 = time.monotonic()
        subprocess.run(argv, check=True, timeout=120)
        s = time.monotonic() - t0
        return {"bytes": GIB, "seconds": s, "bytes_per_s": GIB / s}

    @staticmethod
    def settle_memory(nbytes):
        """Readies the machine for a repetition that writes nbytes of new output. This VM
        backs guest memory lazily: the first touch of a page is a host fault (~10 us), so
        the page cache of a new file fills at ~0.4 GB/s whoever writes it, while pages
        the guest has used before go at memory speed. Touching nbytes of memory and
        freeing it hands the page cache used pages, as on any machine that has run for a
        while. The guest hands freed memory back to the host after a few seconds, so this
        comes last, right before the repetition. First, sync, so that dirty pages of the
        previous repetition (writeback throttles writers past ~2 GiB dirty here) do not
        slow this one."""
        os.sync()
        b = bytearray(nbytes)
        for i in range(0, nbytes, 4096):
            b[i] = 1
        del b

    def settled(self, srv, fn):
        """fn, run after readying the machine for a repetition that streams 1 GiB through
        srv (settle_memory). Earlier repetitions' output goes first, as retention would
        remove old runs' output: its page cache is recycled rather than grown."""
        def run():
            out_dir = os.path.join(srv.data_dir, "output")
            for name in os.listdir(out_dir):
                os.unlink(os.path.join(out_dir, name))
            self.settle_memory(GIB * 3 // 2)
            return fn()
        return run

    def phase_stream(self):
        srv = self.server()
        try:
            client = [self.tool("bench_client"), srv.addr, "stream", str(GIB), "emit", "bytes=%d" % GIB]
            cold = self.cmd("stream.prismqd.cold", client)
            r = self.alternate(5, ("raw_pipe", self.settled(srv, self.raw_pipe)),
                               ("prismqd", self.settled(srv, lambda: self.cmd("stream.prismqd", client))),
                               "bytes_per_s")
            r["cold_bytes_per_s"] = cold["bytes_per_s"]
        finally:
            srv.stop()
        self.results["streaming"] = r
        self.target("streaming 1 GiB, one follower, vs raw pipe", r["ratio"], ">=", 0.5, "x")

    def write_lines(self):
        """Writes the progress phase's lines (PROGRESS_BYTES at most): blocks of
        PROGRESS_EVERY - 1 lines and a progress line "PROGRESS i/n working" (under 32
        bytes). Returns n, the number of progress lines."""
        body = b"".join(PROGRESS_LINE % i for i in range(PROGRESS_EVERY - 1))
        n = PROGRESS_BYTES // (len(body) + 32)
        with open(self.lines_file, "wb") as f:
            for i in range(1, n + 1):
                f.write(body + b"PROGRESS %d/%d working\n" % (i, n))
        return n

    def phase_progress(self):
        """Output through a progress pattern against the same output without one: 512
        MiB of 64-byte lines, every 1000th a progress line, one follower, as the stream
        phase measures, and prismqd's CPU time for each (server_cpu_s: steadier than
        throughput on a shared machine). Two cases: "scan", a pattern with the same
        prefix that no line matches, is the cost of reading the output for progress (the
        search for the prefix, the regex on the progress lines); "pattern", the issue's
        pattern, adds an update per 64 KiB of output (a record, and the output's record
        split there): far more than a run reports in practice."""
        n = self.write_lines()
        size = os.path.getsize(self.lines_file)
        srv = self.server()
        try:
            def stream(module):
                argv = [self.tool("bench_client"), srv.addr, "stream", str(size), module]

                def run():
                    c0 = cpu_seconds(srv.pid)
                    res = self.cmd("progress." + module, argv)
                    res["server_cpu_s"] = cpu_seconds(srv.pid) - c0
                    return res
                return self.settled(srv, run)
            r = {}
            for case, module in (("scan", "lines_scan"), ("pattern", "lines_progress")):
                c = r[case] = self.alternate(5, ("plain", stream("lines")), (case, stream(module)), "bytes_per_s")
                c["cpu_median"] = {k: statistics.median(x["server_cpu_s"] for x in v) for k, v in c["reps"].items()}
                c["cpu_ratio"] = statistics.median(b["server_cpu_s"] / a["server_cpu_s"]
                                                   for a, b in zip(c["reps"]["plain"], c["reps"][case]))
            ch, stub = self.runner(srv)
            with ch:
                runs = stub.ListRuns(self.pb.runner_pb2.ListRunsRequest(module_id="lines_progress", page_size=1),
                                     timeout=30).runs
        finally:
            srv.stop()
        got = (runs[0].progress.done, runs[0].progress.total) if runs else None
        if got != (n, n):
            raise BenchError("the last run's progress is %r, not %d/%d" % (got, n, n))
        r.update(bytes=size, updates_per_run=n)
        self.results["progress"] = r
        self.target("line output read for progress (no update) vs not", r["scan"]["ratio"], ">=", 0.95, "x")

    # ---- 5. fan-out ------------------------------------------------------------------

    def phase_fanout(self):
        srv = self.server()
        try:
            r = self.cmd("fanout.prismqd", [self.tool("bench_client"), srv.addr, "fanout", "100", self.fan_file, "fan"])
        finally:
            srv.stop()
        self.results["fanout"] = r
        self.target("fan-out 100 followers x 64 MiB, aggregate", r["aggregate_bytes_per_s"] / 1e9, ">=", 1.0, "GB/s")

    # ---- 6. memory -------------------------------------------------------------------

    def phase_memory(self):
        mem = {}
        pb = self.pb.runner_pb2
        # Idle: right after start-up, then with one connection that made one call.
        srv = self.server()
        try:
            mem["idle_rss_kb"] = rss_kb(srv.pid)
            srv.stats()
            mem["idle_one_connection_rss_kb"] = rss_kb(srv.pid)
        finally:
            srv.stop()
        self.target("idle RSS", mem["idle_rss_kb"] / 1024, "<=", 8.0, "MiB")

        # 10,000 queued runs behind a sleeper that holds the only slot.
        srv = self.server(max_concurrent=1, max_queued=20000)
        try:
            ch, stub = self.runner(srv)
            r = stub.StartRun(pb.StartRunRequest(module_id="sleep", parameters={"seconds": "3600"}), timeout=30)
            if r.status != pb.RUN_STATUS_RUNNING:
                raise BenchError("the sleeper is not running: %s" % r)
            ch.close()
            before = rss_kb(srv.pid)
            q = self.cmd("memory.queue", [self.tool("bench_client"), srv.addr, "queue", "10000", "true"])
            st = srv.stats()
            if st.runs_active != 10001:
                raise BenchError("%d runs active after queueing 10,000 (want 10001)" % st.runs_active)
            after = rss_kb(srv.pid)
            mem["queued"] = {"runs": 10000, "rss_before_kb": before, "rss_after_kb": after,
                             "bytes_per_run": (after - before) * 1024 / 10000, "queue_seconds": q["seconds"]}
        finally:
            t0 = time.monotonic()
            srv.stop()
            mem.setdefault("queued", {})["shutdown_seconds"] = time.monotonic() - t0
        self.target("RSS per queued run", mem["queued"]["bytes_per_run"] / 1024, "<=", 2.0, "KiB")

        # 1,000 idle followers of a sleeping run: 100 per connection, then one per connection.
        for label, per_conn in (("idle_followers", 100), ("idle_followers_1_per_connection", 1)):
            mem[label] = self.idle_followers(1000, per_conn)
        self.target("RSS per idle follower (100 per connection)", mem["idle_followers"]["bytes_per_follower"] / 1024,
                    "<=", 32.0, "KiB")
        self.target("RSS per idle follower (own connection)",
                    mem["idle_followers_1_per_connection"]["bytes_per_follower"] / 1024, "<=", 32.0, "KiB",
                    "connection included")

        mem["stalled_followers"] = self.stalled_followers(100)
        sf = mem["stalled_followers"]
        # The kernel already holds each stalled socket's queued bytes; what the server
        # adds in user space should be no more than an idle follower on its own connection
        # plus one connection output buffer (h2conn's 64 KiB high-water mark).
        bound = mem["idle_followers_1_per_connection"]["bytes_per_follower"] + 64 * 1024
        sf["user_space_bound_bytes"] = bound
        self.target("RSS per stalled follower (user space, beyond its socket buffers)",
                    sf["rss_bytes_per_follower"] / 1024, "<=", bound / 1024, "KiB",
                    "bound = idle follower on its own connection + 64 KiB output high-water mark")
        self.results["memory"] = mem

    def idle_followers(self, n, per_conn):
        srv = self.server()
        try:
            ch, stub = self.runner(srv)
            r = stub.StartRun(self.pb.runner_pb2.StartRunRequest(module_id="sleep", parameters={"seconds": "3600"}),
                              timeout=30)
            ch.close()
            srv.stats()  # the stats connection exists before the baseline
            before = rss_kb(srv.pid)
            argv = [self.tool("bench_client"), srv.addr, "follow", str(n), str(per_conn), r.run_id]
            self.results["commands"]["memory.follow_%d" % per_conn] = shlex.join(argv)
            p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            try:
                read_line(p.stdout, 60)
                srv.wait_stats(lambda s: s.followers == n, timeout=60)
                after = rss_kb(srv.pid)
            finally:
                p.stdin.close()
                p.wait(60)
            if p.returncode != 0:
                raise BenchError("bench_client follow exited %d" % p.returncode)
            srv.wait_stats(lambda s: s.followers == 0, timeout=60)
        finally:
            srv.stop()
        return {"followers": n, "per_connection": per_conn, "rss_before_kb": before, "rss_after_kb": after,
                "bytes_per_follower": (after - before) * 1024 / n}

    def stalled_followers(self, n):
        srv = self.server()
        try:
            ch, stub = self.runner(srv)
            # A first 1 GiB run without followers, so the baseline holds whatever a run of
            # that size costs by itself.
            self.run_to_end(stub, "emit", bytes=str(GIB))
            srv.stats()
            before = rss_kb(srv.pid)
            argv = [self.tool("bench_client"), srv.addr, "stall", str(n), "emit", "bytes=%d" % GIB]
            self.results["commands"]["memory.stall"] = shlex.join(argv)
            p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            try:
                line = read_line(p.stdout, 120)
                if not line:
                    raise BenchError("bench_client stall printed nothing")
                run_id = json.loads(line)["run_id"]
                run = stub.WaitRun(self.pb.runner_pb2.WaitRunRequest(run_id=run_id, timeout_ms=300000), timeout=310)
                if run.stdout_bytes != GIB:
                    raise BenchError("stalled run wrote %d bytes" % run.stdout_bytes)
                after = settle_rss(srv.pid)
                sk = socket_mem(srv.port)
                st = srv.stats()
                if st.followers != n:
                    raise BenchError("%d followers live while stalled (want %d)" % (st.followers, n))
            finally:
                p.stdin.close()
                p.wait(60)
            ch.close()
        finally:
            srv.stop()
        # The server's sockets with the most queued bytes are the stalled followers'.
        srv_socks = sorted(sk["server"], key=lambda s: -s.get("w", 0))[:n]
        return {"followers": n, "run_bytes": GIB, "rss_before_kb": before, "rss_after_kb": after,
                "rss_bytes_per_follower": (after - before) * 1024 / n,
                "server_sndbuf_bytes_per_follower": statistics.mean(s.get("tb", 0) for s in srv_socks),
                "server_send_queued_bytes_per_follower": statistics.mean(s.get("w", 0) for s in srv_socks),
                "client_recv_queued_bytes_per_follower": statistics.mean(s.get("r", 0) for s in sk["client"])
                if sk["client"] else 0}

    # ---- 7. instructions ---------------------------------------------------------------

    def phase_instructions(self):
        cgdir = os.path.join(self.bdir, "callgrind")
        os.makedirs(cgdir, exist_ok=True)
        for f in os.listdir(cgdir):
            os.unlink(os.path.join(cgdir, f))
        out = os.path.join(cgdir, "prismqd.%p.out")
        # Threaded run mode: valgrind 3.19 has no pidfd_open, which async mode needs to
        # start a process. Only how exits are waited for differs; the paths measured
        # (a unary call, output from pipe to follower) are the same.
        srv = self.server(wrapper=["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out],
                          env={"PRISMQ_RUN_MODE": "threaded"})
        res = {}
        try:
            ch, stub = self.runner(srv)
            run = self.run_to_end(stub, "emit", bytes="100")
            log = os.path.join(self.tmp, "cg-h2load.log")
            n = 5000
            for name, path, msg in (
                    ("health", HEALTH_PATH, self.pb.health_pb2.HealthCheckRequest()),
                    ("getrun", GETRUN_PATH, self.pb.runner_pb2.GetRunRequest(run_id=run.run_id))):
                body = self.body_file("cg-" + name, msg.SerializeToString())
                url = "http://%s%s" % (srv.addr, path)
                self.h2load(url, body, 500, 4, 25, log)  # warm-up
                res[name] = self.callgrind_span(srv.pid, cgdir, name, lambda u=url, b=body: self.h2load(
                    u, b, n, 4, 25, log), n, "request")
                res[name]["command"] = "h2load -n %d -c 4 -m 25 -t 1 %s, prismqd under callgrind" % (n, path)
            nbytes = 64 * MIB
            client = [self.tool("bench_client"), srv.addr, "stream", str(nbytes), "emit", "bytes=%d" % nbytes]
            res["stream"] = self.callgrind_span(srv.pid, cgdir, "stream", lambda: self.cmd(
                "instructions.stream", client), nbytes / MIB, "MiB")
            ch.close()
        finally:
            srv.stop()
        self.results["instructions"] = res

    def callgrind_span(self, pid, cgdir, name, fn, units, unit):
        """Zeroes callgrind's counters, runs fn, dumps; returns instructions per unit and the
        hottest functions (self cost)."""
        subprocess.run(["callgrind_control", "-z", str(pid)], check=True, capture_output=True, timeout=60)
        fn()
        subprocess.run(["callgrind_control", "-d", name, str(pid)], check=True, capture_output=True, timeout=60)
        dumps = [f for f in os.listdir(cgdir) if re.search(r"\.out\.\d+$", f)]
        path = os.path.join(cgdir, max(dumps, key=lambda f: int(f.rsplit(".", 1)[1])))
        total = None
        with open(path) as f:
            for line in f:
                if line.startswith("summary:"):
                    total = int(line.split()[1])
                    break
        ann = subprocess.run(["callgrind_annotate", "--threshold=100", path], capture_output=True, text=True,
                             timeout=120).stdout
        with open(os.path.join(cgdir, name + ".annotate.txt"), "w") as f:
            f.write(ann)
        hot = []
        for line in ann.splitlines():
            mt = re.match(r"\s*([\d,]+) \(\s*([\d.]+)%\)\s+(\S.*)$", line)
            # Frames below the event loop (main, dispatch, libc start) carry everything.
            if mt and float(mt.group(2)) < 50 and "PROGRAM TOTALS" not in line:
                hot.append({"ir": int(mt.group(1).replace(",", "")), "percent": float(mt.group(2)),
                            "function": mt.group(3)})
        return {"instructions": total, "units": units, "unit": unit, "per_unit": total / units,
                "dump": path, "hot": hot[:15]}

    # ---- 8. TLS ------------------------------------------------------------------------

    def phase_tls(self):
        certs = os.path.join(self.tmp, "certs")
        argv = ["bash", os.path.join(ROOT, "scripts", "gen-dev-certs.sh"), certs]
        self.results["commands"]["tls.certs"] = shlex.join(argv)
        p = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        if p.returncode != 0:
            raise BenchError("gen-dev-certs.sh failed: %s" % p.stderr.strip())
        ca, cert, key = (os.path.join(certs, f) for f in ("ca.pem", "server.pem", "server.key"))
        res = {"certificate": "P-256 ECDSA, CA-signed (scripts/gen-dev-certs.sh); the same for every server"}
        # tl.Server listens on tcp://127.0.0.1:0 with --listen (which replaces the
        # config's listen list); a second --listen adds the TLS listener.
        srv = self.server(extra_args=("--listen", "tls://127.0.0.1:0"),
                          extra="tls: {cert: %s, key: %s}\n" % (json.dumps(cert), json.dumps(key)))
        try:
            tls_addr = "127.0.0.1:" + srv.wait_log(r"listening on tls://127\.0\.0\.1:(\d+)").group(1)
            res["unary"] = self.tls_unary(srv, tls_addr, ca, cert, key)
            res["handshakes"] = self.tls_handshakes(tls_addr, ca, cert, key)
            res["follower"] = self.tls_follower(srv, tls_addr, ca)
        finally:
            srv.stop()
        hs = res["handshakes"]
        res["tls_version"], res["cipher"], res["ktls"] = hs["version"], hs["cipher"], hs["ktls"]
        self.results["tls"] = res
        r = res["unary"]["ratios"]
        self.target("unary getrun QPS over TLS vs prismqd plaintext (-c4 -m25)", r["prismqd"]["qps"], ">=", 0.8, "x")
        self.target("unary getrun QPS over TLS vs gRPC C++ over TLS (-c4 -m25)", r["grpc_cpp_tls"]["qps"], ">=", 3.0,
                    "x")
        self.target("one follower over TLS vs plaintext (1 GiB)", res["follower"]["ratio"], ">=", 0.5, "x",
                    res["ktls"])

    def tls_unary(self, srv, tls_addr, ca, cert, key):
        """GetRun at -c4 -m25: prismqd over TLS against prismqd in plaintext (same process)
        and against grpc_ref_server over TLS on the same certificate."""
        pb = self.pb
        run = self.getrun_target(srv)
        body = self.body_file("tls-getrun", pb.runner_pb2.GetRunRequest(run_id=run.run_id).SerializeToString())
        with open(ca, "rb") as f:
            creds = grpc.ssl_channel_credentials(root_certificates=f.read())
        ref, ref_addr = self.ref_server("--tls", cert, key)
        try:
            servers = (("prismqd_tls", tls_addr, True), ("prismqd", srv.addr, False), ("grpc_cpp_tls", ref_addr, True))
            sizes = {}
            for label, addr, tls in servers:
                with (grpc.secure_channel(addr, creds) if tls else grpc.insecure_channel(addr)) as c2:
                    sizes[label] = self.check_unary(label, c2, run)["getrun"]
            targets = [(label, "%s://%s%s" % ("https" if tls else "http", addr, GETRUN_PATH), body, sizes[label])
                       for label, addr, tls in servers]
            figures, ratios = self.unary_compare("tls_getrun_c4_m25", targets, 4, 25, False)
        finally:
            stop_proc(ref)
        for label, _, tls in servers:
            r = figures[label]["reps"][0]
            if tls and not r.get("tls_protocol"):
                raise BenchError("h2load did not speak TLS to %s" % label)
            figures[label]["tls"] = "%s %s" % (r["tls_protocol"], r["tls_cipher"]) if tls else None
        return {"response_bytes": sizes, "figures": figures, "ratios": ratios}

    def s_server(self, cert, key):
        """`openssl s_server -www` answering ALPN h2 on cert/key, on a free loopback port;
        returns (Popen, "127.0.0.1:PORT"). -quiet, because it otherwise prints two lines
        per connection."""
        err = os.path.join(self.tmp, "s_server.err")
        for _ in range(3):  # the free port may be taken before s_server binds it
            port = free_port()
            argv = ["openssl", "s_server", "-www", "-quiet", "-alpn", "h2", "-accept", "127.0.0.1:%d" % port,
                    "-cert", cert, "-key", key]
            with open(err, "w") as f:
                p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=f)
            if wait_listening(port, p, 10):
                self.results["commands"]["tls.s_server"] = shlex.join(argv)
                return p, "127.0.0.1:%d" % port
            stop_proc(p)
        with open(err) as f:
            raise BenchError("openssl s_server did not start: %s" % f.read().strip())

    def tls_handshakes(self, tls_addr, ca, cert, key):
        """New TLS connections per second, full and resumed, prismqd against s_server,
        alternating (tls_handshake, one connection at a time)."""
        res = {}
        ref, ref_addr = self.s_server(cert, key)
        try:
            for mode, opts in (("full", []), ("resumed", ["--resume"])):
                def hs(label, addr, mode=mode, opts=opts):
                    argv = [self.tool("tls_handshake"), addr, str(TLS_HANDSHAKE_SECONDS), "--ca", ca] + opts
                    return label, lambda: self.cmd("tls.handshake_%s.%s" % (mode, label), argv)
                r = self.alternate(TLS_REPS, hs("s_server", ref_addr), hs("prismqd", tls_addr), "connections_per_s")
                r["resumed_fraction"] = {k: sum(x["resumed"] for x in v) / sum(x["connections"] for x in v)
                                         for k, v in r["reps"].items()}
                res[mode] = r
        finally:
            stop_proc(ref)
        for label, frac in res["resumed"]["resumed_fraction"].items():
            if frac < 0.99:
                # Not a resumption figure; the rest of the phase still counts.
                self.errors.append("tls: only %.0f%% of %s's --resume handshakes resumed" % (frac * 100, label))
        last = res["full"]["reps"]["prismqd"][-1]
        res["version"], res["cipher"] = last["version"], last["cipher"]
        res["ktls"] = ("kTLS: available (setsockopt TCP_ULP \"tls\" works)" if last["ktls_ulp"] == "ok" else
                       "kTLS: not available (setsockopt TCP_ULP \"tls\": %s)" % last["ktls_ulp"])
        return res

    def tls_follower(self, srv, tls_addr, ca):
        """One follower of a 1 GiB run (bench_client stream), over TLS and in plaintext to
        the same server, alternating, each from the same state (settled)."""
        args = ["stream", str(GIB), "emit", "bytes=%d" % GIB]
        plain = [self.tool("bench_client"), srv.addr] + args
        tls = [self.tool("bench_client"), "--tls-ca", ca, "tls://" + tls_addr] + args
        return self.alternate(5, ("plain", self.settled(srv, lambda: self.cmd("tls.follower.plain", plain))),
                              ("tls", self.settled(srv, lambda: self.cmd("tls.follower.tls", tls))), "bytes_per_s")

    # ---- 9. a table of a million runs ------------------------------------------------------

    def phase_bigtable(self):
        """prismqd on a run table of BIGTABLE_RUNS generated runs (gen_runs) against
        prismqd on an empty one, alive side by side and given the same calls: start-up,
        GetRun, ListRuns first pages, the start rate, RSS."""
        n = BIGTABLE_RUNS
        db, ids, gen = self.bigtable_db(n)
        res = {"runs": n, "generate": gen}
        dirs = {"empty": os.path.join(self.tmp, "bigtable-empty"), "big": os.path.join(self.tmp, "bigtable-big")}
        for d in dirs.values():
            os.makedirs(d)
        # A copy, so that the runs started below leave the cached table as generated.
        t0 = time.monotonic()
        shutil.copyfile(db, os.path.join(dirs["big"], "runs.db"))
        res["copy_seconds"] = time.monotonic() - t0
        res["startup_seconds"], res["startup_reps"] = self.bigtable_startup(dirs)
        srvs = {}
        try:
            for k, d in dirs.items():
                srvs[k] = self.server(data_dir=d, extra=BIGTABLE_CONFIG)
            self.bigtable_calls(res, srvs, ids)
        finally:
            for srv in srvs.values():
                srv.stop()
        self.results["bigtable"] = res
        size = "%s runs" % format(n, ",")
        self.target("bigtable: GetRun p50, %s" % size, res["getrun"]["big"]["median_us"] / 1000, "<=", 1.0, "ms")
        for key, args, target in BIGTABLE_LISTS:
            if target:
                self.target("bigtable: ListRuns first page p50 (%s), %s" % (" ".join(args), size),
                            res["listruns"][key]["big"]["median_us"] / 1000, "<=", 10.0, "ms")
        st = res["startup_seconds"]
        self.target("bigtable: start-up to first answer, %s, page cache warm" % size, st["big"], "<=", 2.0, "s")
        self.target("bigtable: start-up to first answer, %s, runs.db not in the page cache" % size, st["big_cold"],
                    "<=", 2.0, "s")
        self.target("bigtable: RSS after the same calls, %s minus empty table" % size,
                    res["rss_growth_kb"] / 1024, "<=", BIGTABLE_RSS_SLACK_MIB, "MiB",
                    "SQLite's page cache is bounded (PRAGMA cache_size, %d KiB)" % res["sqlite_cache_kb"])
        self.target("bigtable: start rate, %s vs empty table" % size, res["start_rate"]["ratio"], ">=", 0.9, "x")

    def bigtable_db(self, n):
        """The run table of n generated runs and its file of sampled run ids, cached in
        $BUILD_DIR/bench/bigtable/ under a name made of n, the schema version a new
        table gets and a hash of gen_runs.c: only a change to one of those generates it
        again (and removes the older files). Returns (db, ids, generation figures)."""
        cache = os.path.join(self.bdir, "bigtable")
        os.makedirs(cache, exist_ok=True)
        # The schema version is PRAGMA user_version: bytes 60-63 of the database file.
        probe = os.path.join(self.tmp, "schema.db")
        self.cmd("bigtable.schema", [self.tool("gen_runs"), probe, "0", os.devnull])
        with open(probe, "rb") as f:
            f.seek(60)
            version = int.from_bytes(f.read(4), "big")
        with open(os.path.join(ROOT, "scripts", "bench", "gen_runs.c"), "rb") as f:
            src = hashlib.sha256(f.read()).hexdigest()[:12]
        base = os.path.join(cache, "runs-%d-v%d-%s" % (n, version, src))
        db, ids, info = base + ".db", base + ".ids", base + ".json"
        argv = [self.tool("gen_runs"), db + ".tmp", str(n), ids]
        self.results["commands"]["bigtable.generate"] = shlex.join(argv)
        if os.path.exists(info):
            with open(info) as f:
                return db, ids, dict(json.load(f), cached=True)
        for name in os.listdir(cache):
            os.unlink(os.path.join(cache, name))
        print("bench: generating %s runs into %s (kept for later runs)" % (format(n, ","), db), file=sys.stderr)
        p = subprocess.run(argv, stdout=subprocess.PIPE, text=True, timeout=3600)  # progress: stderr
        if p.returncode != 0 or os.path.exists(db + ".tmp-wal"):
            raise BenchError("gen_runs failed (exit %d)" % p.returncode)
        gen = json.loads(p.stdout.strip().splitlines()[-1])
        os.rename(db + ".tmp", db)
        gen.update(db_bytes=os.path.getsize(db), date=time.strftime("%Y-%m-%d %H:%M:%S %Z"))
        with open(info, "w") as f:
            json.dump(gen, f)
        return db, ids, dict(gen, cached=False)

    def bigtable_startup(self, dirs):
        """Start-up times (startup_time) on each data directory, alternately, with the
        page cache as it is (the table was just copied: warm); then on "big" with its
        runs.db dropped from the page cache first ("big_cold"). Returns ({case: median
        seconds}, {case: [seconds...]})."""
        cfg = os.path.join(self.tmp, "bigtable.yaml")
        with open(cfg, "w") as f:
            f.write(self.config(extra=BIGTABLE_CONFIG))
        reps = {k: [] for k in list(dirs) + ["big_cold"]}
        for _ in range(BIGTABLE_STARTUP_REPS):
            for k, d in dirs.items():
                reps[k].append(self.startup_time(k, d, cfg))
        for _ in range(BIGTABLE_STARTUP_REPS):
            evict_file(os.path.join(dirs["big"], "runs.db"))
            reps["big_cold"].append(self.startup_time("big_cold", dirs["big"], cfg))
        return {k: statistics.median(v) for k, v in reps.items()}, reps

    def startup_time(self, key, data_dir, cfg):
        """Seconds from starting prismqd on data_dir to its first SERVING answer to a
        Health/Check, on a new connection (bench_client ready, which tries every
        millisecond or so); the server is stopped again."""
        port = free_port()  # known before the start, so the client can try at once
        argv = [os.path.join(self.build, "bin", "prismqd"), "--config", cfg, "--data-dir", data_dir,
                "--listen", "tcp://127.0.0.1:%d" % port]
        self.results["commands"]["bigtable.startup.%s" % key] = shlex.join(argv)
        log = os.path.join(self.tmp, "bigtable-startup.log")
        with open(log, "w") as f:
            t0 = time.monotonic()
            p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT)
        try:
            r = self.cmd("bigtable.ready", [self.tool("bench_client"), "127.0.0.1:%d" % port, "ready", "60000"])
        except BenchError as e:
            with open(log) as f:
                raise BenchError("%s; prismqd's log: %s" % (e, f.read().strip()[-2000:])) from None
        finally:
            stop_proc(p)
        if p.returncode != 0:
            raise BenchError("prismqd on %s exited %d" % (data_dir, p.returncode))
        return r["ok_at"] - t0

    def bigtable_calls(self, res, srvs, big_ids):
        """The same calls on each server of srvs ({"empty": Server, "big": Server}), the
        figures into res."""
        bc = self.tool("bench_client")
        res["rss_idle_kb"] = {k: rss_kb(srv.pid) for k, srv in srvs.items()}
        for k, srv in srvs.items():
            total = srv.stats().runs_total
            if total != (res["runs"] if k == "big" else 0):
                raise BenchError("prismqd on the %s table counts %d runs" % (k, total))
        # Some runs of its own, so that the empty table has runs to get.
        for k, srv in srvs.items():
            self.cmd("bigtable.seed.%s" % k, [bc, srv.addr, "starts", "200", "32", "true"])
        ch, stub = self.runner(srvs["empty"])
        with ch:
            page = stub.ListRuns(self.pb.runner_pb2.ListRunsRequest(page_size=1000), timeout=30)
        ids = {"big": big_ids, "empty": os.path.join(self.tmp, "bigtable-empty.ids")}
        with open(ids["empty"], "w") as f:
            f.write("".join(r.run_id + "\n" for r in page.runs))
        res["getrun"] = {k: self.cmd("bigtable.getrun.%s" % k, [bc, srv.addr, "getrun", str(BIGTABLE_GETRUN_CALLS),
                                                                  ids[k]]) for k, srv in srvs.items()}
        res["listruns"] = {}
        for key, args, _ in BIGTABLE_LISTS:
            res["listruns"][key] = {k: self.list_runs("%s.%s" % (key, k), srv, args) for k, srv in srvs.items()}
            big = res["listruns"][key]["big"]
            if big["runs"] != BIGTABLE_PAGE or not big["more"]:
                raise BenchError("ListRuns %s on the big table: %d runs, more=%d (want a full page and more)"
                                 % (" ".join(args), big["runs"], big["more"]))

        def starts(k):
            return k, lambda: self.cmd("bigtable.start.%s" % k, [bc, srvs[k].addr, "starts", "1500", "32", "true"])
        res["start_rate"] = self.alternate(5, starts("empty"), starts("big"), "runs_per_s")

        # Retention sweep: to be added. Its figures (the time a sweep of old runs takes on
        # this table, and how long it holds the event loop) are measured here, on
        # srvs["big"] against srvs["empty"], after the calls above and before the RSS
        # figures below, into res["retention_sweep"], with its target in phase_bigtable.

        res["rss_after_kb"] = {k: settle_rss(srv.pid) for k, srv in srvs.items()}
        res["rss_growth_kb"] = res["rss_after_kb"]["big"] - res["rss_after_kb"]["empty"]
        res["sqlite_cache_kb"] = sqlite_default_cache_kb()

    def list_runs(self, key, srv, args):
        """First pages of ListRuns with the filter args on srv (bench_client listruns):
        a warm-up of 5 calls sizes the count to about BIGTABLE_LIST_SECONDS."""
        argv = [self.tool("bench_client"), srv.addr, "listruns"]
        args = args + ["page_size=%d" % BIGTABLE_PAGE]
        warm = self.cmd("bigtable.list.%s" % key, argv + ["5"] + args)
        calls = int(min(1000, max(20, BIGTABLE_LIST_SECONDS * 1e6 / max(warm["median_us"], 1.0))))
        return self.cmd("bigtable.list.%s" % key, argv + [str(calls)] + args)

    # ---- run ---------------------------------------------------------------------------

    def run(self, phases):
        with open(self.fan_file, "wb") as f:
            f.write(os.urandom(64 * MIB))
        for ph in phases:
            t0 = time.monotonic()
            try:
                getattr(self, "phase_" + ph)()
            except (BenchError, AssertionError, RuntimeError, subprocess.SubprocessError, OSError) as e:
                self.errors.append("%s: %s" % (ph, e))
                print("bench: %s failed: %s" % (ph, e), file=sys.stderr)
            self.results.setdefault("phase_seconds", {})[ph] = time.monotonic() - t0
        self.results["errors"] = self.errors
        with open(self.out, "w") as f:
            json.dump(self.results, f, indent=2, sort_keys=True)
        print_table(self.results)
        print("\nresults: %s" % self.out)
        return 1 if self.errors else 0


# ---- parsing and sampling ------------------------------------------------------------

def to_us(v, unit):
    return float(v) * {"us": 1, "ms": 1e3, "s": 1e6}[unit]


def parse_h2load(text, log=None):
    r = {}
    mt = re.search(r"finished in ([\d.]+)(us|ms|s), ([\d.]+) req/s", text)
    r["seconds"] = to_us(mt.group(1), mt.group(2)) / 1e6
    r["qps"] = float(mt.group(3))
    mt = re.search(r"requests: (\d+) total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, (\d+) errored", text)
    r["succeeded"], r["failed"], r["errored"] = int(mt.group(2)), int(mt.group(3)), int(mt.group(4))
    r["status_2xx"] = int(re.search(r"status codes: (\d+) 2xx", text).group(1))
    r["data_bytes"] = int(re.search(r"\((\d+)\) data", text).group(1))
    mt = re.search(r"TLS Protocol: (\S+)\s+Cipher: (\S+)", text)
    if mt:
        r["tls_protocol"], r["tls_cipher"] = mt.group(1), mt.group(2)
    mt = re.search(r"time for request:\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)", text)
    r["min_us"], r["max_us"], r["mean_us"] = (to_us(mt.group(i), mt.group(i + 1)) for i in (1, 3, 5))
    if not log:
        return r
    lat = []
    with open(log) as f:
        for line in f:
            cols = line.split("\t")
            if len(cols) >= 3 and cols[1] == "200":
                lat.append(int(cols[2]))
    lat.sort()
    r["log_rows"] = len(lat)
    if lat:
        r["p50_us"] = float(lat[len(lat) // 2])
        r["p99_us"] = float(lat[min(len(lat) - 1, len(lat) * 99 // 100)])
        r["log_mean_us"] = statistics.fmean(lat)
    return r


def read_line(f, timeout):
    """One line from pipe f within timeout seconds, or None."""
    r, _, _ = select.select([f], [], [], timeout)
    return f.readline() if r else None


def stop_proc(p):
    """SIGTERM, then SIGKILL if p has not exited within 30 s."""
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(30)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def free_port():
    """A loopback TCP port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port, proc, timeout):
    """Whether something listens on 127.0.0.1:port within timeout seconds, while proc
    runs (read from /proc/net/tcp, so that no connection is made)."""
    want = "0100007F:%04X" % port  # local_address column: 127.0.0.1 as the kernel prints it
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        with open("/proc/net/tcp") as f:
            rows = [line.split() for line in f.readlines()[1:]]
        if any(r[1] == want and r[3] == "0A" for r in rows):  # state 0A: LISTEN
            return True
        time.sleep(0.05)
    return False


def cpu_seconds(pid):
    """User and system CPU time of process pid so far (/proc/PID/stat fields 14, 15)."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise BenchError("no VmRSS for pid %d" % pid)


def settle_rss(pid, timeout=20):
    """RSS once it has stopped changing (two equal samples 0.5 s apart)."""
    prev = rss_kb(pid)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.5)
        cur = rss_kb(pid)
        if cur == prev:
            return cur
        prev = cur
    return prev


def evict_file(path):
    """Drops path's pages from the page cache (written back first), so that the next
    reads of it go to the disk."""
    os.sync()
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def sqlite_default_cache_kb():
    """The page cache a new SQLite connection gets (PRAGMA cache_size: negative means
    KiB, positive means pages), as the system's SQLite (Python's and prismqd's) sets it."""
    with contextlib.closing(sqlite3.connect(":memory:")) as db:
        size = db.execute("PRAGMA cache_size").fetchone()[0]
        page = db.execute("PRAGMA page_size").fetchone()[0]
    return -size if size < 0 else size * page // 1024


def socket_mem(port):
    """skmem fields of the TCP sockets on port: {"server": [...], "client": [...]}."""
    out = subprocess.run(["ss", "-tmnH", "state", "established"], capture_output=True, text=True,
                         timeout=30).stdout
    res = {"server": [], "client": []}
    lines = out.splitlines()
    for i, line in enumerate(lines):
        f = line.split()
        if len(f) < 4 or i + 1 >= len(lines):
            continue
        mt = re.search(r"skmem:\(([^)]*)\)", line + lines[i + 1])
        if not mt:
            continue
        mem = {re.match(r"[a-z]+", kv).group(0): int(re.search(r"\d+", kv).group(0)) for kv in mt.group(1).split(",")}
        if f[2].endswith(":%d" % port):
            res["server"].append(mem)
        elif f[3].endswith(":%d" % port):
            res["client"].append(mem)
    return res


def machine():
    model = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kb = int(f.readline().split()[1])

    def version(argv):
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout.strip().splitlines()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            return "?"
    return {"nproc": os.cpu_count(), "cpu_model": model, "kernel": platform.release(), "mem_mib": mem_kb // 1024,
            "h2load": version(["h2load", "--version"]), "grpcpp": version(["pkg-config", "--modversion", "grpc++"]),
            "valgrind": version(["valgrind", "--version"]), "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


# ---- the table -------------------------------------------------------------------------

def fmt(v, spec):
    return "-" if v is None else format(v, spec)


def print_table(r):
    m = r["machine"]
    print("machine: %d CPUs, %s, Linux %s" % (m["nproc"], m["cpu_model"], m["kernel"]))
    rows = []
    u = r.get("unary")
    if u:
        for key in u["prismqd"]:
            p, g, q = u["prismqd"][key], u["grpc_cpp"][key], u["ratios"][key]
            rows.append(("unary %s QPS" % key, fmt(p["qps"], ",.0f"), fmt(g["qps"], ",.0f"), fmt(q["qps"], ".2f") + "x"))
            for f, lab in (("mean", "mean"), ("p50", "p50"), ("p99", "p99")):
                rows.append(("unary %s %s us" % (key, lab), fmt(p[f + "_us"], ".0f"), fmt(g[f + "_us"], ".0f"),
                             fmt(q[f + "_latency"], ".2f") + "x"))
    s = r.get("start_rate")
    if s:
        rows.append(("start rate runs/s (32 in flight)", fmt(s["median"]["prismqd"], ",.0f"),
                     fmt(s["median"]["plain"], ",.0f"), fmt(s["ratio"], ".2f") + "x"))
    fb = r.get("first_byte")
    if fb:
        rows.append(("first byte median/p99 us", "%.0f / %.0f" % (fb["median"]["prismqd"], fb["p99_us"]["prismqd"]),
                     "%.0f / %.0f" % (fb["median"]["plain"], fb["p99_us"]["plain"]), "%+.0f us" % fb["median_diff_us"]))
    st = r.get("streaming")
    if st:
        rows.append(("stream 1 GiB MB/s", fmt(st["median"]["prismqd"] / 1e6, ",.0f"),
                     fmt(st["median"]["raw_pipe"] / 1e6, ",.0f"), fmt(st["ratio"], ".2f") + "x"))
        rows.append(("stream 1 GiB MB/s, first run, memory as found", fmt(st["cold_bytes_per_s"] / 1e6, ",.0f"),
                     "", ""))
    pg = r.get("progress")
    if pg:
        for case, what in (("scan", "lines read for progress"), ("pattern", "an update per 64 KiB")):
            c = pg[case]
            rows.append(("stream 512 MiB of lines MB/s, %s vs not" % what, fmt(c["median"][case] / 1e6, ",.0f"),
                         fmt(c["median"]["plain"] / 1e6, ",.0f"), fmt(c["ratio"], ".2f") + "x"))
            rows.append(("  prismqd CPU s for them", fmt(c["cpu_median"][case], ".2f"),
                         fmt(c["cpu_median"]["plain"], ".2f"), fmt(c["cpu_ratio"], ".2f") + "x"))
    fo = r.get("fanout")
    if fo:
        rows.append(("fan-out 100x64 MiB MB/s (exact %d/100)" % fo["exact"],
                     fmt(fo["aggregate_bytes_per_s"] / 1e6, ",.0f"), "", ""))
    mem = r.get("memory")
    if mem:
        rows.append(("RSS idle KiB", str(mem["idle_rss_kb"]), "", ""))
        if "bytes_per_run" in mem.get("queued", {}):
            rows.append(("RSS per queued run B", fmt(mem["queued"]["bytes_per_run"], ",.0f"), "", ""))
        for k in ("idle_followers", "idle_followers_1_per_connection"):
            if k in mem:
                rows.append(("RSS per %s B" % k, fmt(mem[k]["bytes_per_follower"], ",.0f"), "", ""))
        sf = mem.get("stalled_followers")
        if sf:
            rows.append(("RSS per stalled follower B", fmt(sf["rss_bytes_per_follower"], ",.0f"), "", ""))
            rows.append(("  kernel send queue per stalled socket B",
                         fmt(sf["server_send_queued_bytes_per_follower"], ",.0f"), "", ""))
    ins = r.get("instructions")
    if ins:
        rows.append(("instructions per Health/Check", fmt(ins["health"]["per_unit"], ",.0f"), "", ""))
        rows.append(("instructions per GetRun", fmt(ins["getrun"]["per_unit"], ",.0f"), "", ""))
        rows.append(("instructions per MiB streamed", fmt(ins["stream"]["per_unit"], ",.0f"), "", ""))
    t = r.get("tls")
    if t:
        u, f = t["unary"]["figures"], t["unary"]["ratios"]
        rows.append(("TLS unary getrun QPS -c4 -m25 vs own plaintext", fmt(u["prismqd_tls"]["qps"], ",.0f"),
                     fmt(u["prismqd"]["qps"], ",.0f"), fmt(f["prismqd"]["qps"], ".2f") + "x"))
        rows.append(("TLS unary getrun QPS -c4 -m25 vs gRPC C++ TLS", fmt(u["prismqd_tls"]["qps"], ",.0f"),
                     fmt(u["grpc_cpp_tls"]["qps"], ",.0f"), fmt(f["grpc_cpp_tls"]["qps"], ".2f") + "x"))
        rows.append(("TLS unary getrun mean us vs gRPC C++ TLS", fmt(u["prismqd_tls"]["mean_us"], ".0f"),
                     fmt(u["grpc_cpp_tls"]["mean_us"], ".0f"), fmt(f["grpc_cpp_tls"]["mean_latency"], ".2f") + "x"))
        for mode in ("full", "resumed"):
            h = t["handshakes"][mode]
            rows.append(("TLS %s handshakes/s vs s_server (resumed %.0f%%)"
                         % (mode, 100 * h["resumed_fraction"]["prismqd"]), fmt(h["median"]["prismqd"], ",.0f"),
                         fmt(h["median"]["s_server"], ",.0f"), fmt(h["ratio"], ".2f") + "x"))
        fo = t["follower"]
        rows.append(("TLS follower 1 GiB MB/s vs plaintext", fmt(fo["median"]["tls"] / 1e6, ",.0f"),
                     fmt(fo["median"]["plain"] / 1e6, ",.0f"), fmt(fo["ratio"], ".2f") + "x"))
    bt = r.get("bigtable")
    if bt:
        # prismqd on the generated table in the first column, on an empty one in the second.
        g = bt["generate"]
        rows.append(("bigtable: %s runs generated in s (%s)" % (format(bt["runs"], ","),
                                                               "cached" if g["cached"] else "this run"),
                     "%.0f (%s/s)" % (g["seconds"], format(g["inserts_per_s"], ",.0f")), "", ""))
        st = bt["startup_seconds"]
        rows.append(("bigtable start-up to first answer ms, warm", fmt(st["big"] * 1e3, ",.0f"),
                     fmt(st["empty"] * 1e3, ",.0f"), ""))
        rows.append(("bigtable start-up to first answer ms, runs.db not cached", fmt(st["big_cold"] * 1e3, ",.0f"),
                     "", ""))
        for label, f in (("GetRun", bt["getrun"]),) + tuple(("ListRuns " + k, bt["listruns"][k])
                                                             for k, _, _ in BIGTABLE_LISTS):
            rows.append(("bigtable %s p50 / p99 us" % label, "%.0f / %.0f" % (f["big"]["median_us"], f["big"]["p99_us"]),
                         "%.0f / %.0f" % (f["empty"]["median_us"], f["empty"]["p99_us"]), ""))
        s = bt["start_rate"]
        rows.append(("bigtable start rate runs/s (32 in flight)", fmt(s["median"]["big"], ",.0f"),
                     fmt(s["median"]["empty"], ",.0f"), fmt(s["ratio"], ".2f") + "x"))
        for k in ("rss_idle_kb", "rss_after_kb"):
            rows.append(("bigtable RSS KiB, %s" % ("idle" if k == "rss_idle_kb" else "after the calls"),
                         str(bt[k]["big"]), str(bt[k]["empty"]), "%+d KiB" % (bt[k]["big"] - bt[k]["empty"])))
    w = max([len(x[0]) for x in rows] + [6])
    print("%-*s  %18s  %18s  %12s" % (w, "metric", "prismqd", "reference", "ratio"))
    for row in rows:
        print("%-*s  %18s  %18s  %12s" % ((w,) + row))
    if t:
        print("TLS (prismqd, tls_handshake): %s %s; %s" % (t["tls_version"], t["cipher"], t["ktls"]))
    print("\ntargets:")
    for t in r["targets"]:
        print("  %-4s %s: %s %s (target %s %s %s)" % ("ok" if t["pass"] else "MISS", t["name"], fmt(t["value"], ".3g"),
                                                  t["unit"], t["op"], fmt(t["target"], ".3g"), t["unit"]))
    for e in r.get("errors", []):
        print("  ERROR %s" % e)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build-dir", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--only", default=",".join(PHASES))
    a = ap.parse_args()
    phases = [p for p in a.only.split(",") if p]
    bad = [p for p in phases if p not in PHASES]
    if bad:
        ap.error("unknown phase(s): %s" % ", ".join(bad))
    return Bench(a.build_dir, a.out).run(phases)


if __name__ == "__main__":
    sys.exit(main())
