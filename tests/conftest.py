import os
import tempfile

import pytest

# Kernel builds go to a per-session cache so tests never depend on a user's cache.
os.environ.setdefault("GPURISK_CACHE_DIR", tempfile.mkdtemp(prefix="gpurisk-test-cache-"))

# Subprocesses (the CLI tests) import the checkout under test, not whatever copy is installed.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ["PYTHONPATH"] = os.pathsep.join([_ROOT, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))])


def _gpu():
    from gpurisk.backend import gpu_available

    return gpu_available()


requires_gpu = pytest.mark.skipif(not _gpu(), reason="needs a CUDA GPU (CuPy reports none)")
