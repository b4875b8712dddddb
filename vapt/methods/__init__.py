"""The built-in methods, one module per family; importing a module registers its methods in `METHODS`.

`baselines` (linear probing, full fine-tuning), `vpt` (VPT-shallow, VPT-deep) and `vapt` (VAPT), imported
in this order, which is the registry's (and so the CLI's and the tables') order.
"""

# isort: off
from vapt.methods import baselines, vpt, vapt  # noqa: F401  (registration on import)
# isort: on
