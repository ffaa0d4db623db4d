import json

import pytest

from calofast.data import zenodo
from tests.fakes.zenodo_server import FakeZenodo

DATA = {f"EleEscan_RandomAngle_{i}.h5": bytes(range(256)) * (4000 + 500 * i) for i in range(1, 4)}
DATA["README.txt"] = b"not wanted"


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setenv("CALOFAST_RETRY_BACKOFF_S", "0.01")
    with FakeZenodo() as server:
        server.add_record("3603086", DATA)
        yield server


def _cfg(fake, **kw):
    return {"record": 3603086, "files": ["EleEscan_RandomAngle_*.h5"], "api_base": fake.api, **kw}


def test_listing_selection_and_download(fake, tmp_path):
    manifest = tmp_path / "manifest.json"
    out = zenodo.download_record(_cfg(fake), tmp_path / "raw", manifest, progress=False)
    assert [f["key"] for f in out["files"]] == [f"EleEscan_RandomAngle_{i}.h5" for i in (1, 2, 3)]
    for entry in out["files"]:
        assert (tmp_path / "raw" / entry["key"]).read_bytes() == DATA[entry["key"]]
    assert json.loads(manifest.read_text()) == out
    assert not list((tmp_path / "raw").glob("*.part"))
    # a second run finds the verified files and downloads nothing
    n = len(fake.requests)
    zenodo.download_record(_cfg(fake), tmp_path / "raw", tmp_path / "m2.json", progress=False)
    assert [p for p, _ in fake.requests[n:]] == ["/api/records/3603086"]


def test_dropped_connection_resumes_with_range(fake, tmp_path):
    key = "EleEscan_RandomAngle_2.h5"
    fake.drop_after[key] = (300_000, 1)
    remote = next(f for f in zenodo.record_files(fake.listing("3603086")) if f.key == key)
    zenodo.download(remote, tmp_path / key, progress=False)
    assert (tmp_path / key).read_bytes() == DATA[key]
    ranges = [r for p, r in fake.requests if p.endswith(key + "/content")]
    assert ranges[0] is None
    resumed_at = int(ranges[1].removeprefix("bytes=").rstrip("-"))
    assert 300_000 - zenodo.CHUNK < resumed_at <= 300_000  # resumed, not restarted


def test_server_errors_are_retried(fake, tmp_path):
    key = "EleEscan_RandomAngle_1.h5"
    fake.fail[key] = 2
    remote = next(f for f in zenodo.record_files(fake.listing("3603086")) if f.key == key)
    zenodo.download(remote, tmp_path / key, progress=False)
    assert (tmp_path / key).read_bytes() == DATA[key]


def test_corrupt_byte_is_rejected_then_retried_once(fake, tmp_path):
    key = "EleEscan_RandomAngle_3.h5"
    remote = next(f for f in zenodo.record_files(fake.listing("3603086")) if f.key == key)
    fake.corrupt[key] = 1  # first download corrupt, second fine
    zenodo.download(remote, tmp_path / key, progress=False)
    assert (tmp_path / key).read_bytes() == DATA[key]
    fake.corrupt[key] = 2  # both corrupt: fail, nothing left at the final path
    dest = tmp_path / "again" / key
    with pytest.raises(
        zenodo.ChecksumError, match=rf"{key}: md5 of the download is [0-9a-f]{{32}}, the record lists {remote.md5}"
    ):
        zenodo.download(remote, dest, progress=False)
    assert not dest.exists()
    assert list(dest.parent.iterdir()) == []


def test_missing_record_and_unmatched_pattern(fake, tmp_path):
    with pytest.raises(zenodo.DownloadError, match=r"Zenodo record 999 not found at .*/records/999 \(HTTP 404\)"):
        zenodo.download_record({"record": 999, "files": ["*"], "api_base": fake.api}, tmp_path, tmp_path / "m.json")
    with pytest.raises(zenodo.DownloadError, match=r"no file of the record matches 'Pion\*'; the record has: \["):
        zenodo.download_record(_cfg(fake, files=["Pion*"]), tmp_path, tmp_path / "m.json")
    assert not (tmp_path / "m.json").exists()


def test_html_page_instead_of_file(fake, tmp_path):
    key = "EleEscan_RandomAngle_1.h5"
    fake.html.add(key)
    remote = next(f for f in zenodo.record_files(fake.listing("3603086")) if f.key == key)
    with pytest.raises(zenodo.DownloadError, match="returned an HTML page instead of the file"):
        zenodo.download(remote, tmp_path / key, progress=False)
    assert not (tmp_path / key).exists()


def test_unreachable_server_gives_up(tmp_path, monkeypatch):
    monkeypatch.setenv("CALOFAST_RETRY_BACKOFF_S", "0.01")
    remote = zenodo.RemoteFile("x.h5", 10, "0" * 32, "http://127.0.0.1:9/x.h5")
    with pytest.raises(zenodo.DownloadError, match="giving up after 3 attempts"):
        zenodo.download(remote, tmp_path / "x.h5", retries=2, progress=False)
    assert not (tmp_path / "x.h5").exists()


def test_listing_formats():
    rec = {"id": 7, "files": {"entries": {"a.h5": {"key": "a.h5", "size": 3, "checksum": "md5:abc", "links": {}}}}}
    (f,) = zenodo.record_files(rec, "http://mirror/api")
    assert f.url == "http://mirror/api/records/7/files/a.h5/content" and f.md5 == "abc"
    with pytest.raises(zenodo.DownloadError, match="has no md5"):
        zenodo.record_files({"id": 7, "files": [{"key": "a", "size": 1, "checksum": "sha256:00"}]})


def test_rate_limits_and_server_errors_are_retried_by_urllib3(fake, tmp_path):
    """The session's urllib3 Retry: 503 answers are retried (each one a request the server
    saw), and a server that keeps failing is given up after retries + 1 attempts."""
    key = "EleEscan_RandomAngle_1.h5"
    fake.fail[key] = 3
    remote = next(f for f in zenodo.record_files(fake.listing("3603086")) if f.key == key)
    n = len(fake.requests)
    zenodo.download(remote, tmp_path / key, retries=3, progress=False)
    assert len([p for p, _ in fake.requests[n:] if p.endswith(key + "/content")]) == 4
    fake.fail[key] = 10
    with pytest.raises(zenodo.DownloadError, match=r"giving up after 3 attempts: HTTP 503"):
        zenodo.download(remote, tmp_path / "b" / key, retries=2, progress=False)
    assert not (tmp_path / "b" / key).exists()
    assert fake.fail[key] == 7  # exactly 3 requests, not 3 x 3
