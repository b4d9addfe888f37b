"""Runner behaviour (runner_behaviour.BehaviourTests) with PRISMQ_RUN_MODE=async."""

import unittest

from prismq_testlib import ServerTestCase
from runner_behaviour import BehaviourTests, behaviour_server_kwargs


class BehaviourAsync(BehaviourTests, ServerTestCase):
    MODE = "async"
    server_kwargs = behaviour_server_kwargs(MODE)


if __name__ == "__main__":
    unittest.main()
