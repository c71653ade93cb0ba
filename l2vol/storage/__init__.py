"""Object storage for datasets and artifacts: ``file://`` and ``s3://`` (MinIO, SeaweedFS, AWS).

This package imports no other l2vol package.
"""

from l2vol.storage.dataset import MANIFEST, DatasetStore, PartitionInfo
from l2vol.storage.uri import StoreError, open_filesystem

__all__ = ["MANIFEST", "DatasetStore", "PartitionInfo", "StoreError", "open_filesystem"]
