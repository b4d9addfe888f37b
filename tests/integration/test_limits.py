"""The limits: keys that bound what one client may hold: streams per connection, header
list bytes, request message bytes, how long a connection may sit idle (or a request's
headers take to arrive), and the queued runs of one identity. Each test crosses its
limit, checks the answer, and checks that the server carries on serving.

The wire-level tests use hyper-h2 (python3-h2) or hand-made frames, so that nothing on
the client side corrects or hides what the server does."""

import os
import socket
import struct
import time
import unittest

import grpc
import h2.errors
import hpack

from prismq_testlib import WAIT, Server, ServerTestCase, protos, temp_dir
from test_connections import PREFACE  # the client preface and an empty SETTINGS frame
from test_wire import CHECK, EMPTY_MSG, SERVING_MSG, H2Client, grpc_headers, grpc_msg
from tls_common import IDENTITY_UNIX, MODULES, Stubs, config_yaml

pb = protos()
R = pb.runner_pb2
WAIT_RUN = "/prismq.runner.v1.Runner/WaitRun"
START_RUN = "/prismq.runner.v1.Runner/StartRun"
SERVING = pb.health_pb2.HealthCheckResponse.SERVING
ERR = h2.errors.ErrorCodes

# HTTP/2 frame types and flags (RFC 9113, section 6).
HEADERS, RST_STREAM, SETTINGS, GOAWAY = 0x1, 0x3, 0x4, 0x7
END_STREAM = 0x1

# How long an idle connection, or a stream whose headers stall, may last in the
# IdleTimeout tests: the timeout is 400 ms, checked every 101 ms.
IDLE_MS = 400
IDLE_BOUND = 2.0


def frame(ftype, flags, sid, payload):
    return struct.pack(">I", len(payload))[1:] + bytes((ftype, flags)) + struct.pack(">I", sid) + payload


def header_list_size(headers):
    """The size of a header list as HTTP/2 counts it (RFC 9113, 6.5.2)."""
    return sum(len(n) + len(v) + 32 for n, v in headers)


def serves(srv):
    """Health/Check over a new connection answers SERVING."""
    with srv.channel() as ch:
        stub = pb.health_pb2_grpc.HealthStub(ch)
        return stub.Check(pb.health_pb2.HealthCheckRequest(), timeout=WAIT).status == SERVING


def run_of(st):
    """The Run of a unary Runner answer read by H2Client (one length-prefixed message)."""
    assert len(st.data) >= 5 and st.data[0] == 0, st.data
    (n,) = struct.unpack(">I", st.data[1:5])
    assert len(st.data) == 5 + n, st.data
    return R.Run.FromString(st.data[5:])


def cancel_all(stubs, run_ids):
    """Cancels the runs of run_ids that have not ended, the last started first (the
    queued before the running, so that none starts as another ends), and waits for
    each to end."""
    for run_id in reversed(run_ids):
        if stubs.get(run_id).status in (R.RUN_STATUS_QUEUED, R.RUN_STATUS_RUNNING):
            stubs.cancel(run_id)
    for run_id in run_ids:
        assert stubs.wait(run_id).status == R.RUN_STATUS_CANCELLED, run_id


class RawConn:
    """A TCP connection to the server read frame by frame, with no HTTP/2 state of its
    own: for what hyper-h2 would refuse to send or to take (a header block left without
    END_HEADERS, then frames for that stream)."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
        self.buf = b""

    def close(self):
        self.sock.close()

    def send(self, data):
        self.sock.sendall(data)

    def next_frame(self, deadline):
        """The next frame (type, flags, stream id, payload); None once the server has
        closed the connection (EOF or reset). Raises AssertionError at `deadline`."""
        while len(self.buf) < 9 or len(self.buf) < 9 + int.from_bytes(self.buf[:3], "big"):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("no frame and no close within the bound; have %r" % self.buf)
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except ConnectionResetError:
                data = b""
            if not data:
                if self.buf:
                    raise AssertionError("connection closed inside a frame: %r" % self.buf)
                return None
            self.buf += data
        n = int.from_bytes(self.buf[:3], "big")
        ftype, flags = self.buf[3], self.buf[4]
        sid = int.from_bytes(self.buf[5:9], "big") & 0x7FFFFFFF
        payload, self.buf = self.buf[9:9 + n], self.buf[9 + n:]
        return ftype, flags, sid, payload

    def frames_until_close(self, timeout):
        """Reads every frame until the server closes the connection; returns the list of
        (seconds since the call, type, flags, stream id, payload) and the seconds until
        the close. Raises AssertionError if the connection is still open after timeout."""
        start = time.monotonic()
        deadline = start + timeout
        got = []
        while True:
            f = self.next_frame(deadline)
            now = time.monotonic() - start
            if f is None:
                return got, now
            got.append((now,) + f)


class StreamLimit(ServerTestCase):
    """limits.max_streams_per_connection: 5."""

    server_kwargs = {"config_yaml": config_yaml(limits={"max_streams_per_connection": 5})}

    def setUp(self):
        self.stubs = Stubs(self.server.channel())
        self.addCleanup(self.stubs.close)

    def sleeping_run(self):
        run = self.stubs.start("sleep", seconds=60)
        self.assertEqual(run.status, R.RUN_STATUS_RUNNING)
        self.addCleanup(cancel_all, self.stubs, [run.run_id])
        return run

    def test_sixth_stream_refused_and_the_five_answer(self):
        run = self.sleeping_run()
        c = H2Client(self.server.addr)
        self.addCleanup(c.close)
        # Six WaitRuns that would each wait a long time, all sent before we read (and so
        # acknowledge) the server's SETTINGS: past the limit the server has announced
        # but we have not acknowledged, a stream is refused (past an acknowledged one,
        # it would be a connection error).
        wait_req = grpc_msg(R.WaitRunRequest(run_id=run.run_id,
                                             timeout_ms=int(WAIT * 3000)).SerializeToString())
        sids = [c.request(grpc_headers(WAIT_RUN), wait_req) for _ in range(6)]
        sixth = c.wait(sids[5])
        self.assertEqual(sixth.reset, ERR.REFUSED_STREAM, "sixth stream: %s" % vars(sixth))
        self.assertEqual(c.conn.remote_settings.max_concurrent_streams, 5)
        for sid in sids[:5]:
            self.assertFalse(c.streams[sid].done, "stream %d ended: %s" % (sid, vars(c.streams[sid])))
        # The five are live calls: the run's end answers every one of them.
        self.stubs.cancel(run.run_id)
        for sid in sids[:5]:
            st = c.wait(sid)
            self.assertIsNone(st.reset, "stream %d reset" % sid)
            self.assertEqual(st.grpc_status(), "0", st.headers)
            self.assertEqual(run_of(st).status, R.RUN_STATUS_CANCELLED)
        # All five closed: the same connection takes a new stream.
        st = c.wait(c.request(grpc_headers(CHECK), EMPTY_MSG))
        self.assertEqual((st.grpc_status(), st.data), ("0", SERVING_MSG))
        self.assertIsNone(c.terminated)
        self.assertTrue(serves(self.server))

    def test_grpcio_channel_queues_calls_over_the_limit(self):
        # A stock client keeps to the limit it was told: of six calls on one channel,
        # the sixth waits for a stream, and all six are answered.
        run = self.sleeping_run()
        base = self.server.wait_idle().live_calls
        with self.server.channel() as ch:
            stub = pb.runner_pb2_grpc.RunnerStub(ch)
            req = R.WaitRunRequest(run_id=run.run_id, timeout_ms=int(WAIT * 3000))
            futs = [stub.WaitRun.future(req, timeout=WAIT * 4) for _ in range(6)]
            st = self.server.wait_stats(lambda s: s.live_calls >= base + 5)
            self.assertEqual(st.live_calls, base + 5, "calls in flight on one connection")
            self.stubs.cancel(run.run_id)
            for f in futs:
                self.assertEqual(f.result(timeout=WAIT).status, R.RUN_STATUS_CANCELLED)
        self.assertTrue(serves(self.server))


class HeaderListLimit(ServerTestCase):
    """limits.max_header_list_bytes: 2048."""

    server_kwargs = {"config_yaml": config_yaml(limits={"max_header_list_bytes": 2048})}

    def client(self):
        c = H2Client(self.server.addr)
        self.addCleanup(c.close)
        return c

    def check_with(self, c, name, value):
        return c.wait(c.request(grpc_headers(CHECK, extra=[(name, value)]), EMPTY_MSG))

    def test_large_header_reset_small_served(self):
        c = self.client()
        st = self.check_with(c, "x-big", "a" * 3000)
        self.assertIsNotNone(st.reset, "a 3000-byte header was served: %s" % st.headers)
        self.assertEqual(c.conn.remote_settings.max_header_list_size, 2048)
        # Only that stream: the connection goes on.
        st = self.check_with(c, "x-small", "a" * 500)
        self.assertEqual((st.grpc_status(), st.data), ("0", SERVING_MSG))
        self.assertIsNone(c.terminated)
        self.assertTrue(serves(self.server))

    def test_limit_counted_as_http2_does(self):
        # name + value + 32 per field, pseudo-header fields included: a list of exactly
        # 2048 bytes is served, one of 2049 is reset.
        base = header_list_size(grpc_headers(CHECK)) + len("x-pad") + 32
        for size, served in ((2048, True), (2049, False)):
            with self.subTest(size=size):
                c = self.client()
                hdrs = grpc_headers(CHECK, extra=[("x-pad", "p" * (size - base))])
                self.assertEqual(header_list_size(hdrs), size)
                st = c.wait(c.request(hdrs, EMPTY_MSG))
                if served:
                    self.assertEqual((st.grpc_status(), st.data), ("0", SERVING_MSG), vars(st))
                else:
                    self.assertIsNotNone(st.reset, "%d bytes of headers served" % size)
        self.assertTrue(serves(self.server))

    def test_grpcio_metadata(self):
        with self.server.channel() as ch:
            stub = pb.health_pb2_grpc.HealthStub(ch)
            req = pb.health_pb2.HealthCheckRequest()
            self.assertEqual(stub.Check(req, timeout=WAIT, metadata=[("x-small", "a" * 500)]).status,
                             SERVING)
            with self.assertRaises(grpc.RpcError):
                stub.Check(req, timeout=WAIT, metadata=[("x-big", "a" * 3000)])
            # The channel itself is still good.
            self.assertEqual(stub.Check(req, timeout=WAIT).status, SERVING)
        self.assertTrue(serves(self.server))


class MessageLimit(ServerTestCase):
    """limits.max_message_bytes: 2048 (StartRun's own 64 KiB cap and 8 KiB label values
    are well above it)."""

    server_kwargs = {"config_yaml": config_yaml(limits={"max_message_bytes": 2048})}

    def setUp(self):
        self.stubs = Stubs(self.server.channel())
        self.addCleanup(self.stubs.close)

    def start_req(self, label_bytes):
        return R.StartRunRequest(module_id="echo", parameters={"message": "hi"},
                                 labels={"pad": "x" * label_bytes})

    def test_large_request_refused_small_served(self):
        big = self.start_req(3000)
        self.assertGreater(big.ByteSize(), 2048)
        with self.assertRaises(grpc.RpcError) as cm:
            self.stubs.runner.StartRun(big, timeout=WAIT)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED,
                         cm.exception.details())
        self.assertIn("exceeds the limit of 2048 bytes", cm.exception.details())
        self.assertIn("%d bytes" % big.ByteSize(), cm.exception.details())
        run = self.stubs.runner.StartRun(self.start_req(1000), timeout=WAIT)
        self.assertEqual(self.stubs.wait(run.run_id).status, R.RUN_STATUS_COMPLETED)
        self.assertEqual(self.stubs.get(run.run_id).labels["pad"], "x" * 1000)
        self.assertTrue(serves(self.server))

    def test_boundary(self):
        # A message of exactly 2048 bytes is taken; one of 2049 is not.
        n = 1900
        while self.start_req(n).ByteSize() < 2048:
            n += 1
        exact = self.start_req(n)
        self.assertEqual(exact.ByteSize(), 2048)
        run = self.stubs.runner.StartRun(exact, timeout=WAIT)
        self.assertEqual(self.stubs.wait(run.run_id).status, R.RUN_STATUS_COMPLETED)
        over = self.start_req(n + 1)
        self.assertEqual(over.ByteSize(), 2049)
        with self.assertRaises(grpc.RpcError) as cm:
            self.stubs.runner.StartRun(over, timeout=WAIT)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)
        self.assertTrue(serves(self.server))

    def test_refused_on_its_prefix_alone(self):
        # Only the length prefix of a 3000-byte message, the stream left open: the
        # server answers at once instead of waiting for (or buffering) the body.
        c = H2Client(self.server.addr)
        self.addCleanup(c.close)
        st = c.wait(c.request(grpc_headers(START_RUN), struct.pack(">BI", 0, 3000),
                              end_stream=False))
        self.assertEqual(st.grpc_status(), "8", vars(st))
        self.assertTrue(serves(self.server))


class IdleTimeout(ServerTestCase):
    """limits.idle_timeout_ms: 400."""

    server_kwargs = {"config_yaml": config_yaml(limits={"idle_timeout_ms": IDLE_MS})}

    def raw(self):
        c = RawConn(self.server.port)
        self.addCleanup(c.close)
        return c

    def assert_goaway_then_close(self, frames, closed_at, what):
        goaways = [f for f in frames if f[1] == GOAWAY]
        self.assertEqual(len(goaways), 1, "%s: frames %r" % (what, frames))
        at, _, _, sid, payload = goaways[0]
        self.assertEqual(sid, 0)
        self.assertEqual(int.from_bytes(payload[4:8], "big"), ERR.NO_ERROR, payload)
        self.assertGreater(at, IDLE_MS / 1000 * 0.75, "%s: GOAWAY after %.3f s" % (what, at))
        self.assertLess(closed_at, IDLE_BOUND, "%s: closed after %.3f s" % (what, closed_at))

    def test_silent_after_preface_goaway_and_close(self):
        c = self.raw()
        c.send(PREFACE)
        frames, closed_at = c.frames_until_close(WAIT)
        self.assertEqual(frames[0][1], SETTINGS)
        self.assertGreater(closed_at, 0.3)
        self.assert_goaway_then_close(frames, closed_at, "preface, then nothing")
        self.assertTrue(serves(self.server))

    def test_silent_from_the_start_closed(self):
        # Which protocol it speaks (HTTP/2 or HTTP/1.1) is unknown until its first bytes:
        # nothing is sent to it, and it is closed at the idle timeout.
        c = self.raw()
        frames, closed_at = c.frames_until_close(WAIT)
        self.assertEqual(frames, [])
        self.assertGreater(closed_at, IDLE_MS / 1000 * 0.75)
        self.assertLess(closed_at, IDLE_BOUND)
        self.assertTrue(serves(self.server))

    def test_open_stream_keeps_connection(self):
        stubs = Stubs(self.server.channel())
        self.addCleanup(stubs.close)
        run = stubs.start("sleep", seconds=60)
        self.addCleanup(cancel_all, stubs, [run.run_id])
        c = H2Client(self.server.addr)
        self.addCleanup(c.close)
        start = time.monotonic()
        sid = c.request(grpc_headers(WAIT_RUN), grpc_msg(
            R.WaitRunRequest(run_id=run.run_id, timeout_ms=1500).SerializeToString()))
        st = c.wait(sid)  # fails if the connection ends first
        took = time.monotonic() - start
        self.assertIsNone(st.reset)
        self.assertEqual(st.grpc_status(), "0", vars(st))
        self.assertEqual(run_of(st).status, R.RUN_STATUS_RUNNING)
        self.assertGreater(took, 1.4)
        self.assertLess(took, 1.5 + IDLE_BOUND)
        self.assertIsNone(c.terminated, "the connection ended with its stream open")
        # Idle from the stream's end, not from the connection's start (over 1.5 s ago).
        ended = time.monotonic()
        deadline = ended + WAIT
        while c.terminated is None and time.monotonic() < deadline:
            c._pump(deadline)
        idle = time.monotonic() - ended
        self.assertEqual(c.terminated, ERR.NO_ERROR, "no GOAWAY within %.0f s" % WAIT)
        self.assertGreater(idle, 0.3)
        self.assertLess(idle, IDLE_BOUND)
        self.assertTrue(serves(self.server))

    def test_stalled_header_block_reset(self):
        c = self.raw()
        block = hpack.Encoder().encode(grpc_headers(CHECK))
        # A HEADERS frame without END_HEADERS: the CONTINUATION that would end the block
        # never comes.
        c.send(PREFACE + frame(HEADERS, END_STREAM, 1, block))
        start = time.monotonic()
        deadline = start + WAIT
        while True:
            f = c.next_frame(deadline)
            self.assertIsNotNone(f, "connection closed before the stream was reset")
            if f[0] == RST_STREAM:
                break
        took = time.monotonic() - start
        self.assertEqual(f[2], 1)
        self.assertGreater(took, 0.3)
        self.assertLess(took, IDLE_BOUND)
        # With its only stream gone, the connection is idle and goes too.
        frames, _ = c.frames_until_close(WAIT)
        self.assertIn(GOAWAY, [f[1] for f in frames])
        self.assertTrue(serves(self.server))


class QueuedPerIdentity(ServerTestCase):
    """limits.max_queued_per_identity: 2, one run at a time; the plain TCP listener
    (anonymous callers) and a unix socket (IDENTITY_UNIX)."""

    sock_path = os.path.join(temp_dir("prismq-limits-sock-"), "prismqd.sock")
    server_kwargs = {"config_yaml": config_yaml(limits={"max_concurrent": 1,
                                                        "max_queued_per_identity": 2}),
                     "extra_args": ("--listen", "unix://" + sock_path)}

    def setUp(self):
        self.anon = Stubs(self.server.channel())
        self.addCleanup(self.anon.close)
        self.unix = Stubs(grpc.insecure_channel("unix:" + self.sock_path,
                                                options=[("grpc.use_local_subchannel_pool", 1)]))
        self.addCleanup(self.unix.close)
        self.runs = []
        self.addCleanup(cancel_all, self.anon, self.runs)

    def start(self, stubs, status):
        run = stubs.start("sleep", seconds=30)
        self.runs.append(run.run_id)
        self.assertEqual(run.status, status, run)
        return run

    def assert_refused(self, stubs, who):
        with self.assertRaises(grpc.RpcError) as cm:
            stubs.start("sleep", seconds=30)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED,
                         cm.exception.details())
        self.assertIn("too many queued runs for %s (2; limits.max_queued_per_identity is 2)" % who,
                      cm.exception.details())

    def test_per_identity_queue(self):
        running = self.start(self.anon, R.RUN_STATUS_RUNNING)
        self.assertEqual(running.owner, "")
        queued = [self.start(self.anon, R.RUN_STATUS_QUEUED) for _ in range(2)]
        self.assert_refused(self.anon, "anonymous callers")
        # Another identity has a queue of its own...
        u1 = self.start(self.unix, R.RUN_STATUS_QUEUED)
        self.assertEqual(u1.owner, IDENTITY_UNIX)
        self.start(self.unix, R.RUN_STATUS_QUEUED)
        self.assert_refused(self.unix, IDENTITY_UNIX)
        # ...and a run leaving the queue makes room for its owner only.
        self.assertEqual(self.anon.cancel(queued[0].run_id).status, R.RUN_STATUS_CANCELLED)
        self.assert_refused(self.unix, IDENTITY_UNIX)
        self.start(self.anon, R.RUN_STATUS_QUEUED)
        self.assert_refused(self.anon, "anonymous callers")
        self.assertEqual(self.anon.get(running.run_id).status, R.RUN_STATUS_RUNNING)
        self.assertTrue(serves(self.server))


class StartsAtOnce(unittest.TestCase):
    """limits.max_queued_per_identity counts only runs that must wait."""

    def test_run_that_starts_at_once_not_refused(self):
        # sleep1 runs one at a time, the server two: with the caller's queue at its
        # limit (one sleep1 waiting), a run of sleep still starts at once.
        sleep1 = dict(next(m for m in MODULES if m["id"] == "sleep"), id="sleep1", max_concurrent=1)
        cfg = config_yaml(limits={"max_concurrent": 2, "max_queued_per_identity": 1},
                          modules=MODULES + [sleep1])
        with Server(config_yaml=cfg) as srv:
            anon = Stubs(srv.channel())
            ids = []
            try:
                for module, status in (("sleep1", R.RUN_STATUS_RUNNING),
                                       ("sleep1", R.RUN_STATUS_QUEUED)):
                    run = anon.start(module, seconds=30)
                    ids.append(run.run_id)
                    self.assertEqual(run.status, status, run)
                with self.assertRaises(grpc.RpcError) as cm:
                    anon.start("sleep1", seconds=30)
                self.assertEqual(cm.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)
                self.assertIn("too many queued runs for anonymous callers (1; "
                              "limits.max_queued_per_identity is 1)", cm.exception.details())
                run = anon.start("sleep", seconds=30)
                ids.append(run.run_id)
                self.assertEqual(run.status, R.RUN_STATUS_RUNNING, run)
                self.assertTrue(serves(srv))
            finally:
                cancel_all(anon, ids)
                anon.close()
            self.assertEqual(srv.stop(), 0)


if __name__ == "__main__":
    unittest.main()
