"""The only code that imports TensorFlow, lazily, for jobs that need a graph
runtime: freeze and export-json. TensorFlow's log noise never reaches the user."""
