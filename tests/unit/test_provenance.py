import hashlib
import re

from calofast.data.provenance import git_commit, library_versions, provenance, sha256_file


def test_versions_and_checksums(tmp_path):
    v = library_versions()
    assert v["numpy"] != "not installed" and "python" in v
    f = tmp_path / "x.bin"
    f.write_bytes(b"calofast" * 1000)
    assert sha256_file(f) == hashlib.sha256(b"calofast" * 1000).hexdigest()
    rec = provenance({"a": 1}, seed=3, inputs=[f])
    assert rec["config"] == {"a": 1} and rec["seed"] == 3
    assert rec["inputs"][str(f)]["sha256"] == sha256_file(f)
    assert "time" not in str(rec).lower()  # no time stamps: files stay reproducible


def test_git_commit_outside_a_checkout_and_in_one(tmp_path):
    import shutil
    import subprocess

    import pytest

    assert git_commit(tmp_path) == "unknown"
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    repo = tmp_path / "repo"
    repo.mkdir()
    env = ["-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / "a.txt").write_text("one")
    subprocess.run(["git", "-C", str(repo), "add", "a.txt"], check=True)
    subprocess.run(["git", "-C", str(repo), *env, "commit", "-q", "-m", "x"], check=True)
    sha = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{40}", sha) and git_commit(repo) == sha
    assert git_commit(repo / "a.txt") == sha  # a file: its checkout
    (repo / "a.txt").write_text("two")
    assert git_commit(repo) == sha + "+dirty"
