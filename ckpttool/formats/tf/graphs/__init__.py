"""TensorFlow graphs as files, read without TensorFlow: GraphDef constants (`.pb`, a `.meta`'s or a
SavedModel's graph), MetaGraph and SavedModel summaries, and the analysis of inputs and likely outputs.
May import formats/tf/ (protos, wire), formats/ and storage/."""
