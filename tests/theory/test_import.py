"""The theory package imports without torch."""

BLOCK_TORCH = """
import sys, importlib.abc

class BlockTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked in this test")
        return None

sys.meta_path.insert(0, BlockTorch())
try:
    import torch  # noqa: F401
except ImportError:
    pass
else:
    raise SystemExit("the torch blocker does not work")
import theory
import theory.models, theory.fit, theory.voronoi, theory.rates, theory.identifiability
import theory.experiment, theory.figures, theory.io, theory.sample_efficiency, theory.bench, theory.runner
import theory.summary, theory.config, theory.families, theory.report, theory.activations
assert "torch" not in sys.modules
print("ok")
"""


def test_import_without_torch(run_module):
    proc = run_module(None, extra_code=BLOCK_TORCH)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"
