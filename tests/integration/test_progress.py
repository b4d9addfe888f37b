"""Run progress through the real server and grpcio: a module reports it with lines of
its stdout matching its progress pattern, or with lines on its progress descriptor
(PRISMQ_PROGRESS_FD). Followers (StreamOutput follow) get each update as a chunk of its
own in order with the output, right after the chunk holding its line, with a stream
filter too; GetRun shows the latest while the run goes on, WaitRun and the follow's last
chunk the final one; a replay, also after a restart of the server, gives the same
chunks. Lines too long or malformed are ignored, their output kept.

The modules copy what the test writes to a fifo, line by line, so the test says when
each line comes and waits for what it should give: no sleeps."""

import os
import queue
import sys
import threading
import unittest

from prismq_testlib import WAIT, Server, protos, temp_dir
from runner_common import config_yaml

pb = protos()
R = pb.runner_pb2

PATTERN = r"^PROGRESS (?P<done>\d+)/(?P<total>\d+)(?: (?P<message>.*))?$"
# Copies each line of the fifo to stdout or, after a "!", to the progress descriptor
# (when it has one); exits at the fifo's end.
COPY = r"""
import os, sys
fd = os.environ.get("PRISMQ_PROGRESS_FD")
progress = os.fdopen(int(fd), "wb", buffering=0) if fd else None
with open(sys.argv[1], "rb") as lines:
    for line in lines:
        if line.startswith(b"!"):
            progress.write(line[1:])
        else:
            sys.stdout.buffer.write(line)
            sys.stdout.flush()
"""
CONFIG = config_yaml([
    {"id": "pattern", "argv": [sys.executable, "-c", COPY, "{fifo}"],
     "parameters": [{"name": "fifo", "required": True}], "progress": {"pattern": PATTERN}},
    {"id": "fd", "argv": [sys.executable, "-c", COPY, "{fifo}"],
     "parameters": [{"name": "fifo", "required": True}], "progress": {"fd": True}},
    {"id": "plain", "argv": ["echo", "PROGRESS 1/2"]},
], sections={"shutdown": {"runs": "cancel", "grace_ms": 1000}})  # a failed test's run


class Follower:
    """StreamOutput of a run on a thread of its own: its chunks come through a queue."""

    def __init__(self, stub, run_id, stream=R.OUTPUT_STREAM_UNSPECIFIED):
        self.q = queue.Queue()
        self.call = stub.StreamOutput(R.StreamOutputRequest(run_id=run_id, follow=True,
                                                            stream=stream), timeout=4 * WAIT)
        self.thread = threading.Thread(target=self._pump, daemon=True)
        self.thread.start()

    def _pump(self):
        try:
            for chunk in self.call:
                self.q.put(chunk)
        finally:
            self.q.put(None)

    def until_progress(self):
        """The chunks up to and including the next progress chunk."""
        got = []
        while True:
            chunk = self.q.get(timeout=WAIT)
            if chunk is None:
                raise AssertionError("the follow ended before a progress chunk: %r" % got)
            got.append(chunk)
            if chunk.HasField("progress"):
                return got

    def rest(self):
        """The chunks up to the end of the follow."""
        got = []
        while (chunk := self.q.get(timeout=WAIT)) is not None:
            got.append(chunk)
        self.thread.join(WAIT)
        return got


def data_of(chunks):
    return b"".join(c.data for c in chunks)


def progress_of(p):
    return (p.done, p.total, p.message)


class Progress(unittest.TestCase):
    def setUp(self):
        self.srv = Server(config_yaml=CONFIG).start()
        self.ch = self.srv.channel()
        self.stub = pb.runner_pb2_grpc.RunnerStub(self.ch)
        self.fifo = os.path.join(temp_dir(), "lines")
        os.mkfifo(self.fifo)
        # Opened read-write, it never blocks us; closing it is the module's end of input.
        self.lines = os.open(self.fifo, os.O_RDWR)

    def tearDown(self):
        if self.lines is not None:
            os.close(self.lines)
        self.ch.close()
        self.assertEqual(self.srv.stop(), 0)

    def start(self, module):
        run = self.stub.StartRun(R.StartRunRequest(module_id=module,
                                                   parameters={"fifo": self.fifo}), timeout=WAIT)
        self.assertEqual(run.status, R.RUN_STATUS_RUNNING)
        return run

    def write(self, data):
        self.assertEqual(os.write(self.lines, data), len(data))

    def end_input(self):
        os.close(self.lines)
        self.lines = None

    def get(self, run_id):
        return self.stub.GetRun(R.GetRunRequest(run_id=run_id), timeout=WAIT)

    def replay(self, stub, run_id, start_seq=0, stream=R.OUTPUT_STREAM_UNSPECIFIED):
        return list(stub.StreamOutput(R.StreamOutputRequest(run_id=run_id, start_seq=start_seq,
                                                            stream=stream), timeout=WAIT))

    def assert_step(self, chunks, before, want):
        """chunks ends with a progress chunk `want` (done, total, message) that comes right
        after the chunk holding its line; `before` is all the output up to that line."""
        *data, last = chunks
        self.assertEqual(progress_of(last.progress), want)
        self.assertEqual((last.stream, last.data), (R.OUTPUT_STREAM_UNSPECIFIED, b""))
        self.assertEqual(data_of(data), before)
        self.assertTrue(all(not c.HasField("progress") for c in data))

    def test_pattern(self):
        run = self.start("pattern")
        every = Follower(self.stub, run.run_id)
        out_only = Follower(self.stub, run.run_id, R.OUTPUT_STREAM_STDOUT)
        err_only = Follower(self.stub, run.run_id, R.OUTPUT_STREAM_STDERR)
        self.write(b"out a\nPROGRESS 1/4 one\nout b\n")
        first = every.until_progress()
        self.assert_step(first, b"out a\nPROGRESS 1/4 one\n", (1, 4, "one"))
        self.assertEqual([c.seq for c in out_only.until_progress()], [c.seq for c in first])
        self.assertEqual([c.seq for c in err_only.until_progress()], [first[-1].seq])
        got = self.get(run.run_id)
        self.assertEqual((got.status, progress_of(got.progress)), (R.RUN_STATUS_RUNNING, (1, 4, "one")))
        self.assertEqual(got.progress.updated_at_ms, first[-1].time_ms)

        self.write(b"PROGRESS 2/4\n")
        second = every.until_progress()
        self.assert_step(second, b"out b\nPROGRESS 2/4\n", (2, 4, ""))
        self.assertEqual(progress_of(self.get(run.run_id).progress), (2, 4, ""))
        # A line too long to be progress, one that does not match, then a good one: only
        # the good one counts, and all of them stay in the output.
        long_line = b"PROGRESS 3/4 " + b"x" * 5000 + b"\n"
        self.write(long_line + b"PROGRESS x/4\nPROGRESS 4/4 last\n")
        third = every.until_progress()
        self.assert_step(third, long_line + b"PROGRESS x/4\nPROGRESS 4/4 last\n", (4, 4, "last"))
        self.end_input()

        rest = every.rest()
        final = rest[-1].run
        self.assertEqual((final.status, progress_of(final.progress)),
                         (R.RUN_STATUS_COMPLETED, (4, 4, "last")))
        waited = self.stub.WaitRun(R.WaitRunRequest(run_id=run.run_id, timeout_ms=1000),
                                   timeout=WAIT)
        self.assertEqual(progress_of(waited.progress), (4, 4, "last"))
        self.assertEqual(progress_of(self.get(run.run_id).progress), (4, 4, "last"))
        progress = [c for c in out_only.rest() if c.HasField("progress")]
        self.assertEqual([progress_of(c.progress) for c in progress], [(2, 4, ""), (4, 4, "last")])
        self.assertEqual([progress_of(c.progress) for c in err_only.rest() if c.HasField("progress")],
                         [(2, 4, ""), (4, 4, "last")])

        # The replay gives the records the follower got, the final run's chunk aside.
        live = first + second + third + [c for c in rest if not c.HasField("run")]
        self.assertEqual(self.replay(self.stub, run.run_id), live)
        mid = self.replay(self.stub, run.run_id, start_seq=progress[0].seq,
                          stream=R.OUTPUT_STREAM_STDERR)
        self.assertEqual([c.seq for c in mid], [progress[0].seq, progress[1].seq])

        # And again from the file, by a server started anew on the data directory.
        self.assertEqual(self.srv.stop(), 0)
        again = Server(config_yaml=CONFIG)
        again.data_dir = self.srv.data_dir
        with again, again.channel() as ch:
            stub = pb.runner_pb2_grpc.RunnerStub(ch)
            self.assertEqual(self.replay(stub, run.run_id), live)
            got = stub.GetRun(R.GetRunRequest(run_id=run.run_id), timeout=WAIT)
            self.assertEqual(progress_of(got.progress), (4, 4, "last"))

    def test_descriptor(self):
        run = self.start("fd")
        every = Follower(self.stub, run.run_id)
        self.write(b"!3/10 copying\n")
        self.assert_step(every.until_progress(), b"", (3, 10, "copying"))
        self.write(b"out\n!garbage\n!50% half\n")
        chunks = every.until_progress()
        self.assertEqual(progress_of(chunks[-1].progress), (50, 100, "half"))
        self.assertEqual(progress_of(self.get(run.run_id).progress), (50, 100, "half"))
        self.end_input()
        rest = every.rest()
        self.assertEqual(data_of(chunks + rest), b"out\n")  # the descriptor's lines are no output
        final = rest[-1].run
        self.assertEqual((final.status, progress_of(final.progress)),
                         (R.RUN_STATUS_COMPLETED, (50, 100, "half")))
        self.assertEqual(final.stdout_bytes, 4)

    def test_module_without_progress(self):
        run = self.stub.StartRun(R.StartRunRequest(module_id="plain"), timeout=WAIT)
        chunks = list(self.stub.StreamOutput(R.StreamOutputRequest(run_id=run.run_id, follow=True),
                                             timeout=WAIT))
        self.assertEqual(data_of(chunks), b"PROGRESS 1/2\n")
        self.assertFalse(any(c.HasField("progress") for c in chunks))
        self.assertFalse(chunks[-1].run.HasField("progress"))


if __name__ == "__main__":
    unittest.main()
