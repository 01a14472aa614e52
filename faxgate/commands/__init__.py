"""One module per ``faxgate`` subcommand.

Each module defines ``register(subparsers)``, which adds its parser and sets
``handler`` (a function taking the parsed arguments and returning the exit
code). Heavy imports stay inside handlers so ``faxgate --help`` stays fast.
"""
