"""The gRPC transport of prismqd as a stock client (grpcio) sees it: health, unknown
methods, size limits, deadlines, cancellation, many calls, unix sockets, shutdown; and
prismqd --version."""

import os
import signal
import subprocess
import unittest

import grpc

from prismq_testlib import BIN_DIR, WAIT, Server, ServerTestCase, protos, temp_dir

pb = protos()
SERVING = pb.health_pb2.HealthCheckResponse.SERVING

SOCK = os.path.join(temp_dir("prismq-sock-"), "prismqd.sock")


class Transport(ServerTestCase):
    server_kwargs = {"extra_args": ("--listen", "unix://" + SOCK)}

    def setUp(self):
        self.ch = self.server.channel()
        self.addCleanup(self.ch.close)
        self.health = pb.health_pb2_grpc.HealthStub(self.ch)

    def check(self, service="", timeout=WAIT):
        return self.health.Check(pb.health_pb2.HealthCheckRequest(service=service),
                                 timeout=timeout)

    def assertCode(self, code, fn, *args, **kw):
        with self.assertRaises(grpc.RpcError) as cm:
            fn(*args, **kw)
        self.assertEqual(cm.exception.code(), code, cm.exception.details())
        return cm.exception

    def test_health_serving(self):
        self.assertEqual(self.check().status, SERVING)

    def test_health_unknown_service(self):
        self.assertCode(grpc.StatusCode.NOT_FOUND, self.check, "no.such.Service")

    def test_unknown_method(self):
        for path in ("/prismq.runner.v1.Runner/Nope", "/no.Such/Thing"):
            with self.subTest(path=path):
                rpc = self.ch.unary_unary(path)  # no serializers: raw bytes
                self.assertCode(grpc.StatusCode.UNIMPLEMENTED, rpc, b"", timeout=WAIT)
        self.assertEqual(self.check().status, SERVING)

    def test_oversized_request(self):
        self.assertCode(grpc.StatusCode.RESOURCE_EXHAUSTED, self.check, "x" * (5 << 20))
        self.assertEqual(self.check().status, SERVING)
        self.server.wait_idle()

    def test_watch_deadline(self):
        got = []
        it = self.health.Watch(pb.health_pb2.HealthCheckRequest(), timeout=0.3)
        with self.assertRaises(grpc.RpcError) as cm:
            for msg in it:
                got.append(msg.status)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.DEADLINE_EXCEEDED)
        self.assertEqual(got, [SERVING])
        self.server.wait_idle()

    def test_watch_cancel_frees_call(self):
        it = self.health.Watch(pb.health_pb2.HealthCheckRequest(), timeout=WAIT * 3)
        self.assertEqual(next(it).status, SERVING)
        self.assertGreaterEqual(self.server.stats().live_calls, 2)  # Watch + GetStats
        it.cancel()
        self.assertEqual(it.code(), grpc.StatusCode.CANCELLED)
        self.server.wait_idle()

    def test_many_unary_calls_one_channel(self):
        before = self.server.stats().total_calls
        req = pb.health_pb2.HealthCheckRequest()
        futs = [self.health.Check.future(req, timeout=60) for _ in range(1000)]
        for f in futs:
            self.assertEqual(f.result().status, SERVING)
        after = self.server.wait_idle()
        self.assertGreaterEqual(after.total_calls - before, 1000)

    def test_unix_socket_listener(self):
        with grpc.insecure_channel("unix:" + SOCK) as ch:
            stub = pb.health_pb2_grpc.HealthStub(ch)
            resp = stub.Check(pb.health_pb2.HealthCheckRequest(), timeout=WAIT)
        self.assertEqual(resp.status, SERVING)

    def test_stats_sane(self):
        st = self.server.stats()
        self.assertGreaterEqual(st.live_connections, 1)
        self.assertGreater(st.open_fds, 0)
        self.assertGreater(st.rss_kb, 0)
        self.assertGreaterEqual(st.total_calls, 1)


class Shutdown(unittest.TestCase):
    def test_sigterm_exits_zero_and_ends_streams(self):
        srv = Server()
        with srv:
            with srv.channel() as ch:
                health = pb.health_pb2_grpc.HealthStub(ch)
                it = health.Watch(pb.health_pb2.HealthCheckRequest(), timeout=WAIT * 3)
                self.assertEqual(next(it).status, SERVING)
                self.assertEqual(srv.stop(signal.SIGTERM), 0)
                # Draining, the server is not serving any more ...
                self.assertEqual(next(it).status, pb.health_pb2.HealthCheckResponse.NOT_SERVING)
                # ... and it ends a long stream itself: the client must not be left
                # waiting for its own deadline.
                with self.assertRaises(grpc.RpcError) as cm:
                    next(it)
                self.assertEqual(cm.exception.code(), grpc.StatusCode.UNAVAILABLE)

    def test_sigint_exits_zero(self):
        srv = Server()
        with srv:
            with srv.channel() as ch:
                health = pb.health_pb2_grpc.HealthStub(ch)
                self.assertEqual(health.Check(pb.health_pb2.HealthCheckRequest(),
                                              timeout=WAIT).status, SERVING)
                self.assertEqual(srv.stop(signal.SIGINT), 0)


class Version(unittest.TestCase):
    def test_version_prints_and_exits(self):
        prismqd = os.path.abspath(os.path.join(BIN_DIR, "prismqd"))
        cwd = temp_dir()
        p = subprocess.run([prismqd, "--version"], cwd=cwd,
                           stdin=subprocess.DEVNULL, capture_output=True, timeout=WAIT)
        self.assertEqual((p.returncode, p.stderr), (0, b""))
        self.assertRegex(p.stdout.decode(),
                         r"^prismqd \d+\.\d+\.\d+ \(commit ([0-9a-f]{7,}(-dirty)?|unknown)\)\n\Z")
        self.assertEqual(os.listdir(cwd), [])  # no server started: no ./var
        p = subprocess.run([prismqd, "--help"], cwd=cwd,
                           stdin=subprocess.DEVNULL, capture_output=True, timeout=WAIT)
        self.assertIn(b"--version", p.stdout)


if __name__ == "__main__":
    unittest.main()
