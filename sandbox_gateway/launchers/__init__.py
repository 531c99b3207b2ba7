"""The kernel launchers Enterprise Gateway runs once per kernel: ``docker`` and ``kubernetes``."""
