"""`python -m ckpttool` runs the command-line tool."""
from ckpttool.cli.app import main

if __name__ == "__main__":
    main()
