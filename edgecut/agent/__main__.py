"""`python -m edgecut.agent agent run ...`: the agent CLI alone (starts faster than `edgecut`)."""

import sys

from .cli import main

sys.exit(main())
