"""The test harness shared by tests/, bench/ and loadtest/: real servers and clients on
127.0.0.1, never a product module's internals (gcs_sync imports none of it).

    servers.py           the app under gunicorn (Instance), twine, pip, uv and raw HTTP clients
    storage_servers.py   gcp-storage-emulator and moto's S3 server, in this process
    gcs_preconditions.py the emulator taught GCS's ifGenerationMatch
    fault_proxy.py       a loopback proxy that injects faults and latency before a store
    buckets.py           a bucket read and written around gcs_sync (each SDK, or the filesystem)
    packages.py          real, installable wheels
    wait.py              polling a condition within a bound
"""
