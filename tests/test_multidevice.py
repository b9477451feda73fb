"""Runs ``tests/multidevice`` on 8 fake CPU devices, in a subprocess.

``--xla_force_host_platform_device_count`` only takes effect if it is set
before jax is imported, and this process imported jax long ago; so a fresh
pytest runs that folder with the flag, on the CPU platform, compiled with
XLA's default options (the suite's fast-compile flags removed).
"""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_the_multidevice_suite_passes_on_8_cpu_devices():
    env = dict(os.environ, GRADXFORM_DEFAULT_COMPILE="1")
    fast = ("--xla_cpu_use_fusion_emitters=", "--xla_backend_optimization_level=")
    flags = [f for f in env.get("XLA_FLAGS", "").split() if not f.startswith(fast)]
    env["XLA_FLAGS"] = " ".join([*flags, "--xla_force_host_platform_device_count=8"])
    env["JAX_PLATFORMS"] = "cpu"
    result = subprocess.run(
        # Spread its tests, not its files, over the workers: test_sharding.py holds most of them.
        [sys.executable, "-m", "pytest", "tests/multidevice", "-q", "-p", "no:cacheprovider",
         "--dist", "load"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=1200,
    )
    report = result.stdout[-20000:] + result.stderr[-5000:]
    assert result.returncode == 0, report
    assert " passed" in result.stdout and "skipped" not in result.stdout.splitlines()[-1], report
