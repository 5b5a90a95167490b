"""The one seam for bytes: local paths (os, pread, descriptors) and URLs (fsspec, imported only then),
ranged reads, listings, atomic writes and temps, deletes. Knows no format; imports only the standard
library, ckpttool.errors and ckpttool.text (and fsspec for URLs)."""
