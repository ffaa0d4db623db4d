"""A fake Zenodo on 127.0.0.1 for the download tests: record listings, files with
HTTP Range support, and injectable faults (corrupt bytes, dropped connections,
5xx answers, HTML pages)."""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeZenodo:
    def __init__(self) -> None:
        self.records: dict[str, dict[str, bytes]] = {}
        self.corrupt: dict[str, int] = defaultdict(int)  # key -> number of corrupted answers left
        self.drop_after: dict[str, tuple[int, int]] = {}  # key -> (bytes sent before dropping, times left)
        self.fail: dict[str, int] = defaultdict(int)  # key -> number of 503 answers left
        self.html: set[str] = set()
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        self.lock = threading.Lock()
        handler = self._handler()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/api"

    def add_record(self, record: str, files: dict[str, bytes]) -> None:
        self.records[str(record)] = files

    def listing(self, record: str) -> dict:
        files = self.records[record]
        return {
            "id": int(record),
            "metadata": {"title": f"fake record {record}"},
            "files": [
                {
                    "key": key,
                    "size": len(data),
                    "checksum": "md5:" + hashlib.md5(data).hexdigest(),
                    "links": {"self": f"{self.api}/records/{record}/files/{key}/content"},
                }
                for key, data in files.items()
            ],
        }

    def __enter__(self) -> FakeZenodo:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def _json(self, code: int, payload: dict) -> None:
                body = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):  # noqa: N802 - http.server API
                rng = self.headers.get("Range")
                with fake.lock:
                    fake.requests.append((self.path, rng))
                m = re.fullmatch(r"/api/records/(\d+)", self.path)
                if m:
                    if m.group(1) not in fake.records:
                        return self._json(404, {"status": 404, "message": "PID does not exist."})
                    return self._json(200, fake.listing(m.group(1)))
                m = re.fullmatch(r"/api/records/(\d+)/files/([^/]+)/content", self.path)
                if not m or m.group(2) not in fake.records.get(m.group(1), {}):
                    return self._json(404, {"status": 404, "message": "not found"})
                key = m.group(2)
                data = fake.records[m.group(1)][key]
                with fake.lock:
                    if fake.fail[key] > 0:
                        fake.fail[key] -= 1
                        return self._json(503, {"status": 503, "message": "try later"})
                    if fake.corrupt[key] > 0:
                        fake.corrupt[key] -= 1
                        data = bytearray(data)
                        data[len(data) // 2] ^= 0xFF
                        data = bytes(data)
                    drop = fake.drop_after.get(key)
                    if drop and drop[1] > 0:
                        fake.drop_after[key] = (drop[0], drop[1] - 1)
                    else:
                        drop = None
                if key in fake.html:
                    body = b"<!DOCTYPE html><html><body>Please log in</body></html>"
                    self.send_response(200)
                    self.send_header("Content-Type", "text/html; charset=utf-8")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                start = 0
                if rng:
                    start = int(re.fullmatch(r"bytes=(\d+)-", rng).group(1))
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if drop:
                    self.wfile.write(body[: drop[0]])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                self.wfile.write(body)

        return Handler
