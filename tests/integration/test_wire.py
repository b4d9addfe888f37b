"""Bad input on the wire: what prismqd answers to malformed HTTP/2 and gRPC framing,
sent with hyper-h2 (python3-h2) so that nothing on the client side corrects it.
After every test a long-lived grpcio channel and a new one must still be served, and
the server's calls, connections and descriptors must come back to their baseline."""

import gzip
import socket
import struct
import time
import unittest

import h2.config
import h2.connection
import h2.errors
import h2.events

from prismq_testlib import WAIT, ServerTestCase, protos

pb = protos()
CHECK = "/grpc.health.v1.Health/Check"
WATCH = "/grpc.health.v1.Health/Watch"
MiB = 1 << 20


def grpc_msg(payload, compressed=False):
    """One length-prefixed gRPC message."""
    return struct.pack(">BI", 1 if compressed else 0, len(payload)) + payload


EMPTY_MSG = grpc_msg(b"")
SERVING_MSG = grpc_msg(pb.health_pb2.HealthCheckResponse(
    status=pb.health_pb2.HealthCheckResponse.SERVING).SerializeToString())


def grpc_headers(path, content_type="application/grpc", extra=()):
    return [(":method", "POST"), (":scheme", "http"), (":path", path),
            (":authority", "prismq"), ("content-type", content_type),
            ("te", "trailers")] + list(extra)


def big_check_msg(size):
    """A gRPC message whose payload, exactly `size` bytes (2..256 MiB), is a
    HealthCheckRequest naming an unknown service: the server answers it NOT_FOUND."""
    payload = pb.health_pb2.HealthCheckRequest(service="x" * (size - 5)).SerializeToString()
    assert len(payload) == size  # a tag byte and a 4-byte length
    return grpc_msg(payload)


def peak_rss_kb(pid):
    """The peak resident set size (VmHWM) of process `pid`, in KiB."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM line for pid %d" % pid)


def sanitized(pid):
    """True if process `pid` runs with AddressSanitizer, whose quarantine keeps freed
    memory resident, or under valgrind, whose shadow memory is counted as its own: its
    peak RSS says nothing of what the program holds."""
    with open("/proc/%d/maps" % pid) as f:
        return any("libasan" in line or "vgpreload" in line for line in f)


class Stream:
    def __init__(self):
        self.headers = {}
        self.trailers = {}
        self.data = b""
        self.reset = None  # HTTP/2 error code of a RST_STREAM from the server
        self.ended = False

    @property
    def done(self):
        return self.ended or self.reset is not None

    def grpc_status(self):
        """grpc-status from the trailers, or from the headers of a Trailers-Only answer."""
        return self.trailers.get("grpc-status", self.headers.get("grpc-status"))


class H2Client:
    """A minimal HTTP/2 client on hyper-h2 over a blocking socket."""

    def __init__(self, addr, validate=True):
        host, port = addr.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=WAIT)
        cfg = h2.config.H2Configuration(client_side=True, header_encoding="utf-8",
                                        validate_outbound_headers=validate,
                                        normalize_outbound_headers=validate)
        self.conn = h2.connection.H2Connection(cfg)
        self.conn.initiate_connection()
        self.streams = {}
        self.terminated = None  # ConnectionTerminated error code, or "EOF"
        self._flush()

    def close(self):
        self.sock.close()

    def _flush(self):
        out = self.conn.data_to_send()
        if out:
            self.sock.sendall(out)

    def request(self, headers, body=b"", end_stream=True):
        """Opens a stream with `headers`, sends `body` (if any); returns the stream id."""
        sid = self.conn.get_next_available_stream_id()
        self.streams[sid] = Stream()
        self.conn.send_headers(sid, headers, end_stream=end_stream and not body)
        if body:
            self.conn.send_data(sid, body, end_stream=end_stream)
        self._flush()
        return sid

    def send_body(self, sid, data, end_stream=False, timeout=WAIT):
        """Sends `data` on stream `sid` as DATA frames that fit the server's flow-control
        windows, reading what the server sends (its WINDOW_UPDATEs) while they are shut.
        Stops early if the stream is seen to end or be reset. Returns the bytes sent.
        Raises AssertionError if a window stays shut for `timeout` s or the connection ends."""
        deadline = time.monotonic() + timeout
        st = self.streams[sid]
        view = memoryview(data)
        sent = 0
        while sent < len(data) and not st.done:
            if self.terminated is not None:
                raise AssertionError("connection ended (%s) while sending on stream %d"
                                     % (self.terminated, sid))
            n = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size,
                    len(data) - sent)
            if n == 0:
                if time.monotonic() >= deadline:
                    raise AssertionError("flow-control window of stream %d shut for %.1f s"
                                         % (sid, timeout))
                self._pump(deadline)
                continue
            self.conn.send_data(sid, bytes(view[sent:sent + n]),
                                end_stream=end_stream and sent + n == len(data))
            self._flush()
            sent += n
        return sent

    def _pump(self, deadline):
        self.sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            return
        except ConnectionResetError:
            data = b""
        if not data:
            self.terminated = self.terminated or "EOF"
            return
        for ev in self.conn.receive_data(data):
            st = self.streams.get(getattr(ev, "stream_id", None))
            if isinstance(ev, h2.events.ResponseReceived):
                st.headers = dict(ev.headers)
            elif isinstance(ev, h2.events.TrailersReceived):
                st.trailers = dict(ev.headers)
            elif isinstance(ev, h2.events.DataReceived):
                st.data += ev.data
                self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded):
                st.ended = True
            elif isinstance(ev, h2.events.StreamReset):
                st.reset = ev.error_code
            elif isinstance(ev, h2.events.ConnectionTerminated):
                self.terminated = ev.error_code
        self._flush()

    def wait(self, sid, timeout=WAIT, until=lambda st: st.done):
        """Reads until until(stream) holds (default: stream `sid` ended or was reset);
        returns the Stream. Raises AssertionError on timeout or if the connection ends
        first."""
        deadline = time.monotonic() + timeout
        st = self.streams[sid]
        while not until(st):
            if self.terminated is not None:
                raise AssertionError("connection ended (%s) before stream %d did"
                                     % (self.terminated, sid))
            if time.monotonic() >= deadline:
                raise AssertionError("stream %d not done within %.1f s" % (sid, timeout))
            self._pump(deadline)
        return st


class Wire(ServerTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.other = cls.server.channel()
        cls.other_health = pb.health_pb2_grpc.HealthStub(cls.other)
        cls.other_health.Check(pb.health_pb2.HealthCheckRequest(), timeout=WAIT)
        cls.baseline = cls.server.stats()  # admin + `other` connected, nothing live

    @classmethod
    def tearDownClass(cls):
        cls.other.close()
        super().tearDownClass()

    def setUp(self):
        # Cleanups run last-in first-out: this one runs after the clients are closed.
        self.addCleanup(self.assert_server_unaffected)

    def assert_server_unaffected(self):
        req = pb.health_pb2.HealthCheckRequest()
        self.assertEqual(self.other_health.Check(req, timeout=WAIT).status,
                         pb.health_pb2.HealthCheckResponse.SERVING)
        with self.server.channel() as ch:
            stub = pb.health_pb2_grpc.HealthStub(ch)
            self.assertEqual(stub.Check(req, timeout=WAIT).status,
                             pb.health_pb2.HealthCheckResponse.SERVING)
        base = self.baseline
        self.server.wait_stats(lambda s: s.live_calls == base.live_calls
                               and s.live_connections == base.live_connections
                               and s.open_fds == base.open_fds)

    def client(self, validate=True):
        c = H2Client(self.server.addr, validate)
        self.addCleanup(c.close)
        return c

    def call(self, path, body, extra=(), end_stream=True, timeout=WAIT):
        c = self.client()
        return c.wait(c.request(grpc_headers(path, extra=extra), body, end_stream), timeout)

    def test_valid_check(self):
        # The reference answer, so that the failures below mean what they say.
        st = self.call(CHECK, EMPTY_MSG)
        self.assertEqual(st.headers.get(":status"), "200")
        self.assertTrue(st.headers.get("content-type", "").startswith("application/grpc"))
        self.assertEqual(st.data, SERVING_MSG)
        self.assertEqual(st.trailers.get("grpc-status"), "0")

    def test_garbage_preface(self):
        s = socket.create_connection(("127.0.0.1", self.server.port), timeout=WAIT)
        self.addCleanup(s.close)
        # Not the HTTP/2 preface: HTTP/1.1 (docs/http.md) answers the request, then closes on
        # a line that is no request at all.
        s.sendall(b"GET / HTTP/1.1\r\nHost: prismq\r\n\r\n" + b"\xff" * 64 + b"\r\n\r\n")
        deadline = time.monotonic() + WAIT
        while True:
            self.assertLess(time.monotonic(), deadline, "server kept the connection open")
            try:
                if not s.recv(65536):
                    break
            except ConnectionResetError:
                break

    def test_truncated_prefix(self):
        self.assertEqual(self.call(CHECK, b"\x00\x00\x00").grpc_status(), "13")

    def test_huge_length_prefix_answered_at_once(self):
        # Only the prefix is sent and the stream stays open: the server must decide on
        # the 5 bytes alone, not wait for (or buffer) a 4 GiB body.
        st = self.call(CHECK, b"\x00\xff\xff\xff\xff", end_stream=False)
        self.assertEqual(st.grpc_status(), "8")

    def test_headers_without_path(self):
        c = self.client(validate=False)
        hdrs = [h for h in grpc_headers(CHECK) if h[0] != ":path"]
        st = c.wait(c.request(hdrs, EMPTY_MSG))
        self.assertEqual(st.reset, h2.errors.ErrorCodes.PROTOCOL_ERROR)

    def test_wrong_content_type(self):
        c = self.client()
        st = c.wait(c.request(grpc_headers(CHECK, content_type="text/plain"), EMPTY_MSG))
        self.assertEqual(st.headers.get(":status"), "415")

    def test_server_side_deadline(self):
        start = time.monotonic()
        st = self.call(WATCH, EMPTY_MSG, extra=[("grpc-timeout", "100m")])
        elapsed = time.monotonic() - start
        self.assertEqual(st.grpc_status(), "4")
        self.assertEqual(st.data, SERVING_MSG)
        self.assertGreaterEqual(elapsed, 0.09)

    def test_malformed_timeout_ignored(self):
        st = self.call(CHECK, EMPTY_MSG, extra=[("grpc-timeout", "soon")])
        self.assertEqual(st.grpc_status(), "0")
        self.assertEqual(st.data, SERVING_MSG)

    def test_gzip_message_unimplemented(self):
        st = self.call(CHECK, grpc_msg(gzip.compress(b""), compressed=True),
                       extra=[("grpc-encoding", "gzip")])
        self.assertEqual(st.grpc_status(), "12")
        accept = {**st.headers, **st.trailers}.get("grpc-accept-encoding")
        self.assertIsNotNone(accept, "no grpc-accept-encoding in the answer")
        self.assertNotIn("gzip", accept)

    def test_compressed_flag_without_encoding(self):
        st = self.call(CHECK, grpc_msg(b"", compressed=True))
        self.assertEqual(st.grpc_status(), "13")

    def test_two_messages_on_unary(self):
        self.assertEqual(self.call(CHECK, EMPTY_MSG + EMPTY_MSG).grpc_status(), "12")

    def test_oversized_header_list_refused(self):
        c = self.client()
        sid = c.request(grpc_headers(CHECK, extra=[("x-big", "a" * 20000)]), EMPTY_MSG)
        st = c.wait(sid)
        self.assertIsNotNone(st.reset, "a 20 KB header list was served: %s" % st.headers)

    def test_connection_dropped_during_stream(self):
        # The cleanup check then waits for the call, the connection and its descriptor
        # to be released.
        c = self.client()
        sid = c.request(grpc_headers(WATCH), EMPTY_MSG)
        st = c.wait(sid, until=lambda s: len(s.data) >= len(SERVING_MSG))
        self.assertEqual(st.data, SERVING_MSG)
        self.assertGreater(self.server.stats().live_calls, self.baseline.live_calls)
        c.close()

    def test_no_message_on_unary(self):
        self.assertEqual(self.call(CHECK, b"").grpc_status(), "12")

    def test_connection_request_budget(self):
        # Each stream sends all but the last byte of a 4 MiB request. One connection
        # may buffer 16 MiB of requests in all: the first three streams are held whole,
        # the fourth is refused where it would go over, and so is each one after it.
        msg = big_check_msg(4 * MiB)
        peak = peak_rss_kb(self.server.pid)
        c = self.client()
        held = []
        for _ in range(3):
            sid = c.request(grpc_headers(CHECK), end_stream=False)
            self.assertEqual(c.send_body(sid, msg[:-1]), len(msg) - 1)
            held.append(sid)
        for _ in range(3):
            sid = c.request(grpc_headers(CHECK), end_stream=False)
            c.send_body(sid, msg[:-1])
            st = c.wait(sid)
            self.assertEqual(st.grpc_status(), "8", st.headers)
            self.assertIn("on this connection", st.headers.get("grpc-message", ""))
        for sid in held:
            self.assertFalse(c.streams[sid].done, "held stream %d was answered" % sid)
        # About the budget, not all that was sent (over 24 MiB), went into memory.
        if not sanitized(self.server.pid):
            self.assertLess(peak_rss_kb(self.server.pid) - peak, 24 * MiB // 1024)
        # Another connection is not charged for this one's requests...
        other = self.client()
        sid = other.request(grpc_headers(CHECK), end_stream=False)
        other.send_body(sid, msg, end_stream=True)
        self.assertEqual(other.wait(sid).grpc_status(), "5")
        # ...and the held requests are intact: completing one has it served.
        c.send_body(held[0], msg[-1:], end_stream=True)
        self.assertEqual(c.wait(held[0]).grpc_status(), "5")

    def test_stalled_request_answered_at_its_deadline(self):
        # Headers alone, or headers and half a message, then nothing: the deadline
        # (sooner than the server's own 30 s limit on reading a request) answers it.
        for body in (b"", grpc_msg(b"\x0a\x04abcd")[:7]):
            with self.subTest(body=body):
                start = time.monotonic()
                st = self.call(CHECK, body, extra=[("grpc-timeout", "200m")], end_stream=False)
                self.assertEqual(st.grpc_status(), "4")
                self.assertGreaterEqual(time.monotonic() - start, 0.19)

    def test_second_message_refused_at_its_start(self):
        # A whole first message and the start of a second, the stream left open: the
        # server must refuse at once, not wait for (or buffer) the second body.
        for tail in (struct.pack(">BI", 0, MiB), b"\x00"):
            with self.subTest(tail=tail):
                st = self.call(CHECK, EMPTY_MSG + tail, end_stream=False)
                self.assertEqual(st.grpc_status(), "12")
                self.assertEqual(st.data, b"")


if __name__ == "__main__":
    unittest.main()
