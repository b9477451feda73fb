"""A tiny run of the demo, as a user would start it."""

import subprocess
import sys


def test_demo_quick_run_prints_table_and_writes_plot(tmp_path):
    plot = tmp_path / "curves.png"
    result = subprocess.run(
        [sys.executable, "-m", "gradxform.demo", "--quick", "--plot", str(plot)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "adam" in result.stdout and "accuracy" in result.stdout.lower()
    assert plot.exists() and plot.stat().st_size > 1000
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
