"""The GPU-only benchmarks must keep running as the code changes: their --smoke mode, at toy sizes on a CPU.

(They are never timed here: `make bench` and the GPU runs do that.)
"""
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).parent


@pytest.mark.parametrize("script", ["bench/bench_scale.py", "bench/bench_em_inf_gpu.py"])
def test_gpu_benchmark_runs_at_toy_size(script):
    res = subprocess.run([sys.executable, script, "--smoke"], capture_output=True, text=True, cwd=str(ROOT),
                         timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert res.returncode == 0, res.stderr[-2000:]
    assert "|---|" in res.stdout  # printed its markdown table
