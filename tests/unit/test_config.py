import pytest
import yaml
from snakemake.exceptions import WorkflowError

from calofast.config import ConfigError, validate_config


def test_valid_config_gets_schema_defaults(make_config):
    cfg = validate_config(make_config(preprocessing={"p": {"dataset": "lcd_ele"}}))
    ds = cfg["datasets"]["lcd_ele"]
    assert ds["split"] == {"train": 0.8, "validation": 0.1, "test": 0.1, "seed": 12345}
    assert ds["simulation"] == {"stochastic_term": None, "cell_threshold_mev": 0}
    assert cfg["storage"] == {"compression": "gzip", "compression_level": 1}
    assert cfg["preprocessing"]["p"]["transforms"] == []
    assert cfg["quicklook"]["max_showers"] == 5000


def test_the_shipped_config_is_valid(repo_root):
    cfg = validate_config(yaml.safe_load((repo_root / "config.yaml").read_text()))
    assert set(cfg["datasets"]) == {"lcd_ele", "atlas_photon", "ild_photon", "ild_photon_50"}


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda c: c.update(colour="red"), r"Additional properties are not allowed \('colour' was unexpected\)"),
        (lambda c: c["datasets"]["lcd_ele"].update(nshowers=5), r"'nshowers' was unexpected"),
        (lambda c: c["datasets"]["lcd_ele"].update(n_showers="many"), r"'many' is not of type 'integer'"),
        (lambda c: c["datasets"]["lcd_ele"].update(n_showers=0), r"0 is less than the minimum of 1"),
        (
            lambda c: c["datasets"]["lcd_ele"].update(geometry="cms_hgcal"),
            r"'cms_hgcal' is not one of \['lcd_ecal', 'atlas_em_barrel', 'ild_siw_ecal'\]",
        ),
        (
            lambda c: c["datasets"]["lcd_ele"].update(source="zenodo"),
            r"'zenodo' is not one of \['synthetic', 'local'\]",
        ),
        (lambda c: c["datasets"]["lcd_ele"].update(particle="pion"), r"'pion' is not one of"),
        (lambda c: c["datasets"]["lcd_ele"]["energy"].pop("max_gev"), r"'max_gev' is a required property"),
        (lambda c: c["datasets"]["lcd_ele"]["angles"].update(theta_deg=[60, 190]), r"190 is greater than or equal"),
        (lambda c: c["datasets"]["lcd_ele"].update(source="local"), r"'local' is a required property"),
        (lambda c: c.update(storage={"compression": "zstd"}), r"'zstd' is not one of \['gzip', 'lzf', 'none'\]"),
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
        (lambda c: c["datasets"].update({"bad name": c["datasets"]["lcd_ele"]}), r"'bad name' does not match"),
    ],
)
def test_schema_errors_name_key_and_allowed_values(make_config, mutate, message):
    cfg = make_config()
    mutate(cfg)
    with pytest.raises(WorkflowError, match=message):
        validate_config(cfg)


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
        (lambda c: c["datasets"]["atlas_photon"].update(angles={}), r"needs abs_eta"),
        (
            lambda c: c["datasets"]["lcd_ele"].update(angles={"abs_eta": [0.2, 0.25]}),
            r"not allowed for geometry lcd_ecal",
        ),
        (
            lambda c: c["datasets"]["lcd_ele"].update(split={"train": 0.5}),
            r"train \+ validation \+ test = 0.7, must be 1",
        ),
        (
            lambda c: c["datasets"]["lcd_ele"].update(energy={"distribution": "uniform", "min_gev": 9, "max_gev": 3}),
            r"min_gev 9 > max_gev 3",
        ),
        (
            lambda c: c["datasets"]["lcd_ele"].update(source="local", local={"path": "x.h5"}),
            r"n_showers: only for source synthetic",
        ),
    ],
)
def test_cross_key_errors(make_config, mutate, message):
    cfg = make_config()
    mutate(cfg)
    with pytest.raises(ConfigError, match=message):
        validate_config(cfg)
