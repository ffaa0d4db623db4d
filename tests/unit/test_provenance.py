import hashlib
import re

from calofast.provenance import git_commit, library_versions, provenance, sha256_file


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


def test_git_commit_outside_a_checkout(tmp_path):
    assert git_commit(tmp_path) == "unknown"
    here = git_commit()
    assert here == "unknown" or re.fullmatch(r"[0-9a-f]{40}(\+dirty)?", here)
