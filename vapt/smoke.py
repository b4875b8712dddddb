"""The smoke experiments' former import path; the module now lives in `vapt.paper.smoke` (same object)."""

import sys

from vapt.paper import smoke as _smoke

sys.modules[__name__] = _smoke
