# --- S3 loopback server fixtures (zoo helper; see tests/s3_server.py) ---------
from tests.s3_server import s3_bucket, s3_server  # noqa: E402,F401

# --- end S3 loopback server fixtures ----------------------------------------
