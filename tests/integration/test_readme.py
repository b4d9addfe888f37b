"""README.md's code blocks, run as written, in order, so that they cannot rot.

Each fenced block's language tag says what happens to it:
  ```sh       run with `bash -e` (a failing command fails the block)
  ```python   run with /usr/bin/python3; a line `print(...)  # WORD` (WORD in capitals,
              e.g. `# SERVING`) also promises WORD as a line of the block's stdout
  ```console  not run: set-up commands (scripts/run.sh starts a foreground server,
              scripts/test.sh runs this test, apt-get needs root and the network)
A block with any other tag, or none, fails the test: a new block must choose.

The blocks run one after another (a later block may use what an earlier one made, as the
Python ones use the stubs the `sh` blocks generate), each bounded in time, against the
built binaries ($PRISMQ_BIN, else build/bin) and a prismqd this test starts on the
embedded default configuration with a temporary --data-dir, as scripts/run.sh would.
What differs from a user's shell, and nothing else:
  - the working directory is a temporary stand-in for the repository root: build/bin
    holds links to the binaries in $PRISMQ_BIN, every other top-level entry of the
    repository but build/ is a link to the real one, so what the blocks create there
    (certs/, var-tls/) stays in the temporary tree;
  - `/tmp/` in a block is the temporary directory (/tmp/pb is not shared with anyone);
  - port 50051, the default the README's commands rely on, is the port of this test's
    prismqd (chosen by the kernel: 50051 may be taken on a test machine), both in the
    blocks' text and, for the CLI's default target, in $PRISMQ_TARGET; 50443 (the TLS
    block's own prismqd) is a port found free just before the block runs;
  - $PRISMQ_TLS_* of the caller's environment are removed.
Whatever a block leaves running (its process group) is killed when it ends.
"""

import os
import re
import signal
import socket
import subprocess
import unittest

from prismq_testlib import BIN_DIR, PROTO_DIR, WAIT, ServerTestCase, temp_dir

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
README = os.path.join(REPO, "README.md")
# A block runs a few short commands (protoc, a TLS server's start, a run or two).
BLOCK_BOUND = 3 * WAIT

RUN = {"sh": ["bash", "-e"], "python": ["/usr/bin/python3"]}
NOT_RUN = {"console"}
FENCE = re.compile(r"^```\s*(\S*)")
# print(...)  # SERVING  /  print(...)   # RUN_STATUS_CANCELLED: why
PROMISE = re.compile(r"^\s*print\(.*\)\s*#\s*([A-Z][A-Z0-9_]+)\b")


def read_blocks(path):
    """The fenced blocks of a Markdown file: a list of (line, tag, text), `line` being
    the 1-based line of the opening fence. Raises ValueError on a fence left open."""
    blocks = []
    opened = None
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            m = FENCE.match(line)
            if opened is None:
                if m:
                    opened = (n, m.group(1), [])
            elif m and not m.group(1):
                blocks.append((opened[0], opened[1], "".join(opened[2])))
                opened = None
            else:
                opened[2].append(line)
    if opened is not None:
        raise ValueError("%s:%d: code block never closed" % (path, opened[0]))
    return blocks


def free_port():
    """A TCP port on 127.0.0.1 free right now (bound with port 0, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stand_in_root():
    """A temporary directory that stands for the repository root (see the docstring)."""
    root = temp_dir("prismq-readme-")
    for name in os.listdir(REPO):
        if name.startswith(".") or name == "build":
            continue
        os.symlink(os.path.join(REPO, name), os.path.join(root, name))
    # The stubs come from the proto directory the other tests use.
    os.remove(os.path.join(root, "proto"))
    os.symlink(PROTO_DIR, os.path.join(root, "proto"))
    # build/bin holds a link per binary, not a link to $PRISMQ_BIN: a block that builds
    # (scripts/run.sh, say) replaces the links, never the binaries the other tests use.
    bin_dir = os.path.join(root, "build", "bin")
    os.makedirs(bin_dir)
    for name in os.listdir(BIN_DIR):
        os.symlink(os.path.join(os.path.abspath(BIN_DIR), name), os.path.join(bin_dir, name))
    return root


class Readme(ServerTestCase):
    """One prismqd on the default configuration (ServerTestCase); the blocks run against it."""

    def test_every_block_has_a_known_tag(self):
        bad = ["README.md:%d: ```%s" % (n, tag) for n, tag, _ in read_blocks(README)
               if tag not in RUN and tag not in NOT_RUN]
        self.assertEqual(bad, [], "code blocks without a known tag (%s to run, %s not to run)"
                         % (", ".join(sorted(RUN)), ", ".join(sorted(NOT_RUN))))

    def test_blocks_run_as_written(self):
        blocks = [b for b in read_blocks(README) if b[1] in RUN]
        self.assertGreater(len(blocks), 0, "no block to run in README.md")
        root = stand_in_root()
        scratch = temp_dir("prismq-readme-tmp-")
        env = {k: v for k, v in os.environ.items() if not k.startswith("PRISMQ_TLS_")}
        env["PRISMQ_TARGET"] = self.server.addr
        for n, tag, text in blocks:
            with self.subTest(block="README.md:%d" % n):
                ports = {"50051": str(self.server.port), "50443": str(free_port())}
                text = re.sub(r"\b(50051|50443)\b", lambda m: ports[m.group(1)], text)
                text = text.replace("/tmp/", scratch + "/")
                self.run_block(n, tag, text, root, env)

    def run_block(self, n, tag, text, cwd, env):
        """Runs one block (already rewritten) in its own process group; fails the test
        with the block and its output unless it exits 0 in time and keeps its promises."""
        path = os.path.join(temp_dir("prismq-readme-block-"), "block%d.%s" % (n, tag))
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        out_path, err_path = path + ".out", path + ".err"
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            proc = subprocess.Popen(RUN[tag] + [path], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=err, start_new_session=True)
            try:
                code = proc.wait(timeout=BLOCK_BOUND)
            except subprocess.TimeoutExpired:
                code = "timed out after %.0f s" % BLOCK_BOUND
            finally:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)   # a server the block left behind
                except ProcessLookupError:
                    pass
                proc.wait()
        with open(out_path, encoding="utf-8", errors="replace") as f:
            stdout = f.read()
        with open(err_path, encoding="utf-8", errors="replace") as f:
            stderr = f.read()
        report = ("README.md:%d (```%s, run in %s):\n%s--- stdout ---\n%s--- stderr ---\n%s"
                  % (n, tag, cwd, text, stdout, stderr))
        self.assertEqual(code, 0, "exit %s\n%s" % (code, report))
        if tag == "python":
            lines = stdout.splitlines()
            for line in text.splitlines():
                m = PROMISE.match(line)
                if m:
                    self.assertIn(m.group(1), lines, "promised output %s missing\n%s"
                                  % (m.group(1), report))


if __name__ == "__main__":
    unittest.main()
