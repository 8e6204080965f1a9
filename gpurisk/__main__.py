"""``python -m gpurisk ...``: the ``gpurisk`` command, for an environment without its script on PATH."""

import sys

from .cli import main

if __name__ == "__main__":  # importing the module (as a walk over the package does) runs nothing
    sys.exit(main())
