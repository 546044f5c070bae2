"""refmount: versioned reference artifacts as read-only, lazily fetched directories."""

__version__ = "0.1.0"

from .api import Artifact, link_artifact, log_artifact, unlink_artifact, use_artifact
from .manifest import Entry, Manifest

__all__ = [
    "Artifact",
    "Entry",
    "Manifest",
    "__version__",
    "link_artifact",
    "log_artifact",
    "unlink_artifact",
    "use_artifact",
]
