"""Make chart_testlib importable by the chart tests.

pytest imports test modules without putting their folder on sys.path (importlib mode), and the
tests folders are not packages; the helpers shared by these test files live next to them.
"""

import sys
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
