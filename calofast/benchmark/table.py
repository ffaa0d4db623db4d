"""The per-dataset speed table (the Getting-High poster's "time/shower and speed-up vs Geant4"):
one row per baseline (Geant4 where timed, the reference simulator) and, per model and device,
its plain eager port and its fastest variant, each at the batch size where it is fastest, with
the speed-ups against Geant4, the reference simulator and the plain port, from the models'
``benchmark/timing.json`` files (:func:`calofast.benchmark.timing.benchmark_model`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from calofast.benchmark.timing import write_table

COLUMNS = [
    "simulator",
    "model_type",
    "device",
    "path",
    "variant",
    "batch_size",
    "ms_per_shower",
    "ms_per_shower_iqr",
    "speedup_vs_geant4",
    "speedup_vs_reference",
    "speedup_vs_plain",
    "within_tolerance",
]


def _ratio(num: float | None, den: float | None) -> float | None:
    return None if not num or not den else float(num) / float(den)


def speed_table(timings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows of the table from the models' timing results (dicts of ``timing.json``); the Geant4
    and reference-simulator rows come from the first result that has them."""
    if not timings:
        raise ValueError("speed table: no model timings")
    geant4 = next((t["geant4_ms_per_shower"] for t in timings if t.get("geant4_ms_per_shower")), None)
    reference = next((t["reference_ms_per_shower"] for t in timings if t.get("reference_ms_per_shower")), None)
    rows: list[dict[str, Any]] = []
    for name, ms in (("Geant4", geant4), ("reference simulator", reference)):
        if ms:
            rows.append({"simulator": name, "device": "cpu", "ms_per_shower": ms,
                         "speedup_vs_geant4": _ratio(geant4, ms), "speedup_vs_reference": _ratio(reference, ms)})  # fmt: skip
    for t in timings:
        ok = [r for r in t["rows"] if r.get("status") == "ok" and r.get("ms_per_shower")]
        for device in sorted({r["device"] for r in ok}):
            on = [r for r in ok if r["device"] == device]
            plain = [r for r in on if r["variant"] == "plain_fp32"]
            plain_ms = min((r["ms_per_shower"] for r in plain), default=None)
            for path, cands in (("plain", plain), ("fastest", on)):
                if not cands:
                    continue
                best = min(cands, key=lambda r: r["ms_per_shower"])
                ms = float(best["ms_per_shower"])
                rows.append(
                    {
                        "simulator": t["model"],
                        "model_type": t["model_type"],
                        "device": device,
                        "path": path,
                        "variant": best["variant"],
                        "batch_size": best["batch_size"],
                        "ms_per_shower": ms,
                        "ms_per_shower_iqr": best.get("ms_per_shower_iqr"),
                        "speedup_vs_geant4": _ratio(geant4, ms),
                        "speedup_vs_reference": _ratio(reference, ms),
                        "speedup_vs_plain": _ratio(plain_ms, ms),
                        "within_tolerance": best.get("within_tolerance"),
                    }
                )
    return rows


def write_speed_table(timing_files: list[str | os.PathLike], out_csv: str | os.PathLike) -> list[dict[str, Any]]:
    """Read the models' ``timing.json`` files and write the table (atomically)."""
    timings = []
    for path in timing_files:
        try:
            timings.append(json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"speed table: cannot read {path}: {err}") from None
    rows = speed_table(timings)
    write_table(rows, out_csv, COLUMNS)
    return rows
