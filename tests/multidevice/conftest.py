"""Tests that need 8 devices run only where there are 8 (see ``tests/test_multidevice.py``).

On one CPU, ``tests/test_multidevice.py`` starts pytest on this folder in a
subprocess with ``XLA_FLAGS=--xla_force_host_platform_device_count=8``, which
must be set before jax is imported; the main run collects nothing here.
"""

import jax

DEVICES_NEEDED = 8

if jax.device_count() < DEVICES_NEEDED:
    collect_ignore_glob = ["test_*.py"]
