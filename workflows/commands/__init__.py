"""Sub-commands of the ``sarm`` CLI; each module defines ``register(subparsers)``."""
