"""``python -m gpurisk ...``: the ``gpurisk`` command, for an environment without its script on PATH."""

import sys

from .cli import main

sys.exit(main())
