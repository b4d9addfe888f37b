"""Prometheus metrics at GET /metrics, through the real server: the text passes
`promtool check metrics` (Debian's prometheus package), the figures follow what the
test did (runs by module and status, their durations, output bytes, calls by method and
code, followers, connections, commits, the process), a real Prometheus started by the
test scrapes it, http.metrics false removes the route, and a caller without the role
read_all is refused as the gRPC side would refuse it."""

import os
import re
import socket
import subprocess
import threading
import time
import unittest
import json
import urllib.error
import urllib.parse
import urllib.request

from prismq_testlib import WAIT, Server, protos, temp_dir
from runner_common import config_yaml

pb = protos()
R = pb.runner_pb2
H = pb.health_pb2

MODULES = [
    {"id": "talk", "argv": ["sh", "-c", "echo out-line; echo err-line >&2"]},
    {"id": "fail", "argv": ["sh", "-c", "exit 3"]},
    {"id": "sleep", "argv": ["sleep", "30"]},
]
SHUTDOWN = {"shutdown": {"runs": "cancel", "grace_ms": 1000}}
CONFIG = config_yaml(MODULES, sections=SHUTDOWN)

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def get(srv, path):
    """(status, content type, body text) of GET path."""
    try:
        with urllib.request.urlopen(f"http://{srv.addr}{path}", timeout=WAIT) as r:
            return r.status, r.headers["Content-Type"], r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers["Content-Type"], e.read().decode()


def parse(text):
    """{(name, frozenset of (label, value))}: value, of every sample in the text."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        assert m, "not a sample line: %r" % line
        labels = frozenset(LABEL.findall(m.group(2) or ""))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def value(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Metrics(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.srv = Server(config_yaml=CONFIG).start()
        cls.channel = cls.srv.channel()
        cls.stub = pb.runner_pb2_grpc.RunnerStub(cls.channel)

    @classmethod
    def tearDownClass(cls):
        cls.channel.close()
        assert cls.srv.stop() == 0

    def metrics(self):
        code, ctype, text = get(self.srv, "/metrics")
        self.assertEqual(code, 200, text)
        self.assertEqual(ctype, "text/plain; version=0.0.4; charset=utf-8")
        return text

    def wait_metrics(self, pred):
        """Polls /metrics until pred(samples) holds (figures with no event to wait on)."""
        deadline = time.monotonic() + WAIT
        while True:
            samples = parse(self.metrics())
            if pred(samples):
                return samples
            self.assertLess(time.monotonic(), deadline, "metrics condition not met")
            time.sleep(0.05)

    def run_to_end(self, module):
        run = self.stub.StartRun(R.StartRunRequest(module_id=module), timeout=WAIT)
        done = self.stub.WaitRun(R.WaitRunRequest(run_id=run.run_id, timeout_ms=int(WAIT * 1000)),
                                 timeout=WAIT + 5)
        self.assertEqual(done.run_id, run.run_id)
        return done

    def test_figures_follow_what_happened(self):
        before = parse(self.metrics())
        for _ in range(2):
            self.assertEqual(self.run_to_end("talk").status, R.RUN_STATUS_COMPLETED)
        self.assertEqual(self.run_to_end("fail").status, R.RUN_STATUS_FAILED)
        with self.assertRaises(Exception) as cm:
            self.stub.GetRun(R.GetRunRequest(run_id="01" + "0" * 24), timeout=WAIT)
        self.assertEqual(cm.exception.code().name, "NOT_FOUND")
        s = parse(self.metrics())

        def grew(name, by, **labels):
            self.assertEqual((value(s, name, **labels) or 0) - (value(before, name, **labels) or 0),
                             by, (name, labels))

        grew("prismq_runs_started_total", 2, module="talk")
        grew("prismq_runs_finished_total", 2, module="talk", status="COMPLETED")
        grew("prismq_runs_finished_total", 1, module="fail", status="FAILED")
        grew("prismq_run_duration_seconds_count", 2, module="talk")
        grew("prismq_output_bytes_total", 2 * len("out-line\n"), stream="stdout")
        grew("prismq_output_bytes_total", 2 * len("err-line\n"), stream="stderr")
        runner = "prismq.runner.v1.Runner"
        grew("grpc_server_handled_total", 1, grpc_service=runner, grpc_method="GetRun",
             grpc_code="NotFound")
        grew("grpc_server_handled_total", 3, grpc_service=runner, grpc_method="StartRun",
             grpc_code="OK")
        grew("grpc_server_started_total", 3, grpc_service=runner, grpc_method="StartRun")
        grew("grpc_server_handling_seconds_count", 3, grpc_service=runner, grpc_method="StartRun")
        # Histograms: cumulative buckets ending in +Inf = count.
        self.assertEqual(value(s, "grpc_server_handling_seconds_bucket", grpc_service=runner,
                               grpc_method="StartRun", le="+Inf"),
                         value(s, "grpc_server_handling_seconds_count", grpc_service=runner,
                               grpc_method="StartRun"))
        self.assertGreater(value(s, "prismq_runtab_commit_seconds_count"), 0)
        self.assertGreaterEqual(value(s, "prismq_runs"), 3)
        self.assertEqual(value(s, "prismq_runs_running"), 0)
        self.assertEqual(value(s, "prismq_runs_queued"), 0)
        self.assertGreaterEqual(value(s, "prismq_connections", protocol="grpc"), 1)
        self.assertGreater(value(s, "process_resident_memory_bytes"), 1 << 20)
        self.assertGreater(value(s, "process_open_fds"), 3)
        self.assertAlmostEqual(value(s, "process_start_time_seconds"), time.time(), delta=3600)

    def test_running_runs_and_followers(self):
        run = self.stub.StartRun(R.StartRunRequest(module_id="sleep"), timeout=WAIT)
        follow = self.stub.StreamOutput(R.StreamOutputRequest(run_id=run.run_id, follow=True),
                                        timeout=4 * WAIT)
        ended = threading.Event()

        def drain():
            for _ in follow:
                pass
            ended.set()
        threading.Thread(target=drain, daemon=True).start()
        self.wait_metrics(lambda s: value(s, "prismq_followers") == 1
                          and value(s, "prismq_runs_running") == 1)
        self.stub.CancelRun(R.CancelRunRequest(run_id=run.run_id), timeout=WAIT)
        self.assertTrue(ended.wait(WAIT))
        s = self.wait_metrics(lambda s: value(s, "prismq_followers") == 0)
        self.assertEqual(value(s, "prismq_runs_running"), 0)
        self.assertEqual(value(s, "prismq_runs_finished_total", module="sleep",
                               status="CANCELLED"), 1)

    def test_promtool_accepts_it(self):
        self.run_to_end("talk")
        r = subprocess.run(["promtool", "check", "metrics"], input=self.metrics().encode(),
                           capture_output=True, timeout=WAIT)
        self.assertEqual((r.returncode, r.stdout, r.stderr), (0, b"", b""))

    def test_prometheus_scrapes_it(self):
        self.run_to_end("talk")
        tmp = temp_dir("prismq-prom-")
        port = free_port()
        with open(os.path.join(tmp, "prometheus.yml"), "w", encoding="utf-8") as f:
            f.write("global: {scrape_interval: 1s, scrape_timeout: 1s}\n"
                    "scrape_configs:\n"
                    "  - job_name: prismq\n"
                    f"    static_configs: [{{targets: ['{self.srv.addr}']}}]\n")
        prom = subprocess.Popen(
            ["prometheus", "--config.file=" + os.path.join(tmp, "prometheus.yml"),
             "--storage.tsdb.path=" + os.path.join(tmp, "data"),
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=subprocess.DEVNULL, stderr=open(os.path.join(tmp, "log"), "wb"))
        try:
            query = urllib.parse.quote('prismq_runs_started_total{job="prismq",module="talk"}')
            deadline = time.monotonic() + 4 * WAIT
            result = []
            while not result:
                self.assertIsNone(prom.poll(), "prometheus exited")
                self.assertLess(time.monotonic(), deadline, "prometheus scraped nothing")
                time.sleep(0.2)
                try:
                    with urllib.request.urlopen(
                            f"http://127.0.0.1:{port}/api/v1/query?query={query}",
                            timeout=WAIT) as r:
                        result = json.load(r)["data"]["result"]
                except (urllib.error.URLError, ConnectionError):
                    continue  # not listening yet
            self.assertGreaterEqual(float(result[0]["value"][1]), 1)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/targets",
                                        timeout=WAIT) as r:
                targets = json.load(r)["data"]["activeTargets"]
            self.assertEqual([(t["health"], t["lastError"]) for t in targets], [("up", "")])
        finally:
            prom.terminate()
            prom.wait(WAIT)


class MetricsOffOrRefused(unittest.TestCase):
    def test_metrics_off(self):
        with Server(config_yaml=config_yaml(MODULES, sections={"http": {"metrics": False}})) as srv:
            code, _, body = get(srv, "/metrics")
            self.assertEqual(code, 404, body)

    def test_needs_read_all(self):
        authz = {"authz": [{"identity": "*", "modules": ["*"], "roles": ["read"]}]}
        with Server(config_yaml=config_yaml(MODULES, sections=authz)) as srv:
            code, _, body = get(srv, "/metrics")
            self.assertEqual(code, 403, body)
            self.assertIn("read_all", body)


if __name__ == "__main__":
    unittest.main()
