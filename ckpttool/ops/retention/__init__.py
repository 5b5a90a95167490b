"""What prune keeps and deletes: retention rules, metric scores and their sources, the best-N selection,
debris and the plan/apply of prune itself. May import ops.runs, formats/ and storage/ (not the top of ops/, not tensors/)."""
