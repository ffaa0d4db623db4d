"""End-to-end runs of the Snakemake workflow on a tiny config in a temporary directory."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import pytest
import yaml

from calofast import io
from calofast.datasets import simulate_dataset

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parent


def snakemake(repo: Path, workdir: Path, *args: str, check: bool = True, timeout: int = 600):
    """Run the workflow's Snakefile in ``workdir``; return the completed process."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(repo / "Snakefile"), "-d", str(workdir), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


def planned_jobs(proc) -> list[tuple[str, str]]:
    """(rule, wildcards) of the jobs a dry run lists."""
    jobs, rule = [], None
    for line in (proc.stdout + proc.stderr).splitlines():
        m = re.match(r"^(?:local)?rule (\w+):", line.strip())
        if m:
            rule = m.group(1)
            jobs.append((rule, ""))
        m = re.match(r"^wildcards: (.*)$", line.strip())
        if m and jobs:
            jobs[-1] = (jobs[-1][0], m.group(1))
    return jobs


def write_config(workdir: Path, local_file: Path, mutate=None) -> dict:
    """The e2e config plus a ``local`` dataset reading ``local_file``, written to workdir/config.yaml."""
    cfg = yaml.safe_load((HERE / "config.yaml").read_text())
    cfg["datasets"]["local_ild"] = {
        "source": "local",
        "geometry": "ild_siw_ecal",
        "particle": "photon",
        "energy": {"distribution": "uniform", "min_gev": 10, "max_gev": 100},
        "local": {"path": str(local_file)},
    }
    if mutate:
        mutate(cfg)
    (workdir / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return cfg


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, repo_root):
    """The tiny workflow run to completion once; tests copy it before changing it."""
    workdir = tmp_path_factory.mktemp("e2e")
    local_file = tmp_path_factory.mktemp("inputs") / "ild_local.h5"
    local = {
        "name": "local_src",
        "source": "synthetic",
        "geometry": "ild_siw_ecal",
        "particle": "photon",
        "n_showers": 30,
        "seed": 3,
        "energy": {"distribution": "uniform", "min_gev": 10, "max_gev": 100},
    }
    simulate_dataset(local, local_file, progress=False)
    write_config(workdir, local_file)
    snakemake(repo_root, workdir, "--cores", "2")
    return workdir, local_file


def test_default_target_builds_every_stage(finished_run):
    workdir = finished_run[0]
    for ds in ("lcd_ele", "atlas_photon", "ild_photon_50", "local_ild"):
        with h5py.File(workdir / "data" / ds / "showers.h5") as f:
            io.check_canonical(f, ds)
        for ext in ("png", "pdf", "json"):
            assert (workdir / "results" / ds / f"quicklook.{ext}").stat().st_size > 0
        assert (workdir / "logs" / "quicklook" / f"{ds}.log").exists()
    for ds, prep in (
        ("lcd_ele", "lcd_100_200"),
        ("atlas_photon", "atlas_norm"),
        ("ild_photon_50", "ild50_pooled"),
        ("local_ild", "local_log"),
    ):
        summary = json.loads((workdir / "results" / ds / "preprocessed" / prep / "transforms.json").read_text())
        n = 0
        for split in ("train", "validation", "test"):
            with h5py.File(workdir / "results" / ds / "preprocessed" / prep / f"{split}.h5") as f:
                n += f["x"].shape[0]
        assert n == sum(summary["counts"].values()) > 0
    assert summary["cell_shape"] == [30, 30, 30]
    pooled = json.loads((workdir / "results/ild_photon_50/preprocessed/ild50_pooled/transforms.json").read_text())
    assert pooled["cell_shape"] == [10, 10]
    assert (workdir / "benchmarks" / "simulate_synthetic" / "lcd_ele.tsv").exists()


def test_rerun_has_nothing_to_do(finished_run, repo_root):
    workdir = finished_run[0]
    proc = snakemake(repo_root, workdir, "-n")
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_editing_one_preprocessing_value_reruns_only_that_job(finished_run, repo_root, tmp_path):
    workdir = tmp_path / "copy"
    shutil.copytree(finished_run[0], workdir)
    local_file = finished_run[1]
    write_config(workdir, local_file, lambda c: c["preprocessing"]["lcd_100_200"]["transforms"][0].update(exponent=0.8))
    jobs = planned_jobs(snakemake(repo_root, workdir, "-n"))
    assert sorted(jobs) == [("all", ""), ("preprocess", "dataset=lcd_ele, prep=lcd_100_200")]
    # a simulation setting reruns that dataset and everything downstream of it only
    write_config(workdir, local_file, lambda c: c["datasets"]["ild_photon_50"].update(n_showers=41))
    jobs = planned_jobs(snakemake(repo_root, workdir, "-n"))
    assert sorted(jobs) == [
        ("all", ""),
        ("preprocess", "dataset=ild_photon_50, prep=ild50_pooled"),
        ("quicklook", "dataset=ild_photon_50"),
        ("simulate_synthetic", "dataset=ild_photon_50"),
    ]


def test_report_collects_the_quicklooks(finished_run, repo_root, tmp_path):
    workdir = finished_run[0]
    report = tmp_path / "report.zip"
    snakemake(repo_root, workdir, "--report", str(report))
    import zipfile

    names = zipfile.ZipFile(report).namelist()
    assert sum(n.endswith("quicklook.png") for n in names) == 4


def test_slurm_profile_dry_run(finished_run, repo_root, tmp_path):
    workdir = tmp_path / "fresh"
    workdir.mkdir()
    write_config(workdir, finished_run[1])
    proc = snakemake(repo_root, workdir, "-n", "--workflow-profile", str(repo_root / "profiles" / "slurm"))
    out = proc.stdout + proc.stderr
    assert "slurm_partition=cpu" in out
    assert re.search(r"simulate_synthetic\s+3", out)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda c: c.update(colour="red"), "'colour' was unexpected"),
        (lambda c: c["datasets"]["lcd_ele"].update(geometry="cms_hgcal"), "'cms_hgcal' is not one of"),
        (
            lambda c: c["preprocessing"]["lcd_100_200"].update(energy_range_gev=[600, 700]),
            "600-700 GeV is not covered by dataset 'lcd_ele'",
        ),
    ],
)
def test_invalid_config_stops_the_workflow(repo_root, tmp_path, mutate, message):
    write_config(tmp_path, tmp_path / "in.h5", mutate)
    proc = snakemake(repo_root, tmp_path, "-n", check=False)
    assert proc.returncode != 0
    assert message in proc.stdout + proc.stderr


def test_missing_local_file_is_named(repo_root, tmp_path):
    write_config(tmp_path, tmp_path / "inputs" / "ild_local.h5")
    proc = snakemake(repo_root, tmp_path, "-n", check=False)
    assert proc.returncode != 0
    assert "inputs/ild_local.h5" in proc.stdout + proc.stderr


def test_corrupt_local_file_fails_without_output(repo_root, tmp_path):
    bad = tmp_path / "inputs" / "ild_local.h5"
    bad.parent.mkdir()
    bad.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    write_config(tmp_path, bad)
    proc = snakemake(repo_root, tmp_path, "--cores", "1", "data/local_ild/showers.h5", check=False)
    assert proc.returncode != 0
    assert "truncated or corrupt" in proc.stdout + proc.stderr
    out_dir = tmp_path / "data" / "local_ild"
    assert not out_dir.exists() or list(out_dir.iterdir()) == []
