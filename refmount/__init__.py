"""refmount: versioned reference artifacts as read-only, lazily fetched directories."""

__version__ = "0.1.0"

from .api import Artifact, log_artifact, use_artifact
from .manifest import Entry, Manifest

__all__ = ["Artifact", "Entry", "Manifest", "__version__", "log_artifact", "use_artifact"]
