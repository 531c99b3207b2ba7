"""Enterprise Gateway configuration shared by the gateway image and the test gateway."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import sandbox_gateway_patches  # noqa: E402

sandbox_gateway_patches.apply()
