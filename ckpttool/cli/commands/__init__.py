"""One module per command: parse options, call ops, render the result."""
