"""`python -m yoloblocks_cli` runs the same CLI as `yb`."""

from yoloblocks_cli.app import main

if __name__ == "__main__":
    main()
