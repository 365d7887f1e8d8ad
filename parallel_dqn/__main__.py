"""``python -m parallel_dqn`` is the ``parallel-dqn`` command."""

import sys

from parallel_dqn.cli import main

sys.exit(main())
