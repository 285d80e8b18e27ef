"""A local S3 server for tests: moto's server mode on 127.0.0.1, a free port, one bucket.

``with s3_server() as s3: ...`` starts ``moto.server.ThreadedMotoServer`` on port 0 (the
OS picks a free port, so there is no race with other tests), waits until it answers an
S3 request, creates ``s3.bucket`` and yields an :class:`S3`; the server is stopped when
the block ends, whether or not it raised. ``S3.env`` is the environment that s3fs (and
botocore, boto3, the aws CLI) read: ``AWS_ENDPOINT_URL`` (botocore >= 1.31 reads it for
every service), dummy credentials and a region. Nothing here touches the internet.
"""
from __future__ import annotations

import logging
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

BUCKET = "netdissect-test"
READY_SECONDS = 30.0


@dataclass
class S3:
    """A running server: ``endpoint`` (http://127.0.0.1:PORT), ``bucket`` and ``env``."""
    endpoint: str
    bucket: str
    env: dict[str, str] = field(default_factory=dict)

    def url(self, *parts: str) -> str:
        """``s3://BUCKET/part/...``"""
        return "/".join([f"s3://{self.bucket}", *parts])


def s3_env(endpoint: str) -> dict[str, str]:
    """What s3fs/botocore need to talk to ``endpoint`` with dummy credentials."""
    return {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing",
            "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1",
            # no ~/.aws files of the person running the tests
            "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
            "AWS_EC2_METADATA_DISABLED": "true"}


def wait_ready(endpoint: str, seconds: float = READY_SECONDS) -> None:
    """Poll ``endpoint`` until it answers an HTTP request (any status); TimeoutError
    after ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            urllib.request.urlopen(endpoint + "/", timeout=2).close()
            return
        except urllib.error.HTTPError:
            return                              # it answered
        except OSError as e:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the moto S3 server at {endpoint} did not answer "
                                   f"within {seconds:.0f} s ({e})") from e
            time.sleep(0.05)


@contextmanager
def s3_server(bucket: str = BUCKET) -> Iterator[S3]:
    """A moto S3 server with ``bucket`` created (see the module docstring)."""
    import boto3
    from moto.server import ThreadedMotoServer
    logging.getLogger("werkzeug").setLevel(logging.ERROR)      # no line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        wait_ready(endpoint)
        env = s3_env(endpoint)
        boto3.client("s3", endpoint_url=endpoint, region_name=env["AWS_REGION"],
                     aws_access_key_id="testing", aws_secret_access_key="testing"
                     ).create_bucket(Bucket=bucket)
        yield S3(endpoint, bucket, env)
    finally:
        server.stop()
