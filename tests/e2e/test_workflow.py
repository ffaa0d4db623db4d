"""End-to-end runs of the Snakemake workflow on a tiny config in a temporary directory."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from calofast.benchmark.timing import CSV_COLUMNS
from calofast.data import io
from calofast.data.datasets import simulate_dataset
from calofast.data.provenance import sha256_file
from calofast.geant4.run import available as geant4_available
from calofast.simulation.shapes import TARGETS
from tests.fakes.inputs import ILD_LAYER_EDGES, ild_hits, write_calochallenge, write_root
from tests.fakes.zenodo_server import FakeZenodo

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


def write_config(workdir: Path, inputs: dict, mutate=None) -> dict:
    """The e2e config plus datasets from the ``inputs`` fixture, written to workdir/config.yaml."""
    cfg = yaml.safe_load((HERE / "config.yaml").read_text())
    ild = {"particle": "photon", "energy": {"distribution": "uniform", "min_gev": 10, "max_gev": 100}}
    cfg["datasets"]["local_ild"] = {
        "source": "local",
        "geometry": "ild_siw_ecal",
        **ild,
        "local": {"path": str(inputs["local"])},
    }
    cfg["datasets"]["root_ild"] = {
        "source": "root",
        "geometry": "ild_siw_ecal",
        **ild,
        "root": {
            "path": str(inputs["root"]),
            "tree": "photonSIM",
            "depth_axis": "y",
            "u_axis": "x",
            "v_axis": "z",
            "origin_mm": [0.0, 0.0],
            "layer_edges_mm": ILD_LAYER_EDGES,
        },
    }
    cfg["datasets"]["cc_toy"] = {
        "source": "zenodo",
        "geometry": "calochallenge",
        "binning": {"path": str(inputs["binning"]), "particle": "photon"},
        "particle": "photon",
        "energy": {"distribution": "log_uniform", "min_gev": 0.256, "max_gev": 4194.304},
        "format": "calochallenge",
        "zenodo": {"record": 8099322, "files": ["dataset_toy_*.hdf5"], "api_base": inputs["api"]},
        "export": ["calochallenge"],
    }
    if mutate:
        mutate(cfg)
    (workdir / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return cfg


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Input files of every source: a canonical file, a ROOT hit tree and a CaloChallenge
    record served by a fake Zenodo on 127.0.0.1 (alive for the whole module)."""
    root = tmp_path_factory.mktemp("inputs")
    ild = {
        "name": "src",
        "geometry": "ild_siw_ecal",
        "particle": "photon",
        "n_showers": 30,
        "seed": 3,
        "energy": {"distribution": "uniform", "min_gev": 10, "max_gev": 100},
    }
    local = simulate_dataset(ild, root / "ild_local.h5", progress=False)
    with h5py.File(local) as f:
        write_root(root / "ild_hits.root", ild_hits(f["showers"][:10], f["energy"][:10]))
    xml, cc = write_calochallenge(root, n=12)
    with FakeZenodo() as server:
        server.add_record("8099322", {cc.name: cc.read_bytes()})
        yield {
            "local": local,
            "root": root / "ild_hits.root",
            "binning": xml,
            "cc": cc,
            "api": server.api,
            "server": server,
        }


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, repo_root, inputs):
    """The tiny workflow run to completion once; tests copy it before changing it."""
    workdir = tmp_path_factory.mktemp("e2e")
    write_config(workdir, inputs)
    snakemake(repo_root, workdir, "--cores", "2")
    return workdir


def test_default_target_builds_every_stage(finished_run, inputs):
    workdir = finished_run
    for ds in ("lcd_ele", "atlas_photon", "ild_photon_50", "local_ild", "root_ild", "cc_toy"):
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
    # the VAE-GAN: two disjoint training sets, each selected per seed, and its amplification study
    sets = workdir / "results/ild_photon_50/preprocessed/ild50_pooled/train-sets/2x20-s1"
    rows = [h5py.File(sets / f"set-{k}.h5")["index"][:] for k in (1, 2)]
    assert len(rows[0]) == len(rows[1]) == 20 and not set(rows[0]) & set(rows[1])
    for name in ("vaegan_tiny", "vaegan_tiny-set-2"):
        sel = json.loads((workdir / f"results/ild_photon_50/{name}/stage-all/selection.json").read_text())
        assert sel["column"] == "observables_jsd" and len(sel["epochs"]) == 2
    study = workdir / "results/ild_photon_50/vaegan_tiny/amplification"
    info = json.loads((study / "study.json").read_text())
    assert info["n_training_sets"] == 2 and info["n_train"] == 20
    amp = pd.read_csv(study / "amplification.csv")
    assert {"model", "kde", "histogram", "training"} <= set(amp["sample"])
    assert (study / "figures" / "observables.png").stat().st_size > 0
    assert not (workdir / "results/ild_photon_50/vaegan_tiny/validation").exists()  # pooled: the study validates
    assert (workdir / "benchmarks" / "simulate_synthetic" / "lcd_ele.tsv").exists()
    # the ROOT hits voxelise back onto the showers they were made from
    with h5py.File(inputs["local"]) as ref, h5py.File(workdir / "data/root_ild/showers.h5") as f:
        np.testing.assert_allclose(f["showers"][:], ref["showers"][:10], rtol=1e-5, atol=1e-6)
    # the 3DGAN stages, their selections, the generated showers and the comparison
    for stage, epochs in (("s1", [1]), ("s2", [1, 2])):
        base = workdir / f"results/lcd_ele/gan_tiny/stage-{stage}"
        info = json.loads((base / "selection.json").read_text())
        table = pd.read_csv(base / "selection.csv")
        assert list(table["epoch"]) == epochs and table["selected"].sum() == 1
        best = table.loc[table["score"].idxmin()]  # the lowest sampling-fraction error is kept
        assert best["selected"] == 1 and info["selected_epoch"] == best["epoch"]
        chosen = base / f"seed-1/checkpoints/epoch-{int(best['epoch']):04d}.pt"
        assert sha256_file(base / "selected.pt") == sha256_file(chosen) == info["checkpoint_sha256"]
    with h5py.File(workdir / "results/lcd_ele/gan_tiny/generated.h5") as f:
        attrs = io.check_canonical(f, "generated", "lcd_ecal")
        assert f["showers"].shape == (10, 51, 51, 25)
        assert attrs["provenance"]["stage"] == "s2"
    assert json.loads((workdir / "results/lcd_ele/gan_tiny/comparison.json").read_text())["n_generated"] == 10
    # the validation suite: metrics table, figures, judge
    val = workdir / "results/lcd_ele/gan_tiny/validation"
    metrics = pd.read_csv(val / "metrics.csv")
    assert {"observable", "kind", "value", "uncertainty", "baseline", "status"} <= set(metrics.columns)
    assert {"e_sum", "sf", "profile_z", "m2_x", "ks_hits", "ssim_xy", "correlation"} <= set(metrics["observable"])
    assert np.isfinite(metrics["value"]).any()
    figures = {p.stem for p in (val / "figures").glob("*.png")}
    assert {"profiles_log", "sampling_fraction", "moments_x", "ssim", "ks_distances"} <= figures
    judged = json.loads((val / "judge.json").read_text())
    # at most 10 showers per class (the smaller sample) in 2 folds: the AUC is the folds' mean
    with h5py.File(workdir / "results/lcd_ele/preprocessed/lcd_2_500/test.h5") as f:
        assert judged["folds"] == 2 and judged["n_per_class"] == min(10, f["x"].shape[0])
    for name in ("classifier_hlf", "classifier_voxels"):
        folds = judged[name]["fold_aucs"]
        assert len(folds) == 2 and judged[name]["auc"] == pytest.approx(np.mean(folds))
    assert (val / "judge.png").exists()
    # the speed benchmark: every variant and batch size, the reference simulator beside it
    bench = workdir / "results/lcd_ele/gan_tiny/benchmark"
    timing = pd.read_csv(bench / "timing.csv")
    assert list(timing.columns) == CSV_COLUMNS
    ok = timing[timing["status"] == "ok"]
    assert set(ok["variant"]) == {"plain_fp32", "fast_fp32", "fast_bf16"} and set(ok["batch_size"]) == {1, 3}
    np.testing.assert_allclose(ok["ms_per_shower"] * ok["showers_per_s"], 1000.0, rtol=1e-4)
    # the Getting-High WGAN on the hadronic dataset: constrainer pre-trained, showers generated
    training = json.loads((workdir / "results/ild_pion/ghwgan_tiny/stage-all/seed-1/training.json").read_text())
    assert training["prepared"]["constrainer_steps"] == 3 and len(training["history"]) == 2
    with h5py.File(workdir / "results/ild_pion/ghwgan_tiny/generated.h5") as f:
        io.check_canonical(f, "generated", "ild_ahcal")
        assert f["showers"].shape == (10, 25, 25, 48)
    assert (workdir / "results/ild_pion/ghwgan_tiny/validation/judge.json").exists()
    # the BIB-AE's three stages: the KDE stage's selected weights hold the KDE and the trained
    # post-processor, and generate the showers
    bib = workdir / "results/ild_pion/bibae_tiny"
    phases = [json.loads((bib / f"stage-{st}/seed-1/training.json").read_text())["phase"] for st in ("ae", "pp", "kde")]
    assert phases == ["bibae", "postprocess", "kde"]
    state = torch.load(bib / "stage-kde/selected.pt", map_location="cpu", weights_only=False)["model"]
    assert int(state["kde_count"]) == 20 and bool(state["pp_trained"])
    with h5py.File(bib / "generated.h5") as f:
        assert f["showers"].shape == (10, 25, 25, 48) and (f["showers"][:] >= 0).all()
    assert (ok["ms_per_shower_min"] <= ok["ms_per_shower"]).all() and (
        ok["ms_per_shower"] <= ok["ms_per_shower_max"]
    ).all()
    # the FLOP count: the fast rewrite needs fewer than the plain network
    flops = ok.groupby("variant")["gflop_per_shower"].first()
    assert flops["fast_fp32"] < flops["plain_fp32"]
    assert ok[ok["precision"] == "fp32"]["within_tolerance"].all()  # the exact rewrite
    info = json.loads((bench / "timing.json").read_text())
    np.testing.assert_allclose(
        ok["speedup_vs_reference"], info["reference_ms_per_shower"] / ok["ms_per_shower"], rtol=1e-4
    )
    assert np.isfinite(ok["output_difference"]).all() and info["hardware"]["cpu"]
    assert {"provenance", "matmul_probe_gflops", "flops_per_shower", "targets"} <= set(info)
    assert (bench / "timing.png").exists() and (bench / "timing.pdf").exists()
    ref = json.loads((workdir / "results/lcd_ele/benchmark/reference_simulator.json").read_text())
    ref_ok = [r for r in ref["rows"] if r["status"] == "ok"]
    assert ref["ms_per_shower"] == min(r["ms_per_shower"] for r in ref_ok) == info["reference_ms_per_shower"]
    # the dataset's speed table: the reference simulator, then the model's plain and fastest paths
    speed = pd.read_csv(workdir / "results/lcd_ele/summary/speed_table.csv")
    assert list(speed["simulator"]) == ["reference simulator", "gan_tiny", "gan_tiny"]
    assert list(speed["path"].iloc[1:]) == ["plain", "fastest"]
    assert speed["ms_per_shower"].iloc[2] == pytest.approx(ok["ms_per_shower"].min(), rel=1e-4)
    assert speed["speedup_vs_reference"].iloc[1] == pytest.approx(
        info["reference_ms_per_shower"] / ok[ok["variant"] == "plain_fp32"]["ms_per_shower"].min(), rel=1e-3
    )
    # the ATLAS VAE (with its scan) and WGAN-GP (two seeds) through every stage
    atlas = workdir / "results/atlas_photon"
    for seed in (1, 2):
        summary = json.loads((atlas / f"wgan_tiny/stage-all/seed-{seed}/training.json").read_text())
        assert summary["seed"] == seed and len(summary["history"]) == 2
    sel = json.loads((atlas / "wgan_tiny/stage-all/selection.json").read_text())
    assert {(e["seed"], e["epoch"]) for e in sel["epochs"]} == {(1, 1), (1, 2), (2, 1), (2, 2)}
    assert sel["selected_seed"] in (1, 2) and sel["metric"].startswith("covariance")
    vae_sel = json.loads((atlas / "vae_tiny/stage-all/selection.json").read_text())
    assert vae_sel["metric"].startswith("layer_response") and vae_sel["tolerances"]["fraction_points"] == 2.0
    table = pd.read_csv(atlas / "vae_tiny/stage-all/selection.csv")
    assert {"layer_response", "fraction_points", "response", "resolution", "covariance_distance"} <= set(table)
    assert table.loc[table["selected"] == 1, "layer_response"].item() == table["layer_response"].min()
    # the per-energy table of the dataset: the reference and both models at both energies
    energy = pd.read_csv(atlas / "summary/energy_table.csv")
    assert sorted(set(energy["sample"])) == ["reference", "vae_tiny", "wgan_tiny"]
    assert sorted(set(energy["energy_gev"].round(3))) == [4.096, 65.536]
    ref_rows = energy[energy["sample"] == "reference"]
    fractions = ref_rows[["frac_presampler", "frac_front", "frac_middle", "frac_back"]].sum(axis=1)
    np.testing.assert_allclose(fractions, 100.0, rtol=1e-6)
    assert (ref_rows["response"] > 0.8).all() and (ref_rows["response"] < 1.1).all()
    assert energy.loc[energy["sample"] != "reference", "within_targets"].notna().all()
    assert (atlas / "summary/layer_fractions_vs_energy.png").exists()
    assert not (workdir / "results/lcd_ele/summary/energy_table.csv").exists()  # 25 layers: no per-layer table
    with h5py.File(atlas / "preprocessed/atlas_norm/test.h5") as f:
        n_test, test_eta = f["x"].shape[0], f["eta"][:]
    for model in ("vae_tiny", "wgan_tiny"):
        with h5py.File(atlas / model / "generated.h5") as f:
            attrs = io.check_canonical(f, "generated", "atlas_em_barrel")
            # 18 showers for the test split's conditions, resampled (seeded) when the split has fewer
            assert f["showers"].shape == (18, 266) and {"eta", "phi", "alignment"} <= set(f)
            if n_test >= 18:
                np.testing.assert_array_equal(f["eta"][:], test_eta[:18])
            else:
                assert set(f["eta"][:]) <= set(test_eta) and len(set(f["eta"][:])) > 1
            assert attrs["provenance"]["model_type"] == model.replace("_tiny", "").replace("vae", "atlas_vae").replace(
                "wgan", "atlas_wgan"
            )
        metrics = pd.read_csv(atlas / model / "validation/metrics.csv")
        assert {"cell_covariance", "profile_deta_front", "width_eta", "depth_x0", "frac_back"} <= set(
            metrics["observable"]
        )
        figures = {p.stem for p in (atlas / model / "validation/figures").glob("*.png")}
        assert {"layer_energies", "delta_eta_phi_profiles", "cell_covariance", "middle_eta_phi"} <= figures
        assert (atlas / model / "validation/judge.json").exists()
        timing = pd.read_csv(atlas / model / "benchmark/timing.csv")
        assert set(timing[timing["status"] == "ok"]["variant"]) == {"plain_fp32", "fast_fp32", "fast_bf16"}
    scan = pd.read_csv(atlas / "vae_tiny/scan/scan.csv")
    assert list(scan["point"]) == ["vae_tiny-scan-000", "vae_tiny-scan-001"]
    assert list(scan["architecture.latent_dim"]) == [2, 3] and scan["best"].sum() == 1
    assert ((scan["layer_ks"] >= 0) & (scan["layer_ks"] <= 1)).all() and scan["covariance_distance"].notna().all()
    for point in ("vae_tiny-scan-000", "vae_tiny-scan-001"):
        ck = torch.load(atlas / point / "stage-all/selected.pt", weights_only=True)
        assert ck["model_config"]["latent_dim"] == int(point[-1]) + 2
    # the CaloChallenge record was downloaded, converted and exported back unchanged
    manifest = json.loads((workdir / "resources/cc_toy/zenodo/manifest.json").read_text())
    assert [f["key"] for f in manifest["files"]] == ["dataset_toy_1.hdf5"]
    with h5py.File(inputs["cc"]) as a, h5py.File(workdir / "results/cc_toy/export/calochallenge.hdf5") as b:
        np.testing.assert_array_equal(a["showers"][:], b["showers"][:])
        np.testing.assert_allclose(a["incident_energies"][:], b["incident_energies"][:])


def test_rerun_has_nothing_to_do(finished_run, repo_root):
    proc = snakemake(repo_root, finished_run, "-n")
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_editing_one_value_reruns_only_what_depends_on_it(finished_run, repo_root, inputs, tmp_path):
    workdir = tmp_path / "copy"
    shutil.copytree(finished_run, workdir)

    def plan(mutate):
        write_config(workdir, inputs, mutate)
        return sorted(planned_jobs(snakemake(repo_root, workdir, "-n")))

    # a preprocessing value reruns that preprocessing and the model stages built on it, nothing else
    prep = plan(lambda c: c["preprocessing"]["lcd_100_200"].update(min_total_energy_mev=0.5))
    model = "dataset=lcd_ele, model=gan_tiny"
    assert prep == [
        ("all", ""),
        ("benchmark_model", model),
        ("compare_model", model),
        ("generate", model),
        ("judge_model", model),
        ("preprocess", "dataset=lcd_ele, prep=lcd_100_200"),
        ("select_epoch", f"{model}, stage=s1"),
        ("select_epoch", f"{model}, stage=s2"),
        ("speed_table", "dataset=lcd_ele"),
        ("train_stage", f"{model}, stage=s1, seed=1"),
        ("train_stage", f"{model}, stage=s2, seed=1"),
        ("validate_model", model),
    ]
    # an ATLAS preprocessing value reruns both ATLAS models (every seed, every scan point)
    atlas = plan(lambda c: c["preprocessing"]["atlas_norm"].update(min_total_energy_mev=0.5))
    per_model = ("benchmark_model", "compare_model", "generate", "judge_model", "validate_model")
    vae, wgan = "dataset=atlas_photon, model=vae_tiny", "dataset=atlas_photon, model=wgan_tiny"
    points = ("vae_tiny-scan-000", "vae_tiny-scan-001")
    assert atlas == sorted(
        [("all", ""), ("preprocess", "dataset=atlas_photon, prep=atlas_norm"), ("scan_model", vae)]
        + [("energy_table", "dataset=atlas_photon"), ("speed_table", "dataset=atlas_photon")]
        + [(rule, m) for rule in per_model for m in (vae, wgan)]
        + [("select_epoch", f"{m}, stage=all") for m in (vae, wgan)]
        + [("select_epoch", f"dataset=atlas_photon, model={p}, stage=all") for p in points]
        + [("train_stage", f"{m}, stage=all, seed={s}") for m, s in ((vae, 1), (wgan, 1), (wgan, 2))]
        + [("train_stage", f"dataset=atlas_photon, model={p}, stage=all, seed=1") for p in points]
    )
    # one more seed trains that seed only, then selects again over all three
    seeds = plan(lambda c: c["models"]["wgan_tiny"].update(seeds=[1, 2, 3]))
    assert seeds == sorted(
        [("all", ""), ("select_epoch", f"{wgan}, stage=all"), ("train_stage", f"{wgan}, stage=all, seed=3")]
        + [("energy_table", "dataset=atlas_photon"), ("speed_table", "dataset=atlas_photon")]
        + [(rule, wgan) for rule in per_model]
    )
    # one more scan value trains that point only, then scores the scan again
    grid = plan(lambda c: c["models"]["vae_tiny"]["scan"]["parameters"].update({"architecture.latent_dim": [2, 3, 4]}))
    assert grid == [
        ("all", ""),
        ("scan_model", vae),
        ("select_epoch", "dataset=atlas_photon, model=vae_tiny-scan-002, stage=all"),
        ("train_stage", "dataset=atlas_photon, model=vae_tiny-scan-002, stage=all, seed=1"),
    ]
    # the split seed is a preprocessing input, not a simulation one: the preprocessing, the
    # VAE-GAN's training sets and everything of the VAE-GAN after them rerun
    vg, sets = "dataset=ild_photon_50, model=vaegan_tiny", "dataset=ild_photon_50, prep=ild50_pooled, sets=2x20-s1"
    split = plan(lambda c: c["datasets"]["ild_photon_50"].update(split={"seed": 7}))
    after_split = [
        ("all", ""),
        ("amplification_study", vg),
        ("benchmark_model", vg),
        ("preprocess", "dataset=ild_photon_50, prep=ild50_pooled"),
        ("select_epoch", f"{vg}, stage=all"),
        ("select_epoch", f"{vg}-set-2, stage=all"),
        ("speed_table", "dataset=ild_photon_50"),
        ("train_stage", f"{vg}, stage=all, seed=1"),
        ("train_stage", f"{vg}-set-2, stage=all, seed=1"),
        ("training_set", f"{sets}, index=1"),
        ("training_set", f"{sets}, index=2"),
    ]
    assert split == after_split
    # a simulation setting reruns that dataset and everything downstream of it only
    sim = plan(lambda c: c["datasets"]["ild_photon_50"].update(n_showers=121))
    assert sim == sorted(
        after_split
        + [
            ("benchmark_reference", "dataset=ild_photon_50"),
            ("quicklook", "dataset=ild_photon_50"),
            ("simulate_synthetic", "dataset=ild_photon_50"),
        ]
    )
    # a later stage's epochs rerun that stage and what follows it, not the earlier stage
    stage2 = plan(lambda c: c["models"]["gan_tiny"]["stages"][1].update(epochs=3))
    assert stage2 == [
        ("all", ""),
        ("benchmark_model", "dataset=lcd_ele, model=gan_tiny"),
        ("compare_model", "dataset=lcd_ele, model=gan_tiny"),
        ("generate", "dataset=lcd_ele, model=gan_tiny"),
        ("judge_model", "dataset=lcd_ele, model=gan_tiny"),
        ("select_epoch", "dataset=lcd_ele, model=gan_tiny, stage=s2"),
        ("speed_table", "dataset=lcd_ele"),
        ("train_stage", "dataset=lcd_ele, model=gan_tiny, stage=s2, seed=1"),
        ("validate_model", "dataset=lcd_ele, model=gan_tiny"),
    ]
    # the BIB-AE's stages are phases of one model: a post-processor setting reruns the post-processor
    # stage and what follows it, a KDE setting only the KDE stage and what follows, never the autoencoder
    bibae = "dataset=ild_pion, model=bibae_tiny"
    after = [(r, bibae) for r in ("benchmark_model", "compare_model", "generate", "judge_model")]
    tail = [("speed_table", "dataset=ild_pion"), ("validate_model", bibae)]
    assert plan(lambda c: c["models"]["bibae_tiny"]["architecture"].update(pp_channels=6)) == sorted(
        [("all", "")] + after + tail
        + [(r, f"{bibae}, stage={st}" + (", seed=1" if r == "train_stage" else "")) for r in ("select_epoch", "train_stage") for st in ("kde", "pp")]
    )  # fmt: skip
    assert plan(lambda c: c["models"]["bibae_tiny"]["architecture"].update(kde_folds=3)) == sorted(
        [("all", "")] + after + tail + [("select_epoch", f"{bibae}, stage=kde"), ("train_stage", f"{bibae}, stage=kde, seed=1")]
    )  # fmt: skip
    # a validation setting reruns the validations only, a judge setting the judges only
    pion = "dataset=ild_pion, model=ghwgan_tiny"
    models = ["dataset=atlas_photon, model=vae_tiny", "dataset=atlas_photon, model=wgan_tiny", bibae, pion, model]
    assert plan(lambda c: c["validation"].update(n_bootstrap=12)) == [("all", "")] + [
        ("validate_model", m) for m in models
    ]
    assert plan(lambda c: c["judge"].update(seed=4)) == [("all", "")] + [("judge_model", m) for m in models]
    # a model-benchmark setting reruns the model benchmarks and speed tables only; a shared one the
    # simulators' too
    datasets = ("atlas_photon", "ild_pion", "lcd_ele")
    tables = [("speed_table", f"dataset={d}") for d in datasets]
    assert (
        plan(lambda c: c["benchmark"].update(variants=["plain_fp32", "fast_fp32"]))
        # the BIB-AE's own benchmark block sets its variants
        == [("all", "")] + [("benchmark_model", m) for m in models if m != bibae] + tables
    )
    # (the VAE-GAN's own benchmark block sets its variants, not its repeats)
    assert plan(lambda c: c["benchmark"].update(repeats=3)) == sorted(
        [("all", "")]
        + [("benchmark_model", m) for m in [*models, vg]]
        + [("benchmark_reference", f"dataset={d}") for d in (*datasets, "ild_photon_50")]
        + tables
        + [("speed_table", "dataset=ild_photon_50")]
    )
    # the optional Geant4 baseline adds its timing job to grid datasets with a model
    geant4 = {"enabled": True, "data_dir": "/nowhere"}
    assert plan(lambda c: c["benchmark"].update(geant4=geant4)) == [
        ("all", ""),
        ("benchmark_geant4", "dataset=ild_photon_50"),
        ("benchmark_geant4", "dataset=lcd_ele"),
        ("benchmark_model", vg),
        ("benchmark_model", "dataset=lcd_ele, model=gan_tiny"),
        ("speed_table", "dataset=ild_photon_50"),
        ("speed_table", "dataset=lcd_ele"),
    ]
    # converting differently does not download again
    conv = plan(lambda c: c["datasets"]["cc_toy"].update(n_showers=5))
    assert conv == [
        ("all", ""),
        ("convert_files", "dataset=cc_toy"),
        ("export_calochallenge", "dataset=cc_toy"),
        ("quicklook", "dataset=cc_toy"),
    ]


def test_report_collects_the_figures_and_tables(finished_run, repo_root, tmp_path):
    report = tmp_path / "report.zip"
    snakemake(repo_root, finished_run, "--report", str(report))
    names = zipfile.ZipFile(report).namelist()
    assert sum(n.endswith("quicklook.png") for n in names) == 7
    assert sum(n.endswith("comparison.png") for n in names) == 5
    assert sum(n.endswith("metrics.csv") for n in names) == 5
    assert sum(n.endswith("judge.png") for n in names) == 5
    assert sum(n.endswith("timing.png") for n in names) == 6 and sum(n.endswith("timing.csv") for n in names) == 6
    assert sum(n.endswith("scan.csv") for n in names) == 1
    assert sum(n.endswith("speed_table.csv") for n in names) == 4  # the datasets with models
    assert sum(n.endswith("amplification.csv") for n in names) == 1
    assert any(n.endswith("djs_e_vis+e_peak.png") for n in names)
    figures = {Path(n).name for n in names} & {
        p.name for p in finished_run.glob("results/*/*/validation/figures/*.png")
    }
    assert len(figures) >= 16
    html = zipfile.ZipFile(report).read(next(n for n in names if n.endswith("report.html"))).decode()
    assert "gan_tiny</tt> (3dgan on lcd_ele)" in html and "this model is NOT converged" in html
    assert "vae_tiny</tt> (atlas_vae on atlas_photon)" in html and "a scan of architecture.latent_dim" in html
    assert "wgan_tiny</tt> (atlas_wgan on atlas_photon)" in html and "seeds [1, 2]" in html
    assert "ghwgan_tiny</tt> (gh_wgan on ild_pion)" in html and "200,000 (pions)" in html
    assert "bibae_tiny</tt> (gh_bibae on ild_pion)" in html and "its stages: bibae, postprocess, kde" in html
    assert "vaegan_tiny</tt> (vaegan on ild_photon_50)" in html and "2 disjoint training sets of 20 showers" in html
    assert html.count("NOT converged") >= 6
    # one list item per model (the template keeps the items apart)
    items = re.findall(r'<li><tt class=\\"docutils literal\\">(\w+)</tt> \(', html)
    assert sorted(items) == ["bibae_tiny", "gan_tiny", "ghwgan_tiny", "vae_tiny", "vaegan_tiny", "wgan_tiny"]


def test_slurm_profile_dry_run(repo_root, inputs, tmp_path):
    write_config(tmp_path, inputs)
    proc = snakemake(repo_root, tmp_path, "-n", "--workflow-profile", str(repo_root / "profiles" / "slurm"))
    out = proc.stdout + proc.stderr
    # the profile's resources; the partition is left to the plugin's selection (partitions.yaml)
    assert "runtime=60" in out and "slurm_partition" not in out
    assert re.search(r"simulate_synthetic\s+4", out)
    assert re.search(r"download_zenodo\s+1", out)


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
def test_invalid_config_stops_the_workflow(repo_root, inputs, tmp_path, mutate, message):
    write_config(tmp_path, inputs, mutate)
    proc = snakemake(repo_root, tmp_path, "-n", check=False)
    assert proc.returncode != 0
    assert message in proc.stdout + proc.stderr


def test_missing_local_file_is_named(repo_root, inputs, tmp_path):
    write_config(tmp_path, {**inputs, "local": tmp_path / "inputs" / "ild_local.h5"})
    proc = snakemake(repo_root, tmp_path, "-n", check=False)
    assert proc.returncode != 0
    assert "inputs/ild_local.h5" in proc.stdout + proc.stderr


def test_corrupt_local_file_fails_without_output(repo_root, inputs, tmp_path):
    bad = tmp_path / "inputs" / "ild_local.h5"
    bad.parent.mkdir()
    bad.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    write_config(tmp_path, {**inputs, "local": bad})
    proc = snakemake(repo_root, tmp_path, "--cores", "1", "data/local_ild/showers.h5", check=False)
    assert proc.returncode != 0
    assert "truncated or corrupt" in proc.stdout + proc.stderr
    out_dir = tmp_path / "data" / "local_ild"
    assert not out_dir.exists() or list(out_dir.iterdir()) == []


def test_wrong_zenodo_record_fails_without_output(repo_root, inputs, tmp_path):
    write_config(tmp_path, inputs, lambda c: c["datasets"]["cc_toy"]["zenodo"].update(record=1))
    proc = snakemake(repo_root, tmp_path, "--cores", "1", "data/cc_toy/showers.h5", check=False)
    assert proc.returncode != 0
    assert "Zenodo record 1 not found" in proc.stdout + proc.stderr
    assert not (tmp_path / "resources" / "cc_toy" / "zenodo" / "manifest.json").exists()


def test_geant4_source_and_simulator_calibration_through_snakemake(repo_root, inputs, tmp_path):
    """source geant4 on a tiny sample, the Geant4 reference run, the calibration fit, and a
    synthetic dataset simulated with the fitted calibration: the whole chain, offline."""
    if not geant4_available():
        pytest.skip("needs the geant4 extra (geant4_pybind, xraydb)")

    def mutate(cfg):
        cfg["datasets"] = {
            "g4_ild": {
                "source": "geant4",
                "geometry": "ild_siw_ecal",
                "particle": "photon",
                "n_showers": 6,
                "seed": 4,
                "energy": {"distribution": "uniform", "min_gev": 2, "max_gev": 4},
            },
            "sim_ild": {
                "source": "synthetic",
                "geometry": "ild_siw_ecal",
                "particle": "photon",
                "n_showers": 20,
                "seed": 5,
                "energy": {"distribution": "uniform", "min_gev": 5, "max_gev": 10},
                "simulation": {"calibration": "results/calibration/ild_siw_ecal_photon/calibration.json"},
            },
        }
        cfg["preprocessing"], cfg["models"] = {}, {}
        cfg["geant4"] = {
            "calibration": {
                "enabled": True,
                "simulator_showers": 20,
                "fit_evaluations": 3,
                "fit_rounds": 1,
                "targets": {
                    "ild_siw_ecal_photon": {
                        "geometry": "ild_siw_ecal",
                        "particle": "photon",
                        "energies_gev": [5, 10],
                        "n_showers": 10,
                    }
                },
            }
        }

    write_config(tmp_path, inputs, mutate)
    env_free = {k: v for k, v in os.environ.items() if k not in ("CALOFAST_G4_DATA", "GEANT4_DATA_DIR")}
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(repo_root / "Snakefile"), "-d", str(tmp_path), "--cores", "2"],
        capture_output=True,
        text=True,
        timeout=900,
        env=env_free,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "results" / "geant4" / "tables" / "calofast_tables.json").is_file()
    with h5py.File(tmp_path / "data" / "g4_ild" / "showers.h5") as f:
        prov = io.read_attrs(f)["provenance"]
        assert f["showers"].shape == (6, 30, 30, 30)
    assert prov["source"] == "geant4" and prov["geant4"]["label"] == "Geant4 with surrogate low-energy tables"
    cal_dir = tmp_path / "results" / "calibration" / "ild_siw_ecal_photon"
    table = (cal_dir / "comparison.csv").read_text().splitlines()
    assert table[0].startswith("energy_gev,quantity,geant4,gflash,calibrated")
    assert len(table) == 1 + 2 * (len(TARGETS) + 1)  # every quantity and the judge AUC per energy
    calibration = json.loads((cal_dir / "calibration.json").read_text())
    assert calibration["energies_gev"] == [5.0, 10.0] and calibration["provenance"]["label"].startswith("Geant4 with")
    with h5py.File(tmp_path / "data" / "sim_ild" / "showers.h5") as f:
        prov = io.read_attrs(f)["provenance"]
    assert prov["calibration"]["showers_per_point"] == {"5": 10, "10": 10}
    report = tmp_path / "report.zip"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "-s",
            str(repo_root / "Snakefile"),
            "-d",
            str(tmp_path),
            "--report",
            str(report),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env_free,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    with zipfile.ZipFile(report) as z:
        names = z.namelist()
        text = "".join(z.read(n).decode(errors="ignore") for n in names if n.endswith((".html", ".js")))
    assert sum(n.endswith("comparison.png") for n in names) == sum(n.endswith("comparison.csv") for n in names) == 1
    assert "Simulator vs Geant4" in text
    assert set(pd.read_csv(cal_dir / "comparison.csv")["reference"]) == {"Geant4 with surrogate low-energy tables"}
