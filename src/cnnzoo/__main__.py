"""`python -m cnnzoo ...`: the same command line as `cnnzoo ...`."""

from cnnzoo.cli import app

if __name__ == "__main__":
    app(prog_name="cnnzoo")
