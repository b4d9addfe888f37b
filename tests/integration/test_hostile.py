"""The hostile-client battery (hostile.py, issue 11), run once against its own prismqd:
every attack must be refused cleanly (the answer each expects, the server alive and
answering Health/Check after each group), and the figures held during the attack (peak
RSS, the well-behaved client's completed runs, p99 latency and errors, undeclared
processes, runs recorded, SIGTERM to exit 0) must be within the bounds stated at the
top of hostile.py. The report (what was tried, what the server answered, the figures)
is printed on stderr either way.

Skipped under PRISMQ_VALGRIND=1: memcheck makes the server 20-50 times slower, so the
latency, RSS and time bounds mean nothing, and the battery's counts (a thousand
connections, 10,000-frame floods, 64 MiB of output) would not fit ctest's timeout."""

import sys
import unittest

import hostile
from prismq_testlib import VALGRIND


@unittest.skipIf(VALGRIND, "timing and memory bounds are meaningless under valgrind")
class Hostile(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.report = hostile.run_battery()
        sys.stderr.write("\n%s\n" % cls.report.table())

    def test_every_attack_refused_cleanly(self):
        self.assertTrue(self.report.attempts)
        for a in self.report.attempts:
            with self.subTest(attack=a.group, tried=a.tried):
                self.assertTrue(a.ok, "%s: %s -> %s (expected %s)" % (a.group, a.tried, a.answered, a.expect))

    def test_figures_within_bounds(self):
        self.assertTrue(self.report.figures)
        for f in self.report.figures:
            with self.subTest(figure=f.name):
                self.assertTrue(f.ok, "%s = %s (bound %s)" % (f.name, f.value, f.bound))


if __name__ == "__main__":
    unittest.main()
