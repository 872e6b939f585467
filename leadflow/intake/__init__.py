"""Lead intake: read untrusted files, normalize each row, merge into the database.

``read_rows`` streams a file, ``normalize`` turns a row into a lead or a reasoned rejection,
``import_rows``/``import_file`` merge leads by normalized email in set-based batches.
"""

from leadflow.intake.normalize import NormalizedLead, Normalizer, Rejected, normalize
from leadflow.intake.readers import IntakeError, RawRow, read_rows
from leadflow.intake.store import ImportSummary, import_file, import_rows, write_rejects

__all__ = [
    "ImportSummary",
    "IntakeError",
    "NormalizedLead",
    "Normalizer",
    "RawRow",
    "Rejected",
    "import_file",
    "import_rows",
    "normalize",
    "read_rows",
    "write_rejects",
]
