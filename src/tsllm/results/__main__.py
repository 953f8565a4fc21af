"""``python -m tsllm.results``."""

import sys

from tsllm.results.cli import main

sys.exit(main())
