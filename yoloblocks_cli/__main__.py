"""`python -m yoloblocks_cli` runs the same CLI as `yb`."""

from yoloblocks_cli.app import cli

if __name__ == "__main__":
    cli()
