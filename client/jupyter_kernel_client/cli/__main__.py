"""``python -m jupyter_kernel_client.cli``: the same as ``mini-sandbox``."""

from jupyter_kernel_client.cli import main

main()
