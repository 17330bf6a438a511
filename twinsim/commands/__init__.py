"""The ``twinsim`` command's sub-commands: one module per command, each with ``add_parser(sub)``.

Commands parse options, open what they need and print; the work lives in the stage packages.
Every option a user can get wrong raises :class:`twinsim.errors.UsageError` (exit 2).
"""
