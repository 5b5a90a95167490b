"""What happens to tensors and their names: inspect, verify, diff, convert, average, layouts, casts, renames,
--like, model names, statistics and values. May import all of ops/ (runs, retention, the shared top), formats/, storage/."""
