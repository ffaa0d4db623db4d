from pathlib import Path

import pytest
import yaml
from snakemake.exceptions import WorkflowError

from calofast.config import ConfigError, validate_config


def test_valid_config_gets_schema_defaults(make_config):
    cfg = validate_config(make_config(preprocessing={"p": {"dataset": "lcd_ele"}}))
    ds = cfg["datasets"]["lcd_ele"]
    assert ds["split"] == {"train": 0.8, "validation": 0.1, "test": 0.1, "seed": 12345}
    assert ds["simulation"] == {"stochastic_term": None, "cell_threshold_mev": 0, "calibration": "geant4"}
    assert cfg["storage"] == {"compression": "gzip", "compression_level": 1}
    assert cfg["preprocessing"]["p"]["transforms"] == []
    assert cfg["quicklook"]["max_showers"] == 5000


def test_the_shipped_config_is_valid(repo_root):
    cfg = validate_config(yaml.safe_load((repo_root / "config.yaml").read_text()))
    assert set(cfg["datasets"]) == {"lcd_ele", "atlas_photon", "ild_photon", "ild_pion", "ild_photon_50"}


D = "datasets"


def _ds(c, name="lcd_ele"):
    return c[D][name]


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda c: c.update(colour="red"), r"Additional properties are not allowed \('colour' was unexpected\)"),
        (lambda c: _ds(c).update(nshowers=5), r"'nshowers' was unexpected"),
        (lambda c: _ds(c).update(n_showers="many"), r"'many' is not of type 'integer', 'null'"),
        (lambda c: _ds(c).update(n_showers=0), r"0 is less than the minimum of 1"),
        (
            lambda c: _ds(c).update(geometry="cms_hgcal"),
            r"'cms_hgcal' is not one of \['lcd_ecal', 'lcd_ecal_25', 'atlas_em_barrel', 'ild_siw_ecal', 'ild_ahcal', 'calochallenge'\]",
        ),
        (
            lambda c: _ds(c).update(source="cernbox"),
            r"'cernbox' is not one of \['synthetic', 'local', 'zenodo', 'root', 'geant4'\]",
        ),
        (lambda c: _ds(c).update(particle="muon"), r"'muon' is not one of"),
        (
            lambda c: _ds(c).update(simulation={"entry_point": "edge"}),
            r"'edge' is not one of \['central_cell', 'axis'\](.|\n)*On instance\['datasets'\]\['lcd_ele'\]\['simulation'\]",
        ),
        (lambda c: _ds(c).update(accept_energy_scale="yes"), r"'yes' is not of type 'boolean'"),
        (lambda c: _ds(c)["energy"].pop("max_gev"), r"'max_gev' is a required property"),
        (lambda c: _ds(c)["angles"].update(theta_deg=[60, 190]), r"190 is greater than or equal"),
        (lambda c: _ds(c).update(source="local"), r"'local' is a required property"),
        (lambda c: _ds(c).update(source="zenodo"), r"'zenodo' is a required property"),
        (lambda c: _ds(c).update(source="root"), r"'root' is a required property"),
        (lambda c: _ds(c).update(source="zenodo", zenodo={"record": 1, "files": []}), r"\[\] should be non-empty"),
        (lambda c: _ds(c).update(geometry="calochallenge"), r"'binning' is a required property"),
        (
            lambda c: _ds(c).update(source="local", local={"path": "x.h5"}, format="hdf5"),
            r"'hdf5' is not one of \['canonical', 'lcd_3dgan', 'lcd_3dgan_fixed_angle', 'ild_getting_high', 'ild_pion_hbfs', 'calochallenge'\]",
        ),
        (
            lambda c: _ds(c).update(units={"showers": "GW"}),
            r"'GW' is not valid under any of the given schemas(.|\n)*number of MeV per stored unit(.|\n)*'eV', 'keV', 'MeV', 'GeV', 'TeV'",
        ),
        (lambda c: _ds(c).update(units={"showers": -20.0}), r"-20.0 is not valid under any of the given schemas"),
        (lambda c: c.update(storage={"compression": "zstd"}), r"'zstd' is not one of \['gzip', 'lzf', 'none'\]"),
        (
            lambda c: c.update(validation={"tolerances": {"response": 0}}),
            r"0 is less than or equal to the minimum of 0",
        ),
        (
            lambda c: c["preprocessing"].update(p={"dataset": "lcd_ele", "transforms": [{"name": "power"}]}),
            r"'exponent' is a required property",
        ),
        (
            lambda c: c["preprocessing"].update(
                p={"dataset": "lcd_ele", "transforms": [{"name": "power", "exponent": 0.8, "floor": 1}]}
            ),
            r"should not be valid under \{\}",
        ),
        (lambda c: c[D].update({"bad name": _ds(c)}), r"'bad name' does not match"),
    ],
)
def test_schema_errors_name_key_and_allowed_values(make_config, mutate, message):
    cfg = make_config()
    mutate(cfg)
    with pytest.raises(WorkflowError, match=message):
        validate_config(cfg)


ROOT = {
    "path": "h.root",
    "tree": "t",
    "depth_axis": "y",
    "u_axis": "x",
    "v_axis": "z",
    "origin_mm": [0, 0],
    "layer_start_mm": 1811.0,
    "layer_pitch_mm": 6.6,
}
CC = {"geometry": "calochallenge", "binning": {"path": "b.xml", "particle": "photon"}}


@pytest.mark.parametrize(
    "mutate, message",
    [
        (
            lambda c: c["preprocessing"].update(p={"dataset": "lcd_ele", "energy_range_gev": [600, 700]}),
            r"preprocessing\.p\.energy_range_gev: 600-700 GeV is not covered by dataset 'lcd_ele', which has 2-500 GeV",
        ),
        (
            lambda c: c["preprocessing"].update(p={"dataset": "atlas_photon", "energy_range_gev": [3, 60]}),
            r"contains none of the energies",
        ),
        (
            lambda c: c["preprocessing"].update(p={"dataset": "lcd_ele", "energy_range_gev": [200, 100]}),
            r"must have lo <= hi",
        ),
        (lambda c: c["preprocessing"].update(p={"dataset": "nope"}), r"unknown dataset 'nope'; known datasets"),
        (
            lambda c: c["preprocessing"].update(p={"dataset": "ild_photon", "pool": [4, 30, 3]}),
            r"preprocessing\.p\.pool: \[4, 30, 3\] must give one factor per axis",
        ),
        (lambda c: c["preprocessing"].update(p={"dataset": "atlas_photon", "pool": [2]}), r"no regular cell grid"),
        (
            lambda c: c["preprocessing"].update(p={"dataset": "lcd_ele", "alignment_encoding": "multi_hot"}),
            r"geometry lcd_ecal has no cell alignment",
        ),
        (lambda c: _ds(c, "atlas_photon").update(angles={}), r"needs abs_eta"),
        (lambda c: _ds(c).update(angles={"abs_eta": [0.2, 0.25]}), r"not allowed for geometry lcd_ecal"),
        (lambda c: _ds(c).update(split={"train": 0.5}), r"train \+ validation \+ test = 0.7, must be 1"),
        (
            lambda c: _ds(c).update(energy={"distribution": "uniform", "min_gev": 9, "max_gev": 3}),
            r"min_gev 9 > max_gev 3",
        ),
        (
            lambda c: _ds(c).update(particle="pi0"),
            r"datasets\.lcd_ele\.particle: the simulator makes \[.*'pion'\] showers",
        ),
        (
            lambda c: _ds(c, "atlas_photon").update(particle="pion"),
            r"datasets\.atlas_photon\.geometry: the simulator makes pion showers on grid geometries",
        ),
        (
            lambda c: _ds(c).update(particle="pion", simulation={"calibration": "my.json"}),
            r"datasets\.lcd_ele\.simulation\.calibration: pion showers have no calibration file",
        ),
        (
            lambda c: _ds(c).update(energy={"distribution": "uniform", "min_gev": float("nan"), "max_gev": 3}),
            r"datasets\.lcd_ele\.energy\.min_gev: not a finite number",
        ),
        (
            lambda c: _ds(c).update(simulation={"stochastic_term": None, "cell_threshold_mev": float("inf")}),
            r"datasets\.lcd_ele\.simulation\.cell_threshold_mev: not a finite number",
        ),
        (lambda c: _ds(c).update(**CC, angles={}), r"calochallenge has no simulator"),
        (
            lambda c: _ds(c).update(source="local", local={"path": "x.h5"}, format="ild_getting_high"),
            r"datasets\.lcd_ele\.format: ild_getting_high holds geometry \['ild_siw_ecal'\], not 'lcd_ecal'",
        ),
        (lambda c: _ds(c).update(format="lcd_3dgan"), r"format: only for sources local and zenodo"),
        (lambda c: _ds(c, "atlas_photon").update(source="root", root=ROOT), r"source root needs a grid geometry"),
        (lambda c: _ds(c).update(source="root", root={**ROOT, "u_axis": "y"}), r"three different coordinates"),
        (
            lambda c: _ds(c).update(source="root", root={**ROOT, "layer_edges_mm": [0, 1, 2]}),
            r"layer_edges_mm: 3 values, geometry lcd_ecal has 25 layers \(needs 26 edges\)",
        ),
        (
            lambda c: _ds(c).update(source="root", root={k: v for k, v in ROOT.items() if k != "layer_pitch_mm"}),
            r"give layer_edges_mm, or layer_start_mm and layer_pitch_mm",
        ),
        (lambda c: _ds(c).update(export=["calochallenge"]), r"calochallenge export needs geometry"),
        (
            lambda c: _ds(c).update(source="local", local={"path": "x.h5"}, format="calochallenge", **CC),
            r"datasets\.lcd_ele\.angles: the CaloChallenge files store no angles",
        ),
    ],
)
def test_cross_key_errors(make_config, mutate, message):
    cfg = make_config()
    mutate(cfg)
    with pytest.raises(ConfigError, match=message):
        validate_config(cfg)


@pytest.mark.parametrize(
    "preset", sorted(p.name for p in (Path(__file__).resolve().parents[2] / "configs").rglob("*.yaml"))
)
def test_shipped_presets_merge_into_a_valid_config(repo_root, preset):
    from snakemake.utils import update_config

    cfg = yaml.safe_load((repo_root / "config.yaml").read_text())
    (path,) = list((repo_root / "configs").rglob(preset))
    update_config(cfg, yaml.safe_load(path.read_text()))
    cfg = validate_config(cfg)
    for ds in cfg["datasets"].values():
        if ds["source"] == "zenodo":
            assert ds["zenodo"]["api_base"] == "https://zenodo.org/api"


GAN = {
    "type": "3dgan",
    "dataset": "lcd_ele",
    "stages": [{"name": "s1", "preprocessing": "p1", "epochs": 2}, {"name": "s2", "preprocessing": "p2", "epochs": 1}],
}
PREPS = {
    "p1": {"dataset": "lcd_ele", "energy_range_gev": [100, 200], "transforms": [{"name": "power", "exponent": 0.85}]},
    "p2": {"dataset": "lcd_ele", "transforms": [{"name": "power", "exponent": 0.85}]},
    "pa": {"dataset": "atlas_photon"},
}


def test_model_defaults(make_config):
    cfg = validate_config(make_config(preprocessing=PREPS, models={"g": GAN}))
    model = cfg["models"]["g"]
    assert model["selection"]["last_k"] == 10 and model["generation"]["conditions"] == "test"
    assert model["resources"] == {"gpus": 0, "runtime_min": 720, "mem_mb": 8000}


@pytest.mark.parametrize(
    "mutate, error, message",
    [
        (
            lambda m: m.update(type="vae"),
            WorkflowError,
            r"'vae' is not one of \['3dgan', 'atlas_vae', 'atlas_wgan', 'gh_bibae', 'gh_gan', 'gh_wgan', 'vaegan'\]",
        ),
        (lambda m: m["stages"][0].update(epochs=0), WorkflowError, r"0 is less than the minimum of 1"),
        (lambda m: m.update(stages=[]), WorkflowError, r"\[\] should be non-empty"),
        (lambda m: m.update(threads=0), WorkflowError, r"0 is less than the minimum of 1"),
        (lambda m: m.update(threads="two"), WorkflowError, r"'two' is not of type 'integer', 'null'"),
        (lambda m: m.update(train={"batchsize": 8}), WorkflowError, r"'batchsize' was unexpected"),
        (lambda m: m.update(architecture={"latent_dim": "big"}), WorkflowError, r"'big' is not of type 'integer'"),
        (lambda m: m.update(dataset="nope"), ConfigError, r"models\.g\.dataset: unknown dataset 'nope'"),
        (
            lambda m: m.update(dataset="atlas_photon"),
            ConfigError,
            r"models\.g: 3dgan generates showers of geometry \['lcd_ecal'\]; dataset 'atlas_photon' is atlas_em_barrel",
        ),
        (lambda m: m["stages"][1].update(preprocessing="zz"), ConfigError, r"stages\[1\]\.preprocessing: unknown"),
        (lambda m: m["stages"][1].update(preprocessing="pa"), ConfigError, r"reads dataset 'atlas_photon'"),
        (lambda m: m["stages"][1].update(name="s1"), ConfigError, r"stage names must be unique"),
        (lambda m: m.update(architecture={"power": 0.5}), ConfigError, r"last transform of 'p1' must be"),
        (lambda m: m.update(architecture={"dense_units": 100}), ConfigError, r"architecture: dense_units 100 must"),
        (lambda m: m.update(generation={"conditions": "grid"}), ConfigError, r"conditions grid needs"),
        (
            lambda m: m["stages"][1].update(phase="kde"),
            ConfigError,
            r"models\.g\.stages\[1\]\.phase: 3dgan has no phase 'kde'; allowed: none \(the family has no phases\)",
        ),
    ],
)
def test_model_errors(make_config, mutate, error, message):
    import copy

    model = copy.deepcopy(GAN)
    mutate(model)
    with pytest.raises(error, match=message):
        validate_config(make_config(preprocessing=PREPS, models={"g": model}))


def test_validation_and_judge_schema_match_their_dataclasses(repo_root):
    """Every schema key reaches the code, every code setting is configurable."""
    import dataclasses

    from calofast.validation.engine import ValidationConfig
    from calofast.validation.judge import JudgeConfig

    schema = yaml.safe_load((repo_root / "schemas" / "config.schema.yaml").read_text())["properties"]
    fields = {f.name for f in dataclasses.fields(ValidationConfig)}
    assert set(schema["validation"]["properties"]) == fields | {"max_showers", "tolerances"}  # read by the scripts
    assert set(schema["judge"]["properties"]) == {f.name for f in dataclasses.fields(JudgeConfig)}


def test_benchmark_schema_matches_its_dataclass(repo_root):
    """Every benchmark key reaches the code with the same default."""
    import dataclasses

    from calofast.benchmark.timing import BenchmarkConfig

    schema = yaml.safe_load((repo_root / "schemas" / "config.schema.yaml").read_text())["properties"]["benchmark"]
    fields = {f.name: f for f in dataclasses.fields(BenchmarkConfig)}
    read_by_rules = {"threads", "reference_batch_sizes", "geant4"}
    assert set(schema["properties"]) == set(fields) | read_by_rules
    defaults = BenchmarkConfig()
    for name in fields:
        assert schema["properties"][name]["default"] == getattr(defaults, name), name


@pytest.mark.parametrize(
    ("section", "value", "message"),
    [
        ("benchmark", {"variants": ["fast_int8"]}, r"'fast_int8' is not one of \['plain_fp32', 'fast_fp32'"),
        ("benchmark", {"batch_sizes": [0]}, r"0 is less than the minimum of 1"),
        ("benchmark", {"devices": ["tpu"]}, r"'tpu' is not one of \['cpu', 'cuda'\]"),
        ("benchmark", {"memory_fraction": 1.5}, r"1.5 is greater than the maximum of 1"),
        ("benchmark", {"geant4": {"physics": "opt4"}}, r"'opt4' is not one of \['opt0', 'opt1'\]"),
        ("benchmark", {"repeat": 3}, r"'repeat' was unexpected"),
    ],
)
def test_benchmark_settings_are_checked(make_config, section, value, message):
    with pytest.raises(WorkflowError, match=message):
        validate_config(make_config(**{section: value}))


def test_validation_and_judge_settings_are_checked(make_config):
    with pytest.raises(WorkflowError, match=r"1 is less than the minimum of 2"):
        validate_config(make_config(judge={"folds": 1}))
    with pytest.raises(WorkflowError, match=r"'n_bins' was unexpected"):
        validate_config(make_config(validation={"n_bins": 3}))
    with pytest.raises(WorkflowError, match=r"'eps' is not one of \['png', 'pdf', 'svg'\]"):
        validate_config(make_config(validation={"figure_formats": ["png", "eps"]}))
    with pytest.raises(WorkflowError, match=r"should contain a valid item|does not contain items matching"):
        validate_config(make_config(validation={"figure_formats": ["pdf"]}))


ATLAS_PREPS = {
    **PREPS,
    "pa": {
        "dataset": "atlas_photon",
        "transforms": [{"name": "normalize_incident"}],
        "alignment_encoding": "multi_hot",
    },
    "pa_log": {"dataset": "atlas_photon", "transforms": [{"name": "log10", "scale": 1e10, "floor": 1.0}]},
    "pa_noalign": {"dataset": "atlas_photon", "transforms": [{"name": "normalize_incident"}]},
}


def _atlas(kind, prep="pa", **extra):
    return {
        "type": kind,
        "dataset": "atlas_photon",
        "stages": [{"name": "all", "preprocessing": prep, "epochs": 2}],
        **extra,
    }


def test_atlas_models_validate_with_their_own_blocks(make_config):
    models = {
        "vae": _atlas("atlas_vae", architecture={"latent_dim": 5, "w_layers": [0.1, 0.2, 0.3, 0.4]}),
        "vae_log": _atlas("atlas_vae", "pa_log", architecture={"output_activation": "linear"}),
        "gan": _atlas("atlas_wgan", seeds=[3, 4], train={"batch_size": 32, "adam_betas": [0.5, 0.9]}),
    }
    cfg = validate_config(make_config(preprocessing=ATLAS_PREPS, models=models))
    assert cfg["models"]["gan"]["seeds"] == [3, 4] and cfg["models"]["vae"]["seeds"] is None
    from calofast.config import model_seeds

    assert model_seeds(cfg["models"]["vae"]) == [1] and model_seeds(cfg["models"]["gan"]) == [3, 4]
    assert model_seeds({**cfg["models"]["vae"], "train": {"seed": 7}}) == [7]


@pytest.mark.parametrize(
    "model, error, message",
    [
        (_atlas("atlas_vae", architecture={"n_critic": 5}), WorkflowError, r"'n_critic' was unexpected"),
        (_atlas("atlas_wgan", architecture={"gp_sided": "three"}), WorkflowError, r"'three' is not one of"),
        (_atlas("atlas_wgan", train={"label_flip": 0.1}), WorkflowError, r"'label_flip' was unexpected"),
        (_atlas("atlas_vae", architecture={"conditions": ["mass"]}), WorkflowError, r"'mass' is not one of"),
        (
            _atlas("atlas_vae", architecture={"prior": "vamp"}),
            WorkflowError,
            r"'vamp' is not one of \['standard', 'conditional'\]",
        ),
        (_atlas("atlas_vae", architecture={"reco_reduction": "max"}), WorkflowError, r"'max' is not one of"),
        (_atlas("atlas_vae", architecture={"free_bits": -1}), WorkflowError, r"-1 is less than the minimum of 0"),
        (
            _atlas("atlas_wgan", architecture={"output": "relu"}),
            WorkflowError,
            r"'relu' is not one of \['sigmoid', 'softmax_total'\]",
        ),
        (
            _atlas("atlas_wgan", architecture={"critic_energy_scale": 0}),
            WorkflowError,
            r"0 is less than or equal to the minimum of 0",
        ),
        (
            _atlas("atlas_vae", selection={"metric": "ks"}),
            WorkflowError,
            r"'ks' is not one of \['covariance', 'layer_response', 'observables_jsd', 'sampling_fraction', None\]",
        ),
        (
            _atlas("atlas_vae", selection={"metric": "sampling_fraction"}),
            ConfigError,
            r"models\.m\.selection\.metric: atlas_vae is selected by one of \['layer_response', 'covariance'\], not 'sampling_fraction'",
        ),
        (
            _atlas("atlas_wgan", train={"nproc": 2}),
            ConfigError,
            r"models\.m\.train\.nproc: atlas_wgan does not support DDP; use 1",
        ),
        (_atlas("atlas_vae", selection={"tolerances": {"fraction": 2}}), WorkflowError, r"'fraction' was unexpected"),
        (_atlas("atlas_wgan", seeds=[1, 1]), WorkflowError, r"has non-unique elements"),
        (
            {
                **_atlas("atlas_vae"),
                "dataset": "lcd_ele",
                "stages": [{"name": "a", "preprocessing": "p2", "epochs": 1}],
            },
            ConfigError,
            r"models\.m: atlas_vae generates showers of geometry \['atlas_em_barrel'\]; dataset 'lcd_ele' is lcd_ecal",
        ),
        (_atlas("atlas_wgan", "pa_noalign"), ConfigError, r"stages\[0\]\.preprocessing: atlas_wgan is conditioned on "),
        (
            _atlas("atlas_vae", "pa_log"),
            ConfigError,
            r"last transform of 'pa_log' must be \{name: normalize_incident\}",
        ),
        (
            _atlas("atlas_wgan", "pa_log", architecture={"conditions": ["energy", "log_energy"]}),
            ConfigError,
            r"atlas_wgan's sigmoid output gives cells in \[0, 1\]",
        ),
        (_atlas("atlas_vae", generation={"conditions": "grid"}), ConfigError, r"generation\.conditions: atlas_vae"),
        (
            _atlas("atlas_vae", architecture={"w_layers": [1.0, 2.0]}),
            WorkflowError,
            r"\[1\.0, 2\.0\] is too short",
        ),
    ],
)
def test_atlas_model_errors(make_config, model, error, message):
    with pytest.raises(error, match=message):
        validate_config(make_config(preprocessing=ATLAS_PREPS, models={"m": model}))


def test_scan_points_are_models_of_their_own(make_config):
    from calofast.config import all_models, scan_points

    scan = {"parameters": {"architecture.latent_dim": [5, 10, 20], "train.lr": [1e-4, 1e-3]}, "n_showers": 100}
    cfg = validate_config(make_config(preprocessing=ATLAS_PREPS, models={"vae": _atlas("atlas_vae", scan=scan)}))
    points = scan_points("vae", cfg["models"]["vae"])
    assert list(points) == [f"vae-scan-{i:03d}" for i in range(6)]
    assert points["vae-scan-000"]["architecture"]["latent_dim"] == 5 and points["vae-scan-000"]["train"]["lr"] == 1e-4
    assert points["vae-scan-005"]["architecture"]["latent_dim"] == 20 and points["vae-scan-005"]["train"]["lr"] == 1e-3
    assert points["vae-scan-003"]["description"] == "architecture.latent_dim=10, train.lr=0.001"
    assert all("scan" not in p for p in points.values())
    assert set(all_models(cfg)) == {"vae", *points}


@pytest.mark.parametrize(
    "parameters, error, message",
    [
        (
            {"architecture.latent_dim": [5, -1]},
            ConfigError,
            r"vae-scan-001 \(architecture\.latent_dim=-1\).*minimum of 1",
        ),
        ({"architecture.colour": [1]}, ConfigError, r"vae-scan-000.*'colour' was unexpected"),
        ({"epochs": [1, 2]}, WorkflowError, r"'epochs' does not match"),
        ({"architecture.latent_dim": []}, WorkflowError, r"\[\] should be non-empty"),
    ],
)
def test_scan_errors_name_the_point(make_config, parameters, error, message):
    model = _atlas("atlas_vae", scan={"parameters": parameters})
    with pytest.raises(error, match=message):
        validate_config(make_config(preprocessing=ATLAS_PREPS, models={"vae": model}))


BIBAE = {
    "type": "gh_bibae",
    "dataset": "ild_photon",
    "stages": [
        {"name": "ae", "preprocessing": "pi", "epochs": 2, "phase": "bibae"},
        {"name": "pp", "preprocessing": "pi", "epochs": 2, "phase": "postprocess"},
        {"name": "kde", "preprocessing": "pi", "epochs": 1, "phase": "kde"},
    ],
}


@pytest.mark.parametrize(
    "mutate, message",
    [
        (
            lambda m: m["stages"][1].update(phase="flow"),
            r"stages\[1\]\.phase: gh_bibae has no phase 'flow'; allowed: one of \['bibae', 'postprocess', 'kde'\]",
        ),
        (
            lambda m: m["stages"][2].update(epochs=3),
            r"stages\[2\]\.epochs: phase 'kde' fits without training steps; epochs must be 1",
        ),
        (
            lambda m: m["stages"][0].update(phase="postprocess"),
            r"stages\[0\]\.phase: the first stage trains the autoencoder",
        ),
        (lambda m: m["stages"].reverse(), r"stages\[0\]\.phase: the first stage"),
        (lambda m: m["stages"][2].update(phase="bibae"), r"stages\[2\]\.phase: 'bibae' after 'postprocess'"),
        (
            lambda m: m.update(stages=[m["stages"][0], m["stages"][2], m["stages"][1]]),
            r"stages\[2\]\.phase: 'postprocess' after 'kde'",
        ),
    ],
)
def test_bibae_phase_errors(make_config, mutate, message):
    import copy

    model = copy.deepcopy(BIBAE)
    mutate(model)
    with pytest.raises(ConfigError, match=message):
        validate_config(make_config(preprocessing={"pi": {"dataset": "ild_photon"}}, models={"b": model}))


def test_bibae_phases_valid(make_config):
    cfg = validate_config(make_config(preprocessing={"pi": {"dataset": "ild_photon"}}, models={"b": BIBAE}))
    assert [s["phase"] for s in cfg["models"]["b"]["stages"]] == ["bibae", "postprocess", "kde"]


def _vaegan(**extra):
    return {
        "type": "vaegan",
        "dataset": "ild_photon",
        "stages": [{"name": "all", "preprocessing": "pooled", "epochs": 2}],
        **extra,
    }


POOLED = {"pooled": {"dataset": "ild_photon", "pool": [3, 30, 3]}, "raw": {"dataset": "ild_photon"}}


def test_training_sets_are_models_of_their_own(make_config):
    from calofast.config import all_models, training_set

    sets = {"count": 2, "size": 10, "seed": 2}
    cfg = validate_config(
        make_config(preprocessing=POOLED, models={"v": _vaegan(training_sets=sets, amplification={})})
    )
    models = all_models(cfg)
    assert set(models) == {"v", "v-set-2"}
    assert training_set(models["v"]) == {"index": 1, "count": 2, "size": 10, "seed": 2}
    assert training_set(models["v-set-2"]) == {"index": 2, "count": 2, "size": 10, "seed": 2}
    assert "amplification" in models["v"] and "amplification" not in models["v-set-2"]
    # the study block's defaults are the paper's, scaled down
    study = cfg["models"]["v"]["amplification"]
    assert study["comparison_sizes"] == [1000, 5000, 10000, 50000] and study["pixel_cut_mev"] == 0.1
    assert training_set(_vaegan()) is None


@pytest.mark.parametrize(
    "model, message",
    [
        (
            _vaegan(training_sets={"count": 5, "size": 10}),
            r"models.v.training_sets: 5 sets of 10 showers need 50.*about 24",
        ),
        (_vaegan(stages=[{"name": "all", "preprocessing": "raw", "epochs": 2}]), r"image_shape.*\[30, 30, 30\]"),
        (_vaegan(selection={"metric": "covariance"}), r"vaegan is selected by one of \['observables_jsd'\]"),
        (_vaegan(selection={"reference": "test"}), r"'test' is not one of \['validation', 'train'\]"),
        (_vaegan(amplification={"comparison_sizes": [100]}), r"\[100\] is too short"),
        (_vaegan(architecture={"image_shape": [10, 12]}), r"image_shape \[10, 12\]"),
    ],
)
def test_vaegan_and_study_config_errors(make_config, model, message):
    with pytest.raises((ConfigError, WorkflowError), match=message):
        validate_config(make_config(preprocessing=POOLED, models={"v": model}))
