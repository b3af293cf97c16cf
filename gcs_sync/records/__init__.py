"""Per-file metadata records: what the index knows of each package file without opening it.

``record`` is the record itself and its JSON form in the bucket; ``extract`` opens a wheel
or an sdist, with bounded memory and time, and reads its core metadata. Neither does
any bucket or web I/O: ``sync.records`` stores records, ``web.simple_api`` serves them.
"""
