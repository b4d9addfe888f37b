"""The prismq command line showing a run's progress (client/cli/cli-progress.c) against a
real prismqd whose module reports it through its progress pattern:

  - `run -f` and `wait` on a pseudo-terminal draw the status line (percentage, bar,
    count, rate, message) on it, and what the terminal shows in the end is the run's
    output, every line whole, then the last state of the line, then (wait) the outcome;
  - without a terminal, `run -f` writes plain "progress ..." lines on stderr and the
    output byte for byte on stdout, `wait` prints only its outcome: no escape codes;
  - TERM=dumb gets the plain lines, --no-progress and --json none.

The module steps its progress when the test writes a line to a fifo, and the test waits
for what each step shows before the next one: no sleeps."""

import fcntl
import json
import os
import re
import selectors
import struct
import subprocess
import sys
import termios
import time
import unittest

from prismq_testlib import BIN_DIR, WAIT, ServerTestCase, read_until, temp_dir
from runner_common import config_yaml

PRISMQ = os.path.join(BIN_DIR, "prismq")
COLS = 100

# Prints "started", then for each line "DONE/TOTAL MESSAGE" read from the fifo a
# progress line and an output line; exits 0 at the line "end".
STEPS = r"""
import sys
print("started", flush=True)
with open(sys.argv[1]) as steps:
    for step in iter(steps.readline, "end\n"):
        print("PROGRESS " + step.rstrip("\n"), flush=True)
        print("after " + step.split("/")[0], flush=True)
"""
CONFIG = config_yaml([{
    "id": "steps", "argv": [sys.executable, "-c", STEPS, "{fifo}"],
    "parameters": [{"name": "fifo", "required": True}],
    "progress": {"pattern": r"^PROGRESS (?P<done>\d+)/(?P<total>\d+)(?: (?P<message>.*))?$"},
}], sections={"shutdown": {"runs": "cancel", "grace_ms": 1000}})  # a failed test's run
ESCAPE = re.compile(rb"\x1b\[?[0-9;?]*[A-Za-z]?")


def cli_env(extra=None):
    env = {k: v for k, v in os.environ.items()
           if k != "PRISMQ_TARGET" and not k.startswith("PRISMQ_TLS_")}
    env.update(TERM="xterm")
    env.update(extra or {})
    return env


def screen(data):
    """The lines a terminal shows after `data`, which may hold text, \\r, \\n (the
    terminal's \\r\\n) and ESC[K (erase to the end of the line), and no line as wide as
    the terminal."""
    lines, line, col = [], [], 0
    text = data.decode("utf-8", "replace")
    i = 0
    while i < len(text):
        if text.startswith("\x1b[K", i):
            del line[col:]
            i += 3
            continue
        ch = text[i]
        if ch == "\r":
            col = 0
        elif ch == "\n":
            lines.append("".join(line))
            line, col = [], 0
        else:
            line[col:col + 1] = [ch]
            col += 1
        i += 1
    if line:
        lines.append("".join(line))
    return lines


class Terminal:
    """A program on a pseudo-terminal COLS columns wide; `data` is what it wrote."""

    def __init__(self, argv, env):
        self.master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, COLS, 0, 0))
        try:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=slave,
                                         stderr=slave, env=env)
        finally:
            os.close(slave)
        self.data = b""
        self.ended = False

    def _read(self, deadline):
        with selectors.DefaultSelector() as sel:
            sel.register(self.master, selectors.EVENT_READ)
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                raise AssertionError("nothing more within %.0f s: %r" % (WAIT, self.data))
        try:
            part = os.read(self.master, 65536)
        except OSError:  # EIO: the program and its children have closed the terminal
            part = b""
        self.data += part
        self.ended = not part

    def read_until(self, pattern):
        """Reads until the data matches the regular expression `pattern` (bytes);
        returns the match."""
        deadline = time.monotonic() + WAIT
        while not re.search(pattern, self.data):
            if self.ended:
                raise AssertionError("ended without %r: %r" % (pattern, self.data))
            self._read(deadline)
        return re.search(pattern, self.data)

    def finish(self):
        """Reads to the end; returns the program's exit status."""
        deadline = time.monotonic() + WAIT
        while not self.ended:
            self._read(deadline)
        os.close(self.master)
        return self.proc.wait(WAIT)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        if not self.ended:
            os.close(self.master)


class ProgressCase(ServerTestCase):
    server_kwargs = {"config_yaml": CONFIG}

    def setUp(self):
        self.steps = -1
        self.addCleanup(self.close_steps)
        self.new_steps()

    def new_steps(self):
        """A new fifo for the next run's steps. Opened read-write, it never blocks us,
        and what we write waits there for the module, however late it opens it."""
        self.close_steps()
        self.fifo = os.path.join(temp_dir(), "steps")
        os.mkfifo(self.fifo)
        self.steps = os.open(self.fifo, os.O_RDWR)

    def close_steps(self):
        if self.steps >= 0:
            os.close(self.steps)
            self.steps = -1

    def step(self, line):
        os.write(self.steps, line.encode() + b"\n")

    def end_steps(self):
        self.step("end")

    def argv(self, *args):
        return [PRISMQ, "--target", self.server.addr] + list(args)

    def terminal(self, *args, env=None):
        t = Terminal(self.argv(*args), cli_env(env))
        self.addCleanup(t.kill)
        return t

    def start(self):
        p = subprocess.run(self.argv("run", "steps", "-p", "fifo=" + self.fifo),
                           capture_output=True, timeout=WAIT, env=cli_env(), check=True)
        return p.stdout.decode().strip()

    def assert_only_erasing(self, data):
        """The only escape sequence written is ESC[K."""
        self.assertEqual(set(ESCAPE.findall(data)), {b"\x1b[K"}, data)

    def bar(self, pct, count, message, rate="(?: [0-9.]+/s)?"):
        """The status line's pattern: percentage, a bar of 30 as full, the count, the
        elapsed time, the rate (by default, if any) and the message."""
        fill = pct * 30 // 100
        return (r"%3d%% \[#{%d}\.{%d}\] %s \d:\d\d%s %s"
                % (pct, fill, 30 - fill, re.escape(count), rate, re.escape(message)))

    def test_run_follow_on_a_terminal(self):
        t = self.terminal("run", "steps", "-p", "fifo=" + self.fifo, "-f")
        t.read_until(rb"started\r\n")
        self.step("1/4 one")
        m = t.read_until(rb"\r 25% \[#{7}\.{23}\] 1/4 0:(\d\d) one\x1b\[K")
        # The elapsed time goes on alone. Two more seconds on the line, the report is
        # over a second old: the next one gives a rate.
        later = b"0:%02d" % (int(m.group(1)) + 2)
        t.read_until(rb"\r 25% \[#{7}\.{23}\] 1/4 " + later + rb" one\x1b\[K")
        self.step("2/4 two")
        t.read_until(self.bar(50, "2/4", "two", rate=r" [0-9.]+/s").encode())
        self.step("4/4 done")
        t.read_until(rb"after 4\r\n")
        self.end_steps()
        self.assertEqual(t.finish(), 0, t.data)
        self.assert_only_erasing(t.data)
        lines = screen(t.data)
        self.assertEqual(lines[:-1], ["started", "PROGRESS 1/4 one", "after 1",
                                      "PROGRESS 2/4 two", "after 2", "PROGRESS 4/4 done",
                                      "after 4"], t.data)
        self.assertRegex(lines[-1], "^" + self.bar(100, "4/4", "done", rate=r" [0-9.]+/s") + "$")
        self.assertLess(len(lines[-1]), COLS)

    def test_wait_on_a_terminal(self):
        run_id = self.start()
        t = self.terminal("wait", run_id)
        self.step("1/4 one")
        t.read_until(rb"\r 25% \[#{7}\.{23}\] 1/4 \d:\d\d one\x1b\[K")
        self.step("3/4 three")
        t.read_until(self.bar(75, "3/4", "three").encode())
        self.step("4/4 done")
        self.end_steps()
        self.assertEqual(t.finish(), 0, t.data)
        self.assert_only_erasing(t.data)
        lines = screen(t.data)
        self.assertEqual(len(lines), 2, t.data)
        self.assertRegex(lines[0], "^" + self.bar(100, "4/4", "done") + "$")
        self.assertEqual(lines[1], run_id + " COMPLETED")

        # --no-progress and --json show none; the Run's JSON has the last report.
        t = self.terminal("wait", run_id, "--no-progress")
        self.assertEqual(t.finish(), 0, t.data)
        self.assertEqual(t.data, run_id.encode() + b" COMPLETED\r\n")
        t = self.terminal("wait", run_id, "--json")
        self.assertEqual(t.finish(), 0, t.data)
        self.assertNotIn(b"\x1b", t.data)
        progress = json.loads(t.data)["progress"]
        self.assertEqual((progress["done"], progress["total"], progress["message"]),
                         (4, 4, "done"))

    def test_plain_lines_without_a_terminal(self):
        p = subprocess.Popen(self.argv("run", "steps", "-p", "fifo=" + self.fifo, "-f"),
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=cli_env())
        self.addCleanup(p.kill)
        err = b""
        for step, line in (("1/4 one", b"progress 1/4 25% one\n"),
                           ("2/4 two", b"progress 2/4 50% two\n")):
            self.step(step)
            err += read_until(p.stderr, line)
        self.step("4/4 done")
        self.end_steps()
        out, rest = p.communicate(timeout=WAIT)
        self.assertEqual(p.returncode, 0, err + rest)
        self.assertEqual(out, b"started\nPROGRESS 1/4 one\nafter 1\nPROGRESS 2/4 two\nafter 2\n"
                              b"PROGRESS 4/4 done\nafter 4\n")
        self.assertEqual(err + rest, b"progress 1/4 25% one\nprogress 2/4 50% two\n"
                                     b"progress 4/4 100% done\n")

        # wait without a terminal: plain lines while the run goes on.
        self.new_steps()
        run_id = self.start()
        p = subprocess.Popen(self.argv("wait", run_id), stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=cli_env())
        self.addCleanup(p.kill)
        self.step("1/2 half")
        err = read_until(p.stderr, b"progress 1/2 50% half\n")
        self.step("2/2 all")
        self.end_steps()
        out, rest = p.communicate(timeout=WAIT)
        self.assertEqual((p.returncode, out, err + rest),
                         (0, run_id.encode() + b" COMPLETED\n",
                          b"progress 1/2 50% half\nprogress 2/2 100% all\n"))
        # ... and of a run that had ended, its outcome only; logs: no progress.
        p = subprocess.run(self.argv("wait", run_id), capture_output=True, timeout=WAIT,
                           env=cli_env())
        self.assertEqual((p.returncode, p.stdout, p.stderr),
                         (0, run_id.encode() + b" COMPLETED\n", b""))
        p = subprocess.run(self.argv("logs", run_id), capture_output=True, timeout=WAIT,
                           env=cli_env())
        self.assertEqual(p.stderr, b"")

    def test_no_progress_and_dumb_terminals(self):
        p = subprocess.Popen(self.argv("run", "steps", "-p", "fifo=" + self.fifo, "-f",
                                       "--no-progress"),
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=cli_env())
        self.addCleanup(p.kill)
        self.step("1/2 half")
        out = read_until(p.stdout, b"after 1\n")
        self.end_steps()
        rest, err = p.communicate(timeout=WAIT)
        self.assertEqual((p.returncode, err), (0, b""))
        self.assertEqual(out + rest, b"started\nPROGRESS 1/2 half\nafter 1\n")

        # A terminal without cursor controls: the plain line, between output lines.
        self.new_steps()
        t = self.terminal("run", "steps", "-p", "fifo=" + self.fifo, "-f", env={"TERM": "dumb"})
        self.step("1/2 half")
        t.read_until(rb"progress 1/2 50% half\r\n")
        self.end_steps()
        self.assertEqual(t.finish(), 0, t.data)
        self.assertNotIn(b"\x1b", t.data)
        lines = screen(t.data)
        lines.remove("progress 1/2 50% half")
        self.assertEqual(lines, ["started", "PROGRESS 1/2 half", "after 1"])


if __name__ == "__main__":
    unittest.main()
