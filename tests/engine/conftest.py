"""Every test here runs on one PyTorch CPU thread (see tests/torch_threads.py)."""

from tests.torch_threads import one_cpu_thread  # noqa: F401  (an autouse fixture, registered by import)
