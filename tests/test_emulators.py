"""The object-store emulators the cloud tests run against answer as the real services' clients expect."""

from __future__ import annotations

import os

import pytest


@pytest.fixture
def emulator_env(monkeypatch: pytest.MonkeyPatch):
    def apply(emulator) -> None:
        for name, value in emulator.env.items():
            monkeypatch.setenv(name, value)
    return apply


def test_s3_emulator_round_trip(s3_emulator, emulator_env) -> None:
    import s3fs

    emulator_env(s3_emulator)
    assert os.environ["AWS_ENDPOINT_URL"] == s3_emulator.endpoint
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    fs.mkdir("emulator-check")
    fs.pipe("emulator-check/a/b.bin", b"bars")
    assert fs.cat("emulator-check/a/b.bin") == b"bars"
    assert fs.info("emulator-check/a/b.bin")["ETag"].strip('"')  # the cache validates reads by it


def test_gcs_emulator_round_trip(gcs_emulator, emulator_env) -> None:
    # gcsfs.GCSFileSystem is, by default, a class that first probes the bucket over gRPC (60 s against an emulator);
    # gcsfs.core's is the plain JSON-API one (the variable in .env switches the probe off only before gcsfs is imported)
    from gcsfs.core import GCSFileSystem

    emulator_env(gcs_emulator)
    fs = GCSFileSystem(endpoint_url=gcs_emulator.endpoint, token="anon", skip_instance_cache=True)
    fs.mkdir("emulator-check")
    fs.pipe("emulator-check/a/b.bin", b"bars")
    assert fs.cat("emulator-check/a/b.bin") == b"bars"
    assert fs.info("emulator-check/a/b.bin")["etag"]
