import os
import tempfile

import pytest

# Kernel builds go to a per-session cache so tests never depend on a user's cache.
os.environ.setdefault("GPURISK_CACHE_DIR", tempfile.mkdtemp(prefix="gpurisk-test-cache-"))


def _gpu():
    from gpurisk.backend import gpu_available

    return gpu_available()


requires_gpu = pytest.mark.skipif(not _gpu(), reason="needs a CUDA GPU (CuPy reports none)")
