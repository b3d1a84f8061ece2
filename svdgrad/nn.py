"""Layers: global covariance pooling (GCP), its first-order baseline, a small ResNet.

``import svdgrad.nn`` (the core ``import svdgrad`` does not import this module).

CovariancePooling is the GCP head of the seeds (CVPR20 eq. 1-2, iSQRT-COV,
ICCV21): a bias-free 1x1 conv + BN + ReLU reduces the channels to d, the
centred covariance Σ = (1/N) X̄ X̄ᵀ of the N = h·w spatial positions is
formed, Z = Σ^{1/2} is taken with any method of ``svdgrad.sqrtm``, and the
upper triangle of Z (with the diagonal) is the output.

Choices, and why:

- **No dense N×N centering matrix.**  fast-MPN-COV forms Σ = X Ī Xᵀ with
  Ī = (1/N)(I - 11ᵀ/N), an N×N matrix per sample: O(N²) memory, which users
  run out of at large h·w.  Here the mean is subtracted from X directly,
  which is the same matrix in O(d·N) memory.
- **Compute dtype.**  ``compute_dtype="auto"`` forms Σ and its square root
  in float64 for the eigen methods (the ICCV21 paper computes eig in float64
  for float32 networks) and in the input dtype for Newton-Schulz (matmuls
  only, stable in float32), but never in a half dtype: float16 and bfloat16
  features get their Σ (or Y) in float32, where X Xᵀ/N of small float16
  features does not underflow.  The output is cast back to the input dtype.
- **Floor.**  A zero-trace Σ (a constant or dead feature map; fast-MPN-COV
  issue #4 gave NaN there) would give an infinite gradient for the eigen
  methods.  The layer adds ``floor·I`` to Σ (default 1e-10, absolute: the
  features after BN + ReLU are O(1)).  A sample with Σ = 0 (an exactly
  constant map: the centring makes a constant row exactly 0, ``centred``)
  gets Z = sqrt(floor)·I as a constant with zero gradient (dΣ/dX = 0 there),
  so no method ever sees its d tied eigenvalues and nothing becomes NaN;
  features that vary, however little, keep their gradient.  With ``floor=0`` a
  zero-trace Σ raises ``SvdgradError`` instead.  The statistics in ``last_covariance`` are of
  Σ before the floor.
- **Two routes to Σ^{1/2}.**  ``route="covariance"`` (default) forms Σ and
  takes ``svdgrad.sqrtm(Σ + floor·I)`` with any method.  ``route="features"``
  never forms Σ: with Y = X̄/√N (Σ = Y Yᵀ) it takes
  ``svdgrad.gram_sqrtm([Y, √floor·I])``, the square root of
  Y Yᵀ + floor·I = Σ + floor·I exactly, from the (d, N + d) matrix: in
  float32 through its Gram matrix formed in float64, in float64 through its
  SVD (``gram_sqrtm``'s ``algorithm="auto"``).  Forming Σ in float32 squares
  the condition number; both routes keep κ(Y) = √κ(Σ), so float32
  suffices where the covariance route needs float64
  (ICCV21's "data precision" argument).  The appended columns make the
  floor exact without touching Σ; the dead-sample rule is the same.
- **Vectorization.**  The upper triangle with the diagonal, row by row,
  d(d+1)/2 entries.  ``offdiag_scale=1.0`` (default) leaves the off-diagonal
  entries as they are, as the fast-MPN-COV reference does; ``math.sqrt(2)``
  makes the map an isometry (‖v‖₂ = ‖Z‖_F), which weights the off-diagonal
  pairs like the full matrix would in a linear classifier.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from . import _methods
from ._api import gram_sqrtm, inv_sqrtm, sqrtm
from ._errors import SvdgradError, describe
from ._kernels import times_pow2_halves
from ._methods import get_method, methods
from ._validate import HALF_DTYPES, check_dense_float, check_has_data, is_traced

__all__ = ["CovariancePooling", "ParametricCovariancePooling", "GlobalAveragePooling", "Whitening", "SmallResNet",
           "covariance", "triu_vector", "ROUTES", "NORMS"]


def covariance(X: torch.Tensor) -> torch.Tensor:
    """Centred covariance (1/N)·(X - mean)(X - mean)ᵀ of features X (*, d, N) -> (*, d, d).

    The mean over the N positions is subtracted from X itself, never through
    an N×N centering matrix (``centred``).
    """
    Xc = centred(X)  # (*, d, N)
    S = Xc @ Xc.mT / X.shape[-1]
    return 0.5 * (S + S.mT)


def centred(X: torch.Tensor) -> torch.Tensor:
    """X − mean over the last dimension, as X − x₀ − mean(X − x₀) with x₀ each row's first value.

    The same number, but a constant row gives exactly 0: X − mean(X) left a residue of an ulp of the value
    (7e-9 for 0.1 in float32, the mean being a sum then a division), so a constant map had a tiny rank-one Σ
    instead of Σ = 0, exactly tied eigenvalues for the pooling layer's methods, and (ordinary) NaN gradients.
    """
    D = X - X[..., :1]
    return D - D.mean(dim=-1, keepdim=True)


def triu_vector(Z: torch.Tensor, offdiag_scale: float = 1.0) -> torch.Tensor:
    """Upper triangle of Z (*, d, d), diagonal included, row-major -> (*, d(d+1)/2)."""
    d = Z.shape[-1]
    i, j = torch.triu_indices(d, d, device=Z.device)
    v = Z[..., i, j]
    if offdiag_scale != 1.0:
        # built in v's dtype: a float32 √2 would make a float64 output's off-diagonal 1.7e-8 off (not an isometry)
        w = torch.full((len(i),), float(offdiag_scale), dtype=v.dtype, device=v.device).masked_fill_(i == j, 1.0)
        v = v * w
    return v


def _reduction(in_channels: int, reduced_channels: int | None) -> nn.Module:
    if reduced_channels is None:
        return nn.Identity()
    return nn.Sequential(
        nn.Conv2d(in_channels, reduced_channels, kernel_size=1, bias=False),
        nn.BatchNorm2d(reduced_channels),
        nn.ReLU(inplace=True),
    )


def _non_finite_whitening_input(x: torch.Tensor) -> SvdgradError:
    return SvdgradError(
        f"Expected finite values in the input of Whitening; received NaN or Inf (shape={tuple(x.shape)}, "
        f"dtype={x.dtype}). Check the layer that produced it; a NaN here usually comes from an earlier overflow."
    )


def _pow2_exponent(amax: torch.Tensor) -> torch.Tensor:
    """floor(log2(amax)) per entry: −inf where amax is 0 (the callers clamp), 0 where it is NaN or Inf."""
    return torch.nan_to_num(torch.floor(torch.log2(amax)), nan=0.0, posinf=0.0, neginf=-math.inf)


def _check_input(x, layer: str, *, needs_data: bool = True) -> None:
    """A layer's input x: a dense real floating tensor with values (``_validate``).  ``needs_data=False`` lets a
    meta tensor through where the forward reads no value (shapes alone propagate).  Before, a list, a nested or a
    meta x failed deep inside (AttributeError, RuntimeError), and Whitening returned an integer input whitened
    then truncated to integers (a complex one with its imaginary part dropped)."""
    if not isinstance(x, torch.Tensor):
        raise SvdgradError(f"Expected x to be a torch.Tensor for {layer}; received {describe(x)}. Convert it with "
                           f"torch.as_tensor(...) first.")
    if needs_data or not x.is_meta:
        check_has_data(x, name="x", entry=layer)
    check_dense_float(x, name="x", entry=layer)


def _check_channels(name: str, value, allow_none: bool) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise SvdgradError(f"Expected {name} to be a positive integer{' or None' if allow_none else ''}; "
                           f"received {value!r}.")


#: The routes of CovariancePooling, and the methods the features route has
#: (gram_sqrtm gives the exact square root, with its own D = 1/(σi + σj)
#: backward: there is no K-rule or iteration to choose).
ROUTES = ("covariance", "features")
_FEATURE_METHODS = ("exact",)


def _gram_sqrtm(Y: torch.Tensor, method) -> torch.Tensor:
    """(Y Yᵀ)^{1/2} by ``gram_sqrtm`` (*, d, N), with the method's shared options."""
    opts = {k: getattr(method, k) for k in ("eps", "compute_dtype", "check") if getattr(method, k) is not None}
    return gram_sqrtm(Y, **opts)


class CovariancePooling(nn.Module):
    """Global covariance pooling: (B, C, H, W) -> (B, d(d+1)/2).

    Parameters
    ----------
    in_channels:
        C, channels of the incoming feature map.
    reduced_channels:
        d, output channels of the 1x1 conv + BN + ReLU reduction (default 64;
        the papers use 256 on ImageNet).  ``None`` skips the reduction (d = C).
    method:
        Any ``svdgrad.sqrtm`` method name or object (default:
        ``"newton_schulz"``, 5 iterations as every shipped iSQRT-COV model,
        for the covariance route; ``"exact"``, the only one, for the
        features route).  ``method_options`` are applied to it.  Switch at
        run time with ``layer.method = "pade"``.
    route:
        ``"covariance"`` (default): Σ^{1/2} by ``svdgrad.sqrtm(Σ + floor·I)``.
        ``"features"``: by ``svdgrad.gram_sqrtm`` of the centred features
        scaled by 1/√N, with √floor·I appended as d extra columns (the same
        Σ + floor·I, without forming Σ); method ``"exact"`` only.
        Switch with ``layer.route = ...``.
    offdiag_scale:
        Weight of the off-diagonal entries in the vectorization (1.0 as the
        reference, or ``math.sqrt(2)`` for an isometry).
    floor:
        Absolute ridge added to Σ before the square root (default 1e-10);
        keeps a zero-trace Σ finite.  ``0`` raises ``SvdgradError`` on it.
    compute_dtype:
        ``"auto"`` (float64 for the eigen methods of the covariance route;
        the input dtype for Newton-Schulz and for the features route, whose
        SVD keeps κ(X) instead of κ(Σ) = κ(X)²), ``None`` (input dtype) or a
        torch dtype.  Applies to methods whose own ``compute_dtype`` is unset.
    keep_covariance:
        Store Σ of the last forward (detached, before the floor) in
        ``last_covariance`` for statistics (the trainer uses it).
    """

    def __init__(self, in_channels: int, reduced_channels: int | None = 64, method=None, *,
                 route: str = "covariance", offdiag_scale: float = 1.0, floor: float = 1e-10,
                 compute_dtype="auto", keep_covariance: bool = False, **method_options):
        super().__init__()
        _check_channels("in_channels", in_channels, False)
        _check_channels("reduced_channels", reduced_channels, True)
        if not (isinstance(floor, (int, float)) and floor >= 0 and math.isfinite(floor)):
            raise SvdgradError(f"Expected a finite floor >= 0; received {floor!r}.")
        if not (isinstance(offdiag_scale, (int, float)) and offdiag_scale > 0):
            raise SvdgradError(f"Expected offdiag_scale > 0 (1.0 or math.sqrt(2)); received {offdiag_scale!r}.")
        if not (compute_dtype in ("auto", None, torch.float32, torch.float64)):
            raise SvdgradError(f"Expected compute_dtype 'auto', None, torch.float32 or torch.float64; "
                               f"received {compute_dtype!r}.")
        if route not in ROUTES:
            raise SvdgradError(f"Expected route one of {', '.join(map(repr, ROUTES))}; received {route!r}.")
        if method is None:
            method = "exact" if route == "features" else "newton_schulz"
        self.in_channels = in_channels
        self.channels = in_channels if reduced_channels is None else reduced_channels
        self.reduce = _reduction(in_channels, reduced_channels)
        self.offdiag_scale = float(offdiag_scale)
        self.floor = float(floor)
        self.compute_dtype = compute_dtype
        self.keep_covariance = keep_covariance
        self.last_covariance: torch.Tensor | None = None
        self._route = route
        self.method = _methods.get_method(method, **method_options)

    @property
    def out_features(self) -> int:
        d = self.channels
        return d * (d + 1) // 2

    @property
    def method(self) -> _methods.Method:
        """The sqrtm method object in use; assign a name or an object to switch."""
        return self._method

    @method.setter
    def method(self, value) -> None:
        given = _methods.get_method(value)
        self._check_route(self._route, given)
        self._given = given  # before the layer's compute_dtype, which depends on the route
        self._method = self._with_compute_dtype(given, self._route)

    @property
    def route(self) -> str:
        """``"covariance"`` or ``"features"``; assign to switch (the features route needs method 'exact')."""
        return self._route

    @route.setter
    def route(self, value: str) -> None:
        if value not in ROUTES:
            raise SvdgradError(f"Expected route one of {', '.join(map(repr, ROUTES))}; received {value!r}.")
        self._check_route(value, self._given)
        self._route = value
        self._method = self._with_compute_dtype(self._given, value)

    @staticmethod
    def _check_route(route: str, m: _methods.Method) -> None:
        if route == "features" and m.name not in _FEATURE_METHODS:
            raise SvdgradError(
                f"Expected method 'exact' for route='features' (gram_sqrtm gives the exact square "
                f"root; there is no K-rule or iteration to choose); received method {m.name!r}. Use "
                f"route='covariance' for {m.name!r}."
            )

    def _with_compute_dtype(self, m: _methods.Method, route: str) -> _methods.Method:
        if m.compute_dtype is None and self.compute_dtype is not None:
            if self.compute_dtype == "auto":
                # float64 only where Σ is formed and decomposed: Newton-Schulz is matmuls, and the
                # features route's SVD keeps κ(X), so both are accurate in the input dtype.
                if route == "covariance" and not isinstance(m, _methods.NewtonSchulz):
                    return _methods.get_method(m, compute_dtype=torch.float64)
            else:
                return _methods.get_method(m, compute_dtype=self.compute_dtype)
        return m

    def _sigma_dtype(self, dtype: torch.dtype) -> torch.dtype:
        """The dtype Σ (or Y) is formed in: the method's compute dtype; else the input's, but never a half dtype
        (X Xᵀ/N of float16 features of 1e-4 underflowed to 0, and the live sample was pooled as a dead one)."""
        cd = self._method.compute_dtype
        if cd is None:
            return torch.float32 if dtype in HALF_DTYPES else dtype
        return dtype if dtype == torch.float64 else cd

    def _reduced(self, x: torch.Tensor) -> torch.Tensor:
        """The reduced features X (B, d, N), in the method's compute dtype."""
        if x.dim() != 4:
            raise SvdgradError(f"Expected a feature map of shape (B, C, H, W); received shape={tuple(x.shape)}. "
                               f"Apply the layer to the output of a conv backbone.")
        if x.shape[1] != self.in_channels:
            raise SvdgradError(f"Expected {self.in_channels} channels; received shape={tuple(x.shape)}. "
                               f"Set in_channels to the backbone's output width.")
        if x.shape[-2] * x.shape[-1] == 0:
            raise SvdgradError(f"Expected a feature map with at least one position (H·W >= 1); received "
                               f"shape={tuple(x.shape)}. An empty map has no covariance.")
        f = self.reduce(x)
        return f.flatten(2).to(self._sigma_dtype(f.dtype))  # (B, d, N)

    def covariance(self, x: torch.Tensor) -> torch.Tensor:
        """Σ (B, d, d) of the reduced features, in the method's compute dtype."""
        return covariance(self._reduced(x))

    def scaled_features(self, x: torch.Tensor) -> torch.Tensor:
        """Y (B, d, N) with Y Yᵀ = Σ: the centred reduced features over √N (the features route's input)."""
        X = self._reduced(x)
        return centred(X) / math.sqrt(X.shape[-1])

    def _root(self, M: torch.Tensor) -> torch.Tensor:
        """Z = (Σ + floor·I)^{1/2} (B', d, d) from M = Σ (covariance route) or M = Y (features route)."""
        d = M.shape[-2]
        if self._route == "covariance":
            if self.floor > 0:
                M = M + self.floor * torch.eye(d, dtype=M.dtype, device=M.device)
            return sqrtm(M, self._method)
        if self.floor > 0:
            # [Y, √floor·I] [Y, √floor·I]ᵀ = Y Yᵀ + floor·I = Σ + floor·I exactly.
            ridge = (math.sqrt(self.floor) * torch.eye(d, dtype=M.dtype, device=M.device)).expand(*M.shape[:-1], d)
            M = torch.cat([M, ridge], dim=-1)  # (B', d, N + d)
        return _gram_sqrtm(M, self._method)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x, type(self).__name__)
        if self._route == "covariance":
            M = S = self.covariance(x)  # (B, d, d)
            tr = S.detach().diagonal(dim1=-2, dim2=-1).sum(-1)  # (B,)
            zero = tr <= 0  # (Σ = 0: an exactly constant map, ``centred``; or Σ underflowed)
        else:
            M = self.scaled_features(x)  # (B, d, N), Σ = M Mᵀ is never formed for the gradient
            S = None
            Md = M.detach()
            # (B,) tr(Σ) = ‖Y‖_F², float16 summed in float32: its squares underflow from |Y| < 2.4e-4 (a live
            # sample with features of 1e-4 was taken for a dead one)
            tr = (Md.float() if Md.dtype == torch.float16 else Md).square().sum(dim=(-2, -1))
            # floor = 0 refuses tr(Σ) = 0, that is Y = 0: ‖Y‖² of a tiny Y underflows (1e-30 in float32), Y's
            # maximum does not.  (floor > 0 needs only tr: a tiny tr is below the floor either way.)
            zero = M.detach().abs().amax(dim=(-2, -1)) == 0
        if self.keep_covariance:
            if S is None:
                Md = M.detach()
                S = 0.5 * (Md @ Md.mT + (Md @ Md.mT).mT)
            self.last_covariance = S.detach()
        d = M.shape[-2]
        low, nonfinite = torch.stack((zero.any(), ~torch.isfinite(tr).all())).tolist()
        if nonfinite and not bool(torch.isfinite(M).all()):  # (tr alone overflows for large finite Y: no error)
            raise self._non_finite(x, M)
        if self.floor <= 0:
            if low:
                idx = int(torch.nonzero(zero)[0, 0])
                if S is not None and self._features_vary(x.detach()[idx:idx + 1]):
                    raise SvdgradError(
                        f"Expected a covariance with positive trace; sample {idx} of the batch has features that "
                        f"vary, but its Σ underflows {S.dtype} to 0 (max|x| = {float(x[idx].detach().abs().amax()):.3g}) "
                        f"and floor=0. Use route='features', which never forms Σ and takes any scale, or a wider "
                        f"dtype, or set floor > 0 to get Z = sqrt(floor)·I there."
                    )
                raise SvdgradError(
                    f"Expected a covariance with positive trace; sample {idx} of the batch has tr(Σ) = 0 "
                    f"(a constant or all-zero feature map) and floor=0. Set floor > 0 (e.g. 1e-10) to "
                    f"get Z = sqrt(floor)·I there instead."
                )
            return triu_vector(self._root(M), self.offdiag_scale).to(x.dtype)
        # ``zero`` (B,): exactly constant maps, Σ = 0 and dΣ/dX = 0 there.  Not tr(Σ) <= floor: features of 1e-6
        # vary, and the gradient of (Σ + floor·I)^{1/2} there (about 0.04) was zeroed.
        if not low:
            Z = self._root(M)
        else:
            # Z = sqrt(floor)·I, a constant: dΣ/dX = 0 at a constant map, and
            # the eigen backwards would see d exactly tied eigenvalues.
            eye = torch.eye(d, dtype=M.dtype, device=M.device)
            Z = (math.sqrt(self.floor) * eye).expand(M.shape[0], d, d).clone()
            live = torch.nonzero(~zero).flatten()
            if live.numel():
                Z = Z.index_put((live,), self._root(M[live]))
        return triu_vector(Z, self.offdiag_scale).to(x.dtype)

    def _features_vary(self, x1: torch.Tensor) -> bool:
        """Whether one sample's reduced features vary (an underflowed Σ, not a constant map), for the error.

        Re-run in eval mode, without a graph: in train mode BatchNorm refused a one-sample 1×1 map with its own
        ValueError and counted the sample in its running statistics a second time.  Eval mode's per-channel
        affine map keeps a constant map constant and a varying one varying."""
        was = self.training
        try:
            self.eval()
            with torch.no_grad():
                return bool(self.scaled_features(x1).abs().amax() > 0)
        finally:
            self.train(was)

    def _non_finite(self, x: torch.Tensor, M: torch.Tensor) -> SvdgradError:
        """The error for a non-finite Σ (or Y): the input's NaN/Inf, or Σ's overflow of its dtype."""
        if not bool(torch.isfinite(x).all()):
            return SvdgradError(f"Expected finite values in the input of CovariancePooling; received NaN or Inf "
                                f"(shape={tuple(x.shape)}, dtype={x.dtype}). Check the layer that produced it; a "
                                f"NaN here usually comes from an earlier overflow.")
        what = "Σ" if self._route == "covariance" else "the reduced features"
        helps = ("Use route='features', which never forms Σ = X Xᵀ, or a float64 input." if self._route == "covariance"
                 else "Centring them overflows near the dtype's largest number: use a float64 input, or scale the "
                      "features down before this layer.")
        return SvdgradError(
            f"Expected {what} of a finite input to be finite; it overflows {M.dtype} at this input scale "
            f"(max |x| = {float(x.detach().abs().max()):.3g}, shape={tuple(x.shape)}). {helps}"
        )

    def extra_repr(self) -> str:
        return (f"in_channels={self.in_channels}, channels={self.channels}, method={self._method!r}, "
                f"route={self._route!r}, offdiag_scale={self.offdiag_scale:g}, floor={self.floor:g}")


class ParametricCovariancePooling(CovariancePooling):
    """Parametric second-order pooling (seed 002 sect. 1): Σ = (1/N)·(PX)(PX)ᵀ.

    X are the reduced features (1x1 conv + BN + ReLU, as in CovariancePooling)
    and P is a learned ``projected_channels x d`` matrix, implemented as a
    bias-free 1x1 convolution.  As in the paper's zero-mean model, PX is not
    centred.  Σ is k x k with k = ``projected_channels`` (default d); every
    other option is CovariancePooling's.
    """

    def __init__(self, in_channels: int, reduced_channels: int | None = 64, method="newton_schulz", *,
                 projected_channels: int | None = None, **kwargs):
        super().__init__(in_channels, reduced_channels, method, **kwargs)
        _check_channels("projected_channels", projected_channels, True)
        d = self.channels
        self.channels = d if projected_channels is None else projected_channels
        self.project = nn.Conv2d(d, self.channels, kernel_size=1, bias=False)

    def _projected(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise SvdgradError(f"Expected a feature map of shape (B, {self.in_channels}, H, W); "
                               f"received shape={tuple(x.shape)}.")
        f = self.project(self.reduce(x))
        return f.flatten(2).to(self._sigma_dtype(f.dtype))  # (B, k, N)

    def covariance(self, x: torch.Tensor) -> torch.Tensor:
        PX = self._projected(x)
        S = PX @ PX.mT / PX.shape[-1]
        return 0.5 * (S + S.mT)

    def scaled_features(self, x: torch.Tensor) -> torch.Tensor:
        """PX/√N (B, k, N), not centred: Σ = (1/N)·(PX)(PX)ᵀ."""
        PX = self._projected(x)
        return PX / math.sqrt(PX.shape[-1])


class GlobalAveragePooling(nn.Module):
    """First-order baseline head: (B, C, H, W) -> (B, d), the spatial mean.

    ``reduced_channels`` optionally applies the same 1x1 conv + BN + ReLU
    reduction as CovariancePooling (default None: no reduction, d = C).
    """

    def __init__(self, in_channels: int, reduced_channels: int | None = None):
        super().__init__()
        _check_channels("in_channels", in_channels, False)
        _check_channels("reduced_channels", reduced_channels, True)
        self.in_channels = in_channels
        self.channels = in_channels if reduced_channels is None else reduced_channels
        self.reduce = _reduction(in_channels, reduced_channels)

    @property
    def out_features(self) -> int:
        return self.channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x, "GlobalAveragePooling")  # (a list, nested, meta, integer or complex x: as the other heads)
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise SvdgradError(f"Expected a feature map of shape (B, {self.in_channels}, H, W); "
                               f"received shape={tuple(x.shape)}.")
        return self.reduce(x).mean(dim=(2, 3))


def _check_real(name: str, value, low: float, high: float, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and low <= value <= high
    if not ok:
        raise SvdgradError(f"Expected {name} in [{low:g}, {high:g}]{' or None' if allow_none else ''}; "
                           f"received {name}={value!r}.")


class Whitening(nn.Module):
    """ZCA whitening of channel groups with batch statistics: decorrelated batch norm.

    DBN (Huang et al., CVPR 2018, Alg. 1) with an eigen method;
    ``method="newton_schulz"`` is IterNorm (Huang et al., CVPR 2019, Alg. 1:
    trace-normalized coupled Newton iterations, ``iterations`` T = 5 by
    default).  Input (B, C), (B, C, L) or (B, C, H, W); the C channels are
    split into C/g groups of g = ``group_size`` consecutive channels (None:
    one group of all C), each whitened over its m = B·H·W values:

        μ = mean of x,  Σ = (1/m) X̄ X̄ᵀ + eps·I,  W = Σ^{-1/2},  out = γ ∘ W(x - μ) + β

    with X̄ = x - μ (g, m) per group and γ, β per channel (``affine``).

    Choices, and why:

    - **ZCA, Σ^{-1/2} itself** (not PCA or Cholesky whitening): the output
      stays closest to the input, and PCA whitening's stochastic axis
      swapping hurts training (DBN sect. 3); W is symmetric, so any
      ``svdgrad.inv_sqrtm`` method applies; ``layer.method = "pade"``
      switches it at run time, as for CovariancePooling.
    - **Groups in the batch dimension.**  The G = C/g groups are one batch
      of G matrices (G, g, g) for a single ``inv_sqrtm`` call: no Python
      loop over groups, so many small groups (g = 16) are cheap.
    - **Running statistics: the mean and the whitening matrix W** (buffers
      ``running_mean`` (C,) and ``running_whitening`` (G, g, g)), blended
      with ``momentum`` as BatchNorm blends its mean and variance
      (``momentum=None``: cumulative average), as the DBN and IterNorm
      reference code do.  Eval is then one matmul, W_run(x - μ_run), with
      no decomposition; it is the average of the training W, which is not
      the W of the average Σ (the references accept the same).  For
      newton_schulz it is the average of the approximation that training
      used.  Σ is the biased (1/m) covariance in training and in the
      running W alike (BatchNorm keeps an unbiased running variance).
    - **eps is an absolute ridge** on Σ (as BatchNorm's eps on the
      variance): cov(out) = I - eps·Σ^{-1} before the affine map.  It is
      not the method's relative eigenvalue floor ``eps``; set that through
      a spec or object, e.g. ``method="exact:eps=1e-7"``.
    - **Degenerate batches.**  One value per channel in training mode
      (a (1, C) batch) raises ``SvdgradError``, as BatchNorm does: it has
      no statistics, and whitening it would silently output β.  A constant
      group (X̄ = 0) is no error: Σ = eps·I, so the output is β there and
      the gradients are finite for every method whose backward is finite
      at tied eigenvalues (all but ``ordinary``, which is faithfully
      unstable there).  With ``eps=0`` a singular batch covariance (m < g,
      or dead channels) is left to the method's relative eigenvalue floor:
      finite, but W is then huge in the null directions, and so is its
      share of ``running_whitening``.  An empty batch (B = 0 or H·W = 0)
      gives an empty output and leaves the running statistics alone, as
      BatchNorm does.
    - **Any scale.**  Where (1/m)·X̄X̄ᵀ overflows (float32 from |x| ≈ 1e17)
      Σ is formed again from X scaled by a power of two, which is exact:
      the output is that of the unscaled formula wherever both apply.
    - **Dtypes.**  Statistics and W in the input dtype (float32 for
      float16/bfloat16 input); the method's own ``compute_dtype`` (e.g.
      ``method="exact:compute_dtype=float64"``) decides what ``inv_sqrtm``
      computes in.  The output has the input dtype.
    - **Distributed.**  Statistics are of the local batch (no sync across
      processes, unlike the trainer's SyncBatchNorm2d).

    Parameters
    ----------
    num_features:
        C, the number of channels.
    group_size:
        g, channels per group; must divide C.  None (default): g = C.
    method:
        Any ``svdgrad.inv_sqrtm`` method name, spec or object (default
        ``"exact"``); ``method_options`` are applied to it.
    momentum:
        Weight of the batch statistics in the running ones (default 0.1),
        or None for a cumulative average.
    eps:
        Ridge added to Σ (default 1e-5).
    affine:
        Learn a per-channel scale γ (``weight``) and shift β (``bias``).
    """

    def __init__(self, num_features: int, group_size: int | None = None, method="exact", momentum: float | None = 0.1,
                 eps: float = 1e-5, affine: bool = True, **method_options):
        super().__init__()
        _check_channels("num_features", num_features, False)
        _check_channels("group_size", group_size, True)
        g = num_features if group_size is None else group_size
        if num_features % g:
            divisors = [k for k in range(1, num_features + 1) if num_features % k == 0]
            raise SvdgradError(
                f"Expected num_features divisible by group_size; received num_features={num_features}, "
                f"group_size={g}. Use a divisor of {num_features} ({', '.join(map(str, divisors))}) or None "
                f"for one group of all channels."
            )
        _check_real("momentum", momentum, 0.0, 1.0, allow_none=True)
        _check_real("eps", eps, 0.0, math.inf)
        if not math.isfinite(eps):
            raise SvdgradError(f"Expected a finite eps >= 0; received eps={eps!r}.")
        self.num_features = num_features
        self.group_size = g
        self.num_groups = num_features // g
        self.momentum = None if momentum is None else float(momentum)
        self.eps = float(eps)
        self.affine = bool(affine)
        if self.affine:
            self.weight = nn.Parameter(torch.ones(num_features))
            self.bias = nn.Parameter(torch.zeros(num_features))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_whitening", torch.eye(g).repeat(self.num_groups, 1, 1))  # (G, g, g)
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))
        self.method = get_method(method, **method_options)

    @property
    def method(self):
        """The ``inv_sqrtm`` method object in use; assign a name, spec or object to switch."""
        return self._method

    @method.setter
    def method(self, value) -> None:
        m = get_method(value)
        valid = methods("inv_sqrt")
        if m.name not in valid:
            raise SvdgradError(f"Expected an inv_sqrtm method, one of {', '.join(valid)}; received "
                               f"{m.name!r}, which has no inverse square root.")
        self._method = m

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x, "Whitening", needs_data=self.training)  # (in eval mode the running statistics need none)
        C, g, G = self.num_features, self.group_size, self.num_groups
        if x.dim() < 2 or x.shape[1] != C:
            raise SvdgradError(f"Expected an input (B, C), (B, C, L) or (B, C, H, W) with {C} channels; received "
                               f"shape={tuple(x.shape)}, dtype={x.dtype}. Set num_features to the channel count.")
        wd = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
        X = x.transpose(0, 1).reshape(G, g, -1).to(wd)  # (G, g, m): groups in the batch dimension
        m = X.shape[-1]
        if m == 0:  # an empty batch (B = 0 or H·W = 0): nothing to whiten, no statistics to blend in (as BatchNorm)
            return x.clone()
        if self.training:
            if m < 2:
                raise SvdgradError(
                    f"Expected more than one value per channel in training mode; received shape={tuple(x.shape)}. "
                    f"A batch of one has no covariance: use a larger batch, or call layer.eval() to use the "
                    f"running statistics."
                )
            Y = self._batch_whitened(X, x, scaled=False)
        else:
            mu = self.running_mean.to(wd).view(G, g, 1)
            W = self.running_whitening.to(wd)
            Y = torch.bmm(W, X - mu)
            # (one check of the output, the input's only on this path; none for shapes alone or under tracing)
            if not (Y.is_meta or is_traced(Y)) and not bool(torch.isfinite(Y).all()):
                if not bool(torch.isfinite(x).all()):
                    raise _non_finite_whitening_input(x)
                raise SvdgradError(
                    f"Whitening in eval mode: W(x − μ) overflows {wd} (shape={tuple(x.shape)}, max|x| = "
                    f"{float(x.detach().abs().amax()):.3g}): the input lies far outside the running statistics "
                    f"(running_mean, running_whitening). Check the input's scale against the training data's, "
                    f"or whiten it in training mode (batch statistics handle any scale)."
                )
        Y = Y.reshape(C, m)  # (C, m)
        if self.affine:
            Y = torch.addcmul(self.bias.to(wd)[:, None], Y, self.weight.to(wd)[:, None])
        out = Y.reshape(C, x.shape[0], *x.shape[2:]).transpose(0, 1)
        return out.to(x.dtype).contiguous()

    def _batch_whitened(self, X: torch.Tensor, x: torch.Tensor, scaled: bool) -> torch.Tensor:
        """W(X − μ) (G, g, m) with W = Σ^{-1/2} of the batch, X (G, g, m) the groups of x; blends μ and W in.

        μ is taken as x₀ + mean(X − x₀), x₀ each channel's first value: the same number, but a constant channel
        gets X − μ = 0 exactly (a one-pass mean of B copies of 1e5 rounds in float32, and that noise, far
        above eps, was whitened to unit scale).  Σ = (1/m)·X̄X̄ᵀ + eps·I sums m products before the 1/m: in
        float32 it overflows from |x| ≈ 1e17 (m = 65536), though W·X̄ is of order one.  Where Σ is not finite
        and x is, it is formed again (``scaled``): X·2^-j (j >= 0 per group, max|X·2^-j| < 2) is centred
        without overflow, and X̄ is then scaled by 2^-t, t >= 0 from the centred values' own size (a
        constant group has t = 0 and keeps its ridge eps, which eps·4^-j, with the j of its large values,
        lost to underflow).  Powers of two are exact, so Σ_s = Σ/4^t (with the ridge eps·4^-t),
        W_s = 2^t·W and W_s·X̄_s = W·X̄, bit for bit where both paths apply.  A non-finite x raises, naming
        the input.
        """
        g, m = X.shape[-2], X.shape[-1]
        j = t = None
        if scaled:
            amax = X.detach().abs().amax(dim=(-2, -1))  # (G,)
            j = _pow2_exponent(amax).clamp_min_(0)
            X = times_pow2_halves(X, -j)
        x0 = X[..., :1]  # (G, g, 1)
        D = X - x0
        dbar = D.mean(dim=-1, keepdim=True)
        mu = x0 + dbar  # (G, g, 1)
        Xc = D - dbar
        if scaled:
            t = (j + _pow2_exponent(Xc.detach().abs().amax(dim=(-2, -1)))).clamp_min_(0)
            Xc = times_pow2_halves(Xc, j - t)  # X̄·2^-t: max|X̄·2^-t| < 4 where t > 0, <= max|X̄| <= 2 where t = 0
            ridge = (self.eps * torch.exp2(-2.0 * t.to(torch.float64))).to(X.dtype)[:, None, None]  # (G, 1, 1)
        else:
            ridge = self.eps
        eye = torch.eye(g, dtype=X.dtype, device=X.device)
        S = torch.baddbmm(ridge * eye, Xc, Xc.mT, alpha=1.0 / m)  # (G, g, g) Σ + eps·I (over 4^t)
        if not bool(torch.isfinite(S).all()):
            if not bool(torch.isfinite(x).all()):
                raise _non_finite_whitening_input(x)
            if not scaled:
                return self._batch_whitened(X, x, scaled=True)
        W = inv_sqrtm(S, self._method)  # (G, g, g)
        if scaled:
            self._update_running(times_pow2_halves(mu.detach(), j), times_pow2_halves(W.detach(), -t))
        else:
            self._update_running(mu.detach(), W.detach())
        return torch.bmm(W, Xc)

    @torch.no_grad()
    def _update_running(self, mu: torch.Tensor, W: torch.Tensor) -> None:
        mu_b = mu.flatten().to(self.running_mean.dtype)
        W_b = W.to(self.running_whitening.dtype)
        # The batch's statistics in the buffers' dtype: float64 input at 1e300 with the default float32
        # buffers made the running mean ±inf and the running whitening's update 0, silently.
        if not (is_traced(W_b) or W_b.is_meta) and W_b.dtype != W.dtype:
            top = W.detach().abs().amax()
            lost = ~torch.isfinite(mu_b).all() | ~torch.isfinite(W_b).all() | (
                (top > 0) & (top.to(W_b.dtype) < torch.finfo(W_b.dtype).tiny))
            if bool(lost):
                raise SvdgradError(
                    f"Whitening: this batch's statistics do not fit the layer's {W_b.dtype} buffers "
                    f"(max|μ| = {float(mu.detach().abs().amax()):.3g}, max|W| = {float(top):.3g}, input "
                    f"{W.dtype}): the running mean would overflow or the running whitening underflow. Convert "
                    f"the layer to the input's dtype (layer.double() for float64 input) or scale the input.")
        self.num_batches_tracked.add_(1)
        a = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        self.running_mean.lerp_(mu_b, a)
        self.running_whitening.lerp_(W_b, a)

    def extra_repr(self) -> str:
        return (f"{self.num_features}, group_size={self.group_size}, method={self._method!r}, "
                f"momentum={self.momentum}, eps={self.eps:g}, affine={self.affine}")


#: The normalization layers of SmallResNet's backbone.
NORMS = ("bn", "whiten")


def _norm_factory(norm: str, options: dict | None):
    """channels -> a fresh normalization layer: BatchNorm2d, or Whitening with ``options``."""
    if norm not in NORMS:
        raise SvdgradError(f"Expected norm one of {', '.join(map(repr, NORMS))} (batch norm or "
                           f"svdgrad.nn.Whitening); received {norm!r}.")
    if norm == "bn":
        if options:
            raise SvdgradError(f"Expected no norm_options with norm='bn' (they configure Whitening); received "
                               f"{options!r}. Use norm='whiten' or drop norm_options.")
        return nn.BatchNorm2d
    opts = dict(options or {})
    if "num_features" in opts:
        raise SvdgradError(f"Expected no num_features in norm_options: it is set per layer from the backbone's widths; "
                           f"received norm_options={options!r}.")
    group_size = opts.pop("group_size", 16)
    _check_channels("norm_options['group_size']", group_size, True)

    def make(channels: int) -> nn.Module:
        g = None if group_size is None else min(group_size, channels)
        return Whitening(channels, group_size=g, **opts)

    make(1 if group_size is None else group_size)  # fail at construction on a bad method or option
    return make


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, norm=nn.BatchNorm2d):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = norm(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = norm(cout)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), norm(cout))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class SmallResNet(nn.Module):
    """A small ResNet for 16-64 px inputs with a GCP or GAP head.

    A 3x3 stem (stride 1), then one stage per entry of ``widths`` (``blocks``
    basic blocks each); every stage after the first halves the resolution,
    except the last when ``last_stride=1`` (default), which keeps the
    resolution as the GCP papers do for ResNets (more positions N per
    covariance).  ``pool`` is ``"cov"`` (CovariancePooling with
    ``reduced_channels``, ``method`` and ``pool_options``) or ``"gap"``.
    The pooling layer is ``model.pool``; switch its method with
    ``model.pool.method = ...``.

    ``norm`` is the backbone's normalization: ``"bn"`` (BatchNorm2d,
    default) or ``"whiten"`` (``Whitening`` with ``norm_options``, e.g.
    ``{"method": "newton_schulz", "group_size": 16}``; ``group_size``
    defaults to 16, or C where a layer has fewer channels).  Every batch
    norm of the stem, the blocks and the shortcuts is replaced; the 1x1
    reduction of the GCP head keeps its BatchNorm2d (it is part of the head).
    """

    def __init__(self, num_classes: int, in_channels: int = 3, widths=(16, 32, 64), *, blocks: int = 1,
                 pool: str = "cov", reduced_channels: int | None = 32, method=None,
                 last_stride: int = 1, norm: str = "bn", norm_options: dict | None = None, **pool_options):
        super().__init__()
        _check_channels("num_classes", num_classes, False)
        _check_channels("in_channels", in_channels, False)
        widths = tuple(widths)
        if not widths or any(not isinstance(w, int) or w < 1 for w in widths):
            raise SvdgradError(f"Expected widths to be a non-empty sequence of positive integers; received {widths!r}.")
        if last_stride not in (1, 2):
            raise SvdgradError(f"Expected last_stride 1 (drop the last stage's stride) or 2; received {last_stride!r}.")
        if pool not in ("cov", "gap"):
            raise SvdgradError(f"Expected pool 'cov' (covariance pooling) or 'gap' (global average); received {pool!r}.")
        norm_layer = _norm_factory(norm, norm_options)
        self.stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False),
                                  norm_layer(widths[0]), nn.ReLU(inplace=True))
        layers, cin = [], widths[0]
        for s, w in enumerate(widths):
            stride = 1 if s == 0 else (last_stride if s == len(widths) - 1 else 2)
            for b in range(blocks):
                layers.append(_BasicBlock(cin, w, stride if b == 0 else 1, norm_layer))
                cin = w
        self.features = nn.Sequential(*layers)
        if pool == "cov":
            self.pool = CovariancePooling(cin, reduced_channels, method, **pool_options)
        else:
            self.pool = GlobalAveragePooling(cin, **pool_options)
        self.fc = nn.Linear(self.pool.out_features, num_classes)

    def forward(self, x):
        return self.fc(self.pool(self.features(self.stem(x))))
