"""Hostile and broken input: what a bucket may hold is served as it is. Odd object names
in the bucket are in test_sync.py (``test_odd_object_names_are_skipped_and_logged``).
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import re
from pathlib import Path

from werkzeug.test import Client

from gcs_sync import build_app

from .buckets import BucketProbe
from .conftest import settings_for
from .servers import PASSWORD, USER

AUTH = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()


# -- content: what a bucket may hold is served as it is ---------------------------------------

def test_zero_byte_and_large_packages_are_served_intact_with_their_digest(
    bucket: BucketProbe, tmp_path: Path, htpasswd: Path
) -> None:
    large = os.urandom(1 << 20) * 50  # 50 MB, put by another tool
    bucket.put("large-1.0.tar.gz", large)
    bucket.put("empty-1.0.tar.gz", b"")
    app = Client(build_app(settings_for(bucket, tmp_path / "packages", PASSWORD_FILE=htpasswd)))
    reply = app.post("/", headers={"Authorization": AUTH}, data={
        ":action": "file_upload", "content": (io.BytesIO(b""), "empty-2.0.tar.gz"),
    })
    assert reply.status_code == 200 and bucket.get("empty-2.0.tar.gz") == b""
    for project, files in {"large": {"large-1.0.tar.gz": large},
                           "empty": {"empty-1.0.tar.gz": b"", "empty-2.0.tar.gz": b""}}.items():
        page = app.get(f"/simple/{project}/").get_data(as_text=True)
        links = dict(re.findall(r'href="[^"#]*/packages/([^"#]+)#sha256=([0-9a-f]+)"', page))
        assert links == {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
        for name, data in files.items():
            served = app.get(f"/packages/{name}")
            assert served.status_code == 200 and served.get_data() == data
