"""refmount: versioned reference artifacts as read-only, lazily fetched directories."""

__version__ = "0.1.0"
