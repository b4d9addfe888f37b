#!/usr/bin/python3
"""Writes the seed corpora of the libFuzzer targets into tests/fuzz/corpus/<target>/.

Each target's input format is described at the top of its tests/fuzz/fuzz_<target>.c.
The seeds are small, meaningful inputs of each kind: framed messages, a valid request
of every type, the built-in configuration and those of tests/unit/server/test_config.c,
and real HTTP/2 exchanges made with the h2 package (python3-h2, which scripts/deps.sh
installs) from both ends. Run it again after changing a format or the contract; the
files are committed, and each is named after what it holds.

Usage: tests/fuzz/make_corpus.py [FUZZ_BUILD_DIR] (from anywhere; replaces the corpus
directories). test_config.c holds some 150 configurations: given the fuzz build tree
(scripts/fuzz.sh makes build-fuzz), only those that add coverage are kept (libFuzzer's
-merge=1), as committed.
"""

import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile

import h2.config
import h2.connection

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
OUT = os.path.join(HERE, "corpus")

# The newest run's id stands in for this mark in fuzz_server.c (as long as a run id).
RUN_ID_MARK = b"@@NEWEST_RUN_ID@@@@@@@@@@@"
A_RUN_ID = b"01JDQ3Z5Y7X8W9V0T1S2R3Q4P5"  # the shape of a run id, of no run

# ---- protobuf, by hand: the few wire forms the contract uses --------------------------


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field_varint(num, n):
    return varint(num << 3) + varint(n)


def field_bytes(num, data):
    if isinstance(data, str):
        data = data.encode()
    return varint(num << 3 | 2) + varint(len(data)) + data


def field_map(num, items):
    return b"".join(field_bytes(num, field_bytes(1, k) + field_bytes(2, v)) for k, v in items)


def frame(msg, flag=0):
    """A gRPC message: flag byte, 4-byte big-endian length, body."""
    return bytes([flag]) + struct.pack(">I", len(msg)) + msg


def start_run(module, params=(), labels=(), request_id="", timeout_ms=0):
    m = field_bytes(1, module) + field_map(2, params)
    if request_id:
        m += field_bytes(3, request_id)
    m += field_map(4, labels)
    if timeout_ms:
        m += field_varint(5, timeout_ms)
    return m


def run_id_req(run_id, num2=0):
    """GetRun, CancelRun (grace_ms), WaitRun (timeout_ms): run_id = 1, a number = 2."""
    m = field_bytes(1, run_id)
    if num2:
        m += field_varint(2, num2)
    return m


def list_runs(statuses=(), module="", page_size=0, page_token="", labels=()):
    m = b""
    if statuses:
        m += field_bytes(1, b"".join(varint(s) for s in statuses))  # packed
    if module:
        m += field_bytes(2, module)
    if page_size:
        m += field_varint(3, page_size)
    if page_token:
        m += field_bytes(4, page_token)
    return m + field_map(5, labels)


def stream_output(run_id, start_seq=0, follow=False, stream=0):
    m = field_bytes(1, run_id)
    if start_seq:
        m += field_varint(2, start_seq)
    if follow:
        m += field_varint(3, 1)
    if stream:
        m += field_varint(4, stream)
    return m


def run_msg(run_id, module, status, params=(), error=""):
    m = field_bytes(1, run_id) + field_bytes(2, module) + field_varint(3, status)
    if error:
        m += field_bytes(6, error)
    return m + field_map(7, params) + field_varint(9, 1733300000000) + field_bytes(19, "unix:root")


def output_chunk(seq, stream, data, run=None):
    m = field_varint(1, seq) + field_varint(2, stream) + field_bytes(3, data) + field_varint(4, 0)
    m += field_varint(5, 1733300000000)
    if run is not None:
        m += field_bytes(6, run)
    return m


# ---- the C sources' own strings --------------------------------------------------------


def c_strings(path):
    """Every C string literal of a file, adjacent literals joined, decoded."""
    text = open(path, encoding="utf-8").read()
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    lit = r'"(?:[^"\\\n]|\\.)*"'
    out = []
    for m in re.finditer(r"(?:%s\s*)+" % lit, text):
        parts = re.findall(lit, m.group(0))
        raw = "".join(p[1:-1] for p in parts)
        out.append(raw.encode("latin-1").decode("unicode_escape").encode("latin-1"))
    return out


def builtin_config():
    text = open(os.path.join(ROOT, "server", "config.c"), encoding="utf-8").read()
    start = text.index("const char config_default_yaml[] =")
    body = text[start:text.index(";", start)]
    lits = re.findall(r'"(?:[^"\\\n]|\\.)*"', body)
    return "".join(p[1:-1] for p in lits).encode("latin-1").decode("unicode_escape").encode("latin-1")


# ---- HTTP/2 from both ends, with h2 ----------------------------------------------------

PATHS = {
    "start": "/prismq.runner.v1.Runner/StartRun",
    "get": "/prismq.runner.v1.Runner/GetRun",
    "list": "/prismq.runner.v1.Runner/ListRuns",
    "cancel": "/prismq.runner.v1.Runner/CancelRun",
    "wait": "/prismq.runner.v1.Runner/WaitRun",
    "stream": "/prismq.runner.v1.Runner/StreamOutput",
    "modules": "/prismq.runner.v1.Runner/ListModules",
    "health": "/grpc.health.v1.Health/Check",
    "watch": "/grpc.health.v1.Health/Watch",
    "stats": "/prismq.admin.v1.Admin/GetStats",
    "reflection": "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
}


def connection(client_side, huffman=False):
    """An h2 connection whose header blocks are plain HPACK literals unless huffman is
    set (h2 compresses them by default): strings the fuzzer can see and change."""
    c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=client_side, header_encoding="utf-8"))
    if not huffman:
        encode = c.encoder.encode
        c.encoder.encode = lambda headers, huffman=True: encode(headers, huffman=False)
    return c


def request_headers(path, extra=()):
    return [(":method", "POST"), (":scheme", "http"), (":path", path), (":authority", "localhost"),
            ("content-type", "application/grpc"), ("te", "trailers"), ("user-agent", "make_corpus/1")] + list(extra)


def client_bytes(calls, settings=True, huffman=False):
    """What a gRPC client sends: the preface and SETTINGS (unless settings is False: the
    harness adds them), then each call (path, body bytes, extra headers) on its own
    stream. A body given as a list is sent in that many DATA frames."""
    c = connection(True, huffman)
    c.initiate_connection()
    head = c.data_to_send()
    out = bytearray(head if settings else b"")
    for path, body, extra in calls:
        sid = c.get_next_available_stream_id()
        c.send_headers(sid, request_headers(path, extra))
        pieces = body if isinstance(body, list) else [body]
        for i, p in enumerate(pieces):
            c.send_data(sid, p, end_stream=i == len(pieces) - 1)
        out += c.data_to_send()
    return bytes(out)


def unary(path, msg, extra=()):
    return (path, frame(msg), extra)


# What fuzz_client.c's calls ask for, in order: streams 1, 3, 5, 7.
CLIENT_CALLS = ["get", "stream", "stream", "wait"]


def server_bytes(ncalls, answer, huffman=False):
    """What a gRPC server sends back to fuzz_client.c's first ncalls calls: its SETTINGS,
    its ACK of the client's, then what answer(conn, stream_id, index) sends."""
    cl = connection(True)
    cl.initiate_connection()
    for i in range(ncalls):
        sid = cl.get_next_available_stream_id()
        cl.send_headers(sid, request_headers(PATHS[CLIENT_CALLS[i]]))
        cl.send_data(sid, frame(field_bytes(1, "x")), end_stream=True)
    sv = connection(False, huffman)
    sv.initiate_connection()
    sv.receive_data(cl.data_to_send())
    for i in range(ncalls):
        answer(sv, 1 + 2 * i, i)
    return sv.data_to_send()


GRPC_HEADERS = [(":status", "200"), ("content-type", "application/grpc")]


def answer_ok(sv, sid, i):
    sv.send_headers(sid, GRPC_HEADERS)
    if CLIENT_CALLS[i] == "get" or CLIENT_CALLS[i] == "wait":
        body = frame(run_msg(A_RUN_ID, "echo", 3, [("message", "hi")]))
    else:
        run = run_msg(A_RUN_ID, "count", 3)
        body = b"".join(frame(output_chunk(s, 1, b"%d\n" % s)) for s in range(1, 4))
        body += frame(output_chunk(4, 0, b"", run))
    sv.send_data(sid, body)
    sv.send_headers(sid, [("grpc-status", "0")], end_stream=True)


def answer_split(sv, sid, i):
    """One message in pieces across DATA frames, and two in one frame."""
    sv.send_headers(sid, GRPC_HEADERS)
    body = frame(run_msg(A_RUN_ID, "emit", 3, [("bytes", "10")])) + frame(b"") + frame(b"\x08\x01")
    for k in range(0, len(body), 7):
        sv.send_data(sid, body[k:k + 7])
    sv.send_headers(sid, [("grpc-status", "0"), ("grpc-message", "")], end_stream=True)


def answer_error(sv, sid, i):
    """Trailers-only errors, percent-encoded messages."""
    codes = [(5, "run 01JDQ not found"), (3, "parameter \"n\" does not match ^[0-9]+$ 100%25"),
             (7, "permission denied: caf%C3%A9"), (999, "a code gRPC does not have")]
    code, msg = codes[i % len(codes)]
    sv.send_headers(sid, GRPC_HEADERS + [("grpc-status", str(code)), ("grpc-message", msg)], end_stream=True)


def answer_http(sv, sid, i):
    """Not gRPC: HTTP statuses, content types, a missing or malformed grpc-status."""
    kinds = [
        ([(":status", "503"), ("content-type", "text/plain")], b"busy", None),
        ([(":status", "200"), ("content-type", "text/html")], b"<html>", [("grpc-status", "0")]),
        (GRPC_HEADERS, frame(b"\x0a\x01x"), [("grpc-status", "x1")]),
        (GRPC_HEADERS, frame(b"\x0a\x01x")[:3], [("grpc-status", "0")]),  # ends inside a message
    ]
    headers, body, trailers = kinds[i % len(kinds)]
    sv.send_headers(sid, headers)
    sv.send_data(sid, body, end_stream=trailers is None)
    if trailers is not None:
        sv.send_headers(sid, trailers, end_stream=True)


def answer_reset(sv, sid, i):
    """Compressed and oversized messages, a reset, a GOAWAY and a PING along the way."""
    if i == 0:
        sv.send_headers(sid, GRPC_HEADERS + [("grpc-encoding", "gzip")])
        sv.send_data(sid, frame(b"\x1f\x8b\x08\x00", flag=1))
        sv.ping(b"12345678")
        sv.send_headers(sid, [("grpc-status", "0")], end_stream=True)
    elif i == 1:
        sv.send_headers(sid, GRPC_HEADERS)
        sv.send_data(sid, frame(output_chunk(1, 2, b"e" * 100)))  # over 64 bytes
        sv.reset_stream(sid, 8)  # CANCEL
    else:
        sv.send_headers(sid, GRPC_HEADERS)
        sv.close_connection(0, b"going away")


# ---- the corpora -----------------------------------------------------------------------


def write(target, name, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def grpcwire():
    two = frame(b"\x0a\x03abc") + frame(b"")
    run = frame(run_msg(A_RUN_ID, "echo", 3, [("message", "hello")]))
    seeds = {
        # mode byte: bits 0-2 max_len (6 = 64 KiB), bits 3-5 the number of split bytes
        "two-messages": bytes([6]) + two,
        "split-1-2-3": bytes([6 | 3 << 3, 1, 2, 3]) + two + run,
        "split-0-5": bytes([6 | 2 << 3, 0, 5]) + run + run,
        "partial-at-end": bytes([6 | 1 << 3, 4]) + run + run[:9],
        "too-large": bytes([3 | 1 << 3, 2]) + frame(b"x" * 40),
        "compressed": bytes([6]) + two + frame(b"abc", flag=1),
        "bad-flag": bytes([6 | 1 << 3, 1]) + frame(b"abc", flag=0x80),
        "max-len-0": bytes([0]) + frame(b"") + frame(b""),
        "timeout-header": bytes([6]) + b"100m" + two,
        "timeout-hours": bytes([6]) + b"99999999H",
        "message-header": bytes([6]) + b"caf%C3%A9 100%25 done %zz%",
    }
    for name, data in seeds.items():
        write("grpcwire", name, data)


# fuzz_request.c's table of message types (byte 0, modulo its length).
REQ_TYPES = ["start", "get", "list", "cancel", "wait", "stream", "modules", "health", "stats"]


def requests():
    seeds = {
        "start-echo": ("start", start_run("echo", [("message", "hi there")], [("team", "ops")], "req-1")),
        "start-emit": ("start", start_run("emit", [("bytes", "16")], timeout_ms=5000)),
        "start-count-repeat": ("start", start_run("count", [("n", "3"), ("n", "7")])),
        "start-fail": ("start", start_run("fail", [("path", "/nonexistent/x")])),
        "start-tpl": ("start", start_run("tpl", [("a", "x y"), ("b", "abc"), ("c", "{c}")])),
        "start-tpl-missing": ("start", start_run("tpl", [("b", "abc")])),
        "start-flags": ("start", start_run("flags", [("n", "12"), ("Req", "r"), ("mode", "slow"), ("_opt", "")])),
        "start-unknown-param": ("start", start_run("echo", [("nope", "1")])),
        "start-nul": ("start", start_run("echo", [("message", "a\0b")])),
        "start-bad-utf8": ("start", start_run("echo", [("message", b"\xc3\x28")])),
        "get": ("get", run_id_req(A_RUN_ID)),
        "list": ("list", list_runs([3, 4], "echo", 10, "djE6MDFKRFEzWjVZN1g4VzlWMFQxUzJSM1E0UDU=", [("team", "ops")])),
        "cancel": ("cancel", run_id_req(A_RUN_ID, 2000)),
        "wait": ("wait", run_id_req(A_RUN_ID, 100)),
        "stream": ("stream", stream_output(A_RUN_ID, 2, True, 1)),
        "modules": ("modules", b""),
        "modules-unknown-field": ("modules", field_varint(7, 1) + field_bytes(8, "x")),
        "health": ("health", field_bytes(1, "prismq.runner.v1.Runner")),
        "stats": ("stats", b""),
    }
    for name, (kind, msg) in seeds.items():
        write("request", name, bytes([REQ_TYPES.index(kind)]) + msg)


def configs(build_dir):
    write("config", "builtin.yaml", builtin_config())
    unit = [s for s in dict.fromkeys(c_strings(os.path.join(ROOT, "tests", "unit", "server", "test_config.c")))
            # Configurations, not the expected error messages ("t.yaml:3: ...") or names.
            if b":" in s and not s.startswith(b"t.yaml") and len(s) >= 6]
    if not build_dir:
        for n, s in enumerate(unit):
            write("config", "test_config-%03d.yaml" % n, s)
        return
    with tempfile.TemporaryDirectory() as tmp:
        for n, s in enumerate(unit):
            with open(os.path.join(tmp, "test_config-%03d.yaml" % n), "wb") as f:
                f.write(s)
        # Merged into the corpus after the built-in configuration: what it covers already goes.
        subprocess.run([os.path.join(build_dir, "fuzz", "fuzz_config"), "-merge=1", os.path.join(OUT, "config"), tmp],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # libFuzzer names merged files by their hash: give them back their names.
        names = {open(os.path.join(tmp, f), "rb").read(): f for f in os.listdir(tmp)}
        for f in os.listdir(os.path.join(OUT, "config")):
            data = open(os.path.join(OUT, "config", f), "rb").read()
            if f != "builtin.yaml" and data in names:
                os.rename(os.path.join(OUT, "config", f), os.path.join(OUT, "config", names[data]))


def server():
    run = RUN_ID_MARK
    seeds = {
        # mode byte: 1 preface added, 2 EOF, 4 graceful shutdown, bits 3-4 piece size
        "start-echo": (0, [unary(PATHS["start"], start_run("echo", [("message", "hi")], [("a", "b")], "r1"))]),
        "start-then-get-wait-stream": (2, [
            unary(PATHS["start"], start_run("count", [("n", "3")])),
            unary(PATHS["get"], run_id_req(run)),
            unary(PATHS["wait"], run_id_req(run, 50)),
            unary(PATHS["stream"], stream_output(run, 0, True)),
            unary(PATHS["stream"], stream_output(run, 1, False, 2)),
        ]),
        "start-then-cancel-list": (0, [
            unary(PATHS["start"], start_run("sleep", [("seconds", "5")], request_id="same")),
            unary(PATHS["start"], start_run("sleep", [("seconds", "5")], request_id="same")),
            unary(PATHS["cancel"], run_id_req(run, 10)),
            unary(PATHS["list"], list_runs([3, 5], page_size=1)),
        ]),
        "list-modules-health-stats": (2, [
            unary(PATHS["modules"], b""),
            unary(PATHS["health"], b""),
            unary(PATHS["health"], field_bytes(1, "nope")),
            unary(PATHS["stats"], b""),
        ]),
        # One stream, several requests: list, by symbol, by file, an unknown symbol.
        "reflection": (2, [(PATHS["reflection"], frame(field_bytes(7, "")) +
                            frame(field_bytes(4, "prismq.runner.v1.Runner.StartRun")) +
                            frame(field_bytes(3, "grpc/health/v1/health.proto")) +
                            frame(field_bytes(4, "no.Such")), [])]),
        "watch-then-shutdown": (4, [unary(PATHS["watch"], b""), unary(PATHS["wait"], run_id_req(A_RUN_ID, 60000))]),
        "pieces-start": (1 << 3, [unary(PATHS["start"], start_run("emit", [("bytes", "5")]))]),
        "errors": (2, [
            ("/no.Such/Method", frame(b""), []),
            (PATHS["get"], frame(b"", flag=1), [("grpc-encoding", "gzip")]),
            (PATHS["get"], frame(b"\x0a\x01x")[:4], []),
            (PATHS["get"], frame(b"") + frame(b""), [("grpc-timeout", "1S")]),
            (PATHS["start"], [frame(start_run("echo"))[:3], frame(start_run("echo"))[3:]], [("grpc-timeout", "0n")]),
            (PATHS["modules"], frame(b""), [("content-type", "text/plain")]),
        ]),
    }
    for name, (mode, calls) in seeds.items():
        write("server", name, bytes([mode]) + client_bytes(calls))
    write("server", "huffman-start-echo", bytes([0]) + client_bytes(seeds["start-echo"][1], huffman=True))
    # The same with the preface and SETTINGS left to the harness (mode bit 0).
    write("server", "preface-by-harness",
          bytes([1]) + client_bytes([unary(PATHS["get"], run_id_req(A_RUN_ID))], settings=False))


def client():
    # mode byte: bits 1-2 number of calls - 1, bit 3 a 64-byte message limit, bit 4 pieces
    seeds = {
        "ok-1": (0, 1, answer_ok),
        "ok-4": (3 << 1, 4, answer_ok),
        "ok-3-pieces": (2 << 1 | 16, 3, answer_ok),
        "split-2": (1 << 1, 2, answer_split),
        "errors-4": (3 << 1, 4, answer_error),
        "http-4": (3 << 1, 4, answer_http),
        "reset-3-small": (2 << 1 | 8, 3, answer_reset),
    }
    for name, (mode, n, answer) in seeds.items():
        write("client", name, bytes([mode]) + server_bytes(n, answer))
    write("client", "huffman-ok-2", bytes([1 << 1]) + server_bytes(2, answer_ok, huffman=True))


def main():
    build_dir = os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else None
    for t in ("grpcwire", "request", "config", "server", "client"):
        shutil.rmtree(os.path.join(OUT, t), ignore_errors=True)
    grpcwire()
    requests()
    configs(build_dir)
    server()
    client()
    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(OUT) for f in fs)
    count = sum(len(fs) for _, _, fs in os.walk(OUT))
    print("make_corpus.py: %d files, %d bytes in %s" % (count, total, os.path.relpath(OUT, ROOT)), file=sys.stderr)


if __name__ == "__main__":
    main()
