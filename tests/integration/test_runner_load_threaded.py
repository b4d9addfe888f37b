"""Runner volume tests (runner_load.LoadTests) with PRISMQ_RUN_MODE=threaded."""

import unittest

from prismq_testlib import ServerTestCase
from runner_load import LoadTests, load_server_kwargs


class LoadThreaded(LoadTests, ServerTestCase):
    MODE = "threaded"
    server_kwargs = load_server_kwargs(MODE)


if __name__ == "__main__":
    unittest.main()
