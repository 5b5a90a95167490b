"""`python -m ckpttool` runs the command-line tool. Its signal handlers are in place already:
ckpttool/__init__.py, which runpy imports first, installs them when the module run is this one."""
from ckpttool.cli.entry import main

if __name__ == "__main__":
    main()
