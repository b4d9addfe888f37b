#!/usr/bin/python3
"""The hostile-client battery (issue 11): a program that starts its own prismqd and
attacks it from loopback, every attack bounded in count and time, while a
well-behaved client's runs keep going; then prints what it tried, what the server
answered, and the figures the server held.

Run alone:  PRISMQ_BIN=build/bin /usr/bin/python3 tests/integration/hostile.py
            (exit status 0 if every attack was refused cleanly and every bound held)
ctest runs it through test_hostile.py.

The server: a temporary data dir, a plain listener tcp://127.0.0.1:0 and a TLS one
tls://127.0.0.1:0 (scripts/gen-dev-certs.sh certificates; a client certificate is
optional), RLIMIT_NOFILE SERVER_NOFILE, and the modules of MODULES: `echo` (the
well-behaved client's runs) and `zeros` (head -c BYTES /dev/zero: lots of output).

The attacks (raw sockets; header blocks with hpack, the HPACK coder of python3-h2;
malformed frames as raw bytes), in order, with these held through to the end:
 1. IDLE_CONNS plain connections that send nothing, PREFACE_ONLY_CONNS that send only
    the connection preface's magic, TLS_IDLE_CONNS on the TLS port that never start
    a handshake (the server's TLS handshake timeout, HANDSHAKE_TIMEOUT_MS, must close
    these);
 2. DRIP_CONNS connections that send a whole request (preface, SETTINGS, HEADERS,
    DATA) one byte at a time over DRIP_SECONDS, in a thread of their own;
 3. STALLED_FOLLOWERS followers of a run of ZEROS_BYTES of output, each on its own
    connection, that never read it: a tiny stream window never updated, a huge
    window on a socket never read (small SO_RCVBUF), the same over TLS;
and then, one after the other:
 4. oversized frames: DATA over the server's SETTINGS_MAX_FRAME_SIZE, a HEADERS frame
    with a 16 MiB length field (only its start sent), and a set of malformed frames;
 5. header floods: thousands of headers, one header over 16 KiB, an HPACK bomb (one
    4 KB table entry referenced a thousand times), a CONTINUATION flood, empty
    CONTINUATIONs;
 6. floods of SETTINGS, PING, PRIORITY, empty DATA frames, a SETTINGS frame with
    thousands of entries, WINDOW_UPDATE overflow, none of their answers read;
 7. rapid reset (CVE-2023-44487: HEADERS + RST_STREAM in a tight loop), on one
    connection and then on RAPID_RESET_CONNS at once with the costliest request
    (ListRuns of LIST_MAX runs), and its server-side twin ("MadeYouReset",
    CVE-2025-8671: frames that make the server reset the stream);
 8. gRPC input: 10,000 parameters or labels, NUL bytes and invalid UTF-8 in string
    fields (protobuf encoded by hand), malformed protobuf, `../` and absurd run ids
    in GetRun/WaitRun/StreamOutput/CancelRun, shell syntax in parameters, unknown
    modules in a loop;
 9. protocol confusion: HTTP/2 in clear on the TLS port, TLS on the plain port,
    garbage on both, TLS without ALPN h2, HTTP/1.1.
Each attempt records what the server answered; it passes if that is a clean refusal
(the status, RST_STREAM or GOAWAY code, or close the attempt expects), and after each
group the server must still be alive and answer Health/Check on a new connection.

Meanwhile: a well-behaved grpcio client (StartRun echo, then WaitRun, in a loop)
records each run's latency; a sampler reads prismqd's VmRSS every RSS_SAMPLE_S and
scans /proc every PROC_SAMPLE_S for descendants of prismqd, recording argv/exe of
each. The figures and their bounds are the constants below. At the end every
attacking connection is closed and the server must be back where it started (calls,
connections, followers, descriptors), answer Health/Check, and exit 0 on SIGTERM
(under ASan: no leak).

API (for test_hostile.py): run_battery() -> Report; Report.table() the printed
report; Report.failures() the list of what went wrong (empty: all held).
"""

import collections
import json
import os
import random
import resource
import select
import shutil
import signal
import socket
import ssl
import struct
import sys
import threading
import time

import grpc
import h2.errors
import hpack

import tls_common
from prismq_testlib import WAIT, Server, protos

pb = protos()
R = pb.runner_pb2

# ---- bounds of the attacks (count and time) ----------------------------------------
IDLE_CONNS = 1000
PREFACE_ONLY_CONNS = 100
TLS_IDLE_CONNS = 100
DRIP_CONNS = 4
DRIP_SECONDS = 6.0
STALLED_FOLLOWERS = 10          # of each kind (tiny window, unread socket, unread TLS)
ZEROS_BYTES = 64 << 20          # output of the run the stalled followers follow
FLOOD_FRAMES = 10000            # SETTINGS, PING, PRIORITY, empty DATA, CONTINUATION
MANY_HEADERS = 5000
RAPID_RESET_STREAMS = 5000
RAPID_RESET_CONNS = 4           # rapid reset from this many connections at once
LIST_MAX = 1000                 # server/runner.c: the largest ListRuns page
MANY_PARAMS = 10000
UNKNOWN_MODULE_CALLS = 2000
SEND_BOUND_S = 3.0              # most time spent sending one flood
ANSWER_BOUND_S = 5.0            # most time waited for the server's answer to one attempt
HANDSHAKE_TIMEOUT_MS = 3000     # the server's TLS handshake timeout (config)
BASELINE_S = 2.0                # well-behaved client alone, before the attacks
SERVER_NOFILE = 8192
CLIENT_NOFILE = 8192

# ---- the figures the server must hold ------------------------------------------------
BATTERY_MAX_S = 60.0            # the whole battery, server start to exit
BATTERY_MAX_S_ASAN = 90.0       # the same under AddressSanitizer (everything 2-4 times slower)
RSS_MAX_MIB = 128               # peak RSS of prismqd (sampled and VmHWM)
RSS_MAX_MIB_ASAN = 2048         # under AddressSanitizer, whose quarantine keeps freed memory resident
P99_MAX_S = 2.0                 # the well-behaved client's p99 StartRun+WaitRun during the attack
MAX_STALL_S = 3.0               # its slowest round during the attack (a p99 can hide a freeze)
MIN_RUNS = 100                  # its completed runs during the attack, at least
MAX_WB_ERRORS = 0               # its failed calls
MAX_UNDECLARED = 0              # processes started that the config does not declare
EXIT_WITHIN_S = 10.0            # SIGTERM to exit 0
RSS_SAMPLE_S = 0.05
PROC_SAMPLE_S = 0.02
KEPT_LOGS_MAX = 8               # server/scheduler.c DONE_LOGS: replayed runs' output files kept open
SPAWN_GRACE_S = 1.0             # a child still in prismqd's image longer than this never exec'd

MODULES = [
    {"id": "echo", "argv": ["echo", "{message}"],
     "parameters": [{"name": "message", "default": "hello"}]},
    {"id": "zeros", "argv": ["head", "-c", "{bytes}", "/dev/zero"],
     "parameters": [{"name": "bytes", "required": True, "pattern": "[0-9]{1,10}"}]},
]
DECLARED = {m["argv"][0] for m in MODULES}

# ---- HTTP/2 framing ------------------------------------------------------------------
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, \
    WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM = ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
S_ENABLE_PUSH, S_INITIAL_WINDOW_SIZE, S_MAX_FRAME_SIZE = 0x2, 0x4, 0x5
CANCEL = 0x8

RUNNER = "/prismq.runner.v1.Runner/"
CHECK = "/grpc.health.v1.Health/Check"
WATCH = "/grpc.health.v1.Health/Watch"
SC = grpc.StatusCode


def frame(ftype, flags, sid, payload=b"", length=None):
    """One HTTP/2 frame; `length` overrides the length field (a lie about the payload)."""
    n = len(payload) if length is None else length
    return struct.pack(">I", n)[1:] + bytes((ftype, flags)) + \
        struct.pack(">I", sid & 0x7FFFFFFF) + payload


def settings(*pairs):
    return frame(SETTINGS, 0, 0, b"".join(struct.pack(">HI", k, v) for k, v in pairs))


def grpc_msg(payload):
    return struct.pack(">BI", 0, len(payload)) + payload


EMPTY_MSG = grpc_msg(b"")


def err_name(code):
    try:
        return h2.errors.ErrorCodes(code).name
    except ValueError:
        return "0x%x" % code


def request_headers(path, extra=()):
    return [(":method", "POST"), (":scheme", "http"), (":path", path),
            (":authority", "prismq"), ("content-type", "application/grpc"),
            ("te", "trailers")] + list(extra)


def literal(name, value):
    """An HPACK literal header field without indexing, new name (both under 127 bytes)."""
    return b"\x00" + bytes((len(name),)) + name + bytes((len(value),)) + value


class StreamRec:
    def __init__(self):
        self.headers = None
        self.trailers = None
        self.data = 0          # DATA bytes received
        self.rst = None
        self.ended = False

    @property
    def done(self):
        return self.ended or self.rst is not None

    def grpc_status(self):
        for h in (self.trailers, self.headers):
            if h and "grpc-status" in h:
                return int(h["grpc-status"])
        return None


def readable(sock):
    """True if `sock` has something to read (or has been closed), without waiting."""
    p = select.poll()
    p.register(sock, select.POLLIN)
    return bool(p.poll(0))


class RawH2:
    """A client connection on which anything may be sent: frames are built by hand,
    header blocks with an hpack Encoder. What the server sends is parsed into
    StreamRecs (self.streams), GOAWAY (self.goaway: error code), closure (self.eof:
    "EOF" or "RST") and frame counts by type (self.counts). SETTINGS and PING from the
    server are acknowledged while reading; DATA is acknowledged with WINDOW_UPDATEs if
    self.window_updates. The socket is read only by pump()/wait*(): an attempt that
    must not read never calls them."""

    def __init__(self, port, preface=True, settings_frame=None, rcvbuf=None, tls=None,
                 window_updates=True):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.settimeout(WAIT)
        try:
            sock.connect(("127.0.0.1", port))
            if tls is not None:
                sock = tls.wrap_socket(sock, server_hostname="localhost")
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        self.enc = hpack.Encoder()
        self.dec = hpack.Decoder()
        self.inbuf = bytearray()
        self.streams = collections.defaultdict(StreamRec)
        self.goaway = None
        self.eof = None
        self.counts = collections.Counter()
        self.next_sid = 1
        self.window_updates = window_updates
        self._hdr = None  # (sid, flags, fragments) while a header block continues
        if preface:
            self.send(PREFACE + (settings_frame if settings_frame is not None else settings()))

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    # -- sending --

    def send(self, data, timeout=SEND_BOUND_S, read=False):
        """Sends as much of `data` as the peer takes within `timeout` s; returns the
        bytes sent (short if the server stopped reading or closed). With `read`, what
        the server has sent is read between pieces (as a real client would: so that a
        GOAWAY is seen before the server's close discards it); without, nothing is."""
        deadline = time.monotonic() + timeout
        view = memoryview(data)
        sent = 0
        while sent < len(data) and self.eof is None:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self.sock.settimeout(left)
            try:
                sent += self.sock.send(view[sent:sent + 16384])
            except socket.timeout:
                break
            except (BrokenPipeError, ConnectionResetError):
                self.eof = "RST"
            except ssl.SSLError:
                self.eof = "TLS error"
            while read and self.eof is None and readable(self.sock):
                self.pump(0.001)
        return sent

    def req(self, path, body=EMPTY_MSG, end=True, extra=(), sid=None):
        """The frames of a request (HEADERS, then DATA if body) on a new stream (or `sid`);
        returns (sid, bytes) without sending them."""
        if sid is None:
            sid = self.next_sid
        self.next_sid = max(self.next_sid, sid + 2)
        self.streams[sid] = StreamRec()
        out = frame(HEADERS, END_HEADERS | (END_STREAM if end and not body else 0), sid,
                    self.enc.encode(request_headers(path, extra)))
        if body:
            out += frame(DATA, END_STREAM if end else 0, sid, body)
        return sid, out

    def request(self, path, body=EMPTY_MSG, end=True, extra=()):
        sid, out = self.req(path, body, end, extra)
        self.send(out)
        return sid

    # -- reading --

    def pump(self, timeout):
        """One read (at most `timeout` s); returns False on timeout or closure."""
        if self.eof is not None:
            return False
        self.sock.settimeout(max(0.001, timeout))
        try:
            data = self.sock.recv(1 << 16)
        except socket.timeout:
            return False
        except (ConnectionResetError, BrokenPipeError):
            self.eof = "RST"
            return False
        except (ssl.SSLError, OSError) as e:
            self.eof = "error: %s" % e
            return False
        if not data:
            self.eof = "EOF"
            return False
        self.inbuf += data
        self._parse()
        return True

    def wait(self, pred, timeout=ANSWER_BOUND_S):
        """Reads until pred() holds, the connection ends or `timeout` s pass; returns pred()."""
        deadline = time.monotonic() + timeout
        while not pred() and self.eof is None:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self.pump(left)
        return pred()

    def wait_stream(self, sid, timeout=ANSWER_BOUND_S):
        self.wait(lambda: self.streams[sid].done or self.goaway is not None, timeout)
        return self.streams[sid]

    def wait_closed(self, timeout=ANSWER_BOUND_S):
        """Reads (discarding) until the server closes; True if it did within `timeout`."""
        return self.wait(lambda: self.eof is not None, timeout)

    def _parse(self):
        buf = self.inbuf
        while len(buf) >= 9:
            n = int.from_bytes(buf[:3], "big")
            if len(buf) < 9 + n:
                break
            t, fl = buf[3], buf[4]
            sid = int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF
            p = bytes(buf[9:9 + n])
            del buf[:9 + n]
            self.counts[t] += 1
            self._frame(t, fl, sid, p)

    def _ctl(self, data):
        try:
            self.sock.sendall(data)
        except OSError:
            pass

    def _frame(self, t, fl, sid, p):
        if t == SETTINGS and not fl & ACK:
            self._ctl(frame(SETTINGS, ACK, 0))
        elif t == PING and not fl & ACK:
            self._ctl(frame(PING, ACK, 0, p))
        elif t == GOAWAY and len(p) >= 8:
            self.goaway = struct.unpack(">I", p[4:8])[0]
        elif t == RST_STREAM and len(p) >= 4:
            self.streams[sid].rst = struct.unpack(">I", p[:4])[0]
        elif t in (HEADERS, CONTINUATION):
            if t == HEADERS:
                if fl & PADDED:
                    p = p[1:len(p) - p[0]]
                if fl & 0x20:
                    p = p[5:]
                self._hdr = (sid, fl, [p])
            elif self._hdr is not None:
                self._hdr[2].append(p)
            if fl & END_HEADERS and self._hdr is not None:
                hsid, hfl, frags = self._hdr
                self._hdr = None
                st = self.streams[hsid]
                hdrs = dict(self.dec.decode(b"".join(frags), raw=False))
                if st.headers is None:
                    st.headers = hdrs
                else:
                    st.trailers = hdrs
                if hfl & END_STREAM:
                    st.ended = True
        elif t == DATA:
            st = self.streams[sid]
            st.data += len(p) - (p[0] + 1 if fl & PADDED and p else 0)
            if fl & END_STREAM:
                st.ended = True
            if self.window_updates and p:
                inc = struct.pack(">I", len(p))
                self._ctl(frame(WINDOW_UPDATE, 0, 0, inc) + frame(WINDOW_UPDATE, 0, sid, inc))

    def describe(self, sid=None):
        """What the server answered: the stream's status, RST_STREAM, GOAWAY, closure."""
        parts = []
        if sid is not None:
            st = self.streams[sid]
            if st.grpc_status() is not None:
                parts.append("grpc-status %d" % st.grpc_status())
            elif st.headers and st.headers.get(":status") != "200":
                parts.append("HTTP %s" % st.headers.get(":status"))
            if st.rst is not None:
                parts.append("RST_STREAM %s" % err_name(st.rst))
        if self.goaway is not None:
            parts.append("GOAWAY %s" % err_name(self.goaway))
        if self.eof is not None:
            parts.append("closed" if self.eof in ("EOF", "RST") else self.eof)
        return ", ".join(parts) or "no answer"

    def refused(self, sid=None):
        """The stream (if given) was not served OK, or the connection was ended."""
        if self.goaway is not None or self.eof is not None:
            return True
        if sid is None:
            return False
        st = self.streams[sid]
        return st.rst is not None or (st.grpc_status() not in (None, 0)) or \
            (st.headers is not None and st.headers.get(":status") != "200")


def closed_raw(sock, timeout=ANSWER_BOUND_S):
    """Reads a plain socket until the server closes it; returns (closed, bytes read)."""
    deadline = time.monotonic() + timeout
    got = 0
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False, got
        sock.settimeout(left)
        try:
            data = sock.recv(65536)
        except socket.timeout:
            return False, got
        except (ConnectionResetError, BrokenPipeError):
            return True, got
        if not data:
            return True, got
        got += len(data)


def pb_varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def pb_bytes(field, value):
    """A length-delimited protobuf field (a string or sub-message), encoded by hand so
    that it may hold anything."""
    return pb_varint(field << 3 | 2) + pb_varint(len(value)) + value


def pb_entry(field, key, value):
    return pb_bytes(field, pb_bytes(1, key) + pb_bytes(2, value))


# ---- what the battery records ------------------------------------------------------

class Attempt:
    def __init__(self, group, tried, answered, ok, expect):
        self.group, self.tried, self.answered, self.ok, self.expect = \
            group, tried, answered, ok, expect


class Figure:
    def __init__(self, name, value, bound, ok):
        self.name, self.value, self.bound, self.ok = name, value, bound, ok


class Report:
    def __init__(self):
        self.attempts = []
        self.figures = []
        self.notes = []
        self.elapsed = None
        self.build = None

    def attempt(self, group, tried, answered, ok, expect):
        self.attempts.append(Attempt(group, tried, answered, bool(ok), expect))

    def figure(self, name, value, bound, ok):
        self.figures.append(Figure(name, value, bound, bool(ok)))

    def failures(self):
        out = ["%s: %s -> %s (expected %s)" % (a.group, a.tried, a.answered, a.expect)
               for a in self.attempts if not a.ok]
        out += ["%s = %s (bound %s)" % (f.name, f.value, f.bound)
                for f in self.figures if not f.ok]
        return out

    def table(self):
        lines = ["hostile-client battery against prismqd (%s build), %.1f s"
                 % (self.build, self.elapsed or 0), ""]
        w1 = max(len(a.group) for a in self.attempts) if self.attempts else 5
        w2 = min(60, max(len(a.tried) for a in self.attempts)) if self.attempts else 5
        lines.append("%-*s  %-*s  %s" % (w1, "attack", w2, "tried", "server answered"))
        for a in self.attempts:
            lines.append("%-*s  %-*s  %s%s" % (w1, a.group, w2, a.tried, a.answered,
                                                "" if a.ok else "   <-- FAIL (expected %s)" % a.expect))
        lines.append("")
        w = max(len(f.name) for f in self.figures) if self.figures else 5
        wv = max(len(str(f.value)) for f in self.figures) if self.figures else 5
        lines.append("%-*s  %-*s  %s" % (w, "figure", wv, "held", "bound"))
        for f in self.figures:
            lines.append("%-*s  %-*s  %s%s" % (w, f.name, wv, f.value, f.bound,
                                                "" if f.ok else "   <-- FAIL"))
        for n in self.notes:
            lines.append(n)
        return "\n".join(lines)


# ---- the sampler: RSS and descendants of prismqd -----------------------------------

def read_status_kb(pid, key):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def sanitized(pid):
    with open("/proc/%d/maps" % pid) as f:
        return any("libasan" in line for line in f)


def _readlink(path):
    try:
        return os.readlink(path)
    except OSError:
        return ""


class Sampler(threading.Thread):
    """Samples prismqd's VmRSS every RSS_SAMPLE_S and, every PROC_SAMPLE_S, every
    descendant of it (any depth): its comm, argv and executable, kept from the last
    sample that showed them (a process that has exited but is not yet reaped still
    shows its comm, no longer its argv or executable)."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid = pid
        self.server_exe = _readlink("/proc/%d/exe" % pid)
        with open("/proc/%d/comm" % pid) as f:
            self.server_comm = f.read().strip()
        self.stop_ev = threading.Event()
        self.rss_peak_kb = 0
        self.rss_samples = 0
        self.procs = {}   # (pid, starttime) -> {first, last, exec_seen, comm, argv, exe}
        self.scans = 0

    def run(self):
        next_rss = 0.0
        while not self.stop_ev.is_set():
            now = time.monotonic()
            if now >= next_rss:
                try:
                    self.rss_peak_kb = max(self.rss_peak_kb, read_status_kb(self.pid, "VmRSS"))
                    self.rss_samples += 1
                except OSError:
                    pass
                next_rss = now + RSS_SAMPLE_S
            self.scan(now)
            self.stop_ev.wait(PROC_SAMPLE_S)

    def scan(self, now):
        procs = {}
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                with open("/proc/%s/stat" % name) as f:
                    st = f.read()
            except OSError:
                continue
            rest = st[st.rfind(")") + 2:].split()
            procs[int(name)] = (int(rest[1]), rest[19], st[st.find("(") + 1:st.rfind(")")])
        tree = {self.pid}
        grew = True
        while grew:
            grew = False
            for p, (pp, _, _) in procs.items():
                if pp in tree and p not in tree:
                    tree.add(p)
                    grew = True
        self.scans += 1
        for p in tree - {self.pid}:
            _, start, comm = procs[p]
            try:
                with open("/proc/%d/cmdline" % p, "rb") as f:
                    argv = [a.decode("utf-8", "replace") for a in f.read().split(b"\0")[:-1]]
            except OSError:
                argv = []
            exe = _readlink("/proc/%d/exe" % p)
            rec = self.procs.setdefault((p, start), {"first": now, "exec_seen": False, "comms": set(),
                                                     "argv": [], "exe": ""})
            rec["last"] = now
            # Between posix_spawn's clone and its exec a child is prismqd's image (and
            # during the exec, its executable changes a moment before its comm). comm
            # is read first (from stat): once it is the new one, argv and exe read after
            # it are the new program's too; before that, argv may still be prismqd's.
            if comm != self.server_comm or (exe and exe != self.server_exe):
                rec["exec_seen"] = True
                if comm != self.server_comm:
                    rec["comms"].add(comm)
                    if argv:
                        rec["argv"] = argv
                if exe:
                    rec["exe"] = exe

    def classify(self):
        """(Counter of declared children by argv[0], count seen only before their
        exec, list of undeclared ones described). A child is declared if its argv[0]
        is a declared module's argv[0], its executable what that resolves to in PATH,
        and its comm that executable's name (each as far as it was seen)."""
        exes = {os.path.realpath(shutil.which(a) or a): a for a in DECLARED}
        comms = {os.path.basename(e)[:15]: a for e, a in exes.items()}
        declared = collections.Counter()
        pre_exec = 0
        undeclared = []
        for (p, _), rec in self.procs.items():
            if not rec["exec_seen"]:
                if rec["last"] - rec["first"] <= SPAWN_GRACE_S:
                    pre_exec += 1
                else:
                    undeclared.append("pid %d: prismqd's image, no exec for %.1f s"
                                      % (p, rec["last"] - rec["first"]))
                continue
            argv0 = rec["argv"][0] if rec["argv"] else None
            exe = rec["exe"][:-len(" (deleted)")] if rec["exe"].endswith(" (deleted)") else rec["exe"]
            if (argv0 is None or argv0 in DECLARED) and (not exe or os.path.realpath(exe) in exes) \
                    and rec["comms"] <= set(comms):
                declared[argv0 or exes.get(os.path.realpath(exe)) or comms[min(rec["comms"])]] += 1
            else:
                undeclared.append("pid %d: comm %s argv %r exe %s" % (p, "/".join(sorted(rec["comms"])),
                                                                     rec["argv"], rec["exe"]))
        return declared, pre_exec, undeclared


# ---- the well-behaved client --------------------------------------------------------

class WellBehaved(threading.Thread):
    """StartRun echo, then WaitRun, in a loop on one grpcio channel; records
    (start time, latency, ok, error) of each round."""

    def __init__(self, addr):
        super().__init__(daemon=True)
        self.addr = addr
        self.stop_ev = threading.Event()
        self.samples = []
        self.started = 0
        self.errors = collections.Counter()

    def run(self):
        with grpc.insecure_channel(self.addr, options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
            stub = pb.runner_pb2_grpc.RunnerStub(ch)
            i = 0
            while not self.stop_ev.is_set():
                i += 1
                t0 = time.monotonic()
                ok = False
                try:
                    run = stub.StartRun(R.StartRunRequest(module_id="echo",
                                                          parameters={"message": "wb-%d" % i}),
                                        timeout=WAIT)
                    self.started += 1
                    done = stub.WaitRun(R.WaitRunRequest(run_id=run.run_id, timeout_ms=int(WAIT * 1000)),
                                        timeout=WAIT * 2)
                    ok = done.status == R.RUN_STATUS_COMPLETED and done.exit_code == 0 \
                        and done.stdout_bytes == len("wb-%d\n" % i)
                    if not ok:
                        self.errors["run %s exit %d" % (R.RunStatus.Name(done.status), done.exit_code)] += 1
                except grpc.RpcError as e:
                    self.errors[e.code().name] += 1
                self.samples.append((t0, time.monotonic() - t0, ok))

    def window(self, t0, t1):
        lat = sorted(s[1] for s in self.samples if t0 <= s[0] < t1 and s[2])
        errs = sum(1 for s in self.samples if t0 <= s[0] < t1 and not s[2])
        return lat, errs


def pct(sorted_vals, q):
    if not sorted_vals:
        return float("nan")
    i = min(len(sorted_vals) - 1, max(0, int(round(q * len(sorted_vals) + 0.5)) - 1))
    return sorted_vals[i]


# ---- the battery --------------------------------------------------------------------

class Battery:
    def __init__(self, report):
        self.r = report
        self.srv = None
        self.tls_port = None
        self.held = []        # sockets / RawH2 held until the end
        self.runs_started = 0  # runs the battery itself started (besides the well-behaved client)
        self.phases = []       # (start time, attack group), in order

    # -- helpers --

    def alive(self):
        return self.srv._proc.poll() is None

    def fds(self):
        """prismqd's open descriptors: {fd: what it is}."""
        d = "/proc/%d/fd" % self.srv.pid
        return {int(f): _readlink(os.path.join(d, f)) for f in os.listdir(d)}

    def health(self):
        """Health/Check on a new connection: True if SERVING."""
        try:
            with self.srv.channel() as ch:
                r = pb.health_pb2_grpc.HealthStub(ch).Check(pb.health_pb2.HealthCheckRequest(), timeout=WAIT)
                return r.status == pb.health_pb2.HealthCheckResponse.SERVING
        except grpc.RpcError:
            return False

    def after_group(self, group):
        ok = self.alive() and self.health()
        self.r.attempt(group, "server alive, Health/Check on a new connection",
                       "SERVING" if ok else ("dead" if not self.alive() else "not serving"),
                       ok, "SERVING")
        if not self.alive():
            raise AssertionError("prismqd died during %s" % group)

    def raw(self, **kw):
        """A RawH2 on the plain port that has read the server's SETTINGS (and so
        acknowledged them: the server's own limits, such as its 128 KiB
        SETTINGS_MAX_FRAME_SIZE, apply from that ACK on)."""
        c = RawH2(self.srv.port, **kw)
        if not c.wait(lambda: c.counts[SETTINGS] > 0, ANSWER_BOUND_S):
            raise AssertionError("no SETTINGS from the server: " + c.describe())
        return c

    # -- the server --

    def config(self):
        cfg = {"modules": MODULES,
               "tls": tls_common.tls_section(handshake_timeout_ms=HANDSHAKE_TIMEOUT_MS)}
        return json.dumps(cfg)

    def start(self):
        self.srv = Server(config_yaml=self.config(), extra_args=("--listen", "tls://127.0.0.1:0"),
                          nofile=SERVER_NOFILE).start()
        self.tls_port = int(self.srv.wait_log(r"listening on tls://127\.0\.0\.1:(\d+)").group(1))
        self.tls_ctx = tls_common.ssl_context()

    # -- 1. connections that send nothing --

    def idle(self):
        g = "1 idle connections"
        t0 = time.monotonic()
        base = self.srv.stats().live_connections
        plain = []
        for _ in range(IDLE_CONNS):
            plain.append(socket.create_connection(("127.0.0.1", self.srv.port), timeout=WAIT))
        pre = []
        for _ in range(PREFACE_ONLY_CONNS):
            s = socket.create_connection(("127.0.0.1", self.srv.port), timeout=WAIT)
            s.sendall(PREFACE)
            pre.append(s)
        self.tls_idle = []
        for _ in range(TLS_IDLE_CONNS):
            self.tls_idle.append(socket.create_connection(("127.0.0.1", self.tls_port), timeout=WAIT))
        self.tls_idle_t0 = time.monotonic()
        self.held += plain + pre
        try:
            st = self.srv.wait_stats(lambda s: s.live_connections >= base + IDLE_CONNS + PREFACE_ONLY_CONNS,
                                     timeout=ANSWER_BOUND_S)
            answered = "all accepted and held (live_connections %d, open_fds %d) in %.2f s" % (
                st.live_connections, st.open_fds, time.monotonic() - t0)
            ok = True
        except AssertionError as e:
            answered, ok = "not all accepted: %s" % e, False
        self.r.attempt(g, "%d plain TCP connections that send nothing, %d that send only the preface magic"
                       % (IDLE_CONNS, PREFACE_ONLY_CONNS), answered, ok, "accepted or refused, server alive")
        self.idle_plain, self.idle_pre = plain, pre
        self.after_group(g)

    def idle_end(self):
        """At the end: how the idle connections fared; TLS ones must have been closed by
        the handshake timeout."""
        g = "1 idle connections"
        closed = 0
        for s in self.tls_idle:
            c, _ = closed_raw(s, max(0.01, self.tls_idle_t0 + HANDSHAKE_TIMEOUT_MS / 1000 + 2 - time.monotonic()))
            closed += c
            s.close()
        self.r.attempt(g, "%d TCP connections to the TLS port that never start a handshake" % TLS_IDLE_CONNS,
                       "%d closed by the server (handshake timeout %d ms)" % (closed, HANDSHAKE_TIMEOUT_MS),
                       closed == TLS_IDLE_CONNS, "all closed at the handshake timeout")
        open_plain = 0
        for s in self.idle_plain + self.idle_pre:
            s.setblocking(False)
            try:
                while True:
                    d = s.recv(65536)
                    if not d:
                        break
            except BlockingIOError:
                open_plain += 1
            except OSError:
                pass
        self.r.notes.append("idle plain connections still open at the end: %d of %d (no idle timeout)"
                            % (open_plain, IDLE_CONNS + PREFACE_ONLY_CONNS))

    # -- 2. slow drip --

    def drip_start(self):
        self.drip_results = []
        self.drip_thread = threading.Thread(target=self._drip, daemon=True)
        self.drip_thread.start()

    def _drip(self):
        conns = []
        for _ in range(DRIP_CONNS):
            c = RawH2(self.srv.port, preface=False)
            c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sid, body = c.req(CHECK)
            conns.append((c, sid, PREFACE + settings() + body))
        n = max(len(b) for _, _, b in conns)
        step = DRIP_SECONDS / n
        t0 = time.monotonic()
        for i in range(n):
            for c, _, b in conns:
                if i < len(b):
                    c.send(b[i:i + 1], timeout=1.0)
            time.sleep(step)
        for c, sid, b in conns:
            st = c.wait_stream(sid, ANSWER_BOUND_S * 2)
            self.drip_results.append((len(b), time.monotonic() - t0, c.describe(sid),
                                      st.grpc_status() == 0 or c.eof is not None))
            c.close()

    def drip_end(self):
        self.drip_thread.join(DRIP_SECONDS + ANSWER_BOUND_S + 5)
        g = "2 slow drip"
        if self.drip_thread.is_alive() or len(self.drip_results) != DRIP_CONNS:
            self.r.attempt(g, "drip", "drip thread did not finish", False, "answers")
            return
        n = self.drip_results[0][0]
        answers = collections.Counter(d[2] for d in self.drip_results)
        self.r.attempt(g, "%d connections each sending a Health/Check request (preface, SETTINGS, "
                       "HEADERS, DATA: %d bytes) one byte at a time over %.0f s" % (DRIP_CONNS, n, DRIP_SECONDS),
                       "%s; the last %.2f s after the first byte" % (
                           "; ".join("%d x %s" % (k, v) for v, k in answers.items()),
                           max(d[1] for d in self.drip_results)),
                       all(d[3] for d in self.drip_results), "grpc-status 0 once complete, or closed")

    # -- 3. followers that never read --

    def stalled_start(self):
        with self.srv.channel() as ch:
            stub = pb.runner_pb2_grpc.RunnerStub(ch)
            run = stub.StartRun(R.StartRunRequest(module_id="zeros", parameters={"bytes": str(ZEROS_BYTES)}),
                                timeout=WAIT)
        self.runs_started += 1
        self.zeros_id = run.run_id
        body = grpc_msg(R.StreamOutputRequest(run_id=run.run_id, follow=True).SerializeToString())
        self.stalled = []
        kinds = [("tiny window (16 bytes), no WINDOW_UPDATE", self.srv.port, None,
                  settings((S_INITIAL_WINDOW_SIZE, 16)), b""),
                 ("huge window, socket never read (SO_RCVBUF 4 KiB)", self.srv.port, None,
                  settings((S_INITIAL_WINDOW_SIZE, 0x7FFFFFFF)),
                  frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 0x7FFFFFFF - 65535))),
                 ("over TLS, huge window, socket never read", self.tls_port, self.tls_ctx,
                  settings((S_INITIAL_WINDOW_SIZE, 0x7FFFFFFF)),
                  frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 0x7FFFFFFF - 65535)))]
        for name, port, tls, sf, extra in kinds:
            for _ in range(STALLED_FOLLOWERS):
                c = RawH2(port, settings_frame=sf, rcvbuf=4096, tls=tls, window_updates=False)
                sid, req = c.req(RUNNER + "StreamOutput", body)
                c.send(extra + req)
                self.stalled.append((name, c))
        self.stalled_kinds = [k[0] for k in kinds]

    def stalled_check(self):
        """The run finishes while its followers are stalled; the followers are live."""
        g = "3 unread output"
        with self.srv.channel() as ch:
            stub = pb.runner_pb2_grpc.RunnerStub(ch)
            try:
                done = stub.WaitRun(R.WaitRunRequest(run_id=self.zeros_id, timeout_ms=20000), timeout=25)
                ok = done.status == R.RUN_STATUS_COMPLETED and done.stdout_bytes == ZEROS_BYTES
                answered = "run %s with %d bytes of output, in %.2f s" % (
                    R.RunStatus.Name(done.status), done.stdout_bytes,
                    (done.finished_at_ms - done.started_at_ms) / 1000)
            except grpc.RpcError as e:
                ok, answered = False, "WaitRun: %s" % e.code().name
        st = self.srv.stats()
        answered += "; %d followers live, server RSS %d MiB" % (st.followers, st.rss_kb // 1024)
        self.r.attempt(g, "%d followers (StreamOutput follow) of a %d MiB run, each on its own "
                       "connection, never reading: %d %s" % (
                           len(self.stalled), ZEROS_BYTES >> 20, STALLED_FOLLOWERS,
                           "; ".join(self.stalled_kinds)),
                       answered, ok and st.followers >= len(self.stalled),
                       "the run completes, followers held")

    def stalled_end(self):
        for _, c in self.stalled:
            c.close()

    # -- 4. oversized and malformed frames --

    def oversized(self):
        g = "4 oversized frames"
        c = self.raw()
        sid, req = c.req(CHECK, body=b"", end=False)
        c.send(req + frame(DATA, END_STREAM, sid, b"\0" * ((128 << 10) + 1)))
        c.wait_closed()
        self.r.attempt(g, "DATA frame of 128 KiB + 1 (the server's SETTINGS_MAX_FRAME_SIZE is 128 KiB)",
                       c.describe(), c.goaway == h2.errors.ErrorCodes.FRAME_SIZE_ERROR or c.eof,
                       "GOAWAY FRAME_SIZE_ERROR, closed")
        c.close()

        c = self.raw()
        sid = c.next_sid
        t0 = time.monotonic()
        c.send(frame(HEADERS, END_HEADERS | END_STREAM, sid, b"\x82" * 1000, length=0xFFFFFF))
        closed = c.wait_closed()
        self.r.attempt(g, "HEADERS frame with a 16 MiB length field, 1000 bytes of it sent",
                       "%s after %.2f s" % (c.describe(), time.monotonic() - t0), closed,
                       "GOAWAY, closed without waiting for the rest")
        c.close()

        # Malformed frames, each on a new connection: all connection errors (RFC 9113).
        cases = [
            ("PING with a 7-byte payload", frame(PING, 0, 0, b"\0" * 7), "FRAME_SIZE_ERROR"),
            ("SETTINGS with a 5-byte payload", frame(SETTINGS, 0, 0, b"\0" * 5), "FRAME_SIZE_ERROR"),
            ("SETTINGS_INITIAL_WINDOW_SIZE 2^31", settings((S_INITIAL_WINDOW_SIZE, 1 << 31)),
             "FLOW_CONTROL_ERROR"),
            ("SETTINGS_MAX_FRAME_SIZE 1", settings((S_MAX_FRAME_SIZE, 1)), "PROTOCOL_ERROR"),
            ("SETTINGS_ENABLE_PUSH 2", settings((S_ENABLE_PUSH, 2)), "PROTOCOL_ERROR"),
            ("WINDOW_UPDATE of 0 on the connection", frame(WINDOW_UPDATE, 0, 0, b"\0" * 4), "PROTOCOL_ERROR"),
            ("RST_STREAM on stream 0", frame(RST_STREAM, 0, 0, b"\0" * 4), "PROTOCOL_ERROR"),
            ("DATA on stream 0", frame(DATA, 0, 0, b"x"), "PROTOCOL_ERROR"),
            ("HEADERS on stream 0", frame(HEADERS, END_HEADERS, 0, b"\x82"), "PROTOCOL_ERROR"),
            ("HEADERS on an even (server) stream id", frame(HEADERS, END_HEADERS, 2, b"\x82"), "PROTOCOL_ERROR"),
            ("PUSH_PROMISE from the client", frame(PUSH_PROMISE, END_HEADERS, 1, b"\0\0\0\2\x82"),
             "PROTOCOL_ERROR"),
            ("padding longer than the frame", frame(HEADERS, END_HEADERS | PADDED, 1, b"\xff\x82"),
             "PROTOCOL_ERROR"),
            ("CONTINUATION without HEADERS", frame(CONTINUATION, END_HEADERS, 1, b"\x82"), "PROTOCOL_ERROR"),
            ("undecodable HPACK (index 1000)", frame(HEADERS, END_HEADERS, 1, b"\xff\xc9\x07"),
             "COMPRESSION_ERROR"),
        ]
        for name, data, want in cases:
            c = self.raw()
            c.send(data)
            c.wait_closed(ANSWER_BOUND_S)
            self.r.attempt(g, "malformed: " + name, c.describe(),
                           c.eof is not None and c.goaway is not None,
                           "GOAWAY (%s), closed" % want)
            c.close()

        # nghttp2 cannot remember every closed stream: it ignores a HEADERS frame on an
        # id below the last one rather than ending the connection (RFC 9113 wants a
        # PROTOCOL_ERROR); either way the stream must not be served.
        c = self.raw()
        _, a = c.req(CHECK, sid=5)
        _, b = c.req(CHECK, sid=3)
        c.send(a + b + frame(PING, 0, 0, b"backward"))
        # The PING's ACK marks the end of the input; stream 5's answer comes from the
        # handler's dispatch, which may follow it.
        c.wait(lambda: c.counts[PING] > 0 or c.eof is not None)
        c.wait_stream(5)
        self.r.attempt(g, "malformed: stream ids going backwards (5, then 3)",
                       "stream 5: %s; stream 3: %s" % (c.describe(5), "ignored" if c.streams[3].headers is None
                                                       and c.streams[3].rst is None else c.describe(3)),
                       c.goaway is not None or (c.streams[3].headers is None and c.streams[5].grpc_status() == 0),
                       "stream 3 ignored or GOAWAY PROTOCOL_ERROR")
        c.close()

        # A gRPC length prefix of 4 GiB: answered on the 5 bytes, nothing buffered.
        c = self.raw()
        sid = c.request(CHECK, body=b"\0\xff\xff\xff\xff", end=False)
        st = c.wait_stream(sid)
        self.r.attempt(g, "gRPC message prefix announcing 4 GiB (stream left open)", c.describe(sid),
                       st.grpc_status() == SC.RESOURCE_EXHAUSTED.value[0], "grpc-status 8")
        c.close()
        self.after_group(g)

    # -- 5. header floods --

    def header_floods(self):
        g = "5 header floods"

        def still_served(c):
            if c.eof is not None or c.goaway is not None:
                return "connection ended"
            sid = c.request(CHECK)
            st = c.wait_stream(sid)
            return "same connection then served" if st.grpc_status() == 0 else \
                "same connection then: " + c.describe(sid)

        c = self.raw()
        sid, req = c.req(CHECK, extra=[("x-h%d" % i, "v%d" % i) for i in range(MANY_HEADERS)])
        c.send(req)
        c.wait_stream(sid)
        self.r.attempt(g, "a request with %d headers (%d bytes of header block)" % (MANY_HEADERS, len(req)),
                       c.describe(sid) + "; " + still_served(c), c.refused(sid), "RST_STREAM or refusal")
        c.close()

        c = self.raw()
        sid, req = c.req(CHECK, extra=[("x-big", "a" * (17 << 10))])
        c.send(req)
        c.wait_stream(sid)
        self.r.attempt(g, "one header of 17 KiB (the header list limit is 16 KiB)",
                       c.describe(sid) + "; " + still_served(c), c.refused(sid), "RST_STREAM or refusal")
        c.close()

        c = self.raw()
        sid, req = c.req(CHECK, extra=[("x-bomb", "a" * 4000)] * 1000)
        c.send(req)
        c.wait_stream(sid)
        self.r.attempt(g, "HPACK bomb: a 4 KB header stored once, referenced 1000 times (%d bytes "
                       "on the wire, 4 MB decoded)" % len(req),
                       c.describe(sid) + "; " + still_served(c), c.refused(sid), "RST_STREAM or refusal")
        c.close()

        # CONTINUATION flood: a header block that never ends, a header in each frame.
        for label, frag in (("a header in each", lambda i: literal(b"x-c", b"%d" % i)),
                            ("empty", lambda i: b"")):
            c = self.raw()
            sid = c.next_sid
            out = bytearray(frame(HEADERS, 0, sid, c.enc.encode(request_headers(CHECK))))
            for i in range(FLOOD_FRAMES):
                out += frame(CONTINUATION, 0, sid, frag(i))
            sent = c.send(bytes(out))
            c.wait_closed()
            self.r.attempt(g, "CONTINUATION flood: HEADERS then %d CONTINUATIONs (%s), no END_HEADERS"
                           % (FLOOD_FRAMES, label),
                           "%s (%d of %d bytes taken)" % (c.describe(), sent, len(out)),
                           c.eof is not None, "GOAWAY, closed")
            c.close()
        self.after_group(g)

    # -- 6. control frame floods --

    def floods(self):
        g = "6 frame floods"

        def drain_then_ping(c, extra=b""):
            """After a flood: read what the server sends (the ACKs) for a while, then ask
            for a PING: does the connection still work?"""
            c.wait(lambda: False, 1.0)
            if c.eof is None:
                c.send(extra + frame(PING, 0, 0, b"liveness"))
                acks = c.counts[PING]
                c.wait(lambda: c.counts[PING] > acks or c.eof is not None, ANSWER_BOUND_S)
            return c

        for name, one in (("SETTINGS", frame(SETTINGS, 0, 0)),
                          ("PING", frame(PING, 0, 0, b"12345678"))):
            c = self.raw()
            c.wait(lambda: c.counts[SETTINGS] > 0, 1.0)  # the server's SETTINGS
            before = c.counts[SETTINGS if name == "SETTINGS" else PING]
            t0 = time.monotonic()
            sent = c.send(one * FLOOD_FRAMES)  # nothing read while sending
            took = time.monotonic() - t0
            drain_then_ping(c)
            got = c.counts[SETTINGS if name == "SETTINGS" else PING] - before
            self.r.attempt(g, "%d %s frames without reading the answers" % (FLOOD_FRAMES, name),
                           "%d of %d bytes taken in %.2f s, %d ACKs read; %s" % (
                               sent, len(one) * FLOOD_FRAMES, took, got, c.describe() or "connection open"),
                           True, "no crash, bounded memory")
            c.close()

        c = self.raw()
        c.send(frame(SETTINGS, 0, 0, struct.pack(">HI", S_ENABLE_PUSH, 0) * FLOOD_FRAMES))
        c.wait_closed()
        self.r.attempt(g, "one SETTINGS frame with %d entries" % FLOOD_FRAMES, c.describe(),
                       c.eof is not None, "GOAWAY ENHANCE_YOUR_CALM, closed")
        c.close()

        c = self.raw()
        out = bytearray()
        for i in range(FLOOD_FRAMES):  # each idle stream depends on the one before
            out += frame(PRIORITY, 0, 2 * i + 3, struct.pack(">IB", max(0, 2 * i + 1) if i else 0, 15))
        sent = c.send(bytes(out))
        sid, req = c.req(CHECK, sid=2 * FLOOD_FRAMES + 3)
        c.send(req)
        c.wait_stream(sid)
        self.r.attempt(g, "%d PRIORITY frames, a chain of idle streams, then a request" % FLOOD_FRAMES,
                       "%d of %d bytes taken; request: %s" % (sent, len(out), c.describe(sid)),
                       c.streams[sid].grpc_status() == 0 or c.eof is not None, "served, or GOAWAY")
        c.close()

        c = self.raw()
        sid, req = c.req(CHECK, body=b"", end=False)
        sent = c.send(req + frame(DATA, 0, sid) * FLOOD_FRAMES + frame(DATA, END_STREAM, sid, EMPTY_MSG))
        c.wait_stream(sid)
        self.r.attempt(g, "%d empty DATA frames on one stream, then its message" % FLOOD_FRAMES,
                       c.describe(sid), c.streams[sid].grpc_status() == 0 or c.eof is not None,
                       "served, or GOAWAY")
        c.close()

        c = self.raw()
        c.send(frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 0x7FFFFFFF)))
        c.wait_closed()
        self.r.attempt(g, "WINDOW_UPDATE overflowing the connection window past 2^31-1", c.describe(),
                       c.goaway == h2.errors.ErrorCodes.FLOW_CONTROL_ERROR, "GOAWAY FLOW_CONTROL_ERROR")
        c.close()
        self.after_group(g)

    # -- 7. rapid reset --

    def rapid_reset(self):
        g = "7 rapid reset"
        calls0 = self.srv.stats().total_calls
        list_body = grpc_msg(R.ListRunsRequest(page_size=100).SerializeToString())
        # A server that closes while the flood still comes answers with a TCP RST, and
        # the RST makes the client's kernel drop what was not read yet, a GOAWAY too:
        # a reset connection counts as closed by the server.
        # The client's RST_STREAMs meet nghttp2's reset rate limit; the "MadeYouReset"
        # frames (each a stream error by RFC 9113, which the server would answer with
        # RST_STREAM) are connection errors to nghttp2 1.52, so the first one ends it.
        for name, path, body, tail, want in (
                ("HEADERS+DATA (ListRuns) then RST_STREAM(CANCEL) (CVE-2023-44487)", RUNNER + "ListRuns",
                 list_body, lambda sid: frame(RST_STREAM, 0, sid, struct.pack(">I", CANCEL)),
                 "GOAWAY (reset rate limit), closed"),
                ("HEADERS+DATA (Health/Watch) then WINDOW_UPDATE 0 on the stream (MadeYouReset, "
                 "CVE-2025-8671)", WATCH, EMPTY_MSG, lambda sid: frame(WINDOW_UPDATE, 0, sid, b"\0\0\0\0"),
                 "GOAWAY or RST_STREAMs, closed"),
                ("HEADERS+DATA (Health/Watch) then a stream WINDOW_UPDATE past 2^31-1 (MadeYouReset)", WATCH,
                 EMPTY_MSG, lambda sid: frame(WINDOW_UPDATE, 0, sid, struct.pack(">I", 0x7FFFFFFF)),
                 "GOAWAY or RST_STREAMs, closed"),
                ("HEADERS+DATA(END_STREAM) (Health/Watch) then DATA on the half-closed stream (MadeYouReset)",
                 WATCH, EMPTY_MSG, lambda sid: frame(DATA, 0, sid, b"x"), "GOAWAY or RST_STREAMs, closed")):
            c = self.raw()
            out = bytearray()
            for _ in range(RAPID_RESET_STREAMS):
                sid, req = c.req(path, body)
                out += req + tail(sid)
            t0 = time.monotonic()
            sent = c.send(bytes(out), read=True)
            c.wait_closed(ANSWER_BOUND_S)
            took = time.monotonic() - t0
            resets = sum(1 for s in c.streams.values() if s.rst is not None)
            calls = self.srv.stats().total_calls - calls0
            self.r.attempt(g, "%d streams: %s" % (RAPID_RESET_STREAMS, name),
                           "%s after %.2f s; %d of %d bytes taken, %d calls reached the server, "
                           "%d RST_STREAMs from it" % (c.describe(), took, sent, len(out), calls, resets),
                           c.eof is not None and (c.goaway is not None or resets or c.eof == "RST"),
                           want)
            c.close()
            calls0 = self.srv.stats().total_calls
        self.rapid_reset_parallel(g)
        self.after_group(g)

    def rapid_reset_parallel(self, g):
        """Rapid reset from RAPID_RESET_CONNS connections at once, each request the
        costliest read there is (ListRuns of LIST_MAX runs). nghttp2's reset limit is per
        connection; what it lets through, times the connections, is work the server does
        for answers nobody will read, while the well-behaved client waits."""
        body = grpc_msg(R.ListRunsRequest(page_size=LIST_MAX).SerializeToString())
        calls0 = self.srv.stats().total_calls
        conns = []
        for _ in range(RAPID_RESET_CONNS):
            c = self.raw()
            out = bytearray()
            for _ in range(RAPID_RESET_STREAMS):
                sid, req = c.req(RUNNER + "ListRuns", body)
                out += req + frame(RST_STREAM, 0, sid, struct.pack(">I", CANCEL))
            conns.append((c, bytes(out)))
        sent = [0] * len(conns)

        def attack(i):
            c, out = conns[i]
            sent[i] = c.send(out, read=True)
            c.wait_closed(ANSWER_BOUND_S * 2)

        t0 = time.monotonic()
        threads = [threading.Thread(target=attack, args=(i,), daemon=True) for i in range(len(conns))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(SEND_BOUND_S + ANSWER_BOUND_S * 2 + 1)
        t_sent = time.monotonic() - t0
        for c, _ in conns:
            c.close()
        # How long until the server answers a new client again, once the attackers are gone.
        t1 = time.monotonic()
        healthy = self.health()
        recovered = time.monotonic() - t1
        try:
            calls = "%d" % (self.srv.stats().total_calls - calls0)
        except grpc.RpcError as e:
            calls = "? (GetStats: %s)" % e.code().name
        self.r.attempt(g, "%d connections at once, each %d streams: HEADERS+DATA (ListRuns page_size %d) then "
                       "RST_STREAM(CANCEL)" % (RAPID_RESET_CONNS, RAPID_RESET_STREAMS, LIST_MAX),
                       "%s; %d of %d bytes taken, attackers closed in %.2f s; %s calls reached the server; "
                       "a new client then answered in %.2f s" % (
                           ", ".join(sorted({c.describe() for c, _ in conns})), sum(sent),
                           sum(len(o) for _, o in conns), t_sent, calls, recovered),
                       healthy and all(c.eof is not None for c, _ in conns),
                       "GOAWAY (reset rate limit), closed; server answers")

    # -- 8. gRPC input --

    def grpc_input(self):
        g = "8 gRPC input"
        ch = self.srv.channel()
        try:
            self._grpc_input(g, ch)
        finally:
            ch.close()
        self.after_group(g)

    def _grpc_input(self, g, ch):
        raw = {m: ch.unary_unary(RUNNER + m) for m in ("StartRun", "GetRun", "WaitRun", "CancelRun",
                                                       "ListRuns")}
        stream_raw = ch.unary_stream(RUNNER + "StreamOutput")
        stub = pb.runner_pb2_grpc.RunnerStub(ch)

        def call(method, payload):
            """Status code name of a call with the raw request bytes (OK: the answer)."""
            try:
                if method == "StreamOutput":
                    for _ in stream_raw(payload, timeout=WAIT):
                        pass
                else:
                    raw[method](payload, timeout=WAIT)
                return "OK"
            except grpc.RpcError as e:
                return e.code().name

        def expect(tried, code, allowed):
            self.r.attempt(g, tried, code, code in allowed, " or ".join(allowed))

        IA, NF, RE = "INVALID_ARGUMENT", "NOT_FOUND", "RESOURCE_EXHAUSTED"
        many = R.StartRunRequest(module_id="echo", parameters={"p%d" % i: "v" for i in range(MANY_PARAMS)})
        expect("StartRun echo with %d parameters (%d bytes)" % (MANY_PARAMS, many.ByteSize()),
               call("StartRun", many.SerializeToString()), (IA, RE))
        small = b"".join(pb_entry(2, b"%x" % i, b"") for i in range(MANY_PARAMS))
        expect("StartRun echo with %d parameters, one-byte names, empty values (%d bytes)"
               % (MANY_PARAMS, len(small) + 6), call("StartRun", pb_bytes(1, b"echo") + small), (IA, RE))
        labels = b"".join(pb_entry(5, b"k%d" % i, b"v") for i in range(MANY_PARAMS))
        expect("ListRuns with %d label filters (%d bytes)" % (MANY_PARAMS, len(labels)),
               call("ListRuns", labels), (IA, RE))
        big = pb_bytes(1, b"echo") + pb_entry(2, b"message", b"x" * (8 << 20))
        expect("StartRun echo with an 8 MiB parameter value", call("StartRun", big), (IA, RE))

        echo = pb_bytes(1, b"echo")
        for tried, payload in (
                ("NUL byte in a parameter value", echo + pb_entry(2, b"message", b"a\0rm -rf /")),
                ("NUL byte in module_id", pb_bytes(1, b"echo\0zeros")),
                ("NUL byte in a label key", echo + pb_entry(4, b"k\0", b"v")),
                ("invalid UTF-8 in module_id (truncated sequence)", pb_bytes(1, b"ech\xc3")),
                ("invalid UTF-8 in module_id (overlong '/')", pb_bytes(1, b"\xc0\xafecho")),
                ("invalid UTF-8 in module_id (surrogate)", pb_bytes(1, b"\xed\xa0\x80")),
                ("invalid UTF-8 in a parameter value", echo + pb_entry(2, b"message", b"\xff\xfe")),
                ("invalid UTF-8 in a parameter name", echo + pb_entry(2, b"mess\xffage", b"x")),
                ("invalid UTF-8 in a label value", echo + pb_entry(4, b"k", b"\x80")),
                ("invalid UTF-8 in request_id", echo + pb_bytes(3, b"\xf8\x88\x80\x80\x80")),
                ("malformed protobuf: field length of 4 GiB", b"\x0a\xff\xff\xff\xff\x0f"),
                ("malformed protobuf: truncated field", b"\x0a\x05ec"),
                ("malformed protobuf: 11-byte varint", b"\x28" + b"\xff" * 10 + b"\x01"),
                ("malformed protobuf: wire type 7", b"\x0f"),
                ("malformed protobuf: unterminated group", b"\x0b\x0a\x04echo"),
                ("undeclared parameter", echo + pb_entry(2, b"evil", b"x")),
                ("zeros with bytes = \"1; sh -c id\" (pattern [0-9]{1,10})",
                 pb_bytes(1, b"zeros") + pb_entry(2, b"bytes", b"1; sh -c id")),
                ("zeros without its required parameter", pb_bytes(1, b"zeros"))):
            expect("StartRun: " + tried, call("StartRun", payload), (IA,))

        # Shell syntax is one argv element: the run is echo printing it, nothing else runs.
        text = "$(touch /tmp/prismq-pwned); `id` | sh && reboot"
        run = stub.StartRun(R.StartRunRequest(module_id="echo", parameters={"message": text}), timeout=WAIT)
        self.runs_started += 1
        done = stub.WaitRun(R.WaitRunRequest(run_id=run.run_id, timeout_ms=int(WAIT * 1000)), timeout=WAIT * 2)
        out = b"".join(c.data for c in stub.StreamOutput(R.StreamOutputRequest(run_id=run.run_id), timeout=WAIT)
                       if not c.HasField("run"))
        self.r.attempt(g, "StartRun echo with shell syntax in its parameter",
                       "%s, output %r" % (R.RunStatus.Name(done.status), out[:60]),
                       done.status == R.RUN_STATUS_COMPLETED and out == text.encode() + b"\n",
                       "COMPLETED, the text printed verbatim")

        ids = ["../runs.db", "../../../../etc/passwd", "/etc/passwd", "..", ".", "./" + run.run_id,
               "x/../" + run.run_id, run.run_id + "/..", run.run_id + "\n", "%2e%2e%2f" + run.run_id,
               run.run_id.lower(), "*", "%", "' OR 1=1 --", "a" * 100000, "\u202e" + run.run_id,
               run.run_id + " "]
        codes = collections.Counter()
        bad = []
        for rid in ids:
            enc = pb_bytes(1, rid.encode())
            for m in ("GetRun", "WaitRun", "CancelRun", "StreamOutput"):
                code = call(m, enc if m != "WaitRun" else enc + b"\x10\x01")
                codes[code] += 1
                if code not in (NF, IA):
                    bad.append("%s(%r): %s" % (m, rid[:40], code))
        expect_ok = not bad
        self.r.attempt(g, "%d odd run ids (../, absolute paths, SQL, 100,000 bytes, near-misses of a real "
                       "id) in GetRun, WaitRun, CancelRun, StreamOutput" % len(ids),
                       ", ".join("%d x %s" % (n, k) for k, n in sorted(codes.items())) +
                       ("; " + "; ".join(bad[:5]) if bad else ""),
                       expect_ok, "NOT_FOUND or INVALID_ARGUMENT")
        for m in ("GetRun", "StreamOutput"):
            expect("%s with an empty run id" % m, call(m, b""), (IA,))

        names = ["nope-%d", "../echo", "echo/../zeros", "/bin/sh", "sh", "ECHO", "echo ", " echo", "echo\n",
                 "*", "e%d" + "x" * 200, "echo;id", "zeros\t", "..", "%s", "{message}"]
        codes = collections.Counter()
        t0 = time.monotonic()
        futs = []
        for i in range(UNKNOWN_MODULE_CALLS):
            name = names[i % len(names)]
            if "%d" in name:
                name = name % i
            futs.append(stub.StartRun.future(R.StartRunRequest(module_id=name), timeout=WAIT))
            if len(futs) >= 50:
                for f in futs:
                    codes[f.code().name] += 1
                futs = []
        for f in futs:
            codes[f.code().name] += 1
        self.r.attempt(g, "%d StartRun of unknown modules (%d names: nope-N, ../echo, /bin/sh, ECHO, "
                       "\"echo \", ...), 50 in flight" % (UNKNOWN_MODULE_CALLS, len(names)),
                       "%s in %.2f s" % (", ".join("%d x %s" % (n, k) for k, n in sorted(codes.items())),
                                         time.monotonic() - t0),
                       set(codes) <= {NF, IA}, "NOT_FOUND (INVALID_ARGUMENT for an over-long id)")

    # -- 9. protocol confusion --

    def confusion(self):
        g = "9 protocol confusion"
        port, tport = self.srv.port, self.tls_port
        rnd = random.Random(11)
        garbage = bytes(rnd.getrandbits(8) for _ in range(64 << 10))

        def plain(p, data, tried, expect="closed", timeout=ANSWER_BOUND_S):
            s = socket.create_connection(("127.0.0.1", p), timeout=WAIT)
            t0 = time.monotonic()
            try:
                s.sendall(data)
            except (BrokenPipeError, ConnectionResetError):
                pass
            closed, got = closed_raw(s, timeout)
            s.close()
            self.r.attempt(g, tried, "%s after %.2f s (%d bytes from the server first)" % (
                "closed" if closed else "NOT closed", time.monotonic() - t0, got), closed, expect)

        req = frame(HEADERS, END_HEADERS, 1, hpack.Encoder().encode(request_headers(CHECK))) + \
            frame(DATA, END_STREAM, 1, EMPTY_MSG)
        plain(tport, PREFACE + settings() + req, "HTTP/2 in clear (preface, SETTINGS, a request) on the TLS port")
        plain(tport, garbage, "64 KiB of random bytes on the TLS port")
        plain(tport, b"\x16\x03\x01\x40\x00\x01\x00\x3f\xfc\x03\x03" + garbage[:200],
              "a TLS record header claiming 16 KiB, then garbage, on the TLS port",
              "closed (at the handshake timeout)", HANDSHAKE_TIMEOUT_MS / 1000 + ANSWER_BOUND_S)
        plain(port, garbage, "64 KiB of random bytes on the plain port")
        # HTTP/1.1 is served on the plain port (docs/http.md): the upgrade is ignored, both
        # requests are answered over HTTP/1.1, and the second's Connection: close ends it.
        plain(port, b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n"
              b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
              "HTTP/1.1 with Upgrade: h2c on the plain port")
        plain(port, PREFACE + settings() + garbage, "the preface, then 64 KiB of random bytes, on the plain port")

        t0 = time.monotonic()
        try:
            s = tls_common.tls_connect(port, self.tls_ctx)
            s.close()
            answered, ok = "handshake completed!", False
        except (ssl.SSLError, ConnectionResetError, BrokenPipeError, OSError) as e:
            answered, ok = "handshake failed after %.2f s: %s" % (time.monotonic() - t0, type(e).__name__ + ": " +
                                                                   str(e)[:70]), True
        self.r.attempt(g, "a TLS client (ClientHello, ALPN h2) on the plain port", answered, ok,
                       "handshake fails, closed")

        for alpn in (("grpc-exp",), ("spdy/3", "http/1.0")):
            try:
                e = tls_common.tls_refusal(tport, tls_common.ssl_context(alpn=alpn))
                answered, ok = "refused: %s" % (str(e)[:80]), True
            except AssertionError as e:
                answered, ok = str(e)[:80], False
            except OSError as e:
                answered, ok = "closed: %s" % type(e).__name__, True
            self.r.attempt(g, "TLS client on the TLS port with ALPN %s" % ", ".join(alpn),
                           answered, ok, "refused")

        s = tls_common.tls_connect(tport, self.tls_ctx)
        t0 = time.monotonic()
        try:
            s.sendall(garbage)
        except (OSError, ssl.SSLError):
            pass
        closed, got = closed_raw(s)
        s.close()
        self.r.attempt(g, "TLS handshake done, then 64 KiB of random bytes inside it",
                       "%s after %.2f s" % ("closed" if closed else "NOT closed", time.monotonic() - t0),
                       closed, "closed")
        self.after_group(g)

    # -- the end --

    def finish(self, wb, sampler, t_start, attack_t0, attack_t1, base_stats, quiet):
        r = self.r
        g = "end"
        self.idle_end()
        self.stalled_end()
        for s in self.held:
            s.close()
        self.held = []
        try:
            st = self.srv.wait_stats(lambda s: s.live_connections <= base_stats.live_connections
                                     and s.live_calls <= base_stats.live_calls and s.followers == 0,
                                     timeout=ANSWER_BOUND_S)
            r.attempt(g, "every attacking connection closed by the client",
                      "connections %d, calls %d, followers %d, open fds %d (before the attack: %d, %d, %d, %d)" % (
                          st.live_connections, st.live_calls, st.followers, st.open_fds,
                          base_stats.live_connections, base_stats.live_calls, base_stats.followers,
                          base_stats.open_fds), True, "back to the baseline")
        except AssertionError as e:
            r.attempt(g, "every attacking connection closed by the client", str(e)[:200], False,
                      "back to the baseline")
        wb.stop_ev.set()
        wb.join(WAIT * 3)
        # Nothing held: every call, connection, follower, run and descriptor is back to
        # what the server had before the well-behaved client started, but for the
        # output files of the finished runs last replayed, which the scheduler keeps
        # open on purpose (at most KEPT_LOGS_MAX).
        outdir = os.path.join(self.srv.data_dir, "output") + os.sep
        deadline = time.monotonic() + ANSWER_BOUND_S
        while True:
            st = self.srv.stats()
            fds = self.fds()
            new = [f for f in sorted(fds) if self.quiet_fds.get(f) != fds[f]]
            kept = [f for f in new if fds[f].startswith(outdir) and fds[f].endswith(".out")]
            other = [f for f in new if f not in kept]
            ok = (st.live_connections, st.live_calls, st.followers, st.runs_active) == \
                (quiet.live_connections, quiet.live_calls, quiet.followers, 0) and \
                not other and len(kept) <= KEPT_LOGS_MAX
            if ok or time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        r.attempt(g, "the well-behaved client stopped too",
                  "connections %d, calls %d, followers %d, active runs %d, open fds %d = at start %d + %d "
                  "output files kept open%s" % (
                      st.live_connections, st.live_calls, st.followers, st.runs_active, len(fds),
                      len(self.quiet_fds), len(kept),
                      "; other descriptors not there at start: " + ", ".join("%d %s" % (f, fds[f]) for f in other)
                      if other else ""),
                  ok, "what the server had at start (connections %d, calls %d, followers %d, no active run), "
                  "<= %d output files" % (quiet.live_connections, quiet.live_calls, quiet.followers, KEPT_LOGS_MAX))
        r.attempt(g, "server alive, Health/Check on a new connection",
                  "SERVING" if self.health() else "not serving", self.alive() and self.health(), "SERVING")

        # Every run the server recorded was started by a client here.
        st = self.srv.stats()
        started = wb.started + self.runs_started
        hwm_kb = read_status_kb(self.srv.pid, "VmHWM")
        r.notes.insert(0, "prismqd RSS before the attack: %.1f MiB" % (self.rss_before_kb / 1024))
        sampler.stop_ev.set()
        sampler.join(WAIT)
        asan = sanitized(self.srv.pid)
        r.build = "ASan" if asan else "normal"
        t_stop = time.monotonic()
        code = self.srv.stop()
        took = time.monotonic() - t_stop
        r.elapsed = time.monotonic() - t_start
        levels = collections.Counter(w for line in self.srv.log_text().splitlines()
                                     for w in line.split()[1:2] if w in ("WARNING", "ERROR"))
        r.notes.append("prismqd log: %d WARNING, %d ERROR lines (rate-limited)" % (levels["WARNING"], levels["ERROR"]))

        bound = RSS_MAX_MIB_ASAN if asan else RSS_MAX_MIB
        r.figure("peak RSS of prismqd (VmRSS every %d ms, %d samples)" % (RSS_SAMPLE_S * 1000, sampler.rss_samples),
                 "%.1f MiB" % (sampler.rss_peak_kb / 1024), "<= %d MiB" % bound, sampler.rss_peak_kb <= bound * 1024)
        r.figure("VmHWM of prismqd at the end", "%.1f MiB" % (hwm_kb / 1024), "<= %d MiB" % bound,
                 hwm_kb <= bound * 1024)
        lat, errs = wb.window(attack_t0, attack_t1)
        base_lat, _ = wb.window(t_start, attack_t0)
        slow = max((s for s in wb.samples if attack_t0 <= s[0] < attack_t1 and s[2]), key=lambda s: s[1],
                   default=None)
        during = [name for t, name in self.phases if t <= slow[0]][-1] if slow else "-"
        r.figure("well-behaved slowest round during the attack", "%.1f ms (started during \"%s\")" % (
            slow[1] * 1e3 if slow else 0, during), "<= %d ms" % (MAX_STALL_S * 1000),
            slow is not None and slow[1] <= MAX_STALL_S)
        r.figure("well-behaved runs completed during the attack (%.1f s)" % (attack_t1 - attack_t0), len(lat),
                 ">= %d" % MIN_RUNS, len(lat) >= MIN_RUNS)
        r.figure("well-behaved p50 / p99 latency during the attack",
                 "%.1f / %.1f ms" % (pct(lat, .5) * 1e3, pct(lat, .99) * 1e3),
                 "p99 <= %d ms" % (P99_MAX_S * 1000), bool(lat) and pct(lat, .99) <= P99_MAX_S)
        r.figure("well-behaved p50 / p99 latency before it (%d runs)" % len(base_lat),
                 "%.1f / %.1f ms" % (pct(base_lat, .5) * 1e3, pct(base_lat, .99) * 1e3), "(reference)", True)
        total_errs = sum(wb.errors.values())
        r.figure("well-behaved failed calls", "%d%s" % (total_errs, " (%s)" % dict(wb.errors) if total_errs else ""),
                 "<= %d" % MAX_WB_ERRORS, total_errs <= MAX_WB_ERRORS)
        declared, pre_exec, undeclared = sampler.classify()
        r.figure("undeclared processes started", len(undeclared), "== %d" % MAX_UNDECLARED,
                 len(undeclared) <= MAX_UNDECLARED)
        r.figure("children of prismqd seen (/proc every %d ms, %d scans)" % (PROC_SAMPLE_S * 1000, sampler.scans),
                 ", ".join("%s %d" % kv for kv in sorted(declared.items())) +
                 (", %d before exec" % pre_exec if pre_exec else ""),
                 "argv[0] in {%s}" % ", ".join(sorted(DECLARED)), not undeclared)
        for u in undeclared[:10]:
            r.notes.append("UNDECLARED: " + u)
        r.figure("runs recorded by the server", st.runs_total, "== runs started by clients (%d)" % started,
                 st.runs_total == started)
        r.figure("SIGTERM to exit", "exit %s in %.2f s" % (code, took), "exit 0 within %d s" % EXIT_WITHIN_S,
                 code == 0 and took <= EXIT_WITHIN_S)
        most = BATTERY_MAX_S_ASAN if asan else BATTERY_MAX_S
        r.figure("whole battery", "%.1f s" % r.elapsed, "<= %d s" % most, r.elapsed <= most)


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = CLIENT_NOFILE if hard == resource.RLIM_INFINITY else min(hard, CLIENT_NOFILE)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < IDLE_CONNS + PREFACE_ONLY_CONNS + TLS_IDLE_CONNS + 200:
        raise RuntimeError("RLIMIT_NOFILE too low for the battery: %s" % (resource.getrlimit(resource.RLIMIT_NOFILE),))


def run_battery():
    """Runs the whole battery once; returns the Report (never raises for a refusal
    that was not clean: that is a failure in the report)."""
    raise_nofile()
    tls_common.certs()  # made before the clock starts
    report = Report()
    b = Battery(report)
    t_start = time.monotonic()
    b.start()
    sampler = Sampler(b.srv.pid)
    sampler.start()
    wb = WellBehaved(b.srv.addr)
    try:
        quiet = b.srv.stats()  # the admin channel alone
        b.quiet_fds = b.fds()
        wb.start()
        time.sleep(BASELINE_S)  # a measurement window: the well-behaved client alone
        base_stats = b.srv.stats()
        b.rss_before_kb = read_status_kb(b.srv.pid, "VmRSS")
        attack_t0 = time.monotonic()
        for name, step in (("1 idle connections", b.idle), ("2 slow drip", b.drip_start),
                           ("3 unread output", b.stalled_start), ("4 oversized frames", b.oversized),
                           ("5 header floods", b.header_floods), ("6 frame floods", b.floods),
                           ("7 rapid reset", b.rapid_reset), ("8 gRPC input", b.grpc_input),
                           ("9 protocol confusion", b.confusion), ("3 unread output", b.stalled_check),
                           ("2 slow drip", b.drip_end)):
            b.phases.append((time.monotonic(), name))
            step()
        attack_t1 = time.monotonic()
        b.finish(wb, sampler, t_start, attack_t0, attack_t1, base_stats, quiet)
    except BaseException:
        wb.stop_ev.set()
        sampler.stop_ev.set()
        for s in b.held:
            s.close()
        if b.srv is not None and b.srv.returncode is None:
            report.notes.append("--- prismqd log ---\n" + b.srv.log_text()[-20000:])
            b.srv.stop(signal.SIGKILL)
        raise
    return report


def main():
    report = run_battery()
    print(report.table())
    fails = report.failures()
    if fails:
        print("\nFAILED:\n  " + "\n  ".join(fails))
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
