#!/usr/bin/env python3
"""prismqd.exe under Wine against plain Windows programs under the same Wine (issue 17;
docs/windows.md, "Performance"): ratios only, as Wine's absolute figures say little of
Windows'.

  wine_bench.py [--reps R (3)] [--starts N (150)] [--inflight K (8)] [--bytes B (256 MiB)]

Environment: PRISMQ_BIN the Windows build's bin directory (prismqd.exe), PRISMQ_WINEPREFIX
its Wine prefix, SPAWN_REF_WIN the path of spawn_ref_win.exe, BENCH_CLIENT the Linux
bench_client (scripts/bench/run.sh sets all four). R repetitions, alternating:
  start   N runs of "spawn_ref_win true", K in flight (bench_client starts: StartRun, then
          WaitRun), against spawn_ref_win rate N K (CreateProcessW with two pipes read to
          EOF, K threads);
  stream  one run writing B bytes on stdout and one follower (bench_client stream),
          against spawn_ref_win pipe B (a child writing B bytes, read by ReadFile).
Prints one JSON line with each side's median and the median of the per-repetition ratios;
exits 1 when a run fails.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests", "integration"))
from prismq_testlib import Server  # noqa: E402

WINE_RUN = os.path.join(HERE, "..", "wine-run.sh")


def run_json(argv):
    p = subprocess.run(argv, capture_output=True, text=True, timeout=1200)
    if p.returncode != 0:
        sys.exit("wine_bench: %s failed (%d): %s %s" % (argv[:3], p.returncode, p.stdout,
                                                        p.stderr[-2000:]))
    return json.loads(p.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--starts", type=int, default=150)
    ap.add_argument("--inflight", type=int, default=8)
    ap.add_argument("--bytes", type=int, default=256 << 20)
    a = ap.parse_args()
    ref = os.environ["SPAWN_REF_WIN"]
    client = os.environ["BENCH_CLIENT"]
    wine = [WINE_RUN, os.environ["PRISMQ_WINEPREFIX"], ref]
    cfg = ("limits: {max_concurrent: 64, output_max_bytes: 0}\nmodules:\n"
           "  - {id: 'true', name: 'true', argv: ['%s', 'true']}\n"
           "  - {id: emit, name: emit, argv: ['%s', emit, '{bytes}'],\n"
           "     parameters: [{name: bytes, type: integer, default: '0'}]}\n" % (ref, ref))
    res = {"start": {"plain": [], "prismqd": []}, "stream": {"plain": [], "prismqd": []}}
    with Server(cfg) as srv:
        for _ in range(a.reps):
            res["start"]["plain"].append(run_json(wine + ["rate", str(a.starts), str(a.inflight)]))
            res["start"]["prismqd"].append(run_json(
                [client, srv.addr, "starts", str(a.starts), str(a.inflight), "true"]))
            res["stream"]["plain"].append(run_json(wine + ["pipe", str(a.bytes)]))
            res["stream"]["prismqd"].append(run_json(
                [client, srv.addr, "stream", str(a.bytes), "emit", "bytes=%d" % a.bytes]))
    bad = [r for r in res["start"]["prismqd"] + res["start"]["plain"] if r["failed"]]
    bad += [r for r in res["stream"]["prismqd"] + res["stream"]["plain"] if not r["ok"]]
    out = {}
    for phase, field in (("start", "runs_per_s"), ("stream", "bytes_per_s")):
        p, m = res[phase]["plain"], res[phase]["prismqd"]
        out[phase] = {"plain_median": statistics.median(x[field] for x in p),
                      "prismqd_median": statistics.median(x[field] for x in m),
                      "ratio": statistics.median(b[field] / x[field] for x, b in zip(p, m)),
                      "unit": field, "reps": res[phase]}
    print(json.dumps({"wine": out, "params": vars(a)}))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
