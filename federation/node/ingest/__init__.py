"""Ingestion of local data into the node's common data model (DESIGN §5).

Every ingester follows the same rules: it reads and checks its source, skips what
it cannot use (by file name or row number, with a reason), writes everything else
in one transaction together with an `ingestion` row and a node audit entry (so a
failure leaves the store as it was), and skips what an earlier run already stored
(so re-running adds nothing twice).
"""

from federation.node.ingest.common import IngestError, IngestReport, Progress, Skipped
from federation.node.ingest.dicom import ingest_dicom
from federation.node.ingest.images import ingest_images
from federation.node.ingest.medmnist import ingest_medmnist
from federation.node.ingest.table import ingest_table

__all__ = [
    "IngestError",
    "IngestReport",
    "Progress",
    "Skipped",
    "ingest_dicom",
    "ingest_images",
    "ingest_medmnist",
    "ingest_table",
]
