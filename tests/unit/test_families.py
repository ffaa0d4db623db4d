"""The model-family interface: the registry agrees with the config schema, and a new family
(a toy, defined here in one module-sized block plus one config entry) trains, resumes, is
selected, generates and is benchmarked by the shared code, which never asks for its type."""

import dataclasses
import json
from dataclasses import asdict, dataclass
from typing import ClassVar

import h5py
import numpy as np
import pytest
import torch
import yaml
from torch import nn

from calofast.benchmark import timing as bm
from calofast.config import ConfigError, check_models
from calofast.data import io
from calofast.data.preprocess import Pipeline, alignment_multihot
from calofast.generation.sampling import read_conditions
from calofast.generation.writer import generate_to_file
from calofast.models import FAMILIES, ModelFamily, get_family, register
from calofast.models.family import TrainSettings
from calofast.selection.select import select_epoch
from calofast.training.checkpoints import load_checkpoint, load_model
from calofast.training.loop import run_stage


def _schema(repo_root):
    return yaml.safe_load((repo_root / "schemas" / "config.schema.yaml").read_text())


def test_schema_type_enum_and_blocks_come_from_the_registry(repo_root):
    schema = _schema(repo_root)
    model = schema["$defs"]["model"]
    assert model["properties"]["type"]["enum"] == sorted(FAMILIES)
    refs = {}
    for rule in model["allOf"]:
        kind = rule["if"]["properties"]["type"]["const"]
        props = rule["then"]["properties"]
        refs[kind] = (props["architecture"]["$ref"], props["train"]["$ref"])
    assert refs == {k: (f"#/$defs/{k}_architecture", f"#/$defs/{k}_train") for k in FAMILIES}
    for name, family in FAMILIES.items():
        arch = set(schema["$defs"][f"{name}_architecture"]["properties"])
        assert arch == {f.name for f in dataclasses.fields(family.architecture)} - set(family.internal_fields), name
        train = set(schema["$defs"][f"{name}_train"]["properties"])
        # threads come from the Snakemake rule, not from the config
        assert train == {f.name for f in dataclasses.fields(family.training)} - {"threads"}, name
    metrics = set(model["properties"]["selection"]["properties"]["metric"]["enum"]) - {None}
    assert metrics == {s for f in FAMILIES.values() for s in f.selection_scores}


def test_the_shared_code_never_asks_for_a_model_type(repo_root):
    """Outside calofast/models no module compares a model type with a family's name."""
    names = [f'"{n}"' for n in FAMILIES] + [f"'{n}'" for n in FAMILIES]
    offenders = []
    for path in [*(repo_root / "calofast").rglob("*.py"), *(repo_root / "workflow_scripts").glob("*.py"),
                 *(repo_root / "rules").glob("*.smk")]:  # fmt: skip
        if "models" in path.relative_to(repo_root).parts:
            continue
        text = path.read_text()
        offenders += [f"{path.name}: {n}" for n in names if n in text]
    assert offenders == []


# --------------------------------------------------------------------------- a toy family


@dataclass(frozen=True)
class ToyConfig:
    n_cells: int = 266
    latent_dim: int = 1
    width: float = 0.1

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ToyTrain(TrainSettings):
    batch_size: int = 20
    lr: float = 0.05


class Toy(nn.Module):
    """Mean cell fractions per energy: logits(E) = a + b log10 E, softmax; generation adds
    ``width`` x noise x the stage's mean total (an end-of-stage buffer) to the total."""

    def __init__(self, cfg: ToyConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.a = nn.Parameter(torch.zeros(cfg.n_cells))
        self.b = nn.Parameter(torch.zeros(cfg.n_cells))
        self.register_buffer("mean_total", torch.ones(1))

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        noise, log_e = inp[:, :1], inp[:, 1:2]
        frac = torch.softmax(self.a + self.b * log_e, dim=1)
        return frac * self.mean_total * (1 + self.cfg.width * noise)


class ToyFamily(ModelFamily):
    name: ClassVar[str] = "toy"
    architecture: ClassVar[type] = ToyConfig
    training: ClassVar[type] = ToyTrain
    geometries: ClassVar[tuple[str, ...]] = ("atlas_em_barrel",)
    selection_scores: ClassVar[tuple[str, ...]] = ("layer_response", "covariance")

    def build(self, arch):
        return Toy(arch)

    def optimizers(self, model, train, lr):
        return {"adam": torch.optim.Adam(model.parameters(), lr=lr)}

    def batches_per_step(self, model):
        return 2

    def train_step(self, ctx, batches):
        loss = 0.0
        for b in batches:
            pred = ctx.model(torch.cat([torch.zeros(len(b), 1), torch.log10(b.energy_gev)[:, None]], dim=1))
            loss = loss + (pred - b.x).pow(2).sum(dim=1).mean()
        terms = {"mse": loss / len(batches)}
        ctx.check(terms, "toy")
        ctx.step("adam", terms["mse"])
        return terms

    def end_of_stage(self, model, batches):
        totals = torch.cat([b.x.sum(dim=1) for b in batches()])
        model.mean_total.fill_(float(totals.mean()))

    def network_input(self, model, noise, conditions):
        return torch.cat([noise, torch.log10(conditions["energy_gev"])[:, None]], dim=1)

    def generation_network(self, model):
        return model


@pytest.fixture
def toy():
    register(ToyFamily)
    yield get_family("toy")
    del FAMILIES["toy"]


@pytest.fixture
def split(tmp_path):
    """ATLAS-like model-space showers: a different shape at each of two energies, totals 0.9."""
    rng = np.random.default_rng(0)
    n = 200
    energy = rng.choice([2048.0, 131072.0], n).astype(np.float32)
    hi = energy > 1e5
    x = np.where(hi[:, None], np.linspace(0, 1, 266), np.linspace(1, 0, 266)) + rng.uniform(0, 0.1, (n, 266))
    x = (0.9 * x / x.sum(axis=1, keepdims=True)).astype(np.float32)
    labels = rng.integers(0, 8, n).astype(np.int8)
    path = tmp_path / "split.h5"
    with h5py.File(path, "w") as f:
        f["x"], f["energy"], f["alignment"] = x, energy, labels
        f["alignment_multihot"] = alignment_multihot(labels)
        f["eta"] = rng.uniform(0.2, 0.25, n).astype(np.float32)
        f["phi"] = rng.uniform(0, 6.28, n).astype(np.float32)
    pipe = Pipeline.from_config({"transforms": [{"name": "normalize_incident"}]})
    transforms = tmp_path / "transforms.json"
    transforms.write_text(json.dumps({"geometry": "atlas_em_barrel", "pipeline": pipe.to_dict()}))
    return path, transforms


def test_a_new_family_runs_through_the_shared_machinery(toy, split, tmp_path, make_config):
    path, transforms = split
    # its config block is checked by the registry (no schema change needed for check_models)
    block = {
        "type": "toy",
        "dataset": "atlas_photon",
        "architecture": {"width": 0.05},
        "train": {"steps_per_epoch": 3},
        "stages": [{"name": "all", "preprocessing": "pa", "epochs": 3}],
        "selection": {"metric": None},
        "generation": {"conditions": "test"},
    }
    cfg = make_config(preprocessing={"pa": {"dataset": "atlas_photon", "transforms": []}}, models={"t": block})
    check_models(cfg)
    cfg["models"]["t"]["train"] = {"momentum": 0.9}
    with pytest.raises(ConfigError, match=r"models\.t\.train: unknown keys \['momentum'\] for toy"):
        check_models(cfg)
    cfg["models"]["t"] = {**block, "generation": {"conditions": "grid"}}
    with pytest.raises(ConfigError, match=r"generation\.conditions: toy generates for \['test'\]"):
        check_models(cfg)
    cfg["models"]["t"] = {**block, "dataset": "lcd_ele"}
    with pytest.raises(ConfigError, match=r"toy generates showers of geometry \['atlas_em_barrel'\]"):
        check_models(cfg)

    spec = {
        "model_name": "t",
        "model_type": "toy",
        "stage": "all",
        "epochs": 3,
        "model": {"width": 0.05},
        "train": {"steps_per_epoch": 3, "seed": 2},
        "data": {"train": str(path)},
        "checkpoint_dir": str(tmp_path / "checkpoints"),
        "summary": str(tmp_path / "training.json"),
    }
    summary = run_stage(spec)
    assert [h["epoch"] for h in summary["history"]] == [1, 2, 3]
    assert summary["history"][-1]["mse"] < summary["history"][0]["mse"]
    ck = load_checkpoint(summary["checkpoints"][-1])
    # the hook ran on every epoch's weights (each checkpoint can be selected)
    assert all(
        load_checkpoint(p)["model"]["mean_total"].item() == pytest.approx(0.9, rel=1e-5) for p in summary["checkpoints"]
    )
    # 3 steps of 2 batches of 20 per epoch
    assert max(s["step"] for s in ck["optimizers"]["adam"]["state"].values()) == 9

    out = [tmp_path / n for n in ("selected.pt", "selection.csv", "selection.json")]
    result = select_epoch(tmp_path / "training.json", path, transforms, *out, last_k=3, n_showers=100, device="cpu")
    assert result["metric"].startswith("layer_response") and len(result["epochs"]) == 3

    fam = get_family("toy")
    cond = read_conditions(path, fam, 50)
    generate_to_file(out[0], transforms, tmp_path / "gen.h5", cond, batch_size=16, device="cpu", progress=False)
    with h5py.File(tmp_path / "gen.h5") as g, h5py.File(path) as ref:
        io.check_canonical(g, "gen.h5", "atlas_em_barrel")
        np.testing.assert_array_equal(g["alignment"][:], ref["alignment"][:50])
        totals = g["showers"][:].sum(axis=1) / g["energy"][:]
    assert totals.mean() == pytest.approx(0.9, rel=0.02)  # the end-of-stage buffer reaches generation

    path_b = bm.GenerationPath(out[0], transforms, cond)
    cfgb = bm.BenchmarkConfig(batch_sizes=[4], variants=["fast_fp32"], devices=["cpu"], repeats=1, probe_size=32)
    rows = bm.benchmark_model(path_b, "t", cfgb)["rows"]
    assert {r["variant"] for r in rows if r["status"] == "ok"} == {"plain_fp32", "fast_fp32"}
    model, _ = load_model(out[0])
    assert isinstance(model, Toy)
