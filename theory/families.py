"""The registry of prompt families: each family is one registration, and every list of families comes from here.

A registration gives how to build the family from the known key map B and read-out c, which atoms of a
truth it uses (its atom key) and how many numbers an atom has, and the prediction per regime and metric
(kind, slope, competing slope, whether the bound carries a log factor, and the claim it tests). A theorist
adds a family with :func:`register_family`, giving the score and expert and their analytic Jacobian:

    def forward(X, theta, B, c):        # X (n, d), theta (L, P) -> s, h, each (n, L)
    def jacobian(X, theta, B, c):       # -> ds, dh, each (n, L, P): derivatives with respect to the atom
    theory.register_family("toy", forward, jacobian, atom_size=lambda d: 2 * d, strongly_identifiable=True)

A truth then gives atoms for the key (``"atoms": {"toy": [...]}``), and ``--families toy`` fits it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from theory.models import PromptFamily

#: Regimes with their metrics, in summary order.
REGIME_METRICS: dict[str, tuple[str, ...]] = {
    "exact": ("D1", "L2", "param_err", "expert_sup"),
    "over": ("D2", "D1", "L2", "param_err", "expert_sup"),
    "misspecified": ("L2",),
    "local": ("W1", "L2", "mass_err", "max_pair_err"),
}
#: Kinds of prediction: a tight rate (two-sided test), an upper bound (one-sided), or none (reported).
KINDS: tuple[str, ...] = ("rate", "bound", "none")


@dataclass(frozen=True)
class Prediction:
    """What the theory says about one (regime, metric): kind, slope, competing slope, log factor, claim."""

    kind: str
    slope: float = float("nan")
    competitor: float = float("nan")
    log_factor: bool = False
    claim: str = ""

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}; got {self.kind!r}")


#: Claims, by short name (docs/theory.md maps each to the statement, its regime and assumptions).
CLAIMS = {
    "exact-rate": "exact-specified: Voronoi D1 and parameter/expert errors at n^-1/2 (Theorem 1 for vapt; LS-MoE "
    "framework otherwise); compact Theta, distinct atoms",
    "L2-parametric": "least squares: regression error at n^-1/2 whenever the fitted family contains the truth",
    "over-D2": "over-specified: D2 at sqrt(log n / n) for strongly identifiable families; compact Theta",
    "over-bound": "over-specified: unsquared errors in multi-atom cells at most n^-1/4 (worst case); compact Theta",
    "over-weak": "over-specified, not strongly identifiable: no polynomial rate predicted",
    "local-W1": "local alternative: a pair delta0 n^-1/4 apart is estimated no faster than n^-1/4 (the bound is tight)",
    "local-report": "local alternative: diagnostic, no rate predicted",
    "expressiveness-floor": "misspecified: a static prompt cannot represent an adaptive truth (L2 plateau)",
}


def standard_predictions(strongly_identifiable: bool) -> dict[tuple[str, str], Prediction]:
    """The predictions of the least-squares prompt-MoE framework for a family, per (regime, metric)."""
    rate, bound, none = (
        lambda slope, claim, competitor=float("nan"), log=False: Prediction("rate", slope, competitor, log, claim),
        lambda: Prediction("bound", -0.25, -0.5, False, "over-bound"),
        lambda claim: Prediction("none", claim=claim),
    )
    out = {("exact", m): rate(-0.5, "exact-rate", -0.25) for m in ("D1", "param_err", "expert_sup")}
    out[("exact", "L2")] = rate(-0.5, "L2-parametric")
    out[("over", "L2")] = rate(-0.5, "L2-parametric")
    if strongly_identifiable:
        out[("over", "D2")] = rate(-0.5, "over-D2", log=True)
        out.update({("over", m): bound() for m in ("D1", "param_err", "expert_sup")})
    else:
        out.update({("over", m): none("over-weak") for m in ("D2", "D1", "param_err", "expert_sup")})
    out[("local", "W1")] = rate(-0.25, "local-W1", -0.5)
    out[("local", "L2")] = rate(-0.5, "L2-parametric")
    out[("local", "mass_err")] = none("local-report")
    out[("local", "max_pair_err")] = none("local-report")
    out[("misspecified", "L2")] = rate(-0.5, "L2-parametric")
    return out


@dataclass(frozen=True)
class FamilySpec:
    """One registered family: how to build it, its atoms, what the theory predicts for it."""

    name: str
    build: Callable[[np.ndarray, np.ndarray], PromptFamily]
    atom_key: str
    atom_size: Callable[[int], int]
    strongly_identifiable: bool | None
    predictions: dict[tuple[str, str], Prediction] = field(default_factory=dict)
    optional: bool = False


_REGISTRY: dict[str, FamilySpec] = {}


@dataclass(frozen=True)
class FunctionFamily(PromptFamily):
    """A family given by functions: forward(X, theta, B, c) -> (s, h) and jacobian(...) -> (ds, dh)."""

    forward_fn: Callable | None = None
    jacobian_fn: Callable | None = None
    hessian_fn: Callable | None = None
    size: int = 0

    @property
    def n_params(self) -> int:
        """Number of parameters of one atom (bias excluded)."""
        return self.size

    def forward_t(self, XT, theta):
        """Scores and experts (L, n) from the registered forward function."""
        s, h = self.forward_fn(XT.T, theta, self.B, self.c)
        s_t = np.ascontiguousarray(np.asarray(s, dtype=float).T)
        return s_t, np.ascontiguousarray(np.asarray(h, dtype=float).T), ()

    def gradient_t(self, XT, theta, cache, wh, ws, out):
        """wh * dh/dtheta + ws * ds/dtheta from the registered Jacobian."""
        ds, dh = self.jacobian_fn(XT.T, theta, self.B, self.c)
        out[...] = np.transpose(wh.T[:, :, None] * dh + ws.T[:, :, None] * ds, (1, 2, 0))
        return out

    def second_derivatives(self, X, theta):
        """Second derivatives from the registered function (needed by the order-2 identifiability check)."""
        if self.hessian_fn is None:
            raise NotImplementedError(f"family {self.name!r} was registered without second derivatives (hessian=)")
        return self.hessian_fn(X, theta, self.B, self.c)


def register_family(
    name: str,
    forward: Callable,
    jacobian: Callable,
    *,
    atom_size: Callable[[int], int],
    atom_key: str | None = None,
    hessian: Callable | None = None,
    strongly_identifiable: bool | None = None,
    predictions: dict[tuple[str, str], Prediction] | None = None,
    optional: bool = True,
    replace: bool = False,
) -> FamilySpec:
    """Register a prompt family given by its score/expert function and their analytic Jacobian.

    ``forward(X, theta, B, c)`` returns s, h of shape (n, L); ``jacobian(X, theta, B, c)`` returns ds, dh
    of shape (n, L, P) (derivatives with respect to the atom); ``hessian`` (optional) returns d2s, d2h of
    shape (n, L, P, P) for the order-2 identifiability check. ``atom_size(d)`` is P. ``atom_key``: the
    truth's atoms it uses (default: its name). ``predictions``: per (regime, metric), default
    :func:`standard_predictions` of ``strongly_identifiable`` (False when unknown: no over-specified rate).
    ``optional`` families run only when named with --families.
    """

    def build(B, c):
        return FunctionFamily(name, B, c, forward, jacobian, hessian, int(atom_size(len(c))))

    return _register(
        FamilySpec(name, build, atom_key or name, atom_size, strongly_identifiable,
                   predictions or standard_predictions(bool(strongly_identifiable)), optional),
        replace,
    )


def _register(spec: FamilySpec, replace: bool = False) -> FamilySpec:
    if not spec.name or not spec.name.replace("_", "").isalnum():
        raise ValueError(f"a family name must be letters, digits and underscores; got {spec.name!r}")
    if spec.name in _REGISTRY and not replace:
        raise ValueError(f"family {spec.name!r} is already registered (pass replace=True to redefine it)")
    _REGISTRY[spec.name] = spec
    return spec


def unregister_family(name: str) -> None:
    """Remove a registered family (tests register toy families and remove them again)."""
    _REGISTRY.pop(name, None)


def family_names(optional: bool = False) -> tuple[str, ...]:
    """Registered families in registration order: the default ones, and with ``optional`` the others after them."""
    default = tuple(n for n, s in _REGISTRY.items() if not s.optional)
    return default + tuple(n for n, s in _REGISTRY.items() if s.optional) if optional else default


def get_family(name: str) -> FamilySpec:
    """The registration of a family; a ValueError lists the known ones."""
    if name not in _REGISTRY:
        raise ValueError(f"family must be one of {', '.join(family_names(optional=True))}; got {name!r}")
    return _REGISTRY[name]


def make_family(name: str, B: np.ndarray, c: np.ndarray) -> PromptFamily:
    """Build a registered family with key map B and read-out c."""
    return get_family(name).build(np.array(B, dtype=float), np.array(c, dtype=float))


def atom_keys() -> dict[str, tuple[str, ...]]:
    """Atom key -> the families that use its atoms."""
    keys: dict[str, tuple[str, ...]] = {}
    for name, spec in _REGISTRY.items():
        keys[spec.atom_key] = keys.get(spec.atom_key, ()) + (name,)
    return keys


def prediction(family: str, regime: str, metric: str) -> Prediction:
    """The registered prediction for (family, regime, metric)."""
    spec = get_family(family)
    if (regime, metric) not in spec.predictions:
        raise ValueError(f"no prediction for family {family!r}, regime {regime!r}, metric {metric!r}")
    return spec.predictions[(regime, metric)]


def _register_builtins() -> None:
    from theory.prompts_adaptive import AdaptivePrompt, FaithfulAdaptivePrompt
    from theory.prompts_static import PrefixPrompt, StaticPrompt

    def square(d):
        return d * d

    builtins = [
        ("vpt", lambda B, c: StaticPrompt("vpt", B, c), "vpt", lambda d: d, True, False),
        ("prefix", lambda B, c: PrefixPrompt("prefix", B, c), "prefix", lambda d: d + 1, False, False),
        ("vapt", lambda B, c: AdaptivePrompt("vapt", B, c, act="tanh"), "vapt", square, True, False),
        ("vapt_gelu", lambda B, c: AdaptivePrompt("vapt_gelu", B, c, act="gelu"), "vapt", square, True, False),
        ("vapt_linear", lambda B, c: AdaptivePrompt("vapt_linear", B, c, act="identity"), "vapt", square, False,
         False),
        ("vapt_faithful", lambda B, c: FaithfulAdaptivePrompt("vapt_faithful", B, c), "vapt", square, None, True),
    ]
    for name, build, key, size, strong, optional in builtins:
        # vapt_faithful's order-2 identifiability is not stated by the theory; its predictions are vapt's
        preds = standard_predictions(True if strong is None else strong)
        _register(FamilySpec(name, build, key, size, strong, preds, optional))


_register_builtins()
