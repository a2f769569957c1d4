"""A local S3 endpoint for the benchmark's --s3 mode: moto's server application on 127.0.0.1, port 0, in a
thread, counting the write requests it answers. Needs the test extra (moto[server], boto3)."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any

import boto3
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import make_server

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}
LEASE = ".publisher-lease"


class _Quiet(MotoRequestHandler):  # type: ignore[misc]
    def log_request(self, *args: Any) -> None:
        pass


class LocalS3:
    def __init__(self) -> None:
        self._writes: list[tuple[str, str]] = []  # (bucket, key) of each PUT, POST and DELETE
        self._lock = threading.Lock()
        app = DomainDispatcherApplication(create_backend_app)

        def counting(environ: dict[str, Any], start_response: Any) -> Any:
            if environ["REQUEST_METHOD"] in ("PUT", "POST", "DELETE"):
                bucket, _, key = environ.get("PATH_INFO", "").lstrip("/").partition("/")
                with self._lock:
                    self._writes.append((bucket, key))
            return app(environ, start_response)

        self._server = make_server("127.0.0.1", 0, counting, threaded=True, request_handler=_Quiet)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> LocalS3:
        self._thread.start()
        self.client = boto3.client("s3", endpoint_url=self.url, region_name="us-east-1",
                                   aws_access_key_id="bench", aws_secret_access_key="bench")
        for bucket in ("bench-store", "bench-feeds"):
            self.client.create_bucket(Bucket=bucket)
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._server.shutdown()
        self._thread.join()

    def environment(self) -> dict[str, str]:
        return {**CREDENTIALS, "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
                "AWS_EC2_METADATA_DISABLED": "true"}

    def upload_folder(self, folder: Path, bucket: str, prefix: str) -> None:
        files = [p for p in folder.rglob("*") if p.is_file()]
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda p: self.put(bucket, prefix + p.relative_to(folder).as_posix(), p.read_bytes()),
                          files))

    def put(self, bucket: str, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=bucket, Key=key, Body=data)

    def empty(self, bucket: str) -> None:
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if keys:
                self.client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})

    def mark(self) -> int:
        with self._lock:
            return len(self._writes)

    def writes_since(self, mark: int, bucket: str, prefix: str) -> int:
        with self._lock:
            return sum(1 for b, key in self._writes[mark:] if b == bucket and key != prefix + LEASE)
