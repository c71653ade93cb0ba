"""A real S3 server process on 127.0.0.1 for the integration tests: moto's server, with auth switched on.

moto accepts every request unsigned until ``INITIAL_NO_AUTH_ACTION_COUNT`` actions have been served;
after that, each request must be signed with an access key that exists in moto's IAM and be allowed by
the key's policies. The fixture spends exactly the free actions on creating an IAM user, its policy
and an access key; everything after that (bucket creation included) is signed with that key.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from support import free_port, require_service, stop_process

REGION = "us-east-1"
BUCKET = "l2vol-it"
USER = "l2vol-pipeline"
#: create_user, put_user_policy, create_access_key: the unsigned actions the bootstrap needs.
BOOTSTRAP_ACTIONS = 3
READY_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    access_key: str
    secret_key: str
    bucket: str
    region: str = REGION

    def client(self, service: str = "s3", *, access_key: str | None = None, secret_key: str | None = None):
        import boto3
        from botocore.config import Config

        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name=self.region,
            aws_access_key_id=access_key or self.access_key,
            aws_secret_access_key=secret_key or self.secret_key,
            config=Config(retries={"max_attempts": 1}),
        )


def _moto_server_installed() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("moto", "flask", "flask_cors", "boto3"))


def _wait_ready(proc: subprocess.Popen, endpoint: str, log: Path) -> None:
    # /moto-api/ is moto's dashboard: answering it spends none of the unauthenticated actions.
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"moto server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.05)
    pytest.fail(f"moto server not ready on {endpoint} after {READY_TIMEOUT_S:.0f} s:\n{log.read_text()[-3000:]}")


def _bootstrap_credentials(endpoint: str) -> tuple[str, str]:
    """Create an IAM user allowed s3:* and return its access key, using the unsigned actions."""
    import boto3
    from botocore.config import Config

    iam = boto3.client(
        "iam",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id="bootstrap",  # ignored while the free actions last
        aws_secret_access_key="bootstrap",
        config=Config(retries={"max_attempts": 1}),  # a retry would spend a free action
    )
    iam.create_user(UserName=USER)
    policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
    iam.put_user_policy(UserName=USER, PolicyName="l2vol-s3", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName=USER)["AccessKey"]
    return key["AccessKeyId"], key["SecretAccessKey"]


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory) -> Iterator[S3Server]:
    """A moto S3 server on a free loopback port with IAM auth on, a bucket and a valid key (session)."""
    require_service(_moto_server_installed(), "moto[server] is not installed (pip install 'moto[server]')")
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["INITIAL_NO_AUTH_ACTION_COUNT"] = str(BOOTSTRAP_ACTIONS)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_ready(proc, endpoint, log)
        access_key, secret_key = _bootstrap_credentials(endpoint)
        server = S3Server(endpoint, access_key, secret_key, BUCKET)
        server.client().create_bucket(Bucket=BUCKET)  # signed: the free actions are spent
        yield server
    finally:
        stop_process(proc, timeout=10)


@pytest.fixture
def s3_env(s3_server, monkeypatch) -> S3Server:
    """The environment a pod would get: endpoint, region and the valid key (TLS settings cleared)."""
    for name in ("AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN", "AWS_PROFILE", "L2VOL_S3_CA_BUNDLE", "L2VOL_S3_VERIFY_TLS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("L2VOL_S3_ENDPOINT", s3_server.endpoint)
    monkeypatch.setenv("AWS_REGION", s3_server.region)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    return s3_server


@pytest.fixture
def unused_port() -> int:
    """A loopback port nothing listens on."""
    return free_port()
