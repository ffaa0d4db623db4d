"""Speed-benchmark bookkeeping and the exactness of the fast generation path (not speed)."""

import copy
import json
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from calofast.benchmark import timing as bm
from calofast.generation.sampling import MicroBatched, build_network, tune_micro_batch
from calofast.models import get_family
from calofast.models.gan3d import (
    FastGenerator,
    Gan3D,
    Gan3DConfig,
    conv_on_upsampled,
    polyphase_upsample_conv_weights,
)
from calofast.training.checkpoints import CHECKPOINT_FORMAT

TINY = {"init_channels": 2, "dense_units": 1296, "gen_filters": 2, "gen_hidden_filters": 2}


def _randomise_bn(gen):
    for bn in [gen.bn1, *gen.bns, gen.bn5]:
        bn.running_mean.uniform_(-0.2, 0.2)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.uniform_(-0.1, 0.1)
    return gen.eval()


@pytest.mark.parametrize(
    ("factor", "kernel", "size"),
    [(6, (6, 6, 8), (9, 9, 8)), (3, (2, 5, 4), (4, 3, 5)), (2, (3, 1, 2), (3, 4, 2)), (1, (2, 2, 2), (3, 3, 3))],
)
def test_conv_on_upsampled_equals_conv_of_the_upsampled_tensor(factor, kernel, size):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, *size, generator=g)
    w = torch.randn(4, 3, *kernel, generator=g)
    b = torch.randn(4, generator=g)
    expected = F.conv3d(F.interpolate(x, scale_factor=factor, mode="nearest"), w, b)
    wp, bp, taps = polyphase_upsample_conv_weights(w, b, factor)
    got = conv_on_upsampled(x, wp, bp, taps, factor, kernel)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item())
    # phase kernels: J = (factor + k - 2) // factor + 1 taps per axis, factor^3 phases per channel
    assert taps == tuple((factor + k - 2) // factor + 1 for k in kernel)
    assert wp.shape == (4 * factor**3, 3, *taps)


@pytest.mark.parametrize("arch", [{}, TINY], ids=["paper", "tiny"])
def test_fast_generator_reproduces_the_generator(arch):
    torch.manual_seed(0)
    gen = _randomise_bn(Gan3D(Gan3DConfig(**arch)).generator)
    before = {k: v.clone() for k, v in gen.state_dict().items()}
    fast = FastGenerator(gen)
    z = torch.randn(3, 256)
    with torch.no_grad():
        ref, out = gen(z), fast(z)
    assert out.shape == ref.shape == (3, 51, 51, 25)
    assert (out - ref).abs().max() / ref.abs().max() < 1e-5
    # converting the fast network (bf16, channels-last) leaves the trained generator alone
    model = Gan3D(gen.cfg)
    model.generator = gen
    net = build_network(get_family("3dgan"), model, torch.device("cpu"), z, dtype="bf16", micro_batch=None)
    with torch.inference_mode():
        low = net(z.bfloat16()).float()
    assert all(torch.equal(v, before[k]) for k, v in gen.state_dict().items())
    assert ((low - ref).abs().sum() / ref.abs().sum()).item() < bm.TOLERANCE["bf16"]


def test_fast_generator_has_fewer_flops():
    gen = Gan3D(Gan3DConfig()).generator.eval()
    z = torch.randn(1, 256)
    plain, fast = bm.forward_flops(gen, z), bm.forward_flops(FastGenerator(gen), z)
    # the first convolution: 8 x 8 x (6*6*8) MACs at 49 x 49 x 41 outputs = 3.63 GFLOP of 6.12
    assert plain == pytest.approx(6.12e9, rel=0.01)
    assert plain / fast > 2.2


def test_micro_batching_is_exact_and_tuned_among_candidates():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU()).eval()
    z = torch.randn(7, 6)
    with torch.inference_mode():
        full = net(z)
        for size in (None, 1, 2, 3, 7, 10):
            torch.testing.assert_close(MicroBatched(net, size)(z), full)

    class CostsBySlice(torch.nn.Module):
        """5 ms per call of at most 2 rows, 5 ms per row above: slices of 2 are fastest."""

        def forward(self, x):
            time.sleep(0.005 * (1 if len(x) <= 2 else len(x)))
            return x

    assert tune_micro_batch(CostsBySlice(), torch.zeros(8, 3), (1, 2, 4, 8)) == 2
    assert tune_micro_batch(torch.nn.Identity(), torch.zeros(1, 3), (2, 4)) == 1  # no candidate fits: whole batch


def test_timed_calls_exclude_the_warmup():
    calls = []

    def fn():
        calls.append(1)
        time.sleep(0.3 if len(calls) == 1 else 0.01)

    seconds = bm.timed_calls(fn, warmup=1, repeats=3)
    assert len(calls) == 4 and len(seconds) == 3
    assert max(seconds) < 0.2
    s = bm.summarize([0.010, 0.020, 0.030], batch=10)  # seconds per call of 10 showers
    assert s["ms_per_shower"] == pytest.approx(2.0) and s["ms_per_shower_min"] == pytest.approx(1.0)
    assert s["ms_per_shower_max"] == pytest.approx(3.0) and s["showers_per_s"] == pytest.approx(500.0)
    assert s["ms_per_shower_iqr"] == pytest.approx(1.0)


class SleepyLinear(torch.nn.Module):
    """A linear layer that also sleeps a fixed time per row (a known cost), and
    1 s more on its first call with a new batch size (as a kernel autotuner)."""

    def __init__(self, ms_per_row: float, dtype=torch.float32) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(8, 16).to(dtype)
        torch.nn.init.constant_(self.lin.weight, 0.01)
        torch.nn.init.zeros_(self.lin.bias)
        self.ms = ms_per_row
        self.seen = set()

    def forward(self, z):
        if z.shape[0] not in self.seen:
            self.seen.add(z.shape[0])
            time.sleep(1.0)
        time.sleep(self.ms * z.shape[0] / 1e3)
        return self.lin(z)


class FakePath(bm.GenerationPath):
    model_type = "fake"

    def __init__(self) -> None:  # a network of known cost instead of a checkpoint
        pass

    def network(self, variant, device):
        kind, precision, _ = bm.VARIANTS[variant]
        return SleepyLinear(10.0 if kind == "plain" else 5.0, bm.DTYPES[precision])

    def latent(self, batch, device, precision, generator=None):
        z = torch.randn(batch, 8, generator=generator).abs() + 0.1
        return z.to(device, bm.DTYPES[precision]), np.full(batch, 1000.0)

    def finish(self, out, energy_mev):
        return out.float().cpu().numpy() * energy_mev[:, None]


def test_benchmark_bookkeeping_on_a_model_of_known_cost(tmp_path):
    cfg = bm.BenchmarkConfig(
        batch_sizes=[1, 4, 64],
        variants=["fast_fp32", "fast_bf16", "fast_fp16"],
        devices=["cpu"],
        repeats=3,
        max_seconds_per_point=1.5,
        probe_size=64,
    )
    assert cfg.variants[0] == "plain_fp32"  # the baseline is always timed
    result = bm.benchmark_model(FakePath(), "fake", cfg, reference_ms=20.0, geant4_ms=100.0)
    rows = result["rows"]
    ok = [r for r in rows if r["status"] == "ok"]
    # 10 ms/row (plain) and 5 ms/row (fast) of sleep: the per-shower time is in ms
    for r in ok:
        expected = 10.0 if r["variant"] == "plain_fp32" else 5.0
        assert expected <= r["ms_per_shower"] < expected * 2 + 10.0
        assert r["ms_per_shower_max"] * r["batch_size"] < 800.0  # no timed call holds the 1 s warm-up
        assert r["repeats"] == 3 and r["host_peak_rss_mb"] > 0
        assert r["gflop_per_shower"] == pytest.approx(2 * 8 * 16 / 1e9)
        assert r["speedup_vs_reference"] == pytest.approx(20.0 / r["ms_per_shower"])
        assert r["speedup_vs_geant4"] == pytest.approx(100.0 / r["ms_per_shower"])
        assert r["fraction_of_probe"] == pytest.approx(r["achieved_gflops"] / r["probe_gflops"])
    fast = {r["batch_size"]: r for r in ok if r["variant"] == "fast_fp32"}
    assert 1.2 < fast[4]["speedup_vs_baseline"] < 3.0
    # batch 64 x 5 ms x (1 warm-up + 3 repeats) = 1.3 s fits; the plain one (2.6 s) is skipped
    skipped = [r for r in rows if r["status"].startswith("skipped")]
    assert any(
        r["variant"] == "plain_fp32" and r["batch_size"] == 64 and "max_seconds_per_point" in r["status"]
        for r in skipped
    )
    assert any(r["variant"] == "fast_fp16" and "fp16" in r["status"] for r in skipped)  # no fast CPU fp16
    assert result["output_checks"]["fast_fp32@cpu"]["within_tolerance"]
    assert result["flops_per_shower"]["plain_fp32"] == 256
    assert result["matmul_probe_gflops"]["cpu"]["fp32"] > 0
    # table, JSON and figure
    bm.write_table(rows, tmp_path / "t.csv")
    header = (tmp_path / "t.csv").read_text().splitlines()[0].split(",")
    assert header == bm.CSV_COLUMNS
    bm.write_json(result, tmp_path / "t.json", config={"seed": 1})
    data = json.loads((tmp_path / "t.json").read_text())
    assert data["hardware"]["torch"] == torch.__version__ and "git_commit" in json.dumps(data["provenance"])
    bm.plot_benchmark(result, tmp_path / "t.png", tmp_path / "t.pdf")
    import matplotlib.pyplot as plt

    image = plt.imread(tmp_path / "t.png")
    assert min(image.shape[:2]) > 300 and len(np.unique(image.reshape(-1, image.shape[2]), axis=0)) > 20
    assert (tmp_path / "t.pdf").read_bytes().startswith(b"%PDF")
    assert not list(tmp_path.glob(".*tmp*"))


def test_targets_are_evaluated_from_the_rows():
    def row(variant, device, batch, ms, speedup, within=True):
        return {
            "variant": variant,
            "device": device,
            "batch_size": batch,
            "status": "ok",
            "ms_per_shower": ms,
            "speedup_vs_baseline": speedup,
            "within_tolerance": within,
        }

    rows = [
        row("plain_fp32", "cpu", 64, 90.0, 1.0),
        row("fast_fp32", "cpu", 64, 40.0, 2.25),
        row("fast_bf16", "cpu", 64, 20.0, 4.5, within=False),
        row("fast_bf16", "cuda:0", 1000, 0.04, 10.0),
        row("fast_fp32", "cuda:0", 100, 0.01, 40.0),
    ]
    t = bm.targets(rows)
    assert t["best_speedup_vs_baseline@cpu"]["variant"] == "fast_fp32"  # bf16 was out of tolerance
    assert not t["best_speedup_vs_baseline@cpu"]["met"]
    assert t["gpu_ms_per_shower@cuda:0"] == {
        "variant": "fast_bf16",
        "batch_size": 1000,
        "ms_per_shower": 0.04,
        "target": 0.05,
        "met": True,
    }


def test_bad_settings_are_named():
    with pytest.raises(bm.BenchmarkError, match="unknown \\['fast_int8'\\]"):
        bm.BenchmarkConfig(variants=["fast_int8"])
    with pytest.raises(bm.BenchmarkError, match="batch_sizes"):
        bm.BenchmarkConfig(batch_sizes=[0])
    with pytest.raises(bm.BenchmarkError, match="energy distribution"):
        bm.benchmark_reference(
            {"name": "x", "geometry": "lcd_ecal", "particle": "electron"}, [1], 1, bm.BenchmarkConfig()
        )


def test_gan3d_path_gives_canonical_showers_and_agreeing_variants(tmp_path):
    torch.manual_seed(0)
    model = Gan3D(Gan3DConfig(**TINY))
    _randomise_bn(model.generator)
    ck = tmp_path / "ck.pt"
    torch.save(
        {
            "format_version": CHECKPOINT_FORMAT,
            "model_type": "3dgan",
            "model_name": "tiny",
            "model_config": model.cfg.to_dict(),
            "stage": "s",
            "epoch": 0,
            "model": model.state_dict(),
        },
        ck,
    )
    pipeline = {"transforms": [{"name": "scale", "factor": 0.001}, {"name": "power", "exponent": 0.85}]}
    (tmp_path / "t.json").write_text(json.dumps({"geometry": "lcd_ecal", "pipeline": pipeline}))
    path = bm.GenerationPath(ck, tmp_path / "t.json", {"energy": np.array([1e4, 2e5]), "theta": np.array([1.2, 1.9])})
    assert path.model_type == "3dgan"
    z, e = path.latent(3, torch.device("cpu"), "fp32", torch.Generator().manual_seed(0))
    assert z.shape == (3, 256) and e.tolist() == [1e4, 2e5, 1e4]
    assert z[:, 0].tolist() == pytest.approx([0.1, 2.0, 0.1]) and z[:, 1].tolist() == pytest.approx([1.2, 1.9, 1.2])
    with torch.inference_mode():
        plain = path.network("plain_fp32", torch.device("cpu"))(z)
        fast = path.network("fast_fp32", torch.device("cpu"))(z)
    assert (fast - plain).abs().max() / plain.abs().max() < 1e-5
    cells = path.finish(fast, e)
    assert cells.shape == (3, 51, 51, 25) and cells.dtype == np.float32
    # the inverse preprocessing: (E/GeV)^0.85 back to MeV
    np.testing.assert_allclose(cells, fast.numpy() ** (1 / 0.85) * 1e3, rtol=1e-5, atol=1e-6)


def test_reference_simulator_timing(dataset_cfg):
    ds = dataset_cfg("ild_photon", n_showers=10)
    cfg = bm.BenchmarkConfig(repeats=2, devices=["cpu"])
    result = bm.benchmark_reference(ds, [1, 4], 1, cfg)
    assert [r["batch_size"] for r in result["rows"]] == [1, 4]
    assert all(r["status"] == "ok" and r["ms_per_shower"] > 0 for r in result["rows"])
    assert result["ms_per_shower"] == min(r["ms_per_shower"] for r in result["rows"])
    assert result["workers"] == 1 and result["hardware"]["cpu_count"] >= 1


def test_geant4_baseline_errors_are_named(tmp_path, make_config, monkeypatch):
    from calofast.benchmark import geant4 as g4bench
    from calofast.config import validate_config
    from calofast.geant4 import run as g4b

    with pytest.raises(g4b.Geant4Error, match=r"lacks \['G4EMLOW8.8', 'G4ENSDFSTATE3.0', 'PhotonEvaporation6.1.2'\]"):
        g4b.configure_data(tmp_path)
    with pytest.raises(g4b.Geant4Error, match="grid geometries .* not 'atlas_em_barrel'"):
        g4b.grid_geometry("atlas_em_barrel")
    with pytest.raises(g4b.Geant4Error, match="data_dir is required"):
        g4bench.benchmark_geant4({"geometry": "lcd_ecal", "particle": "electron"}, {"data_dir": None}, 1)
    for sub in g4b.DATA_SETS.values():
        (tmp_path / sub).mkdir()
    monkeypatch.setitem(__import__("sys").modules, "geant4_pybind", None)  # not installed
    with pytest.raises(g4b.Geant4Error, match=r"optional geant4 extra \(pip install -e '.\[geant4\]'\)"):
        g4b.import_geant4(tmp_path)
    assert g4b.label(True) == "Geant4 with surrogate low-energy tables"
    cfg = make_config()
    cfg["benchmark"] = {"geant4": {"enabled": True, "data_dir": None}}
    validate_config(cfg)  # null: the geant4 block's data directory, else surrogate tables


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda c: c["datasets"]["atlas_photon"].update(source="geant4"),
            r"datasets.atlas_photon.geometry: source geant4 builds \['lcd_ecal', 'lcd_ecal_25', 'ild_siw_ecal'\]",
        ),
        (
            lambda c: c["datasets"]["lcd_ele"].update(source="geant4"),
            "datasets.lcd_ele.angles.theta_deg: source geant4 shoots at normal incidence only",
        ),
        (
            lambda c: c["datasets"]["ild_photon"].update(source="geant4", particle="pion"),
            r"datasets.ild_photon.particle: source geant4 shoots \['electron', 'positron', 'photon'\], not 'pion'",
        ),
        (
            lambda c: c["datasets"]["ild_photon"].update(simulation={"calibration": "fitted"}),
            "datasets.ild_photon.simulation.calibration: geant4, none or the path of a calibration .json, not 'fitted'",
        ),
        (
            lambda c: c.update(
                geant4={"calibration": {"targets": {"lcd": {"geometry": "lcd_ecal", "particle": "electron"}}}}
            ),
            "geant4.calibration.targets.lcd: name it lcd_ecal_electron",
        ),
        (
            lambda c: c.update(
                geant4={
                    "calibration": {
                        "targets": {
                            "lcd_ecal_electron": {
                                "geometry": "lcd_ecal",
                                "particle": "electron",
                                "energies_gev": [50, 10],
                            }
                        }
                    }
                }
            ),
            r"energies_gev: \[50, 10\] must rise strictly",
        ),
    ],
)
def test_geant4_config_errors_are_named(make_config, mutate, message):
    from calofast.config import ConfigError, validate_config

    cfg = make_config()
    mutate(cfg)
    with pytest.raises(ConfigError, match=message):
        validate_config(cfg)


@pytest.mark.skipif(
    not __import__("calofast.geant4.run", fromlist=["available"]).available(),
    reason="needs the geant4 extra (geant4_pybind, xraydb)",
)
def test_geant4_timing_on_the_ild_geometry(tmp_path):
    from calofast.benchmark.geant4 import benchmark_geant4
    from calofast.geant4.tables import build_tables, elements_of

    data = build_tables(tmp_path / "g4", elements_of(["G4_W", "G4_Si", "G4_AIR"]))
    ds = {"name": "ild", "geometry": "ild_siw_ecal", "particle": "photon"}
    result = benchmark_geant4(ds, {"data_dir": str(data), "n_showers": 3, "energies_gev": [5]}, 1)
    (row,) = result["rows"]
    assert row["n_showers"] == 3 and row["ms_per_shower"] > 0 and result["ms_per_shower"] == row["ms_per_shower"]
    assert 0.02 < row["mean_visible_fraction"] < 0.04  # energy in the silicon: ~3 %
    assert result["label"] == row["label"] == "Geant4 with surrogate low-energy tables"


def test_speed_table_rows_and_speedups(tmp_path):
    """The poster-style table: baselines, per model and device the plain port and the fastest path
    at their best batch sizes, speed-ups against Geant4, the reference simulator and the plain port."""
    import csv
    import json

    from calofast.benchmark.table import speed_table, write_speed_table

    def row(variant, batch, ms, device="cpu", tol=1, status="ok"):
        return {"variant": variant, "device": device, "batch_size": batch, "ms_per_shower": ms,
                "ms_per_shower_iqr": 0.1, "status": status, "within_tolerance": tol}  # fmt: skip

    a = {"model": "wgan", "model_type": "gh_wgan", "geant4_ms_per_shower": 4000.0, "reference_ms_per_shower": 0.5,
         "rows": [row("plain_fp32", 1, 80.0), row("plain_fp32", 100, 60.0), row("fast_bf16", 100, 20.0, tol=0),
                  row("fast_fp32", 100, 1.0, status="skipped: too big"), row("plain_fp32", 100, 5.0, device="cuda")]}  # fmt: skip
    b = {"model": "bib", "model_type": "gh_bibae", "geant4_ms_per_shower": None, "reference_ms_per_shower": 0.5,
         "rows": [row("plain_fp32", 10, 40.0)]}  # fmt: skip
    rows = speed_table([b, a])
    assert [(r["simulator"], r.get("device"), r.get("path")) for r in rows] == [
        ("Geant4", "cpu", None), ("reference simulator", "cpu", None), ("bib", "cpu", "plain"), ("bib", "cpu", "fastest"),
        ("wgan", "cpu", "plain"), ("wgan", "cpu", "fastest"), ("wgan", "cuda", "plain"), ("wgan", "cuda", "fastest"),
    ]  # fmt: skip
    by = {(r["simulator"], r.get("device"), r.get("path")): r for r in rows}
    plain, fast = by["wgan", "cpu", "plain"], by["wgan", "cpu", "fastest"]
    assert (
        plain["batch_size"] == 100
        and plain["ms_per_shower"] == 60.0
        and plain["speedup_vs_geant4"] == pytest.approx(4000 / 60)
    )
    assert (
        fast["variant"] == "fast_bf16"
        and fast["speedup_vs_plain"] == pytest.approx(3.0)
        and fast["within_tolerance"] == 0
    )
    assert fast["speedup_vs_reference"] == pytest.approx(0.5 / 20)  # the skipped 1 ms point is not used
    assert by["Geant4", "cpu", None]["speedup_vs_reference"] == pytest.approx(0.5 / 4000)
    assert by["bib", "cpu", "fastest"]["speedup_vs_plain"] == 1.0
    for i, t in enumerate((a, b)):
        (tmp_path / f"t{i}.json").write_text(json.dumps(t))
    write_speed_table([tmp_path / "t0.json", tmp_path / "t1.json"], tmp_path / "speed.csv")
    table = list(csv.DictReader((tmp_path / "speed.csv").open()))
    assert len(table) == 8 and table[0]["simulator"] == "Geant4" and table[0]["ms_per_shower"] == "4000"
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match=r"speed table: cannot read .*bad.json"):
        write_speed_table([tmp_path / "bad.json"], tmp_path / "x.csv")
    with pytest.raises(ValueError, match="no model timings"):
        speed_table([])


# --------------------------------------------------------------- fastconv (Getting-High paths)

#: (in, out, kernel, stride, padding, input size): the Getting-High stacks' blocks (photon and
#: pion layouts) plus a stride larger than half the kernel (phases with no tap on some axis)
TRANSPOSED = [
    (6, 4, 4, 2, 1, (3, 5, 4)),
    (5, 1, 3, 1, 2, (6, 6, 6)),
    (4, 3, (4, 2, 2), 2, 1, (4, 4, 4)),
    (4, 3, 4, (2, 1, 1), 1, (3, 4, 4)),
    (3, 2, (10, 4, 4), 1, 1, (12, 6, 6)),
    (3, 2, (8, 3, 3), (1, 2, 2), 1, (9, 5, 5)),
    (3, 2, (7, 5, 5), 1, 1, (10, 7, 7)),
    (5, 1, (7, 5, 5), 1, 1, (12, 7, 7)),  # one output channel: the depth-split kernel
    (3, 2, 2, 3, 0, (3, 3, 3)),
    (3, 2, 3, 2, 1, (4, 3, 5), (1, 0, 1)),  # output padding (the BIB-AE decoder's)
]


@pytest.mark.parametrize("case", TRANSPOSED)
@pytest.mark.parametrize("activation", [None, "relu"])
def test_polyphase_transposed_convolution_is_exact(case, activation):
    from calofast.models.fastconv import PolyphaseConvTranspose3d

    c_in, c_out, kernel, stride, padding, size, *extra = case
    torch.manual_seed(3)
    conv = torch.nn.ConvTranspose3d(c_in, c_out, kernel, stride, padding, *extra, bias=True).eval()
    x = torch.randn(2, c_in, *size)
    fast = PolyphaseConvTranspose3d(conv, activation)
    with torch.inference_mode():
        ref = conv(x)
        ref = F.relu(ref) if activation else ref
        out = fast(x)  # the prepacked oneDNN path on this CPU
        again = fast(x.contiguous(memory_format=torch.channels_last_3d))
        low = copy.deepcopy(fast).to(torch.bfloat16)(x.bfloat16()).float()
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item())
    torch.testing.assert_close(again, out)
    assert ((low - ref).abs().sum() / ref.abs().sum()).item() < bm.TOLERANCE["bf16"]
    # off the CPU the original transposed convolution runs (the meta device: shapes only)
    assert copy.deepcopy(fast).to("meta")(x.to("meta")).shape == ref.shape
    # with autograd (or without oneDNN) the same module runs the plain convolution
    xg = x.clone().requires_grad_(True)
    torch.testing.assert_close(fast(xg), ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item())


@pytest.mark.parametrize("case", [c for c in TRANSPOSED if c[3] != 1])
@pytest.mark.parametrize("activation", [None, "relu"])
def test_packed_transposed_convolution_is_exact(case, activation):
    """oneDNN's prepacked deconvolution: the plain transposed convolution's own kernel, so fp32
    outputs are equal; either memory format in, bf16 within the tolerance, a second input shape
    repacks, and off the CPU or with autograd the plain op runs."""
    from calofast.generation.sampling import to_channels_last
    from calofast.models.fastconv import PackedConvTranspose3d

    c_in, c_out, kernel, stride, padding, size, *extra = case
    torch.manual_seed(3)
    conv = torch.nn.ConvTranspose3d(c_in, c_out, kernel, stride, padding, *extra, bias=True).eval()
    x = torch.randn(2, c_in, *size)
    fast = PackedConvTranspose3d(conv, activation)
    act = F.relu if activation else (lambda t: t)
    with torch.inference_mode():
        ref = act(conv(x))
        out = fast(x)
        again = fast(x.contiguous(memory_format=torch.channels_last_3d))
        three = fast(torch.cat([x, x[:1]]))  # another batch size: repacked
        low = to_channels_last(copy.deepcopy(fast).to(torch.bfloat16))(x.bfloat16()).float()
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6 * ref.abs().max().item())
    torch.testing.assert_close(again, out)
    torch.testing.assert_close(three[:2], out)
    assert 0 < ((low - ref).abs().sum() / ref.abs().sum()).item() < bm.TOLERANCE["bf16"]
    assert copy.deepcopy(fast).to("meta")(x.to("meta")).shape == ref.shape
    xg = x.clone().requires_grad_(True)
    out_g = fast(xg)
    assert out_g.requires_grad
    torch.testing.assert_close(out_g, ref, rtol=1e-5, atol=1e-6 * ref.abs().max().item())


@pytest.mark.parametrize(
    "case", [(32, 3, 2, (6, 6, 6)), (27, 3, 0, (4, 5, 6)), (8, 2, 1, (5, 6, 7)), (20, (2, 3, 3), (1, 0, 2), (5, 4, 6))]
)
def test_tap_sum_transposed_convolution_is_exact(case):
    """One output channel, stride 1: (taps x channels) @ (channels x voxels) and the taps'
    shifted windows summed give the transposed convolution (padding 0 to kernel - 1)."""
    from calofast.models.fastconv import TapSumConvTranspose3d, tap_sum_applies

    c_in, kernel, padding, size = case
    torch.manual_seed(6)
    conv = torch.nn.ConvTranspose3d(c_in, 1, kernel, 1, padding, bias=True).eval()
    x = torch.randn(3, c_in, *size)
    fast = TapSumConvTranspose3d(conv, "relu")
    with torch.inference_mode():
        ref = F.relu(conv(x))
        out = fast(x)
        low = copy.deepcopy(fast).to(torch.bfloat16)(x.bfloat16())
        plain = TapSumConvTranspose3d(conv)(x)
    assert out.shape == ref.shape and out.dtype == torch.float32 and low.dtype == torch.bfloat16
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item())
    torch.testing.assert_close(plain, conv(x), rtol=1e-5, atol=1e-5 * ref.abs().max().item())
    assert ((low.float() - ref).abs().sum() / ref.abs().sum()).item() < bm.TOLERANCE["bf16"]
    # where it does not apply (more taps than channels, two outputs, stride 2) it is not built
    for other in (
        torch.nn.ConvTranspose3d(4, 1, 3, 1, 1),
        torch.nn.ConvTranspose3d(32, 2, 3, 1, 1),
        torch.nn.ConvTranspose3d(32, 1, 3, 2, 1),
        torch.nn.ConvTranspose3d(32, 1, 3, 1, 3),
    ):
        assert not tap_sum_applies(other)
        with pytest.raises(ValueError, match="stride 1, one output channel"):
            TapSumConvTranspose3d(other)


def test_mixed_layer_norm_keeps_fp32_weights_and_fuses_the_relu():
    from calofast.models.fastconv import MixedLayerNorm

    torch.manual_seed(7)
    norm = torch.nn.LayerNorm([4, 5, 6])
    torch.nn.init.normal_(norm.weight, 1.0, 0.1), torch.nn.init.normal_(norm.bias, 0.0, 0.1)
    x = torch.randn(3, 2, 4, 5, 6) * 3 + 1
    mixed = MixedLayerNorm(norm, relu=True)
    with torch.inference_mode():
        ref = F.relu(norm(x))
        torch.testing.assert_close(mixed(x), ref)
        torch.testing.assert_close(MixedLayerNorm(norm)(x.permute(0, 1, 4, 3, 2).transpose(2, 4)), norm(x))
        low = copy.deepcopy(mixed).to(torch.bfloat16)
        assert low.weight.dtype == torch.float32 and torch.equal(low.weight, norm.weight.detach())
        out = low(x.bfloat16())
    assert out.dtype == torch.bfloat16 and (out >= 0).all()
    assert ((out.float() - ref).abs().sum() / ref.abs().sum()).item() < 0.01
    assert copy.deepcopy(mixed).to("meta").weight.device.type == "meta"  # devices do move it
    with pytest.raises(ValueError, match="affine"):
        MixedLayerNorm(torch.nn.LayerNorm(4, elementwise_affine=False))


def test_flop_counter_counts_the_prepacked_convolutions():
    """The fast networks' oneDNN ops are counted: the WGAN's fast photon generator does the
    plain one's FLOPs (same products), the 3D convolution formula by hand."""
    from calofast.models.fastconv import PackedConv3d, PackedConvTranspose3d
    from calofast.models.gh_common import BranchGenerator, FastBranchGenerator, layout_of

    conv = torch.nn.ConvTranspose3d(3, 5, 4, 2, 1, bias=False)
    x = torch.randn(2, 3, 4, 4, 4)
    assert bm.forward_flops(PackedConvTranspose3d(conv), x) == 2 * x.numel() * 5 * 64
    assert bm.forward_flops(PackedConvTranspose3d(conv), x) == bm.forward_flops(conv, x)
    w = torch.randn(6, 3, 3, 3, 3)
    assert bm.forward_flops(PackedConv3d(w, None, (1, 1, 1), None), x) == 2 * (2 * 6 * 64) * 3 * 27
    layout = layout_of("ild_ecal")
    gen = BranchGenerator(100, 128, layout.generator, layout.volume).eval()
    z = torch.rand(1, 101)
    assert bm.forward_flops(FastBranchGenerator(gen), z) == pytest.approx(bm.forward_flops(gen, z), rel=1e-6)


def test_polyphase_rejects_what_it_does_not_rewrite():
    from calofast.models.fastconv import PolyphaseConvTranspose3d, dense_seed

    with pytest.raises(ValueError, match="dilation"):
        PolyphaseConvTranspose3d(torch.nn.ConvTranspose3d(2, 2, 3, 2, 1, dilation=2))
    with pytest.raises(ValueError, match="groups"):
        PolyphaseConvTranspose3d(torch.nn.ConvTranspose3d(2, 2, 3, 2, 1, groups=2))
    with pytest.raises(ValueError, match="padding 0"):
        dense_seed(torch.nn.ConvTranspose3d(2, 2, 3, 1, 1))


def test_dense_seed_and_batchnorm_folding_are_exact():
    from calofast.models.fastconv import dense_seed, fold_batchnorm

    torch.manual_seed(4)
    seed = torch.nn.ConvTranspose3d(5, 3, (4, 3, 2), bias=True)
    z = torch.randn(4, 5)
    torch.testing.assert_close(dense_seed(seed)(z), seed(z[:, :, None, None, None]))
    conv, bn = torch.nn.ConvTranspose3d(3, 4, 4, 2, 1, bias=False), torch.nn.BatchNorm3d(4)
    bn.running_mean.uniform_(-0.3, 0.3), bn.running_var.uniform_(0.5, 2.0), bn.weight.data.uniform_(0.5, 1.5)
    bn.eval()
    x = torch.randn(2, 3, 3, 3, 3)
    with torch.no_grad():
        torch.testing.assert_close(fold_batchnorm(conv, bn)(x), bn(conv(x)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["gh_gan", "gh_wgan_photon", "gh_wgan_pion"])
def test_getting_high_fast_generators_reproduce_the_generators(kind):
    """The fast networks of the Getting-High GAN and WGAN (both layouts) at full size: fp32
    equal to rounding, bf16 within the benchmark's tolerance, the trained model untouched."""
    from calofast.models.fastconv import tap_sum_applies
    from calofast.models.gh_common import BranchGenerator, FastBranchGenerator, layout_of
    from calofast.models.gh_gan import FastGenerator, Generator, GHGANConfig

    torch.manual_seed(5)
    if kind == "gh_gan":
        gen = Generator(GHGANConfig()).eval()
        for bn in (m for m in gen.modules() if isinstance(m, torch.nn.BatchNorm3d)):
            bn.running_mean.uniform_(-0.2, 0.2), bn.running_var.uniform_(0.5, 2.0), bn.bias.data.uniform_(-0.1, 0.1)
        fast, z = FastGenerator(gen), torch.rand(2, 100)
    else:
        layout = layout_of("ild_ecal" if kind.endswith("photon") else "ild_ahcal")
        gen = BranchGenerator(100, 128, layout.generator, layout.volume).eval()
        fast, z = FastBranchGenerator(gen), torch.rand(2, 101)
    names = [type(m).__name__ for m in (fast.net if kind == "gh_gan" else fast.stack)]
    stack = list(gen.net)[1:] if kind == "gh_gan" else list(gen.stack)  # after the seed layer(s)
    convs = [m for m in stack if isinstance(m, torch.nn.ConvTranspose3d)]
    want = [
        "PackedConvTranspose3d"
        if m.stride != (1, 1, 1)
        else "TapSumConvTranspose3d"
        if tap_sum_applies(m)
        else "Polyphase"
        for m in convs
    ]
    assert [n for n in names if "Conv" in n] == [w.replace("Polyphase", "PolyphaseConvTranspose3d") for w in want]
    # the photons' last layer (27 taps, 32 channels) is a tap sum; the pions' (175 taps, 5) is not
    assert want[-1] == ("Polyphase" if kind == "gh_wgan_pion" else "TapSumConvTranspose3d")
    n_norms = sum(isinstance(m, torch.nn.LayerNorm) for m in gen.modules())
    assert names.count("MixedLayerNorm") == n_norms and n_norms == (0 if kind == "gh_gan" else len(convs) - 1)
    assert not {"ReLU", "LayerNorm", "BatchNorm3d"} & set(names)  # ReLUs fused, norms rewritten or folded
    before = {k: v.clone() for k, v in gen.state_dict().items()}
    with torch.inference_mode():
        ref, out = gen(z), fast(z)
        low = copy.deepcopy(fast).to(torch.bfloat16)(z.bfloat16()).float()
    assert out.shape == ref.shape and ref.abs().max() > 0
    assert (out - ref).abs().max() / ref.abs().max() < 1e-5
    assert ((low - ref).abs().sum() / ref.abs().sum()).item() < bm.TOLERANCE["bf16"]
    assert all(torch.equal(v, before[k]) for k, v in gen.state_dict().items())
