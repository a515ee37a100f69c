"""The node's expected failures, in a module of their own so that the CLI can name
them without importing pandas, pydicom or SDV (`tre node status` starts fast)."""


class DataError(LookupError):
    """The requested data does not exist or cannot be returned as asked."""


class IngestError(Exception):
    """Input that cannot be ingested at all (nothing was stored); the message names it."""


class SynthesisError(Exception):
    """A synthesis cannot run or its result cannot be released; the message says why."""
