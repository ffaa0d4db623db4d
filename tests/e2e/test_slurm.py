"""The workflow on a real (single-node, throw-away) SLURM cluster through the SLURM profile.

`.ci/run` starts the cluster with `.ci/slurm.sh` when it can (root, Debian packages) and
sets CALOFAST_SLURM_TEST=1; elsewhere the test is skipped.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import h5py
import pytest
import yaml

from calofast.data import io
from tests.fakes.inputs import write_calochallenge
from tests.fakes.zenodo_server import FakeZenodo

pytestmark = pytest.mark.slow


@pytest.fixture
def slurm_partition():
    if os.environ.get("CALOFAST_SLURM_TEST") != "1":
        pytest.skip("no test SLURM cluster (run .ci/slurm.sh start and set CALOFAST_SLURM_TEST=1)")
    if shutil.which("sinfo") is None:
        pytest.fail("CALOFAST_SLURM_TEST=1 but sinfo is not installed")
    proc = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, timeout=30)
    if proc.returncode != 0 or not proc.stdout.strip():
        pytest.fail(f"CALOFAST_SLURM_TEST=1 but sinfo fails: {proc.stderr}")
    return proc.stdout.split()[0].rstrip("*")


def test_workflow_runs_on_slurm(slurm_partition, repo_root, tmp_path):
    cfg = yaml.safe_load((repo_root / "tests" / "e2e" / "config.yaml").read_text())
    cfg["preprocessing"].pop("local_log")  # its dataset is added by test_workflow.py only
    cfg.pop("models")  # training on the test cluster is covered elsewhere; keep this run short
    xml, cc = write_calochallenge(tmp_path, n=8)
    server = FakeZenodo()
    server.add_record("8099322", {cc.name: cc.read_bytes()})
    cfg["datasets"]["cc_toy"] = {
        "source": "zenodo",
        "geometry": "calochallenge",
        "binning": {"path": str(xml), "particle": "photon"},
        "particle": "photon",
        "energy": {"distribution": "log_uniform", "min_gev": 0.256, "max_gev": 4194.304},
        "format": "calochallenge",
        "zenodo": {"record": 8099322, "files": ["dataset_toy_*.hdf5"], "api_base": server.api},
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    cmd = [
        "timeout", "-k", "10", "500",
        sys.executable, "-m", "snakemake", "-s", str(repo_root / "Snakefile"), "-d", str(tmp_path),
        "--workflow-profile", str(repo_root / "profiles" / "slurm"),
        "--default-resources", f"slurm_partition={slurm_partition}", "mem_mb=500", "runtime=10",
        "--set-resources", "simulate_synthetic:mem_mb=1000", "preprocess:mem_mb=1000",
        "--set-threads", "simulate_synthetic=1",
        "--jobs", "4",
        # no accounting database on the test cluster: poll squeue, and poll early
        "--slurm-status-command", "squeue",
        "--slurm-init-seconds-before-status-checks", "1",
    ]  # fmt: skip
    with server:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=560)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    # 4 simulations, 5 preprocessings, 1 conversion, 5 quick-looks go to SLURM; the download runs locally
    assert out.count("has been submitted with SLURM jobid") == 15
    assert "localrule download_zenodo:" in out
    for ds in ("lcd_ele", "atlas_photon", "ild_photon_50", "ild_pion", "cc_toy"):
        with h5py.File(tmp_path / "data" / ds / "showers.h5") as f:
            io.check_canonical(f, ds)
        assert (tmp_path / "results" / ds / "quicklook.png").exists()
