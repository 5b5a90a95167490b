"""The jobs: pure functions that take paths and options and return frozen dataclasses; nothing here
prints or exits. runs/ (run directories over time) <- retention/ (what prune keeps) <- tensors/ (what
happens to tensors); at this level, what every job shares (targets, destinations, fetching, patterns),
which may import runs/ only. All may import formats/ and storage/; none imports the CLI."""
