"""Static checks of the repository, run as part of the suite (and so in CI)."""

import shutil
import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    "cmd",
    [
        ["ruff", "check", "."],
        ["ruff", "format", "--check", "."],
        ["snakefmt", "--check", "."],
        [sys.executable, "-m", "snakemake", "--lint", "-n"],
    ],
    ids=["ruff-check", "ruff-format", "snakefmt", "snakemake-lint"],
)
def test_static_check(cmd, repo_root):
    if shutil.which(cmd[0]) is None and cmd[0] != sys.executable:
        pytest.fail(f"{cmd[0]} is not installed; install the test extras: pip install -e '.[test]'")
    proc = subprocess.run(cmd, cwd=repo_root, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
