"""One module per job: pure functions that take paths and options and return
frozen dataclasses. Nothing here prints or exits."""
