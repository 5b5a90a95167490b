"""Console entry point. Kept tiny and import-free so that Ctrl-C during
start-up (while the CLI's modules load) is also a clean exit 130."""
import sys


def main() -> None:
    try:
        from ckpttool.cli.app import main as run

        run()
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
