"""Download files of a Zenodo record: listing, HTTP Range resume, retries, md5 checks.

The file list, sizes and md5 checksums come from the record's REST listing
(``<api_base>/records/<id>``).  Each file is written to ``<name>.part`` and
renamed only after its size and md5 match; a ``<name>.md5`` marker next to a
verified file means it is never downloaded (or hashed) again.

Retries of a request (connection errors, HTTP 429 and 5xx, with exponential backoff and
the server's Retry-After) are urllib3's :class:`~urllib3.util.retry.Retry` on the
session's adapter; what urllib3 cannot retry, a stream that drops in the middle of a
file, is resumed here with an HTTP Range request for the missing bytes.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import shutil
import tarfile
import time
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from calofast.data.provenance import file_hash
from calofast.util.files import atomic_path, write_json
from calofast.util.logs import progress as progress_bar

log = logging.getLogger(__name__)

DEFAULT_API = "https://zenodo.org/api"
CHUNK = 1 << 16  # bytes per read: a dropped connection loses at most this much


class DownloadError(RuntimeError):
    """A download failed for a reason that retrying will not fix."""


class ChecksumError(DownloadError):
    """The downloaded bytes do not have the md5 the record lists."""


class _Retryable(Exception):
    """A transient failure (connection error, 5xx, short read): try again."""


#: HTTP answers worth retrying (rate limit, server errors)
RETRY_STATUS = (429, 500, 502, 503, 504)


def backoff_seconds() -> float:
    """Base of the exponential backoff [s] (env CALOFAST_RETRY_BACKOFF_S, default 1)."""
    return float(os.environ.get("CALOFAST_RETRY_BACKOFF_S", "1.0"))


def retrying_session(retries: int = 5) -> requests.Session:
    """A session whose GET requests urllib3 retries ``retries`` times on connection errors,
    429 and 5xx (backoff ``backoff_seconds() x 2^n``, Retry-After honoured); after the last
    try the error response is returned (the caller names it)."""
    retry = Retry(
        total=retries,
        connect=retries,
        read=retries,
        status=retries,
        other=0,
        status_forcelist=RETRY_STATUS,
        allowed_methods=frozenset({"GET"}),
        backoff_factor=backoff_seconds(),
        respect_retry_after_header=True,
        raise_on_status=False,
    )
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


@dataclass(frozen=True)
class RemoteFile:
    key: str
    size: int
    md5: str
    url: str


def fetch_record(record: int | str, api_base: str = DEFAULT_API, timeout: float = 60.0, retries: int = 4) -> dict:
    """The JSON listing of a record; a missing record raises DownloadError."""
    url = f"{api_base.rstrip('/')}/records/{record}"
    with retrying_session(retries) as session:
        try:
            r = session.get(url, timeout=timeout, headers={"Accept": "application/json"})
        except requests.RequestException as err:
            raise DownloadError(f"cannot reach {url} after {retries + 1} attempts: {err}") from err
    if r.status_code == 404:
        raise DownloadError(f"Zenodo record {record} not found at {url} (HTTP 404); check zenodo.record")
    if r.status_code != 200:
        raise DownloadError(f"{url} answered HTTP {r.status_code} (after {retries + 1} attempts)")
    try:
        return r.json()
    except ValueError as err:
        raise DownloadError(f"{url} did not return JSON (got {r.headers.get('Content-Type')})") from err


def record_files(record: dict, api_base: str = DEFAULT_API) -> list[RemoteFile]:
    """Files of a record listing: key, size, md5 and download URL."""
    recid = record.get("id") or record.get("recid")
    files = record.get("files")
    if isinstance(files, dict):  # InvenioRDM "files": {"entries": {...}}
        files = list((files.get("entries") or {}).values())
    if not files:
        raise DownloadError(f"Zenodo record {recid} lists no files")
    out = []
    for entry in files:
        key = entry.get("key") or entry.get("filename")
        checksum = entry.get("checksum", "")
        if not checksum.startswith("md5:"):
            raise DownloadError(f"Zenodo record {recid}: file {key!r} has no md5 checksum ({checksum!r})")
        links = entry.get("links") or {}
        url = links.get("content") or links.get("self") or links.get("download")
        if not url:
            url = f"{api_base.rstrip('/')}/records/{recid}/files/{key}/content"
        out.append(
            RemoteFile(key=key, size=int(entry.get("size", entry.get("filesize", -1))), md5=checksum[4:], url=url)
        )
    return out


def select_files(files: list[RemoteFile], patterns: list[str]) -> list[RemoteFile]:
    """Files whose key matches any of the glob patterns, in record order.

    A pattern that matches nothing is an error that lists the record's files.
    """
    chosen = []
    for pattern in patterns:
        hits = [f for f in files if fnmatch.fnmatchcase(f.key, pattern)]
        if not hits:
            raise DownloadError(f"no file of the record matches {pattern!r}; the record has: {[f.key for f in files]}")
        chosen += [f for f in hits if f not in chosen]
    order = {f.key: i for i, f in enumerate(files)}
    return sorted(chosen, key=lambda f: order[f.key])


def md5_file(path: str | os.PathLike) -> str:
    """md5 of a file (the checksum Zenodo lists)."""
    return file_hash(path, "md5")


def _marker(dest: Path) -> Path:
    return dest.with_name(dest.name + ".md5")


def is_verified(dest: Path, remote: RemoteFile) -> bool:
    """True when ``dest`` was verified before (marker) or hashes to the record's md5."""
    if not dest.exists() or dest.stat().st_size != remote.size:
        return False
    marker = _marker(dest)
    if marker.exists() and marker.read_text().split() == [remote.md5, str(remote.size)]:
        return True
    if md5_file(dest) == remote.md5:
        marker.write_text(f"{remote.md5} {remote.size}\n")
        return True
    return False


def download(
    remote: RemoteFile,
    dest: str | os.PathLike,
    retries: int = 5,
    timeout: float = 60.0,
    progress: bool = True,
    session: requests.Session | None = None,
) -> Path:
    """Download one file with resume, retries and md5 verification.

    Transient failures of a request (connection errors, 429, 5xx) are retried by urllib3
    (:func:`retrying_session`); a stream that drops or ends short is resumed with an HTTP
    Range request for the missing bytes, up to ``retries`` times with exponential backoff.
    A checksum mismatch deletes the partial file and downloads once more; a
    second mismatch raises :class:`ChecksumError` naming file and checksums.
    """
    dest = Path(dest)
    if is_verified(dest, remote):
        log.info("%s already downloaded and verified", dest)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    session = session or retrying_session(retries)
    for check in range(2):
        bar = progress_bar(remote.size, remote.key, progress, unit="B")
        try:
            for attempt in range(retries + 1):
                try:
                    _fetch(session, remote, part, timeout, bar, retries)
                    break
                except _Retryable as err:
                    if attempt == retries:
                        raise DownloadError(f"{remote.key}: giving up after {retries + 1} attempts: {err}") from err
                    log.warning("%s: %s; retrying (attempt %d of %d)", remote.key, err, attempt + 2, retries + 1)
                    _sleep(attempt)
        finally:
            bar.close()
        actual = md5_file(part)
        if actual == remote.md5:
            os.replace(part, dest)
            _marker(dest).write_text(f"{remote.md5} {remote.size}\n")
            return dest
        part.unlink(missing_ok=True)
        if check == 0:
            log.warning("%s: md5 %s does not match the record's %s; downloading again", remote.key, actual, remote.md5)
            continue
        raise ChecksumError(
            f"{remote.key}: md5 of the download is {actual}, the record lists {remote.md5} "
            f"(from {remote.url}); the partial file was deleted"
        )
    raise AssertionError("unreachable")


def _fetch(session: requests.Session, remote: RemoteFile, part: Path, timeout: float, bar, retries: int) -> None:
    """Append the missing bytes of ``remote`` to ``part``. Connection errors and 429/5xx
    answers arrive here after the session's retries (final); a dropped stream is retryable."""
    have = part.stat().st_size if part.exists() else 0
    if have > remote.size:
        part.unlink()
        have = 0
    bar.reset(total=remote.size)
    bar.update(have)
    if have == remote.size:
        return
    headers = {"Range": f"bytes={have}-"} if have else {}
    try:
        r = session.get(remote.url, headers=headers, stream=True, timeout=timeout)
    except requests.RequestException as err:
        raise DownloadError(f"{remote.key}: giving up after {retries + 1} attempts: connection failed: {err}") from err
    with r:
        if r.status_code in RETRY_STATUS:
            raise DownloadError(f"{remote.key}: giving up after {retries + 1} attempts: HTTP {r.status_code}")
        if r.status_code not in (200, 206):
            raise DownloadError(f"{remote.key}: HTTP {r.status_code} from {remote.url}")
        if r.headers.get("Content-Type", "").lower().startswith("text/html"):
            raise DownloadError(
                f"{remote.key}: {remote.url} returned an HTML page instead of the file "
                f"(HTTP {r.status_code}); the record may be restricted or the URL wrong"
            )
        mode = "ab" if r.status_code == 206 and have else "wb"
        if mode == "wb" and have:
            bar.reset(total=remote.size)
        try:
            with open(part, mode) as f:
                for chunk in r.iter_content(CHUNK):
                    f.write(chunk)
                    bar.update(len(chunk))
        except requests.RequestException as err:
            raise _Retryable(f"connection dropped: {err}") from err
    got = part.stat().st_size
    if got < remote.size:
        raise _Retryable(f"short read: {got} of {remote.size} bytes")
    if got > remote.size:
        part.unlink()
        raise _Retryable(f"server sent {got} bytes, the record lists {remote.size}")


def _sleep(attempt: int) -> None:
    time.sleep(backoff_seconds() * 2**attempt)


def extract_members(archive: Path, patterns: list[str], out_dir: Path) -> list[Path]:
    """Extract the members of a tar or zip archive that match ``patterns`` (atomically each).

    Members already extracted with the right size are kept.  Member paths are
    flattened to their base name inside ``out_dir``.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    extracted = []
    if tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tar:
            for member in tar:
                name = Path(member.name).name
                if not member.isfile() or not any(fnmatch.fnmatchcase(name, p) for p in patterns):
                    continue
                dest = out_dir / name
                if not (dest.exists() and dest.stat().st_size == member.size):
                    _copy_atomic(tar.extractfile(member), dest)
                extracted.append(dest)
    elif zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                name = Path(info.filename).name
                if info.is_dir() or not any(fnmatch.fnmatchcase(name, p) for p in patterns):
                    continue
                dest = out_dir / name
                if not (dest.exists() and dest.stat().st_size == info.file_size):
                    with zf.open(info) as src:
                        _copy_atomic(src, dest)
                extracted.append(dest)
    else:
        raise DownloadError(f"{archive} is not a tar or zip archive")
    if not extracted:
        raise DownloadError(f"no member of {archive.name} matches {patterns}")
    return sorted(extracted)


def _copy_atomic(src, dest: Path) -> None:
    with atomic_path(dest) as tmp, open(tmp, "wb") as f:
        shutil.copyfileobj(src, f, CHUNK * 16)


def _is_archive(path: Path) -> bool:
    return tarfile.is_tarfile(path) or zipfile.is_zipfile(path)


def download_record(
    zcfg: dict[str, Any],
    out_dir: str | os.PathLike,
    manifest: str | os.PathLike,
    progress: bool = True,
) -> dict[str, Any]:
    """Download the configured files of a record into ``out_dir``; write a manifest.

    ``zcfg`` holds ``record``, ``files`` (glob patterns of record files) and
    optionally ``members`` (glob patterns of the shower files: archives among
    the downloads are unpacked and their matching members used), ``api_base``
    and ``retries``.  The manifest (JSON, written last and atomically) lists the
    downloaded files with size and md5 and the ``inputs`` to convert.
    """
    api = zcfg.get("api_base", DEFAULT_API)
    record = fetch_record(zcfg["record"], api, retries=int(zcfg.get("retries", 5)))
    files = select_files(record_files(record, api), list(zcfg["files"]))
    out_dir = Path(out_dir)
    members = zcfg.get("members")
    entries, inputs = [], []
    retries = int(zcfg.get("retries", 5))
    with retrying_session(retries) as session:
        for remote in files:
            path = download(remote, out_dir / remote.key, retries=retries, progress=progress, session=session)
            entries.append({**asdict(remote), "path": str(path)})
            if members and _is_archive(path):
                for member in extract_members(path, list(members), out_dir / (remote.key + ".d")):
                    inputs.append({"path": str(member), "archive": remote.key, "archive_md5": remote.md5})
            elif not members or any(fnmatch.fnmatchcase(remote.key, p) for p in members):
                inputs.append({"path": str(path), "md5": remote.md5})
    if not inputs:
        raise DownloadError(f"record {zcfg['record']}: no downloaded file or archive member matches {members}")
    data = {
        "record": str(zcfg["record"]),
        "api_base": api,
        "title": record.get("metadata", {}).get("title"),
        "files": entries,
        "inputs": inputs,
    }
    write_json(manifest, data)
    return data


def manifest_inputs(manifest: str | os.PathLike) -> tuple[list[str], dict[str, dict[str, str]]]:
    """Input paths of a manifest and their known checksums (for the provenance)."""
    data = json.loads(Path(manifest).read_text())
    paths = [e["path"] for e in data["inputs"]]
    checks = {e["path"]: {k: v for k, v in e.items() if k != "path"} for e in data["inputs"]}
    return paths, checks
