"""Direct access to the bucket under test, through each SDK or the filesystem, never
through gcs_sync's drivers: what a test reads here is what really is in the store."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from typing import Optional

PREFIX = "packages"
# Where each file's metadata record and core metadata file are kept (gcs_sync.records.record).
RECORD_FOLDERS = (".gcs_sync/records/", ".gcs_sync/metadata/")
# The change feed's entries (gcs_sync.sync.feed.FEED_FOLDER), spelled out here so a moved
# feed fails these tests instead of hiding from them.
FEED_FOLDER = ".gcs_sync/feed/"
# Catalog snapshots (gcs_sync.sync.snapshot.SNAPSHOTS_FOLDER).
SNAPSHOTS_FOLDER = ".gcs_sync/snapshots/"


def feed_change(entry_name: str) -> tuple[str, str]:
    """What a feed entry's name says: its kind (a added, d removed, r record, u users,
    b list everything) and its filename ("-" for none), read as the feed's docstring
    describes ``<ms>-<random>.<kind>.<sha16>.<filename>`` (independently of its parser)."""
    assert entry_name.startswith(FEED_FOLDER), entry_name
    _, kind, _, filename = entry_name[len(FEED_FOLDER):].split(".", 3)
    return kind, filename


class BucketProbe:
    backend: str
    name: str

    def env(self) -> dict[str, str]:
        """Variables a server process needs to use this bucket."""
        return {"STORAGE_BACKEND": self.backend, "BUCKET_NAME": self.name, "REMOTE_PACKAGE_DIRECTORY": PREFIX}

    def put(self, name: str, data: bytes) -> None:
        raise NotImplementedError

    def get(self, name: str) -> Optional[bytes]:
        raise NotImplementedError

    def put_key(self, key: str, data: bytes) -> None:
        """Write an object anywhere in the bucket (a full key, not under the prefix)."""
        raise NotImplementedError

    def get_key(self, key: str) -> Optional[bytes]:
        raise NotImplementedError

    def url(self, key: str) -> str:
        """How PASSWORD_FILE names the object ``key`` of this bucket."""
        raise NotImplementedError

    def delete(self, name: str) -> None:
        raise NotImplementedError

    def sha256_metadata(self, name: str) -> Optional[str]:
        """The object's ``sha256`` metadata (None if it has none; a folder keeps none)."""
        raise NotImplementedError

    def names(self) -> set[str]:
        """Every object under the prefix except the change feed's entries (``feed_names``),
        catalog snapshots and the files' metadata records and core metadata files
        (``record_names``)."""
        return {name for name in self.all_names() if not name.startswith(RECORD_FOLDERS + (FEED_FOLDER, SNAPSHOTS_FOLDER))}

    def feed_names(self) -> list[str]:
        """The change feed's entries, in the order of their names."""
        return sorted(name for name in self.all_names() if name.startswith(FEED_FOLDER))

    def feed_since(self, before: list[str]) -> list[tuple[str, str]]:
        """The (kind, filename) of each feed entry added since ``before`` (a ``feed_names``),
        in the order of their names: what a running instance would be told."""
        return [feed_change(name) for name in self.feed_names() if name not in set(before)]

    def record_names(self) -> set[str]:
        """The metadata records and core metadata files (``.gcs_sync/records/``, ``.gcs_sync/metadata/``)."""
        return {name for name in self.all_names() if name.startswith(RECORD_FOLDERS)}

    def all_names(self) -> set[str]:
        raise NotImplementedError

    def remove_bucket(self) -> None:
        """Delete the (empty) bucket itself, to make every write fail for real."""
        raise NotImplementedError


class LocalProbe(BucketProbe):
    backend = "local"

    def __init__(self, root: Path):
        self.root = root
        self.name = str(root)
        (root / PREFIX).mkdir(parents=True)

    def put(self, name: str, data: bytes) -> None:
        path = self.root / PREFIX / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def get(self, name: str) -> Optional[bytes]:
        path = self.root / PREFIX / name
        return path.read_bytes() if path.is_file() else None

    def delete(self, name: str) -> None:
        (self.root / PREFIX / name).unlink()

    def put_key(self, key: str, data: bytes) -> None:
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def get_key(self, key: str) -> Optional[bytes]:
        path = self.root / key
        return path.read_bytes() if path.is_file() else None

    def url(self, key: str) -> str:
        return str(self.root / key)  # the local backend takes a plain path

    def sha256_metadata(self, name: str) -> Optional[str]:
        return None

    def all_names(self) -> set[str]:
        folder = self.root / PREFIX
        if not folder.exists():
            return set()
        return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")}

    def remove_bucket(self) -> None:
        shutil.rmtree(self.root)


class GCSProbe(BucketProbe):
    backend = "gcs"

    def __init__(self, emulator_host: str):
        from google.cloud import storage

        self.client = storage.Client(project="test")
        self.name = f"b-{uuid.uuid4().hex[:12]}"
        self.bucket = self.client.create_bucket(self.name)
        self.emulator_host = emulator_host

    def env(self) -> dict[str, str]:
        return {**super().env(), "STORAGE_EMULATOR_HOST": self.emulator_host}

    def put(self, name: str, data: bytes, metadata: Optional[dict[str, str]] = None) -> None:
        blob = self.bucket.blob(f"{PREFIX}/{name}")
        blob.metadata = metadata
        blob.upload_from_string(data)

    def get(self, name: str) -> Optional[bytes]:
        blob = self.bucket.get_blob(f"{PREFIX}/{name}")
        # Not blob.download_as_bytes(): the emulator's mediaLink names the host the object
        # was written through, which may be a fault proxy that has since stopped.
        return None if blob is None else self.bucket.blob(blob.name).download_as_bytes()

    def delete(self, name: str) -> None:
        self.bucket.blob(f"{PREFIX}/{name}").delete()

    def put_key(self, key: str, data: bytes) -> None:
        self.bucket.blob(key).upload_from_string(data)

    def get_key(self, key: str) -> Optional[bytes]:
        blob = self.bucket.get_blob(key)
        return None if blob is None else self.bucket.blob(blob.name).download_as_bytes()

    def url(self, key: str) -> str:
        return f"gs://{self.name}/{key}"

    def sha256_metadata(self, name: str) -> Optional[str]:
        blob = self.bucket.get_blob(f"{PREFIX}/{name}")
        return None if blob is None else (blob.metadata or {}).get("sha256")

    def all_names(self) -> set[str]:
        return {b.name[len(PREFIX) + 1:] for b in self.client.list_blobs(self.name, prefix=f"{PREFIX}/")}

    def remove_bucket(self) -> None:
        self.bucket.delete(force=True)


class S3Probe(BucketProbe):
    backend = "s3"

    def __init__(self, endpoint: str):
        import boto3

        self.client = boto3.client("s3", endpoint_url=endpoint)
        self.name = f"b-{uuid.uuid4().hex[:12]}"
        self.client.create_bucket(Bucket=self.name)
        self.endpoint = endpoint

    def env(self) -> dict[str, str]:
        return {**super().env(), "AWS_ENDPOINT_URL": self.endpoint}

    def put(self, name: str, data: bytes, metadata: Optional[dict[str, str]] = None) -> None:
        self.client.put_object(Bucket=self.name, Key=f"{PREFIX}/{name}", Body=data, Metadata=metadata or {})

    def get(self, name: str) -> Optional[bytes]:
        try:
            return self.client.get_object(Bucket=self.name, Key=f"{PREFIX}/{name}")["Body"].read()
        except self.client.exceptions.NoSuchKey:
            return None

    def delete(self, name: str) -> None:
        self.client.delete_object(Bucket=self.name, Key=f"{PREFIX}/{name}")

    def put_key(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.name, Key=key, Body=data)

    def get_key(self, key: str) -> Optional[bytes]:
        try:
            return self.client.get_object(Bucket=self.name, Key=key)["Body"].read()
        except self.client.exceptions.NoSuchKey:
            return None

    def url(self, key: str) -> str:
        return f"s3://{self.name}/{key}"

    def sha256_metadata(self, name: str) -> Optional[str]:
        return self.client.head_object(Bucket=self.name, Key=f"{PREFIX}/{name}")["Metadata"].get("sha256")

    def all_names(self) -> set[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.name, Prefix=f"{PREFIX}/")
        return {o["Key"][len(PREFIX) + 1:] for page in pages for o in page.get("Contents", [])}

    def remove_bucket(self) -> None:
        for name in self.all_names():
            self.delete(name)
        self.client.delete_bucket(Bucket=self.name)
