"""The package layout: subpackages by concern, no import cycles, no private helpers imported
across modules."""

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "calofast"


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


MODULES = _modules()


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """(imported calofast module, imported names) of every import statement, nested ones included."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names if a.name.startswith("calofast")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("calofast"):
            names = [a.name for a in node.names]
            submodules = [f"{node.module}.{n}" for n in names if f"{node.module}.{n}" in MODULES]
            if submodules:  # from calofast.data import io
                out += [(m, []) for m in submodules]
                names = [n for n in names if f"{node.module}.{n}" not in MODULES]
            if names:
                out.append((node.module, names))
    return out


def _graph(level) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        src = level(name)
        for target, _ in _imports(path):
            dst = level(target)
            if dst != src:
                graph.setdefault(src, set()).add(dst)
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def _package(name: str) -> str:
    parts = name.split(".")
    return ".".join(parts[:2])


@pytest.mark.parametrize("level", ["module", "subpackage"])
def test_no_import_cycles(level):
    graph = _graph(_package if level == "subpackage" else (lambda n: n))
    assert _cycle(graph) is None, f"import cycle: {' -> '.join(_cycle(graph))}"


def test_the_cycle_finder_finds_one():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": {"c"}}) is None


def test_private_helpers_stay_in_their_module():
    offenders = []
    for name, path in MODULES.items():
        for target, names in _imports(path):
            offenders += [f"{name} imports {target}.{n}" for n in names if n.startswith("_") and target != name]
    assert offenders == []


def test_the_top_level_is_subpackages_by_concern():
    flat = sorted(p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py")
    assert flat == ["config.py"]  # the workflow configuration; everything else lives in a subpackage
    subpackages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert subpackages == {
        "amplification", "benchmark", "data", "geant4", "generation", "geometry", "metrics", "models", "selection",
        "simulation", "training", "util", "validation",
    }  # fmt: skip


def test_the_slurm_profile_routes_gpu_jobs_to_the_gpu_partition(tmp_path):
    """The profile's partition file, read by the SLURM executor plugin's own partition
    selection: a job requesting a GPU can only go to the GPU partition, CPU jobs go to the
    CPU one; and in a dry run through the profile the GPU models' jobs request their GPU."""
    import re
    import subprocess
    import sys
    from types import SimpleNamespace

    import yaml
    from snakemake_executor_plugin_slurm.partitions import get_best_partition, read_partition_file

    repo = PACKAGE.parent
    profile = yaml.safe_load((repo / "profiles/slurm/config.yaml").read_text())
    assert "slurm_partition" not in profile["default-resources"]  # left to the partition selection
    partitions = read_partition_file(repo / "profiles/slurm" / profile["slurm-partition-config"])

    class Log:
        def info(self, msg): ...
        def debug(self, msg): ...
        def warning(self, msg): ...

    def job(**resources):
        return SimpleNamespace(name="j", threads=2, resources=SimpleNamespace(get=resources.get))

    assert get_best_partition(partitions, job(gpu=1, mem_mb=8000), Log()) == "gpu"
    assert get_best_partition(partitions, job(gpu=0, mem_mb=8000), Log()) == "cpu"
    assert get_best_partition(partitions, job(mem_mb=100), Log()) == "cpu"

    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--workflow-profile", str(repo / "profiles/slurm"),
         "--configfile", str(repo / "config.yaml"), str(repo / "configs/paper_scale.yaml"), "-d", str(tmp_path), "-s", str(repo / "Snakefile")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = re.findall(r"rule (\w+):\n(?:    .*\n)*?    resources: (.*)", proc.stdout)
    gpu = {rule: res for rule, res in jobs if "gpu=1" in res}
    assert {"train_stage", "select_epoch", "generate", "benchmark_model"} <= set(gpu)
    assert all("gpu=1" not in res for rule, res in jobs if rule in ("preprocess", "simulate_synthetic"))


#: import name -> distribution name, where they differ
DISTRIBUTIONS = {"sklearn": "scikit-learn", "skimage": "scikit-image", "yaml": "pyyaml", "ot": "POT"}
#: imported only behind an optional extra (with a clear error when missing)
OPTIONAL = {"geant4_pybind", "xraydb"}


def test_every_third_party_import_is_a_declared_dependency():
    """What the package and the workflow scripts import is installed by `pip install -e .`
    (the README's first command), not only by the test extras."""
    import sys

    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    repo = PACKAGE.parent
    meta = tomllib.loads((repo / "pyproject.toml").read_text())["project"]
    declared = {re.split(r"[<>=!\[ ]", d)[0].lower() for d in meta["dependencies"]}
    stdlib = set(sys.stdlib_module_names)
    missing = set()
    for path in [*PACKAGE.rglob("*.py"), *(repo / "workflow_scripts").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                if top in stdlib or top in ("calofast", "__future__") or top in OPTIONAL:
                    continue
                dist = DISTRIBUTIONS.get(top, top).replace("_", "-").lower()
                if dist not in declared:
                    missing.add(f"{top} ({path.relative_to(repo)})")
    assert sorted(missing) == []
    assert "pygments" in declared  # snakemake --report needs it; snakemake does not require it
