"""Static checks of the repository, run as part of the suite (and so in CI)."""

import shutil
import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    "cmd",
    [
        ["ruff", "check", "."],
        ["ruff", "format", "--check", "."],
        ["snakefmt", "--check", "."],
        [sys.executable, "-m", "snakemake", "--lint", "-n"],
    ],
    ids=["ruff-check", "ruff-format", "snakefmt", "snakemake-lint"],
)
def test_static_check(cmd, repo_root):
    if shutil.which(cmd[0]) is None and cmd[0] != sys.executable:
        pytest.fail(f"{cmd[0]} is not installed; install the test extras: pip install -e '.[test]'")
    proc = subprocess.run(cmd, cwd=repo_root, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]


def test_documentation_builds_offline_with_warnings_as_errors(repo_root, tmp_path):
    """docs/ renders with MkDocs (strict: a broken link or a page missing from the nav fails)."""
    if shutil.which("mkdocs") is None:
        pytest.fail("mkdocs is not installed; install the test extras: pip install -e '.[test]'")
    proc = subprocess.run(
        ["mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert (tmp_path / "site" / "models.html").exists()


def test_the_readme_links_to_existing_pages(repo_root):
    import re

    readme = (repo_root / "README.md").read_text()
    links = re.findall(r"\]\((docs/[^)#]+)\)", readme)
    assert len(links) >= 10 and all((repo_root / link).exists() for link in links)
    assert len(readme) < 15_000  # a front door; the reference lives in docs/
