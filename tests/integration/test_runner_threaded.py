"""Runner behaviour (runner_behaviour.BehaviourTests) with PRISMQ_RUN_MODE=threaded."""

import unittest

from prismq_testlib import ServerTestCase
from runner_behaviour import BehaviourTests, behaviour_server_kwargs


class BehaviourThreaded(BehaviourTests, ServerTestCase):
    MODE = "threaded"
    server_kwargs = behaviour_server_kwargs(MODE)


if __name__ == "__main__":
    unittest.main()
