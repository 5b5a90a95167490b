"""TensorFlow's own formats, read and written without TensorFlow: the state file, the LevelDB-style
table, the tensor bundle (reader and writer), V1 checkpoints, the TF2 object graph, CRC32C, the project's
.proto files, and graphs (graphs/). May import formats/ (dtypes, variables) and storage/."""
