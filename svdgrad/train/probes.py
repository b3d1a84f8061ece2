"""Probes taken during training, on a fixed probe batch; none of them changes the model.

- ``gradient_probe`` (ICCV21's second argument, gradient smoothness): the
  gradient of the loss with respect to the pooling layer's input (the
  feature map entering ``CovariancePooling``) under the protocol's method,
  against the same gradient under ``exact`` on the covariance route with Σ in
  float64 (the reference).  Logged: relative error ‖g − g_ref‖/‖g_ref‖,
  cosine ⟨g, g_ref⟩/(‖g‖‖g_ref‖), norm ratio ‖g‖/‖g_ref‖.
- ``landscape_probe`` (CVPR20 eqs. 3-4, supplementary A1-A2): with X the
  output of the first convolution and g = ∇_X L(X),
  Δl(η) = L(X + η g) and Δg(η) = ‖g − ∇_X L(X + η g)‖₂ for each step size η;
  the paper plots the range (min, max) over η at each probe.  The sign
  follows the paper as printed (X + η∇L).

Both run the network in training mode (batch statistics, as the training
step sees them) and restore every buffer afterwards bitwise, so a run with
probes trains exactly as one without.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F

from .. import _methods

#: The reference of the gradient probe: the exact Daleckii-Krein backward, Σ formed and decomposed in float64.
REFERENCE = _methods.get_method("exact", compute_dtype=torch.float64)


@contextlib.contextmanager
def _untouched(net):
    """Training mode inside; every buffer and the pooling layer's method, route and last Σ restored after."""
    buffers = list(net.buffers())
    saved = [b.detach().clone() for b in buffers]
    was_training = net.training
    pool = getattr(net, "pool", None)
    state = None
    if pool is not None and hasattr(pool, "route"):
        state = (pool.route, pool._given, pool.last_covariance)
    net.train()
    try:
        yield
    finally:
        with torch.no_grad():
            for b, s in zip(buffers, saved):
                b.copy_(s)
        net.train(was_training)
        if state is not None:
            route, given, last = state
            pool.route = "covariance"
            pool.method = given
            pool.route = route
            pool.last_covariance = last
        net.zero_grad(set_to_none=True)


def _head_grad(net, feats, y):
    f = feats.detach().requires_grad_(True)
    loss = F.cross_entropy(net.fc(net.pool(f)), y)
    (g,) = torch.autograd.grad(loss, f)
    return g


def gradient_metrics(g: torch.Tensor, ref: torch.Tensor) -> dict:
    """Relative error, cosine and norm ratio of g against ref (float64)."""
    g, ref = g.detach().double().flatten(), ref.detach().double().flatten()
    nr, ng = float(ref.norm()), float(g.norm())
    rel = float((g - ref).norm()) / nr if nr > 0 else math.nan
    cos = float(g @ ref) / (ng * nr) if ng > 0 and nr > 0 else math.nan
    return {"rel_err": rel, "cosine": cos, "norm_ratio": ng / nr if nr > 0 else math.nan}


def gradient_probe(net, x, y) -> dict:
    """The pooling layer's input gradient under the layer's current method against ``REFERENCE``."""
    pool = net.pool
    with _untouched(net):
        with torch.no_grad():
            feats = net.features(net.stem(x))
        g = _head_grad(net, feats, y)
        method, route = pool.method, pool.route
        pool.route = "covariance"
        pool.method = REFERENCE
        ref = _head_grad(net, feats, y)
    out = gradient_metrics(g, ref)
    out.update(method=_methods.method_spec(method), route=route)
    return out


def _split_first_conv(net):
    """(first convolution, the rest of the network as a function of its output)."""
    first = net.stem[0]

    def rest(X):
        h = X
        for m in list(net.stem)[1:]:
            h = m(h)
        return net.fc(net.pool(net.features(h)))

    return first, rest


def landscape_probe(net, x, y, etas) -> dict:
    """CVPR20 eqs. 3-4 at the current weights: L(X), Δl(η), Δg(η) for every η, with X the first conv's output."""
    first, rest = _split_first_conv(net)
    with _untouched(net):
        with torch.no_grad():
            X = first(x)
        X0 = X.detach().requires_grad_(True)
        loss = F.cross_entropy(rest(X0), y)
        (g,) = torch.autograd.grad(loss, X0)
        dl, dg = [], []
        for eta in etas:
            Xe = (X + eta * g).detach().requires_grad_(True)
            le = F.cross_entropy(rest(Xe), y)
            (ge,) = torch.autograd.grad(le, Xe)
            dl.append(float(le.detach()))
            dg.append(float((g - ge).double().norm()))
    return {"loss": float(loss.detach()), "grad_norm": float(g.double().norm()), "etas": list(map(float, etas)),
            "delta_l": dl, "delta_g": dg}
