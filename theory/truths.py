"""True mixing measures: the default truth, named presets, JSON truth files, and the local alternative.

A truth fixes the key map B, the value read-out c, the pre-trained part (B0, c0, a0, e0), the prompt
biases and the true atoms of each family key (``vpt``, ``prefix``, ``vapt``; the ``vapt`` atoms also
serve ``vapt_gelu``, ``vapt_linear`` and ``vapt_faithful``). JSON truth file (all numbers; d = len(c)):

    {"B": [[1, 0.5], [-0.3, 1]], "c": [1, -2],
     "pretrained": {"B0": [[0.5, 0.2], [0.2, -0.4]], "c0": [0, 0], "a0": [1, -0.5], "e0": 0.2},
     "biases": [0, -0.5],
     "atoms": {"vpt": [[1, -0.5], [-0.8, 0.6]],
               "prefix": [[1, -0.5, 1.5], [-0.8, 0.6, -1]],
               "vapt": [[1, -0.5, 0.3, 0.8], [-0.8, 0.6, 0.5, -0.7]]}}

``atoms`` needs at least one family key; every list has one atom per bias (vpt: d numbers, prefix:
d + 1 (key then value), vapt: d * d (W row-major)). Atoms of a family must lie at least
``MIN_SEPARATION`` apart, and each prompt expert must differ from the pre-trained one.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from theory.families import atom_keys, family_names, get_family, make_family
from theory.models import MixingMeasure, Pretrained, PromptMoE

#: Smallest distance allowed between two true atoms of one family.
MIN_SEPARATION = 0.5
#: Smallest mean gap (over inputs in [-1, 1]^d) between a prompt's expert and score and the pre-trained
#: ones; the score is compared up to a constant, which the bias supplies and which cannot set a prompt apart.
MIN_PRETRAINED_GAP = 0.05
#: Prompt biases must lie in [-BIAS_LIMIT, BIAS_LIMIT]: a weight below e^-5 is no prompt at all at these n.
BIAS_LIMIT = 5.0
#: The fields of a truth file and of its ``pretrained`` object.
FIELDS = ("B", "c", "pretrained", "biases", "atoms")
PRETRAINED_FIELDS = ("B0", "c0", "a0", "e0")


class TruthError(ValueError):
    """A truth (preset name or JSON file) that cannot be used; the message names the bad field."""


def atom_key(family: str) -> str:
    """The atom key (e.g. ``vpt``, ``prefix`` or ``vapt``) whose atoms a family uses."""
    return get_family(family).atom_key


@dataclass(frozen=True, eq=False)
class Truth:
    """A complete true model: key map, read-out, pre-trained part, biases and atoms per family key."""

    name: str
    B: np.ndarray
    c: np.ndarray
    pretrained: Pretrained
    biases: np.ndarray
    atoms: dict[str, np.ndarray]

    @property
    def d(self) -> int:
        """Input dimension."""
        return int(self.c.size)

    @property
    def families(self) -> list[str]:
        """The default families this truth has atoms for, in the usual order."""
        return [f for f in family_names() if atom_key(f) in self.atoms]

    def has_family(self, family: str) -> bool:
        """Whether this truth defines atoms for ``family``."""
        return atom_key(family) in self.atoms

    def model(self, family: str) -> tuple[PromptMoE, MixingMeasure]:
        """The regression model of ``family`` and its true mixing measure G*."""
        key = atom_key(family)
        if key not in self.atoms:
            raise TruthError(f"truth {self.name!r}: field atoms.{key} is missing; it is needed for family {family!r}")
        return PromptMoE(make_family(family, self.B, self.c), self.pretrained), MixingMeasure(
            self.atoms[key].copy(), self.biases.copy()
        )

    def to_dict(self) -> dict:
        """The JSON form of this truth (see the module docstring)."""
        p = self.pretrained
        return {
            "B": self.B.tolist(),
            "c": self.c.tolist(),
            "pretrained": {"B0": p.B0.tolist(), "c0": p.c0.tolist(), "a0": p.a0.tolist(), "e0": float(p.e0)},
            "biases": self.biases.tolist(),
            "atoms": {k: v.tolist() for k, v in self.atoms.items()},
        }


def _array(data: dict, field: str, shape: tuple[int, ...], where: str) -> np.ndarray:
    name = f"{where}{field}"
    if field not in data:
        raise TruthError(f"field {name} is missing; expected {_shape_text(shape)}")
    value = data[field]
    if _has_non_number(value):
        raise TruthError(f"field {name} must be {_shape_text(shape)} (numbers, not true/false or text); got {value!r}")
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise TruthError(f"field {name} must be {_shape_text(shape)}; got {value!r}") from None
    if arr.shape != shape:
        raise TruthError(f"field {name} must be {_shape_text(shape)}; got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise TruthError(f"field {name} must be finite numbers; got {value!r}")
    return arr


def _has_non_number(value: object) -> bool:
    if isinstance(value, list):
        return any(_has_non_number(v) for v in value)
    return isinstance(value, bool) or not isinstance(value, (int, float))


def _check_fields(data: dict, allowed: tuple[str, ...], where: str) -> None:
    unknown = [k for k in data if k not in allowed]
    if unknown:
        raise TruthError(f"field {where}{unknown[0]} is not a truth field; expected only {', '.join(allowed)}")


def _shape_text(shape: tuple[int, ...]) -> str:
    if not shape:
        return "a number"
    if len(shape) == 1:
        return f"a list of {shape[0]} numbers"
    return f"a {shape[0]} x {shape[1]} list of lists of numbers"


def truth_from_dict(data: object, name: str) -> Truth:
    """Validate a truth in its JSON form; a :class:`TruthError` names the first bad field."""
    if not isinstance(data, dict):
        raise TruthError(f"a truth must be a JSON object with fields B, c, pretrained, biases, atoms; got {data!r}")
    _check_fields(data, FIELDS, "")
    if "c" not in data or not isinstance(data["c"], list) or not data["c"]:
        raise TruthError(f"field c is {'missing' if 'c' not in data else 'malformed'}; expected a list of d numbers")
    d = len(data["c"])
    c = _array(data, "c", (d,), "")
    B = _array(data, "B", (d, d), "")
    pre = data.get("pretrained")
    if not isinstance(pre, dict):
        raise TruthError(
            f"field pretrained is {'missing' if pre is None else 'malformed'}; expected an object with B0, c0, a0, e0"
        )
    _check_fields(pre, PRETRAINED_FIELDS, "pretrained.")
    pretrained = Pretrained(
        _array(pre, "B0", (d, d), "pretrained."),
        _array(pre, "c0", (d,), "pretrained."),
        _array(pre, "a0", (d,), "pretrained."),
        float(_array(pre, "e0", (), "pretrained.")),
    )
    if "biases" not in data or not isinstance(data["biases"], list) or not data["biases"]:
        word = "missing" if "biases" not in data else "malformed"
        raise TruthError(f"field biases is {word}; expected a non-empty list of numbers (one per atom)")
    L = len(data["biases"])
    biases = _array(data, "biases", (L,), "")
    if np.any(np.abs(biases) > BIAS_LIMIT):
        raise TruthError(
            f"field biases must lie in [-{BIAS_LIMIT:g}, {BIAS_LIMIT:g}] (prompt weights e^b from 0.0067 to 148); "
            f"got {data['biases']!r}"
        )
    raw = data.get("atoms")
    if not isinstance(raw, dict) or not raw:
        raise TruthError(
            f"field atoms is {'missing' if raw is None else 'malformed'}; expected an object with at least one of "
            f"{', '.join(atom_keys())}"
        )
    keys = atom_keys()
    unknown = [k for k in raw if k not in keys]
    if unknown:
        raise TruthError(f"field atoms.{unknown[0]} is not a known family key; expected {', '.join(keys)}")
    atoms = {}
    for key in raw:
        P = int(get_family(keys[key][0]).atom_size(d))
        atoms[key] = _array(raw, key, (L, P), "atoms.")
    truth = Truth(name, B, c, pretrained, biases, atoms)
    _check_separation(truth)
    _check_identifiable(truth)
    return truth


def _check_identifiable(truth: Truth) -> None:
    """Every atom key's first-order derivative functions are linearly independent (atoms identifiable)."""
    from theory.identifiability import THRESHOLD, derivative_functions, singular_value_ratio

    for key in truth.atoms:
        ratio = singular_value_ratio(derivative_functions(atom_keys()[key][0], 1, n_points=2000, truth=truth))
        if not ratio > THRESHOLD:
            raise TruthError(
                f"field atoms.{key}: the atoms are not identifiable with this B, c and pre-trained part (first-order "
                f"derivative functions dependent, singular-value ratio {ratio:.1e}); e.g. B = 0 leaves vpt atoms "
                "only through c^T p"
            )


def _check_separation(truth: Truth, n_check: int = 4000) -> None:
    X = np.random.default_rng(0).uniform(-1.0, 1.0, size=(n_check, truth.d))
    s0, h0 = truth.pretrained.score(X), truth.pretrained.expert(X)
    for key, atoms in truth.atoms.items():
        dist = np.linalg.norm(atoms[:, None, :] - atoms[None, :, :], axis=2)
        np.fill_diagonal(dist, np.inf)
        if atoms.shape[0] > 1 and dist.min() < MIN_SEPARATION:
            i, j = np.unravel_index(np.argmin(dist), dist.shape)
            raise TruthError(
                f"field atoms.{key}: atoms {i} and {j} are {dist[i, j]:.3g} apart; true atoms must be at least "
                f"{MIN_SEPARATION} apart to be told apart"
            )
        family = make_family(atom_keys()[key][0], truth.B, truth.c)
        s, h = family.scores_experts(X, atoms)
        for j in range(atoms.shape[0]):
            ds = s[:, j] - s0
            gap = float(np.mean(np.abs(h[:, j] - h0)) + np.mean(np.abs(ds - ds.mean())))
            if gap < MIN_PRETRAINED_GAP:
                raise TruthError(
                    f"field atoms.{key}[{j}]: its score and expert are within {gap:.3g} of the pre-trained ones "
                    f"(at least {MIN_PRETRAINED_GAP} needed); a prompt must be distinguishable from the pre-trained "
                    "expert"
                )


_DEFAULT = {
    "B": [[1.0, 0.5], [-0.3, 1.0]],
    "c": [1.0, -2.0],
    "pretrained": {"B0": [[0.5, 0.2], [0.2, -0.4]], "c0": [0.0, 0.0], "a0": [1.0, -0.5], "e0": 0.2},
    "biases": [0.0, -0.5],
    "atoms": {
        "vpt": [[1.0, -0.5], [-0.8, 0.6]],
        "prefix": [[1.0, -0.5, 1.5], [-0.8, 0.6, -1.0]],
        "vapt": [[1.0, -0.5, 0.3, 0.8], [-0.8, 0.6, 0.5, -0.7]],
    },
}

#: Named truths: the default, a three-atom truth, and one whose prompt experts lie near the pre-trained expert.
PRESETS: dict[str, dict] = {
    "default": _DEFAULT,
    "three_atoms": {
        **_DEFAULT,
        "biases": [0.0, -0.5, -0.3],
        "atoms": {
            "vpt": [[1.0, -0.5], [-0.8, 0.6], [0.2, 1.2]],
            "prefix": [[1.0, -0.5, 1.5], [-0.8, 0.6, -1.0], [0.2, 1.2, 0.5]],
            "vapt": [[1.0, -0.5, 0.3, 0.8], [-0.8, 0.6, 0.5, -0.7], [0.2, 0.9, -0.6, 0.4]],
        },
    },
    "near_pretrained": {
        **_DEFAULT,
        "atoms": {
            "vpt": [[0.7, 0.2], [-0.5, -0.3]],
            "prefix": [[0.7, 0.2, 0.3], [-0.5, -0.3, 0.1]],
            "vapt": [[0.4, -0.2, 0.1, 0.3], [-0.3, 0.2, 0.2, -0.3]],
        },
    },
}
#: One-line description of each preset (for --help and the docs).
PRESET_HELP = {
    "default": "two atoms per family, well separated",
    "three_atoms": "the default plus a third atom (bias -0.3)",
    "near_pretrained": "two atoms whose experts take values near the pre-trained expert's (small |c^T p|, small W)",
}


def preset(name: str) -> Truth:
    """A named truth from :data:`PRESETS`."""
    if name not in PRESETS:
        raise TruthError(f"unknown truth {name!r}; expected one of {', '.join(PRESETS)} or a path to a .json file")
    return truth_from_dict(PRESETS[name], name)


def load_truth(spec: str | Truth | None) -> Truth:
    """A truth from a preset name or a JSON file path (None: the default truth)."""
    if isinstance(spec, Truth):
        return spec
    if spec is None:
        return DEFAULT_TRUTH
    if spec in PRESETS:
        return preset(spec)
    path = Path(spec)
    if not spec.endswith(".json") and not path.exists():
        raise TruthError(f"unknown truth {spec!r}; expected one of {', '.join(PRESETS)} or a path to a .json file")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise TruthError(f"cannot read truth file {spec}: {err.strerror or err}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise TruthError(f"truth file {spec}: not JSON ({err})") from None
    digest = hashlib.sha1(json.dumps(data, sort_keys=True).encode()).hexdigest()[:10]
    try:
        return truth_from_dict(data, f"{path.stem}@{digest}")
    except TruthError as err:
        raise TruthError(f"truth file {spec}: {err}") from None


DEFAULT_TRUTH = truth_from_dict(_DEFAULT, "default")


def default_truth(family: str) -> tuple[PromptMoE, MixingMeasure]:
    """The regression model of ``family`` and its true mixing measure under the default truth."""
    return DEFAULT_TRUTH.model(family)


def local_delta(n: int, delta0: float) -> float:
    """Separation of the split pair at sample size n: delta_n = delta0 * n^(-1/4)."""
    return float(delta0) * float(n) ** -0.25


def split_direction(n_params: int) -> np.ndarray:
    """The fixed unit direction u along which the local alternative splits its atom."""
    u = np.ones(n_params)
    return u / np.linalg.norm(u)


def local_truth(G: MixingMeasure, n: int, delta0: float, atom: int = 0) -> MixingMeasure:
    """Atom ``atom`` of G replaced by two atoms theta +- (delta_n / 2) u with half its weight each (appended last).

    The split pair is the last two atoms; the other atoms keep their order.
    """
    if not (math.isfinite(delta0) and delta0 > 0):
        raise ValueError(f"delta0 must be a positive number, got {delta0!r}")
    theta, b = G.atoms[atom], G.biases[atom]
    u = split_direction(G.atoms.shape[1])
    half = 0.5 * local_delta(n, delta0) * u
    keep = [j for j in range(G.atoms.shape[0]) if j != atom]
    atoms = np.vstack([G.atoms[keep], theta - half, theta + half])
    biases = np.concatenate([G.biases[keep], [b - math.log(2.0), b - math.log(2.0)]])
    return MixingMeasure(atoms, biases)
