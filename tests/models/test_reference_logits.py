"""The model path is bit-identical to the reference: logits of every method on fixed weights and inputs.

The reference file `tests/models/data/reference_logits.pt` holds, per backbone, one backbone state, and per
(backbone, method) the rest of the model's state (prompts, head; the whole model for full fine-tuning), the
input batch and the logits, all computed on one CPU thread (as the tests run), and the platform that computed
them. It was written with

    PYTHONPATH=. python -m tests.models.test_reference_logits

and must only be rewritten (same command) when a change to the model path is intended and explained, or, with
an unchanged model path, to move the bit-for-bit check to another platform after the check below passed there.

Float32 kernels differ between CPUs (instruction set, BLAS code path), and so does their summation order. On the
platform that wrote the reference the logits must be equal bit for bit; on any other they must be equal up to
the float32 rounding error the computation carries, measured against the same model in float64.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.float_bounds import assert_equal_up_to_rounding
from vapt.models.factory import create_model
from vapt.run.train import cpu_platform

REFERENCE = Path(__file__).parent / "data" / "reference_logits.pt"
BACKBONES = ("vit_test", "swin_test")
# the methods registered when the reference was written; options give every prompted path a prompt
CASES = {
    "linear": {},
    "full": {},
    "vpt_shallow": {"num_tokens": 3},
    "vpt_deep": {"num_tokens": 3},
    "vapt": {"num_tokens": 3},
    "vapt_paper_form": {"num_tokens": 3, "residual_projector": False, "token_projector_bias": False,
                        "pre_norm": False, "static_depth": 0, "shared_projector": False, "shared_kernel": False},
}


def build(backbone: str, case: str) -> torch.nn.Module:
    """The model of one reference case (weights are loaded from the reference afterwards)."""
    method = "vapt" if case.startswith("vapt") else case
    return create_model(backbone, method, num_classes=5, **CASES[case]).eval()


def write_reference(path: Path = REFERENCE) -> None:
    """Build every case with random (non-zero) weights and save its state, inputs and logits."""
    torch.set_num_threads(1)
    out: dict = {"platform": cpu_platform()}
    for backbone in BACKBONES:
        torch.manual_seed(0)
        shared = build(backbone, "linear").backbone.state_dict()
        out[backbone] = shared
        for case in CASES:
            torch.manual_seed(0)
            model = build(backbone, case)
            model.backbone.load_state_dict(shared)
            generator = torch.Generator().manual_seed(1)
            with torch.no_grad():
                for name, p in model.named_parameters():  # non-zero prompts and head, so that each reaches the logits
                    if case == "full" or not name.startswith("backbone."):
                        p.add_(0.1 * torch.randn(p.shape, generator=generator))
                images = torch.randn(2, 3, 32, 32, generator=generator)
                logits = model(images)
            own = {k: v for k, v in model.state_dict().items() if case == "full" or not k.startswith("backbone.")}
            out[f"{backbone}/{case}"] = {"state": own, "images": images, "logits": logits}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(out, path)


@pytest.fixture(scope="module")
def reference() -> dict:
    return torch.load(REFERENCE, map_location="cpu", weights_only=True)


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("case", list(CASES))
def test_logits_match_the_reference_bit_for_bit(reference: dict, backbone: str, case: str) -> None:
    saved = reference[f"{backbone}/{case}"]
    model = build(backbone, case)
    model.backbone.load_state_dict(reference[backbone])
    missing, unexpected = model.load_state_dict(saved["state"], strict=False)
    assert not unexpected and all(k.startswith("backbone.") for k in missing)
    with torch.no_grad():
        logits = model(saved["images"])
    assert logits.abs().max() > 0
    if reference.get("platform") == cpu_platform():
        assert torch.equal(logits, saved["logits"]), (logits - saved["logits"]).abs().max()
    else:
        with torch.no_grad():
            logits64 = model.double()(saved["images"].double())
        assert_equal_up_to_rounding(saved["logits"], logits, logits64)


if __name__ == "__main__":
    write_reference()
    print(f"wrote {REFERENCE}")
