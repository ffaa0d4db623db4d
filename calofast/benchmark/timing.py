"""Speed benchmarks: time per generated shower vs batch size, against the reference simulator.

A *generation path* is everything between the conditions and the showers a user
gets: latent sampling, the network, the copy to host memory and the inverse
preprocessing.  :func:`benchmark_model` times the paths of one trained model
(variants: the plain eager fp32 network, i.e. the straightforward port, and the
project's optimised network in fp32 / bf16 / fp16, optionally compiled) on the
CPU and on every GPU, for a list of batch sizes, with warm-up calls excluded
and the median and spread of repeated calls; it records peak memory (host RSS,
GPU max allocated), forward FLOPs per shower (``torch.utils.flop_counter``),
the achieved GFLOP/s next to a matmul probe of the same device, and checks each
variant's output against the baseline on the same latent input.
:func:`benchmark_reference` times the offline parametrised simulator of the
dataset on the same machine with the same number of cores.
"""

from __future__ import annotations

import csv
import gc
import json
import logging
import math
import os
import platform
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import torch

from calofast.data.provenance import provenance
from calofast.generation.sampling import DTYPES
from calofast.util import files
from calofast.util.files import atomic_path

log = logging.getLogger(__name__)

#: Variant name -> (network, precision, compiled).  "plain" is the generator as
#: trained, run eagerly in fp32 under ``torch.no_grad`` (the baseline).
VARIANTS: dict[str, tuple[str, str, bool]] = {
    "plain_fp32": ("plain", "fp32", False),
    "fast_fp32": ("fast", "fp32", False),
    "fast_bf16": ("fast", "bf16", False),
    "fast_fp16": ("fast", "fp16", False),
    "fast_fp32_compile": ("fast", "fp32", True),
    "fast_bf16_compile": ("fast", "bf16", True),
    "fast_fp16_compile": ("fast", "fp16", True),
}
BASELINE = "plain_fp32"

#: Output agreement with the baseline on the same input: max |diff| / max |baseline|
#: for fp32; sum |diff| / sum |baseline| (relative L1 over the batch) for 16-bit
#: precisions, whose 8 (bf16) or 11 (fp16) mantissa bits give ~1% per cell.
TOLERANCE = {"fp32": 1e-4, "bf16": 0.03, "fp16": 0.03}

CSV_COLUMNS = [
    "model",
    "variant",
    "device",
    "precision",
    "compiled",
    "batch_size",
    "micro_batch",
    "status",
    "repeats",
    "ms_per_shower",
    "ms_per_shower_min",
    "ms_per_shower_max",
    "ms_per_shower_iqr",
    "showers_per_s",
    "host_peak_rss_mb",
    "gpu_max_allocated_mb",
    "gflop_per_shower",
    "achieved_gflops",
    "probe_gflops",
    "fraction_of_probe",
    "speedup_vs_baseline",
    "speedup_vs_reference",
    "speedup_vs_geant4",
    "output_difference",
    "within_tolerance",
]


class BenchmarkError(RuntimeError):
    """A benchmark cannot run (bad settings, unusable inputs)."""


@dataclass
class BenchmarkConfig:
    """What to time (the defaults are the schema's: batch sizes 1 to 10,000, every variant)."""

    batch_sizes: list[int] = field(default_factory=lambda: [1, 10, 100, 1000, 10000])
    variants: list[str] = field(default_factory=lambda: list(VARIANTS))
    devices: list[str] = field(default_factory=lambda: ["cpu", "cuda"])  # cuda: every visible GPU
    warmup: int = 1
    repeats: int = 5
    max_seconds_per_point: float = 300.0  # a point estimated to take longer is skipped
    memory_fraction: float = 0.7  # of the available host / GPU memory a point may use
    probe_size: int = 2048  # matmul probe: n x n @ n x n
    seed: int = 1

    def __post_init__(self) -> None:
        unknown = [v for v in self.variants if v not in VARIANTS]
        if unknown:
            raise BenchmarkError(f"benchmark.variants: unknown {unknown}; allowed: {sorted(VARIANTS)}")
        if not self.batch_sizes or min(self.batch_sizes) < 1:
            raise BenchmarkError(f"benchmark.batch_sizes: positive integers needed, got {self.batch_sizes}")
        if self.repeats < 1 or self.warmup < 0:
            raise BenchmarkError("benchmark.repeats must be >= 1 and benchmark.warmup >= 0")
        self.batch_sizes = sorted(set(int(b) for b in self.batch_sizes))
        if BASELINE not in self.variants:
            self.variants = [BASELINE, *self.variants]


# --------------------------------------------------------------------------- measurement


def timed_calls(
    fn: Callable[[], Any], warmup: int, repeats: int, sync: Callable[[], None] = lambda: None
) -> list[float]:
    """Seconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return times


def summarize(seconds: list[float], batch: int) -> dict[str, float]:
    """Median, min, max and interquartile range of per-shower times [ms]."""
    ms = np.asarray(seconds, dtype=np.float64) * 1e3 / batch
    q1, q3 = np.percentile(ms, [25, 75])
    med = float(np.median(ms))
    return {
        "ms_per_shower": med,
        "ms_per_shower_min": float(ms.min()),
        "ms_per_shower_max": float(ms.max()),
        "ms_per_shower_iqr": float(q3 - q1),
        "showers_per_s": 1e3 / med if med > 0 else math.inf,
    }


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter of this process (Linux); False where not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _proc_kib(path: str, key: str) -> float | None:
    """A ``key: N kB`` value of a /proc file in KiB (None where unreadable)."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key + ":"):
                return float(line.split()[1])
    except OSError:
        pass
    return None


def peak_rss_mb() -> float:
    """Peak resident memory of this process [MB] (since the last reset, on Linux)."""
    kib = _proc_kib("/proc/self/status", "VmHWM")
    if kib is not None:
        return kib / 1024.0
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def available_host_mb() -> float:
    """Memory available to new allocations [MB] (MemAvailable; inf if unknown)."""
    kib = _proc_kib("/proc/meminfo", "MemAvailable")
    return math.inf if kib is None else kib / 1024.0


def matmul_probe(device: torch.device, dtype: torch.dtype = torch.float32, n: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of an n x n matrix product on ``device`` (median of ``repeats``)."""
    g = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device, dtype)
    b = torch.randn(n, n, generator=g).to(device, dtype)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    with torch.inference_mode():
        times = timed_calls(lambda: a @ b, 1, repeats, sync)
    return 2.0 * n**3 / statistics.median(times) / 1e9


def _register_packed_flops() -> None:
    """FLOP formulas for oneDNN's prepacked (transposed) convolutions, which the fast networks
    of :mod:`calofast.models.fastconv` call and torch's counter does not know (a packed weight
    reports its logical shape: out, in, kernel)."""
    from torch.utils.flop_counter import register_flop_formula

    ops = torch.ops.mkldnn
    if hasattr(ops, "_convolution_pointwise"):

        @register_flop_formula(ops._convolution_pointwise)
        def _conv(x_shape, w_shape, *args, out_shape=None, **kwargs) -> int:
            return 2 * math.prod(out_shape) * math.prod(w_shape[1:])

    if hasattr(ops, "_convolution_transpose_pointwise"):

        @register_flop_formula(ops._convolution_transpose_pointwise)
        def _deconv(x_shape, w_shape, *args, out_shape=None, **kwargs) -> int:
            return 2 * math.prod(x_shape) * w_shape[0] * math.prod(w_shape[2:])


_register_packed_flops()


def forward_flops(net: torch.nn.Module, z: torch.Tensor) -> float:
    """FLOPs of one forward call (torch's FLOP counter: matmuls and convolutions, plus oneDNN's
    prepacked convolutions)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        net(z)
    return float(counter.get_total_flops())


def hardware_info() -> dict[str, Any]:
    """CPU model, cores, torch threads, GPUs and library versions of this machine."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count()
    gpus = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            gpus.append({"index": i, "name": p.name, "memory_gb": round(p.total_memory / 1e9, 1)})
    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "cpus_usable": affinity,
        "torch_threads": torch.get_num_threads(),
        "gpus": gpus,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def devices_to_time(requested: list[str]) -> list[torch.device]:
    """The CPU (when requested) and every visible GPU (when cuda is requested)."""
    out = []
    if "cpu" in requested:
        out.append(torch.device("cpu"))
    if "cuda" in requested and torch.cuda.is_available():
        out += [torch.device("cuda", i) for i in range(torch.cuda.device_count())]
    return out


def precision_supported(device: torch.device, precision: str) -> str | None:
    """None if the device runs ``precision`` natively, else the reason it is skipped."""
    if precision == "fp32":
        return None
    if device.type == "cpu":
        if precision == "fp16":
            return "fp16 has no fast CPU kernels (convolutions, matmuls)"
        if not torch.backends.mkldnn.is_available():
            return "bf16 on the CPU needs oneDNN"
        return None
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        return "this GPU has no bf16"
    return None


# --------------------------------------------------------------------------- generation paths


class GenerationPath:
    """Conditions -> showers in the canonical layout on the host, for one trained model of
    any family: :meth:`network` builds a variant's network, :meth:`latent` the network
    input of a batch, :meth:`finish` copies to the host and inverts the preprocessing;
    :func:`benchmark_model` times exactly what a user's generation job does per batch.

    The "plain" variants are the family's network as trained; the "fast" ones its exact
    optimised rewrite (:meth:`calofast.models.family.ModelFamily.fast_network`: the
    3DGAN's polyphase first convolution; the network itself for the ATLAS MLPs) in the
    named precision, channels-last, micro-batches tuned on the CPU, optionally compiled.
    """

    def __init__(
        self,
        checkpoint: str | os.PathLike,
        transforms: str | os.PathLike,
        conditions: dict[str, np.ndarray],
        seed: int = 1,
    ) -> None:
        from calofast.data.preprocess import Pipeline
        from calofast.generation.sampling import example_input
        from calofast.models import get_family
        from calofast.training.checkpoints import load_model

        self.model, self.ck = load_model(checkpoint, "cpu")
        self.family = get_family(self.ck["model_type"])
        self.model_type = self.family.name
        self.pipe = Pipeline.from_json(transforms)
        self.conditions = conditions
        if len(conditions.get("energy", ())) == 0:
            raise BenchmarkError("no conditions to generate from")
        self.example = example_input(self.family, self.model, conditions)
        self.rng = torch.Generator(device="cpu").manual_seed(int(seed))

    def network(self, variant: str, device: torch.device) -> torch.nn.Module:
        from calofast.generation.sampling import build_network

        kind, precision, compiled = VARIANTS[variant]
        if kind == "plain":
            net = build_network(self.family, self.model, device, self.example, optimized=False)
            return net if precision == "fp32" else net.to(DTYPES[precision])
        return build_network(self.family, self.model, device, self.example, True, precision, compiled, "auto")

    def latent(self, batch: int, device: torch.device, precision: str, generator: torch.Generator | None = None):
        """Network input of ``batch`` showers and their energies [MeV]."""
        from calofast.generation.sampling import condition_tensors

        idx = np.arange(batch) % len(self.conditions["energy"])
        noise = torch.randn(batch, self.family.latent_dim(self.model), generator=generator or self.rng)
        cond = condition_tensors(self.family, self.conditions, idx)
        z = self.family.network_input(self.model, noise, cond).to(device, DTYPES[precision], non_blocking=True)
        return z, np.asarray(self.conditions["energy"], dtype=np.float64)[idx]

    def finish(self, out: torch.Tensor, energy_mev: np.ndarray) -> np.ndarray:
        """Host copy and inverse preprocessing of a network output."""
        return self.pipe.inverse(out.float().cpu().numpy(), energy_mev)


# --------------------------------------------------------------------------- the model benchmark


def _output_difference(ref: torch.Tensor, out: torch.Tensor, precision: str) -> float:
    ref, out = ref.float().cpu(), out.float().cpu()
    if precision == "fp32":
        return float((out - ref).abs().max() / ref.abs().max().clamp_min(1e-30))
    return float((out - ref).abs().sum() / ref.abs().sum().clamp_min(1e-30))


def benchmark_model(
    path: GenerationPath,
    model: str,
    cfg: BenchmarkConfig,
    reference_ms: float | None = None,
    geant4_ms: float | None = None,
) -> dict[str, Any]:
    """Time every variant x device x batch size of a generation path (see module doc).

    Per device and batch size the variants are timed interleaved (repeat 1 of
    every variant, then repeat 2, ...), so that a slow drift of the machine
    (other jobs, shared cores) affects every variant alike; the speed-up over
    the baseline is the median of the per-repeat ratios.
    """
    rows: list[dict[str, Any]] = []
    probes: dict[str, dict[str, float]] = {}
    flops: dict[str, float] = {}
    checks: dict[str, dict[str, Any]] = {}
    for device in devices_to_time(cfg.devices):
        dev = str(device)
        is_cuda = device.type == "cuda"
        sync = (lambda d=device: torch.cuda.synchronize(d)) if is_cuda else (lambda: None)
        probes[dev] = {"fp32": matmul_probe(device, torch.float32, cfg.probe_size)}
        # one fixed latent batch for the output comparison of every variant
        z_check, _ = path.latent(4, device, "fp32", torch.Generator().manual_seed(cfg.seed))
        with torch.no_grad():
            reference_out = path.network(BASELINE, device)(z_check).float()
        nets: dict[str, torch.nn.Module] = {}
        for variant in cfg.variants:
            kind, precision, compiled = VARIANTS[variant]
            skip = precision_supported(device, precision)
            if skip:
                rows.append(_skipped(model, variant, dev, precision, compiled, None, skip))
                continue
            if precision not in probes[dev]:
                probes[dev][precision] = matmul_probe(device, DTYPES[precision], cfg.probe_size)
            net = nets[variant] = path.network(variant, device)
            if variant not in flops:
                z1, _ = path.latent(1, device, precision)
                flops[variant] = forward_flops(_uncompiled(net), z1)
            with torch.inference_mode():
                out = net(z_check.to(DTYPES[precision]))
            diff = _output_difference(reference_out, out, precision)
            checks[f"{variant}@{dev}"] = {
                "output_difference": diff,
                "tolerance": TOLERANCE[precision],
                "within_tolerance": diff <= TOLERANCE[precision],
                "measure": "max|diff|/max|baseline|" if precision == "fp32" else "sum|diff|/sum|baseline|",
            }
        last: dict[str, tuple[int, float, float]] = {}  # variant -> (batch, s per shower, MB per shower)
        for batch in cfg.batch_sizes:
            active = []
            for variant in nets:
                kind, precision, compiled = VARIANTS[variant]
                reason = _too_big(batch, last.get(variant), cfg, device)
                if reason:
                    rows.append(_skipped(model, variant, dev, precision, compiled, batch, reason))
                else:
                    active.append(variant)
            timing = _time_interleaved(path, nets, active, batch, device, cfg, sync)
            baseline = timing.get(BASELINE, {}).get("seconds")
            for variant in active:
                kind, precision, compiled = VARIANTS[variant]
                t = timing[variant]
                if "error" in t:
                    rows.append(_skipped(model, variant, dev, precision, compiled, batch, t["error"]))
                    continue
                stats = summarize(t["seconds"], batch)
                used = t["gpu_mb"] if is_cuda else t["rss_increase_mb"]
                last[variant] = (batch, stats["ms_per_shower"] / 1e3, (used or 0.0) / batch)
                gflop = flops[variant] / 1e9
                achieved = gflop * stats["showers_per_s"]
                probe = probes[dev].get(precision, probes[dev]["fp32"])
                speedup = None
                if baseline and "error" not in timing[BASELINE]:
                    speedup = float(np.median(np.asarray(baseline) / np.asarray(t["seconds"])))
                rows.append(
                    {
                        "model": model,
                        "variant": variant,
                        "device": dev,
                        "precision": precision,
                        "compiled": compiled,
                        "batch_size": batch,
                        "micro_batch": getattr(nets[variant], "size", None),
                        "status": "ok",
                        "repeats": len(t["seconds"]),
                        **stats,
                        "host_peak_rss_mb": t["rss_mb"],
                        "gpu_max_allocated_mb": t["gpu_mb"],
                        "gflop_per_shower": gflop,
                        "achieved_gflops": achieved,
                        "probe_gflops": probe,
                        "fraction_of_probe": achieved / probe,
                        "speedup_vs_baseline": speedup,
                        "output_difference": checks[f"{variant}@{dev}"]["output_difference"],
                        "within_tolerance": checks[f"{variant}@{dev}"]["within_tolerance"],
                    }
                )
                log.info("%s %s b=%d: %.3f ms/shower", dev, variant, batch, stats["ms_per_shower"])
        del nets
    _add_speedups(rows, reference_ms, geant4_ms)
    return {
        "model": model,
        "model_type": path.model_type,
        "rows": rows,
        "flops_per_shower": flops,
        "matmul_probe_gflops": probes,
        "output_checks": checks,
        "reference_ms_per_shower": reference_ms,
        "geant4_ms_per_shower": geant4_ms,
        "targets": targets(rows),
        "config": asdict(cfg),
        "hardware": hardware_info(),
    }


def _uncompiled(net: torch.nn.Module) -> torch.nn.Module:
    inner = getattr(net, "net", net)  # MicroBatched
    return getattr(inner, "_orig_mod", inner)


def _skipped(model, variant, device, precision, compiled, batch, reason) -> dict[str, Any]:
    return {
        "model": model,
        "variant": variant,
        "device": device,
        "precision": precision,
        "compiled": compiled,
        "batch_size": batch,
        "status": f"skipped: {reason}",
    }


def _time_interleaved(
    path: GenerationPath,
    nets: dict[str, torch.nn.Module],
    variants: list[str],
    batch: int,
    device: torch.device,
    cfg: BenchmarkConfig,
    sync: Callable[[], None],
) -> dict[str, dict[str, Any]]:
    """``warmup`` untimed rounds, then ``repeats`` timed rounds of one call per
    variant; per variant the seconds, the peak host RSS and its increase during
    a call [MB], and the GPU's max allocated memory [MB] (or the error)."""
    is_cuda = device.type == "cuda"

    def call(variant: str) -> None:
        # the baseline is the straightforward port: eager, fp32, under no_grad
        with torch.no_grad() if variant == BASELINE else torch.inference_mode():
            z, e = path.latent(batch, device, VARIANTS[variant][1])
            path.finish(nets[variant](z), e)

    out = {v: {"seconds": [], "rss_mb": 0.0, "rss_increase_mb": 0.0, "gpu_mb": None} for v in variants}
    for round_ in range(cfg.warmup + cfg.repeats):
        for variant in variants:
            t = out[variant]
            if "error" in t:
                continue
            gc.collect()
            base = peak_rss_mb() if reset_peak_rss() else None
            if is_cuda:
                torch.cuda.reset_peak_memory_stats(device)
            try:
                sync()
                t0 = time.perf_counter()
                call(variant)
                sync()
                seconds = time.perf_counter() - t0
            except (RuntimeError, MemoryError) as err:  # e.g. CUDA out of memory
                if is_cuda:
                    torch.cuda.empty_cache()
                t["error"] = f"failed: {err}"[:200]
                continue
            if round_ < cfg.warmup:
                continue
            t["seconds"].append(seconds)
            rss = peak_rss_mb()
            t["rss_mb"] = max(t["rss_mb"], rss)
            if base is not None:
                t["rss_increase_mb"] = max(t["rss_increase_mb"], rss - base)
            if is_cuda:
                t["gpu_mb"] = max(t["gpu_mb"] or 0.0, torch.cuda.max_memory_allocated(device) / 2**20)
    return out


def _too_big(
    batch: int, last: tuple[int, float, float] | None, cfg: BenchmarkConfig, device: torch.device
) -> str | None:
    """Why a point is skipped, estimated from the previous batch size of the variant."""
    if last is None:
        return None
    _, s_per_shower, mb_per_shower = last
    seconds = s_per_shower * batch * (cfg.warmup + cfg.repeats)
    if seconds > cfg.max_seconds_per_point:
        return f"estimated {seconds:.0f} s > max_seconds_per_point {cfg.max_seconds_per_point:g}"
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        budget = free / 2**20 * cfg.memory_fraction
    else:
        budget = available_host_mb() * cfg.memory_fraction
    need = mb_per_shower * batch
    if need > budget:
        return f"estimated {need:.0f} MB > {budget:.0f} MB ({cfg.memory_fraction:g} of the available memory)"
    return None


def _add_speedups(rows: list[dict[str, Any]], reference_ms: float | None, geant4_ms: float | None) -> None:
    for r in rows:
        if r["status"] != "ok":
            continue
        r["speedup_vs_reference"] = reference_ms / r["ms_per_shower"] if reference_ms else None
        r["speedup_vs_geant4"] = geant4_ms / r["ms_per_shower"] if geant4_ms else None


def targets(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The issue's speed targets, evaluated on the rows: best optimised/baseline ratio
    per device (outputs within tolerance), and GPU ms/shower at batch >= 1000."""
    out: dict[str, Any] = {}
    ok = [r for r in rows if r["status"] == "ok" and r.get("speedup_vs_baseline") and r["variant"] != BASELINE]
    for dev in sorted({r["device"] for r in ok}):
        cand = [r for r in ok if r["device"] == dev and r["within_tolerance"]]
        if cand:
            best = max(cand, key=lambda r: r["speedup_vs_baseline"])
            out[f"best_speedup_vs_baseline@{dev}"] = {
                "variant": best["variant"],
                "batch_size": best["batch_size"],
                "speedup": best["speedup_vs_baseline"],
                "target": 3.0,
                "met": best["speedup_vs_baseline"] >= 3.0,
            }
        if dev.startswith("cuda"):
            big = [r for r in cand if r["batch_size"] >= 1000]
            if big:
                fastest = min(big, key=lambda r: r["ms_per_shower"])
                out[f"gpu_ms_per_shower@{dev}"] = {
                    "variant": fastest["variant"],
                    "batch_size": fastest["batch_size"],
                    "ms_per_shower": fastest["ms_per_shower"],
                    "target": 0.05,
                    "met": fastest["ms_per_shower"] < 0.05,
                }
    return out


# --------------------------------------------------------------------------- reference simulator


def _simulate_n(ds: dict[str, Any], n: int, seed: int) -> int:
    """Simulate ``n`` showers of a synthetic dataset's kind (one worker's share)."""
    from calofast.data.datasets import sample_conditions, simulate_showers
    from calofast.geometry import get_geometry

    geometry = get_geometry(ds["geometry"])
    rng = np.random.default_rng(seed)
    energy, angles = sample_conditions(ds, rng, 0, n)
    simulate_showers(ds, geometry, energy, angles, rng)
    return n


def benchmark_reference(
    ds: dict[str, Any], batch_sizes: list[int], workers: int, cfg: BenchmarkConfig
) -> dict[str, Any]:
    """Time the offline parametrised simulator of a dataset: ``workers`` processes
    each simulate ``batch`` showers per call (the same cores as the model job)."""
    if "energy" not in ds:
        raise BenchmarkError(f"dataset {ds.get('name')!r}: the reference simulator needs its energy distribution")
    workers = max(1, int(workers))
    rows = []
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        list(pool.map(_simulate_n, [ds] * workers, [1] * workers, range(workers)))  # start the workers
        last = None
        for batch in sorted(batch_sizes):
            if last is not None and last * batch * (cfg.warmup + cfg.repeats) > cfg.max_seconds_per_point:
                rows.append({"batch_size": batch, "status": "skipped: max_seconds_per_point"})
                continue
            counter = iter(range(10**9))

            def call(batch=batch, counter=counter):
                seeds = [cfg.seed * 1000003 + next(counter) for _ in range(workers)]
                return list(pool.map(_simulate_n, [ds] * workers, [batch] * workers, seeds))

            seconds = timed_calls(call, cfg.warmup, cfg.repeats)
            stats = summarize(seconds, batch * workers)
            last = stats["ms_per_shower"] / 1e3
            rows.append({"batch_size": batch, "status": "ok", "repeats": len(seconds), "workers": workers, **stats})
    ok = [r for r in rows if r["status"] == "ok"]
    best = min(ok, key=lambda r: r["ms_per_shower"]) if ok else None
    return {
        "simulator": "calofast parametrised (GFlash-style) simulator",
        "dataset": ds.get("name"),
        "geometry": ds["geometry"],
        "particle": ds["particle"],
        "workers": workers,
        "rows": rows,
        "ms_per_shower": best["ms_per_shower"] if best else None,
        "hardware": hardware_info(),
    }


# --------------------------------------------------------------------------- outputs


def write_table(rows: list[dict[str, Any]], path: str | os.PathLike, columns: list[str] = CSV_COLUMNS) -> None:
    """CSV of the rows (atomically); numbers with 6 significant digits, blanks for missing."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(columns)
        for r in rows:
            w.writerow([_fmt(r.get(c)) for c in columns])


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return str(int(v))
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def write_json(data: dict[str, Any], path: str | os.PathLike, config: dict[str, Any] | None = None, repo=None) -> None:
    """JSON with provenance (atomically)."""
    data = {**data, "provenance": provenance(config or {}, seed=int((config or {}).get("seed", 0)), repo=repo)}
    files.write_json(path, data)


def plot_benchmark(result: dict[str, Any], out_png: str | os.PathLike, out_pdf: str | os.PathLike) -> None:
    """ms/shower vs batch size per variant and device (log-log), with the reference
    simulator and Geant4 (when timed) as horizontal lines; speed-up vs baseline below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mplhep as hep

    hep.style.use("ROOT")
    plt.rcParams.update({"font.size": 13, "axes.labelsize": 15, "legend.fontsize": 10})
    fig, (ax, rax) = plt.subplots(
        2, 1, figsize=(7.5, 7.0), sharex=True, gridspec_kw={"height_ratios": [3, 1.3], "hspace": 0.05}
    )
    ok = [r for r in result["rows"] if r["status"] == "ok"]
    series = sorted({(r["device"], r["variant"]) for r in ok})
    markers = "osD^v<>px"
    for i, (dev, variant) in enumerate(series):
        rs = sorted((r for r in ok if r["device"] == dev and r["variant"] == variant), key=lambda r: r["batch_size"])
        b = np.array([r["batch_size"] for r in rs])
        med = np.array([r["ms_per_shower"] for r in rs])
        lo = med - np.array([r["ms_per_shower_min"] for r in rs])
        hi = np.array([r["ms_per_shower_max"] for r in rs]) - med
        style = "--" if variant == BASELINE else "-"
        line = ax.errorbar(
            b, med, yerr=[lo, hi], fmt=markers[i % len(markers)] + style, capsize=3, label=f"{variant} ({dev})"
        )
        sp = [r.get("speedup_vs_baseline") for r in rs]
        if variant != BASELINE and all(s is not None for s in sp):
            rax.plot(b, sp, markers[i % len(markers)] + style, color=line[0].get_color())
    for key, label, colour in (
        ("reference_ms_per_shower", "reference simulator", "black"),
        ("geant4_ms_per_shower", result.get("geant4_label") or "Geant4", "tab:grey"),
    ):
        if result.get(key):
            ax.axhline(result[key], color=colour, ls=":", lw=2, label=f"{label}: {result[key]:.3g} ms")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_ylabel("time per shower [ms]")
    ax.set_title(f"{result['model']} generation ({result['hardware']['cpu'][:40]})", fontsize=11)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    rax.axhline(1.0, color="black", lw=1)
    rax.axhline(3.0, color="tab:green", lw=1, ls=":")
    rax.set_xlabel("batch size")
    rax.set_ylabel("speed-up\nvs plain fp32", fontsize=11)
    for path in (out_png, out_pdf):
        files.save_figure(fig, path, dpi=90, bbox_inches="tight")
    plt.close(fig)


def run_model_benchmark(
    checkpoint: str | os.PathLike,
    transforms: str | os.PathLike,
    test: str | os.PathLike,
    model: str,
    settings: dict[str, Any],
    out_csv: str | os.PathLike,
    out_json: str | os.PathLike,
    out_png: str | os.PathLike,
    out_pdf: str | os.PathLike,
    reference: str | os.PathLike | None = None,
    geant4: str | os.PathLike | None = None,
    repo: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """The benchmark job of one model: conditions from the test split, the
    reference (and Geant4) timings from their JSON files, table, JSON and figure."""
    from calofast.generation.sampling import read_conditions
    from calofast.models import get_family
    from calofast.training.checkpoints import load_checkpoint

    cfg = BenchmarkConfig(**{k: v for k, v in settings.items() if k in BenchmarkConfig.__dataclass_fields__})
    family = get_family(load_checkpoint(checkpoint)["model_type"])
    conditions = read_conditions(test, family, 10_000, cfg.seed)
    path = GenerationPath(checkpoint, transforms, conditions, cfg.seed)
    ref = json.loads(Path(reference).read_text()) if reference else {}
    g4 = json.loads(Path(geant4).read_text()) if geant4 else {}
    result = benchmark_model(path, model, cfg, ref.get("ms_per_shower"), g4.get("ms_per_shower"))
    result["reference"] = {k: ref.get(k) for k in ("simulator", "workers", "ms_per_shower")} if ref else None
    if g4:
        result["geant4_label"] = g4.get("label")
    write_table(result["rows"], out_csv)
    write_json(result, out_json, config=settings, repo=repo)
    plot_benchmark(result, out_png, out_pdf)
    return result
