"""`python -m ckpttool` runs the command-line tool."""
from ckpttool.cli.entry import main

if __name__ == "__main__":
    main()
