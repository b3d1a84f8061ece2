"""Learning-rate schedules, as functions of the 1-based epoch e = 1, 2, ..., E.

Convention: the trainer counts epochs from 1 and each formula below is
written so that the first epoch gets the base lr exactly.  In CVPR20
Table 3 (Wang et al.) the step and exponential schedules count epochs from
0 (``0.1^(e//30 + 1)``, ``0.045·0.98^e``) while the polynomial ones count
from 1 (eq. 9 with e_s = 1: ``0.1·(1 - (e-1)/52)^11``).  Evaluating the
polynomial formula at e = 0, as the reference code does, gives an lr above
the base (0.1·(53/52)^11 ≈ 0.123), an off-by-one of the reference code.
Here every schedule uses e - 1 epochs completed, so:

- ``step``   lr(e) = base · gamma^(number of milestones m with m <= e).
             Milestones are the 1-based epochs at which a decay takes effect;
             LR_norm of ResNets (0.1^(e0//30 + 1), e0 = e - 1) is base 0.1,
             gamma 0.1, milestones 31, 61, ...
- ``poly``   lr(e) = base · (1 - (e - 1)/(e_f - 1))^rho   (eq. 9, e_s = 1).
             LR_fast: rho 11, e_f 53, 30 epochs; LR_adj: rho 2, e_f 50, 50 epochs.
             Default e_f = E + 1, so the last epoch's lr is positive.
- ``exp``    lr(e) = base · gamma^(e - 1).  MobileNetV2 LR_norm: 0.045, 0.98;
             LR_fast: 0.06, 0.92.
- ``cosine`` lr(e) = base · (1 + cos(pi·(e - 1)/E))/2.

A schedule is a small frozen dataclass with ``lr(epoch)`` and
``last_decay_epoch`` (the epoch of the last discrete decay, where the
hybrid protocol switches; None for the continuous schedules).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .._errors import SvdgradError

SCHEDULES = ("step", "poly", "exp", "cosine")


def _check_epoch(e: int, epochs: int) -> None:
    if not isinstance(e, int) or not (1 <= e <= epochs):
        raise SvdgradError(f"Expected a 1-based epoch in [1, {epochs}]; received {e!r}.")


@dataclass(frozen=True)
class Step:
    base: float
    epochs: int
    milestones: tuple[int, ...]
    gamma: float = 0.1
    name = "step"

    def lr(self, e: int) -> float:
        _check_epoch(e, self.epochs)
        return self.base * self.gamma ** sum(1 for m in self.milestones if m <= e)

    @property
    def last_decay_epoch(self) -> int | None:
        inside = [m for m in self.milestones if 1 < m <= self.epochs]
        return max(inside) if inside else None


@dataclass(frozen=True)
class Poly:
    base: float
    epochs: int
    power: float
    final_epoch: int
    name = "poly"

    def lr(self, e: int) -> float:
        _check_epoch(e, self.epochs)
        return self.base * max(0.0, 1.0 - (e - 1) / (self.final_epoch - 1)) ** self.power

    last_decay_epoch = None


@dataclass(frozen=True)
class Exp:
    base: float
    epochs: int
    gamma: float
    name = "exp"

    def lr(self, e: int) -> float:
        _check_epoch(e, self.epochs)
        return self.base * self.gamma ** (e - 1)

    last_decay_epoch = None


@dataclass(frozen=True)
class Cosine:
    base: float
    epochs: int
    name = "cosine"

    def lr(self, e: int) -> float:
        _check_epoch(e, self.epochs)
        return self.base * 0.5 * (1.0 + math.cos(math.pi * (e - 1) / self.epochs))

    last_decay_epoch = None


def default_milestones(epochs: int) -> tuple[int, ...]:
    """Two decays, at 1/3 and 2/3 of the run plus one (AlexNet in ICCV21: 11 and 21 of 30)."""
    return tuple(sorted({1 + (epochs * k) // 3 for k in (1, 2)} - {1}))


def make(name: str, base: float, epochs: int, *, gamma: float | None = None, milestones=None,
         power: float = 2.0, final_epoch: int | None = None):
    """Build a schedule; see the module docstring for the formulas and defaults."""
    if not (isinstance(epochs, int) and epochs >= 1):
        raise SvdgradError(f"Expected epochs to be an integer >= 1; received {epochs!r}.")
    if not (base > 0 and math.isfinite(base)):
        raise SvdgradError(f"Expected a finite base lr > 0; received {base!r}.")
    if name == "step":
        ms = default_milestones(epochs) if milestones is None else tuple(int(m) for m in milestones)
        if any(m < 2 for m in ms) or list(ms) != sorted(ms):
            raise SvdgradError(f"Expected increasing 1-based milestones >= 2 (the first epoch with the decayed "
                               f"lr); received {ms!r}.")
        g = 0.1 if gamma is None else gamma
        if not (0 < g < 1):
            raise SvdgradError(f"Expected 0 < gamma < 1 for the step schedule; received {g!r}.")
        return Step(base, epochs, ms, g)
    if name == "poly":
        ef = epochs + 1 if final_epoch is None else int(final_epoch)
        if ef < epochs or ef < 2:
            raise SvdgradError(f"Expected the poly final epoch e_f >= epochs ({epochs}) and >= 2; received {ef}. "
                               f"With e_f = epochs the last epoch gets lr 0.")
        if not power > 0:
            raise SvdgradError(f"Expected a poly power rho > 0; received {power!r}.")
        return Poly(base, epochs, float(power), ef)
    if name == "exp":
        g = 0.98 if gamma is None else gamma
        if not (0 < g <= 1):
            raise SvdgradError(f"Expected 0 < gamma <= 1 for the exp schedule; received {g!r}.")
        return Exp(base, epochs, g)
    if name == "cosine":
        return Cosine(base, epochs)
    raise SvdgradError(f"Unknown schedule {name!r}. Expected one of {', '.join(SCHEDULES)}.")


# CVPR20 Table 3, in this module's convention; used by the tests and docs.
def lr_norm_resnet(epochs: int = 100) -> Step:
    return make("step", 0.1, epochs, gamma=0.1, milestones=range(31, epochs + 1, 30))


def lr_fast_resnet() -> Poly:
    return make("poly", 0.1, 30, power=11, final_epoch=53)


def lr_adj_resnet() -> Poly:
    return make("poly", 0.1, 50, power=2, final_epoch=50)


def lr_norm_mobilenet(epochs: int = 400) -> Exp:
    return make("exp", 0.045, epochs, gamma=0.98)


def lr_fast_mobilenet(epochs: int = 150) -> Exp:
    return make("exp", 0.06, epochs, gamma=0.92)
