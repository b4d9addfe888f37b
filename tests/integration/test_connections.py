"""How prismqd bounds connections: limits.max_connections closes connections over the
limit as they come, and a full descriptor table pauses accepting instead of spinning on
the listening socket; both log at most one line per 10 s, and both recover."""

import os
import socket
import time
import unittest

import grpc

from prismq_testlib import WAIT, Server, protos

pb = protos()

# An HTTP/2 client preface and an empty SETTINGS frame.
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def served(port):
    """A raw connection that the server answers: its SETTINGS frame arrives."""
    s = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
    s.sendall(PREFACE)
    head = s.recv(9)
    assert len(head) == 9 and head[3] == 0x4, head  # a SETTINGS frame
    return s


def closed_by_server(port):
    """True if the server closes a new connection without answering it."""
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as s:
        try:
            s.sendall(PREFACE)
            return s.recv(9) == b""
        except (ConnectionResetError, BrokenPipeError):
            return True


def cpu_seconds(pid):
    """utime + stime of a process, in seconds."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def health_ok(srv):
    with srv.channel() as ch:
        stub = pb.health_pb2_grpc.HealthStub(ch)
        r = stub.Check(pb.health_pb2.HealthCheckRequest(), timeout=WAIT, wait_for_ready=True)
        return r.status == pb.health_pb2.HealthCheckResponse.SERVING


class MaxConnections(unittest.TestCase):
    def test_over_the_limit_closed_then_room_again(self):
        with Server(config_yaml="limits: {max_connections: 3}\n") as srv:
            srv.stats()  # the admin channel: connection 1
            a = served(srv.port)
            b = served(srv.port)
            srv.wait_stats(lambda st: st.live_connections == 3)
            start = srv.log_len()
            self.assertTrue(closed_by_server(srv.port))
            srv.wait_log(r"WARNING connection refused: 3 connections open, limits\.max_connections", start=start)
            for _ in range(20):
                self.assertTrue(closed_by_server(srv.port))
            # One line for the lot (at most one per 10 s).
            self.assertEqual(srv.log_text(start).count("connection refused"), 1, srv.log_text(start))
            # The connections within the limit were not disturbed.
            st = srv.stats()
            self.assertEqual(st.live_connections, 3)
            a.close()
            srv.wait_stats(lambda st: st.live_connections == 2)
            c = served(srv.port)
            srv.wait_stats(lambda st: st.live_connections == 3)
            b.close()
            c.close()
            self.assertEqual(srv.stop(), 0)


class DescriptorsRunOut(unittest.TestCase):
    def test_full_table_pauses_accepting_without_spinning(self):
        # Room for a handful of connections beyond the server's own descriptors.
        with Server(nofile=40) as srv:
            self.assertTrue(health_ok(srv))
            start = srv.log_len()
            socks = []
            try:
                # More connections than descriptors: the kernel queues the rest.
                for _ in range(60):
                    socks.append(socket.create_connection(("127.0.0.1", srv.port), timeout=WAIT))
                srv.wait_log(r"ERROR accept failed on tcp://127\.0\.0\.1:\d+: Too many open files; "
                             r"not accepting for 100 ms", start=start)
                # A server spinning on accept would burn a whole CPU in this second (a
                # measurement window, not a wait for an event).
                c0 = cpu_seconds(srv.pid)
                time.sleep(1.0)
                used = cpu_seconds(srv.pid) - c0
                self.assertLess(used, 0.3, "server used %.2f s of CPU in 1 s while out of descriptors" % used)
                self.assertEqual(srv.log_text(start).count("accept failed"), 1, srv.log_text(start))
            finally:
                for s in socks:
                    s.close()
            # Descriptors come back as those connections end: the server serves again.
            self.assertTrue(health_ok(srv))
            self.assertEqual(srv.stop(), 0)


if __name__ == "__main__":
    unittest.main()
