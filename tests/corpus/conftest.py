"""Fixtures shared by tests/corpus: the S3 API server of the storage tests (tests/corpus/storage_servers.py)."""

from tests.corpus.storage_servers import s3_server  # noqa: F401 - a session fixture, one server for all modules
