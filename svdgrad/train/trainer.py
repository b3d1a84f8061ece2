"""The hybrid-protocol trainer.

Protocols (ICCV21, Song et al.):

- ``ns``: Newton-Schulz (iSQRT-COV) square root throughout.
- ``svd``: the eigen method ``svd_method`` throughout.
- ``hybrid``: Newton-Schulz until the switch epoch, then ``svd_method``.
  The switch epoch is, in order of precedence: the first epoch whose lr is
  below ``switch_lr``; ``switch_epoch``; the schedule's last decay (the
  paper: "epoch 21 of 30", the last milestone of the step schedule).

The head ``gap`` (global average pooling) is the first-order baseline and
has no square root.

Each epoch: SGD with momentum and weight decay over the training set
(reshuffled and flipped with a generator seeded by (seed, epoch), so a
resumed run replays exactly the same batches), then validation.

A step whose loss, gradient or pooled matrix is not finite (or whose pooled
matrix ``sqrtm`` rejects, or whose input a Whitening layer refuses) is
skipped and counted: the weights, the optimizer
state and every buffer (batch-norm running statistics included) are left
bitwise as they were before the step.  Under DDP every process skips the
same steps.  If the model becomes non-finite anyway (weights, buffers or
validation loss), the run stops with an ``SvdgradError`` and keeps the last
good checkpoint.

A checkpoint is written atomically (temporary file, then ``os.replace``)
after every epoch, then one JSON line is appended to ``log.jsonl`` (see
``LOG_FIELDS``).  The checkpoint carries the sha256 of its payload in a
one-line header, in the same file, so the checksum and the data are replaced
together; ``load_checkpoint`` verifies it.  ``--resume`` refuses a
checkpoint whose options, thread count, process count, device type or data
differ from the current ones, since each of them changes the results.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import hashlib
import io
import json
import math
import os
import re
import sys
import time

import torch
import torch.nn.functional as F

from .. import _methods
from .._errors import SvdgradError
from .._io import provenance, refuse_directory, remove_stale_temporaries, write_atomic
from . import data, ddp, schedules

PROTOCOLS = ("ns", "svd", "hybrid")
HEADS = ("cov", "gap")
NORMS = ("bn", "whiten")
#: Covariance-pooling routes: Σ^{1/2} by sqrtm(Σ) ("covariance") or by gram_sqrtm of the features ("features").
POOL_ROUTES = ("covariance", "features")
#: --sigma-dtype: the dtype Σ is formed and decomposed in (None: the layer's 'auto', float64 for the eigen
#: methods of the covariance route, the network dtype for Newton-Schulz and for the features route).
SIGMA_DTYPES = {"float32": torch.float32, "float64": torch.float64}

#: Fields of each line of log.jsonl.
LOG_FIELDS = {
    "epoch": "1-based epoch",
    "lr": "learning rate of the epoch",
    "method": "sqrtm method in use (name), or 'none' for the GAP head",
    "switched": "true on the epoch where the hybrid protocol switched",
    "train_loss": "mean cross-entropy over the epoch's applied and skipped steps with a finite loss",
    "train_acc": "training accuracy over the epoch's batches (before each step)",
    "val_loss": "validation cross-entropy (eval mode)",
    "val_acc": "validation accuracy",
    "kappa_median": "median over the epoch's training samples of κ(Σ) = λmax/λmin",
    "kappa_max": "largest κ(Σ) of the epoch",
    "lambda_min_median": "median λmin(Σ)",
    "lambda_max_median": "median λmax(Σ)",
    "small_eig_fraction": "fraction of eigenvalues below eps·λmax (eps of the network dtype, float32)",
    "skipped_steps": "steps skipped in this epoch (non-finite loss, gradient or pooled matrix); nothing changed",
    "skip_reasons": "reason -> number of skipped steps of the epoch",
    "steps": "optimizer steps attempted in this epoch",
    "time_s": "wall time of the epoch (train + validation) in seconds",
}
#: κ is λmax / max(λmin, KAPPA_EPS·λmax): it saturates at 1/eps(float64) ≈ 4.5e15,
#: the resolution of a float64 eigensolver (λmin <= 0 from rounding is possible).
KAPPA_EPS = torch.finfo(torch.float64).eps
SMALL_EIG_EPS = torch.finfo(torch.float32).eps

#: Options that must match for --resume to continue a run.
_RESUME_KEYS = ("dataset", "image_size", "train_per_class", "val_per_class", "split_seed", "head", "widths",
                "blocks", "reduced_channels", "last_stride", "offdiag_scale", "protocol", "svd_method",
                "ns_iterations", "switch_lr", "switch_epoch", "epochs", "batch_size", "lr", "momentum",
                "weight_decay", "schedule", "gamma", "milestones", "poly_power", "poly_final_epoch", "seed",
                "norm", "whiten_method", "pool_route", "sigma_dtype", "probe_every", "probe_batch",
                "landscape_every", "landscape_etas", "robustness")


@dataclasses.dataclass
class TrainConfig:
    dataset: str = "textures"
    image_size: int = 32
    train_per_class: int = 400
    val_per_class: int = 100
    split_seed: int = 0
    head: str = "cov"
    widths: tuple[int, ...] = (8, 16, 32)
    blocks: int = 1
    reduced_channels: int = 32
    last_stride: int = 1
    offdiag_scale: float = 1.0
    norm: str = "bn"
    whiten_method: str = "newton_schulz"
    pool_route: str = "covariance"
    sigma_dtype: str | None = None
    protocol: str = "hybrid"
    svd_method: str = "pade"
    ns_iterations: int = 5
    switch_lr: float | None = None
    switch_epoch: int | None = None
    epochs: int = 12
    batch_size: int = 64
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: str = "step"
    gamma: float | None = None
    milestones: tuple[int, ...] | None = None
    poly_power: float = 2.0
    poly_final_epoch: int | None = None
    seed: int = 0
    threads: int = 1
    device: str = "auto"
    #: Seconds a process waits for the others in a collective before it fails (under torchrun); None: torch's
    #: default (30 minutes for gloo), which a stopped or hung process makes every other one wait.
    ddp_timeout: float | None = None
    probe_every: int = 0
    probe_batch: int = 64
    landscape_every: int = 0
    landscape_etas: tuple[float, ...] = (0.1, 0.5, 1.0, 2.0, 5.0)
    robustness: bool = False
    out: str = "runs/train"
    resume: bool = False
    overwrite: bool = False
    progress: bool = True

    def validate(self) -> None:
        def positive_int(name):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise SvdgradError(f"Expected --{name.replace('_', '-')} to be a positive integer; received {v!r}.")
        for name in ("epochs", "batch_size", "ns_iterations", "blocks", "train_per_class", "val_per_class"):
            positive_int(name)
        if self.protocol not in PROTOCOLS:
            raise SvdgradError(f"Unknown protocol {self.protocol!r}. Expected one of {', '.join(PROTOCOLS)}.")
        if self.head not in HEADS:
            raise SvdgradError(f"Unknown head {self.head!r}. Expected 'cov' (covariance pooling) or 'gap'.")
        if self.norm not in NORMS:
            raise SvdgradError(f"Unknown --norm {self.norm!r}. Expected one of {', '.join(NORMS)}.")
        if self.norm == "whiten":
            _methods.get_method(self.whiten_method)  # raises, listing the valid names
        if self.pool_route not in POOL_ROUTES:
            raise SvdgradError(f"Unknown --pool-route {self.pool_route!r}. Expected one of {', '.join(POOL_ROUTES)}.")
        if self.sigma_dtype is not None and self.sigma_dtype not in SIGMA_DTYPES:
            raise SvdgradError(f"Unknown --sigma-dtype {self.sigma_dtype!r}. Expected one of "
                               f"{', '.join(SIGMA_DTYPES)} (or leave it unset for the layer's 'auto').")
        for name in ("probe_every", "landscape_every"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 0:
                raise SvdgradError(f"Expected --{name.replace('_', '-')} >= 0 (0 = off); received {v!r}.")
        if self.probe_batch < 1:
            raise SvdgradError(f"Expected --probe-batch >= 1; received {self.probe_batch!r}.")
        if self.landscape_every and (not self.landscape_etas or any(not (e > 0) for e in self.landscape_etas)):
            raise SvdgradError(f"Expected --landscape-etas to be positive step sizes; received {self.landscape_etas!r}.")
        m = _methods.get_method(self.svd_method)  # raises, listing the valid names
        if self.head == "cov" and self.pool_route == "features":
            if self.protocol == "ns":
                raise SvdgradError("Expected --protocol svd or hybrid with --pool-route features: the features route "
                                   "computes the exact root from the features (gram_sqrtm), there is no "
                                   "Newton-Schulz on it. Use --pool-route covariance for --protocol ns.")
            if m.name != "exact":
                raise SvdgradError(f"Expected --svd-method exact with --pool-route features (gram_sqrtm of the features "
                                   f"gives the exact root; there is no K-rule to choose); received "
                                   f"{self.svd_method!r}. Pass --svd-method exact, or --pool-route covariance.")
        if self.protocol == "hybrid" and isinstance(m, _methods.NewtonSchulz):
            raise SvdgradError("Expected an eigen method for --svd-method with --protocol hybrid; received "
                               "newton_schulz, which makes the hybrid the same as --protocol ns.")
        if self.lr <= 0 or not math.isfinite(self.lr):
            raise SvdgradError(f"Expected --lr > 0; received {self.lr!r}.")
        if not (0 <= self.momentum < 1):
            raise SvdgradError(f"Expected 0 <= --momentum < 1; received {self.momentum!r}.")
        if not (self.weight_decay >= 0 and math.isfinite(self.weight_decay)):  # (NaN passed `< 0`)
            raise SvdgradError(f"Expected a finite --weight-decay >= 0; received {self.weight_decay!r}.")
        if self.switch_lr is not None and not self.switch_lr > 0:
            raise SvdgradError(f"Expected --switch-lr > 0; received {self.switch_lr!r}.")
        if self.switch_epoch is not None and not (1 <= self.switch_epoch <= self.epochs):
            raise SvdgradError(f"Expected --switch-epoch in [1, {self.epochs}]; received {self.switch_epoch!r}.")
        if not (0 <= self.threads <= MAX_THREADS):  # (20000 failed in libgomp, 100000 segfaulted)
            raise SvdgradError(f"Expected --threads in [0, {MAX_THREADS}] (0 = automatic); received {self.threads!r}. "
                               f"This machine has {os.cpu_count()} cores.")
        if self.ddp_timeout is not None and not (self.ddp_timeout > 0 and math.isfinite(self.ddp_timeout)):
            raise SvdgradError(f"Expected --ddp-timeout to be a finite number of seconds > 0; received "
                               f"{self.ddp_timeout!r}. Leave it unset for torch's default (30 minutes).")
        if self.device not in ("auto", "cpu") and not self.device.startswith("cuda"):
            raise SvdgradError(f"Expected --device auto, cpu or cuda[:i]; received {self.device!r}.")
        if self.resume and self.overwrite:
            raise SvdgradError("Expected at most one of --resume (continue the run in --out) and --overwrite "
                               "(delete it and start over); received both.")
        schedule = self.make_schedule()
        if self.protocol == "hybrid" and self.head == "cov":
            _check_hybrid_switches(self, schedule)

    def make_schedule(self):
        return schedules.make(self.schedule, self.lr, self.epochs, gamma=self.gamma, milestones=self.milestones,
                              power=self.poly_power, final_epoch=self.poly_final_epoch)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _check_hybrid_switches(cfg: TrainConfig, schedule) -> None:
    """A hybrid run must use both methods: switch after epoch 1 and no later than the last epoch."""
    sw = switch_epoch_of(cfg, schedule)
    if sw is None:  # only --switch-lr can get here
        lrs = [schedule.lr(e) for e in range(1, cfg.epochs + 1)]
        low = min(lrs)
        hint = ""
        for longer in range(cfg.epochs + 1, 10 * cfg.epochs + 1):
            try:
                s = schedules.make(cfg.schedule, cfg.lr, longer, gamma=cfg.gamma, milestones=cfg.milestones,
                                   power=cfg.poly_power, final_epoch=cfg.poly_final_epoch)
            except SvdgradError:
                break
            if s.lr(longer) < cfg.switch_lr:
                first = next(e for e in range(1, longer + 1) if s.lr(e) < cfg.switch_lr)
                hint = f", or --epochs {longer} (then it switches at epoch {first})"
                break
        raise SvdgradError(
            f"The hybrid run would never switch: with --schedule {cfg.schedule} the lr never falls below "
            f"--switch-lr {cfg.switch_lr:g} in {cfg.epochs} epochs (lowest lr {low:.3g}, at epoch "
            f"{lrs.index(low) + 1}). Pass a --switch-lr above {low:.3g}, --switch-epoch E{hint}."
        )
    if sw == 1:
        rule = f"lr {schedule.lr(1):g} < --switch-lr {cfg.switch_lr:g}" if cfg.switch_lr is not None else "--switch-epoch 1"
        raise SvdgradError(
            f"The hybrid run would switch at epoch 1 ({rule}), so it would never use Newton-Schulz: that is "
            f"--protocol svd. Pass a lower --switch-lr or a --switch-epoch of 2 or more, or use --protocol svd."
        )


def switch_epoch_of(cfg: TrainConfig, schedule) -> int | None:
    """First epoch that uses the SVD method (hybrid), 1 (svd) or None (ns, gap, never)."""
    if cfg.head == "gap" or cfg.protocol == "ns":
        return None
    if cfg.protocol == "svd":
        return 1
    if cfg.switch_lr is not None:
        for e in range(1, cfg.epochs + 1):
            if schedule.lr(e) < cfg.switch_lr:
                return e
        return None
    if cfg.switch_epoch is not None:
        return cfg.switch_epoch
    last = schedule.last_decay_epoch
    if last is None:
        raise SvdgradError(
            f"The hybrid protocol switches at the last lr decay, but the {cfg.schedule!r} schedule"
            f"{' has no milestone inside the run' if cfg.schedule == 'step' else ' decays continuously'}. "
            f"Pass --switch-lr X (switch once lr < X) or --switch-epoch E."
        )
    return last


def method_for_epoch(cfg: TrainConfig, schedule, epoch: int):
    """The sqrtm method (object) used in ``epoch``, or None for the GAP head."""
    if cfg.head == "gap":
        return None
    sw = switch_epoch_of(cfg, schedule)
    if sw is not None and epoch >= sw:
        return _methods.get_method(cfg.svd_method)  # a name or a spec such as "taylor:degree=9"
    return _methods.NewtonSchulz(iterations=cfg.ns_iterations)


def build_model(cfg: TrainConfig, in_channels: int, num_classes: int):
    """SmallResNet as configured; the pooling layer starts on the method (and route) of epoch 1."""
    from ..nn import SmallResNet

    torch.manual_seed(cfg.seed)
    opts = {}
    if cfg.head == "cov":
        opts = dict(reduced_channels=cfg.reduced_channels, offdiag_scale=cfg.offdiag_scale, keep_covariance=True,
                    method=_methods.NewtonSchulz(iterations=cfg.ns_iterations))
        if cfg.sigma_dtype is not None:
            opts["compute_dtype"] = SIGMA_DTYPES[cfg.sigma_dtype]
    norm_options = {"method": cfg.whiten_method, "group_size": 16} if cfg.norm == "whiten" else None
    net = SmallResNet(num_classes, in_channels, tuple(cfg.widths), blocks=cfg.blocks, pool=cfg.head,
                      last_stride=cfg.last_stride, norm=cfg.norm, norm_options=norm_options, **opts)
    if cfg.head == "cov":
        set_pool_method(net.pool, method_for_epoch(cfg, cfg.make_schedule(), 1), cfg.pool_route)
    return net


def set_pool_method(pool, method, route: str) -> None:
    """Put ``pool`` on ``method``: Newton-Schulz always on the covariance route, an eigen method on ``route``.

    The order matters: the features route accepts only 'exact', so the route is left before the
    method changes to Newton-Schulz, and entered after the method changes to 'exact'.
    """
    if isinstance(method, _methods.NewtonSchulz):
        pool.route = "covariance"
        pool.method = method
    else:
        pool.method = method
        pool.route = route


def spectrum_stats(S: torch.Tensor) -> tuple[list[float], list[float], list[float], int, int]:
    """Per-sample κ, λmin, λmax of Σ (B, d, d), and (#small eigenvalues, #eigenvalues)."""
    L = torch.linalg.eigvalsh(S.detach().to(torch.float64).cpu())  # (B, d) ascending
    lmax = L[:, -1]
    lmin = L[:, 0]
    kappa = lmax / torch.maximum(lmin, KAPPA_EPS * lmax).clamp_min(torch.finfo(torch.float64).tiny)
    small = int((L < SMALL_EIG_EPS * lmax[:, None]).sum())
    return kappa.tolist(), lmin.tolist(), lmax.tolist(), small, L.numel()


def _median(v):
    if not v:
        return None
    return float(torch.tensor(v, dtype=torch.float64).median())


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(1_000_003 * (seed + 1) + epoch)


def _resolve_device(name: str, info: ddp.DistInfo) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise SvdgradError(f"Expected a CUDA device for --device {name}; none is available. Use --device cpu.")
        if name == "cuda":
            name = f"cuda:{info.local_rank}"
    return torch.device(name)


def _evaluate(model, x, y, batch_size, info):
    model.eval()
    idx = torch.arange(info.rank, len(y), info.world_size)
    loss_sum, correct = 0.0, 0
    with torch.no_grad():
        for k in range(0, len(idx), batch_size):
            b = idx[k:k + batch_size]
            out = model(x[b])
            loss_sum += float(F.cross_entropy(out, y[b], reduction="sum"))
            correct += int((out.argmax(1) == y[b]).sum())
    loss_sum, correct = ddp.all_reduce_sum([loss_sum, float(correct)], x.device)
    return loss_sum / len(y), correct / len(y)


# ---------------------------------------------------------------------------
# Checkpoints: one file, a header line with the payload's sha256, then the
# torch.save payload.  Written with one atomic rename, so the checksum and
# the data it covers are always replaced together.
# ---------------------------------------------------------------------------

CHECKPOINT_FORMAT = 2
_HEADER = re.compile(rb"svdgrad-checkpoint (\d+) sha256=([0-9a-f]{64}) bytes=(\d+)\n")


def _restart_hint(path: str) -> str:
    out = os.path.dirname(path) or "."
    return (f"Restore {path} from a backup and run the same command with --resume, or start the run over "
            f"with --overwrite (this deletes the log and checkpoint in {out}).")


def save_checkpoint(state: dict, path: str) -> str:
    """Write ``state`` (torch.save) with its sha256 to ``path`` atomically; returns the hex digest."""
    buf = io.BytesIO()
    torch.save(state, buf)
    payload = buf.getvalue()
    digest = hashlib.sha256(payload).hexdigest()
    header = f"svdgrad-checkpoint {CHECKPOINT_FORMAT} sha256={digest} bytes={len(payload)}\n".encode()
    write_atomic(path, header + payload)
    return digest


def load_checkpoint(path: str, map_location="cpu") -> dict:
    """Read a checkpoint written by ``save_checkpoint``, verifying its length and sha256.

    Raises ``SvdgradError`` naming the file and what to do when it is
    unreadable, truncated, modified, or not a checkpoint of this format.
    """
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise SvdgradError(f"Could not read the checkpoint {path} ({exc.strerror or exc}). "
                           + _restart_hint(path)) from None
    m = _HEADER.match(raw[:200])
    if m is None:
        raise SvdgradError(
            f"Expected {path} to start with an 'svdgrad-checkpoint {CHECKPOINT_FORMAT} sha256=...' header; "
            f"received {raw[:40]!r}{'...' if len(raw) > 40 else ''} ({len(raw)} bytes). The file is truncated, "
            f"damaged, or was written by an older svdgrad without a checksum, so it cannot be resumed safely. "
            + _restart_hint(path))
    version, digest, size = int(m.group(1)), m.group(2).decode(), int(m.group(3))
    if version != CHECKPOINT_FORMAT:
        raise SvdgradError(f"Expected checkpoint format {CHECKPOINT_FORMAT} in {path}; received format {version}. "
                           + _restart_hint(path))
    payload = raw[m.end():]
    if len(payload) != size:
        raise SvdgradError(f"The checkpoint {path} is truncated or extended: its header promises {size} bytes "
                           f"of data, the file holds {len(payload)}. " + _restart_hint(path))
    actual = hashlib.sha256(payload).hexdigest()
    if actual != digest:
        raise SvdgradError(f"The checkpoint {path} is corrupted: the sha256 of its data is {actual[:16]}..., "
                           f"the checksum written with it is {digest[:16]}.... Resuming from it would silently "
                           f"change the results. " + _restart_hint(path))
    try:
        return torch.load(io.BytesIO(payload), map_location=map_location, weights_only=True)
    except Exception as exc:  # the checksum matched, so the writer itself produced this
        raise SvdgradError(f"The checkpoint {path} passed its checksum but could not be loaded "
                           f"({type(exc).__name__}: {exc}); it was written by an incompatible torch or "
                           f"svdgrad version. " + _restart_hint(path)) from None


# ---------------------------------------------------------------------------
# Resume: everything that changes the results must match.
# ---------------------------------------------------------------------------

def _data_fingerprint(ds) -> str:
    h = hashlib.sha256()
    for t in (ds.train_x, ds.train_y, ds.val_x, ds.val_y):
        h.update(str((tuple(t.shape), str(t.dtype))).encode())
        h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()


def _resume_mismatches(ck: dict, cfg: TrainConfig, env: dict) -> list[str]:
    saved = ck["config"]
    # A key missing from an older checkpoint had its default then (options added later default to the old behaviour).
    defaults = TrainConfig()
    diff = [f"{k} (checkpoint {saved.get(k, getattr(defaults, k))!r}, now {getattr(cfg, k)!r})"
            for k in _RESUME_KEYS if _norm(saved.get(k, getattr(defaults, k))) != _norm(getattr(cfg, k))]
    what = {"threads": "torch threads per process (--threads)", "world_size": "processes (torchrun)",
            "device_type": "device type (--device)", "data_sha256": "data content"}
    old = ck.get("env", {})
    for k, label in what.items():
        if old.get(k) != env[k]:
            a, b = old.get(k), env[k]
            if k == "data_sha256":
                a, b = (a or "none")[:12] + "...", b[:12] + "..."
            diff.append(f"{k} = {label} (checkpoint {a!r}, now {b!r})")
    return diff


def _existing_run(out: str) -> str | None:
    """What a previous run left in ``out`` (None if nothing that a new run would replace)."""
    log = os.path.join(out, "log.jsonl")
    n = 0
    if os.path.exists(log):
        with open(log, errors="replace") as f:  # (counting lines: a damaged log is rewritten from the checkpoint)
            n = sum(1 for line in f if line.strip())
    if os.path.exists(os.path.join(out, "summary.json")):
        return f"a finished run ({n} epochs in log.jsonl, summary.json)"
    if os.path.exists(os.path.join(out, "checkpoint.pt")):
        return f"an unfinished run ({n} epochs in log.jsonl, checkpoint.pt)"
    if n:
        return f"a run log of {n} epochs (log.jsonl, no checkpoint)"
    return None


RUN_FILES = ("checkpoint.pt", "log.jsonl", "summary.json", "config.json", "probes.jsonl", "landscape.jsonl")
#: Probe logs: file -> what one line holds (written with the epoch's log line, kept in the checkpoint).
PROBE_FILES = {"probes.jsonl": "gradient probe (probes.gradient_probe): epoch, step, rel_err, cosine, norm_ratio",
               "landscape.jsonl": "CVPR20 probes (probes.landscape_probe): epoch, step, loss, delta_l, delta_g"}


# ---------------------------------------------------------------------------
# One training step that changes nothing when it is skipped.
# ---------------------------------------------------------------------------

class _PoolGuard:
    """Turns ``SvdgradError`` from the pooling layer (``sqrtm`` rejecting a non-finite or invalid Σ)
    into a NaN output, so that the step is skipped by the same rule as a NaN loss.

    An exception on one DDP process would leave the others waiting inside the
    backward's all-reduce; a NaN output keeps every process on the same
    collectives, and the NaN gradient makes every process skip.
    """

    def __init__(self, pool):
        self.pool = pool
        self.inner = pool.forward
        self.rejected: str | None = None
        pool.forward = self  # instance attribute: nn.Module.__call__ uses it; not part of the state_dict

    def __call__(self, x):
        try:
            return self.inner(x)
        except SvdgradError as exc:
            self.rejected = str(exc)
            # Depends on x and on the layer's own parameters, so the backward reaches every parameter
            # (as NaN): DDP expects a gradient for each of them on every process.
            total = x.sum() + sum(p.sum() for p in self.pool.parameters())
            nan = total * float("nan")
            return self._nan_output(x, nan)

    def _nan_output(self, x, nan):
        return nan.expand(x.shape[0], self.pool.out_features).to(x.dtype)


class _WhiteningGuard(_PoolGuard):
    """The same for a ``Whitening`` layer of the backbone (--norm whiten), which refuses a non-finite input
    (the stem's output of a 3e38 image) or a Σ that ``inv_sqrtm`` rejects.  Its NaN output has the input's
    shape, so every layer after it (the head's batch-norm all-reduces included) runs on every process, and
    the step is skipped everywhere; before, the process holding the image raised and the run stopped."""

    def _nan_output(self, x, nan):
        return nan.to(x.dtype).expand(x.shape).contiguous()  # (an in-place ReLU follows: no stride-0 view)


def _all_finite(tensors) -> bool:
    tensors = [t for t in tensors if t is not None]
    return not tensors or bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all())


def train_step(model, net, opt, x, y, *, guard: _PoolGuard | None = None, whitening=(), device=None):
    """One SGD step on (x, y), or none at all.

    Returns ``(loss, logits, reason)``: ``reason`` is None when the step was
    applied, else why it was skipped; ``loss`` is None when the batch's loss is not finite (on some process:
    the epoch's loss and accuracy then leave the batch out on every process, as one process, whose loss of the
    whole batch is then NaN, does).  A skipped step restores every buffer
    of ``net`` (batch-norm running statistics, ``num_batches_tracked``)
    bitwise and leaves the weights and the optimizer state untouched.  ``whitening``: the
    ``_WhiteningGuard`` of each Whitening layer (the first that refused names the reason).
    """
    buffers = list(net.buffers())
    saved = [b.detach().clone() for b in buffers]
    opt.zero_grad(set_to_none=False)
    if guard is not None:
        guard.rejected = None
    for w in whitening:
        w.rejected = None
    reason = None
    loss = out = None
    try:
        out = model(x)
        loss = F.cross_entropy(out, y)
        loss.backward()
    except SvdgradError as exc:  # only the backward can get here; a forward error became NaN in the guard
        if dist_initialized():
            raise  # the other processes would wait for this one forever
        reason = f"sqrtm raised: {str(exc)[:120]}"
    refused = next((w.rejected for w in whitening if w.rejected is not None), None)
    if reason is None and refused is not None:  # (the layers after it only saw its NaN)
        reason = "whitening rejected its input: " + refused.split(".")[0][:100]
    if reason is None:
        if guard is not None and guard.rejected is not None:
            reason = "pooled matrix rejected by sqrtm: " + guard.rejected.split(".")[0][:100]
        elif not bool(torch.isfinite(loss)):
            reason = "non-finite loss"
        elif not _all_finite([p.grad for p in net.parameters()]):
            reason = "non-finite gradient"
        elif not _all_finite([b for b in buffers if b.is_floating_point()]):
            # (an image of 1e19 overflows a running variance, while the loss and the gradients stay finite:
            # batch norm divides by the inf variance; the run used to stop at the model check instead)
            reason = "non-finite batch-norm statistics"
    nonfinite = loss is None or not bool(torch.isfinite(loss))
    skip, nonfinite = ddp.any_flags([reason is not None, nonfinite], device if device is not None else x.device)
    if nonfinite:
        loss = None
    if skip:
        with torch.no_grad():
            for b, s in zip(buffers, saved):
                b.copy_(s)
        opt.zero_grad(set_to_none=False)
        return loss, out, reason or OTHER_PROCESS
    opt.step()
    return loss, out, None


#: The reason a process gives for a step it skips only because another one did (``train_step``).
OTHER_PROCESS = "another process skipped this step"
#: Skip reasons, causes first: under DDP a NaN gradient or batch statistic of one process reaches every
#: process through the all-reduce, so there it is a consequence of another process's reason.
SKIP_CAUSES = ("sqrtm raised", "whitening rejected its input", "pooled matrix rejected by sqrtm", "non-finite loss",
               "non-finite gradient", "non-finite batch-norm statistics", OTHER_PROCESS)


def merged_skips(skips: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """(step, reason) pairs of every process -> one pair per skipped step, with the reason nearest its cause.

    Every process skips the same steps (``train_step`` agrees on them), each with its own reason: the one that
    met the bad input names it, the others see only its consequence (a NaN gradient after the all-reduce) or
    none (``OTHER_PROCESS``).  The main process writes the log, so it records the cause from whichever process
    had it (the lowest rank among equals).
    """
    def rank(reason: str) -> int:
        key = reason.split(":")[0]
        return SKIP_CAUSES.index(key) if key in SKIP_CAUSES else 0  # (an unknown reason: a cause)

    best: dict[int, str] = {}
    for step, reason in skips:
        if step not in best or rank(reason) < rank(best[step]):
            best[step] = reason
    return sorted(best.items())


def dist_initialized() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def _nonfinite_state(net) -> list[str]:
    return [k for k, v in net.state_dict().items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]


class RunStopped(SvdgradError):
    """The run cannot go on: every step of an epoch was skipped, or the model or its validation loss went
    non-finite.  ``epoch`` is the epoch that stopped it.  The CLI reports it like any SvdgradError; a study
    records it as the run's outcome (``runner.run_one``) instead of failing."""

    def __init__(self, message: str, epoch: int):
        super().__init__(message)
        self.epoch = epoch


#: The most torch threads a run may ask for (--threads); more fail in OpenMP's thread creation or crash.
MAX_THREADS = 1024


#: The lock file of a run folder: held (flock, never unlinked) while a run writes the folder.
LOCK = ".lock"


@contextlib.contextmanager
def _folder_lock(out: str, what: str = "run"):
    """Hold ``out``'s lock (creating the folder) while a run writes it: a second writer is refused.

    Two runs into one --out both finished with exit 0 and mixed their log lines (the refusal of an existing
    run only sees a log, checkpoint or summary, and the first run writes none before its first epoch ends).
    An --out that cannot be a folder (a file, or under one; unwritable) is a clear error, not a traceback.
    """
    from filelock import FileLock, Timeout

    try:
        os.makedirs(out, exist_ok=True)
        lock = FileLock(os.path.join(out, LOCK), timeout=0)
        lock.acquire()
    except Timeout:
        raise SvdgradError(f"another {what} is writing to {out} (it holds {os.path.join(out, LOCK)}); wait for it "
                           f"to finish, or choose a different --out.") from None
    except OSError as exc:
        raise SvdgradError(f"Expected --out to be a folder that can be created and written; received {out!r} "
                           f"({exc.strerror or exc}). Choose another --out.") from None
    try:
        remove_stale_temporaries(out)  # (a killed run's half-written checkpoint, summary, ...)
        yield
    finally:
        lock.release()


def train(cfg: TrainConfig, *, info: ddp.DistInfo | None = None, echo=None) -> dict:
    """Train as configured; returns the summary (also written to ``out/summary.json``).

    The main process holds ``out``'s lock meanwhile (``_folder_lock``): a second run into it is refused.
    """
    cfg.validate()
    info = info or ddp.DistInfo()
    with (_folder_lock(cfg.out) if info.is_main else contextlib.nullcontext()):
        return _train(cfg, info, echo)


def _elastic_restart(cfg: TrainConfig, info: ddp.DistInfo, ckpt_path: str, device, say) -> TrainConfig:
    """Under ``torchrun --max-restarts``: a restarted attempt resumes the checkpoint its earlier attempt wrote.

    torchrun restarts every process with the same command after one fails.  As given, that command was
    refused (the folder holds the first attempt's run) until the restarts ran out, or, with --overwrite, it
    deleted the first attempt's epochs and trained them again.  The main process compares the checkpoint's
    launch record with this torchrun's (``ddp.launch_identity``) and every process follows its answer.  A
    checkpoint of another run (or none: the first attempt died before its first epoch ended) leaves the
    command as given.
    """
    count = ddp.restart_count()
    if not count:
        return cfg
    ours = False
    if info.is_main and os.path.exists(ckpt_path):
        try:
            launch = load_checkpoint(ckpt_path, map_location="cpu").get("env", {}).get("launch")
        except SvdgradError:  # (a damaged checkpoint: the command as given says what to do with it)
            launch = None
        ours = launch is not None and launch == ddp.launch_identity()
    if info.distributed:
        ours = ddp.any_flag(ours, device)
    if not ours:
        return cfg
    say(f"[svdgrad train] torchrun restart {count}: resuming the checkpoint of its earlier attempt"
        + (" (--overwrite applied to the first attempt only)" if cfg.overwrite else ""))
    return dataclasses.replace(cfg, resume=True, overwrite=False)


def _train(cfg: TrainConfig, info: ddp.DistInfo, echo) -> dict:
    echo = echo or (lambda msg: print(msg, file=sys.stderr, flush=True))
    say = (lambda msg: echo(msg)) if info.is_main else (lambda msg: None)
    device = _resolve_device(cfg.device, info)
    if cfg.batch_size % info.world_size:
        raise SvdgradError(f"Expected --batch-size divisible by the number of processes ({info.world_size}); "
                           f"received {cfg.batch_size}.")
    threads = cfg.threads or max(1, (os.cpu_count() or 1) // max(1, info.local_world_size))
    torch.set_num_threads(threads)

    ckpt_path = os.path.join(cfg.out, "checkpoint.pt")
    log_path = os.path.join(cfg.out, "log.jsonl")
    for name in RUN_FILES:  # (before any work, and before a directory reads as an existing run)
        refuse_directory(os.path.join(cfg.out, name))
    cfg = _elastic_restart(cfg, info, ckpt_path, device, say)
    existing = _existing_run(cfg.out)
    if existing and not (cfg.resume or cfg.overwrite):
        raise SvdgradError(f"{cfg.out} already holds {existing}. Pass --resume to continue it, --overwrite to "
                           f"delete it and start over, or a new --out.")
    if cfg.resume and existing and not os.path.exists(ckpt_path):
        raise SvdgradError(f"Nothing to resume in {cfg.out}: it holds {existing} but no checkpoint.pt (a "
                           f"finished study run deletes it). Pass --overwrite to start over, or a new --out.")
    say(f"[svdgrad train] output folder: {os.path.abspath(cfg.out)}")

    ds = data.load(cfg.dataset, cfg.image_size, train_per_class=cfg.train_per_class,
                   val_per_class=cfg.val_per_class, split_seed=cfg.split_seed)
    if len(ds.train_y) < cfg.batch_size:
        raise SvdgradError(f"Expected at least --batch-size ({cfg.batch_size}) training images; the dataset "
                           f"{ds.name} has {len(ds.train_y)}. Lower --batch-size.")
    env = {"threads": threads, "world_size": info.world_size, "device_type": device.type,
           "data_sha256": _data_fingerprint(ds), "launch": ddp.launch_identity()}  # (launch: not compared)
    tx, ty, vx, vy = (t.to(device) for t in (ds.train_x, ds.train_y, ds.val_x, ds.val_y))
    net = build_model(cfg, ds.in_channels, ds.num_classes).to(device)
    if info.distributed:
        ddp.convert_batchnorm(net)
        from torch.nn.parallel import DistributedDataParallel
        model = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    else:
        model = net
    opt = torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    schedule = cfg.make_schedule()
    sw = switch_epoch_of(cfg, schedule)
    if (cfg.probe_every or cfg.landscape_every) and info.distributed:
        raise SvdgradError("Expected --probe-every 0 and --landscape-every 0 under torchrun: the probes run on "
                           "one process. Run the probes without DDP.")
    probe_x, probe_y = _probe_batch(tx, ty, cfg.probe_batch)
    probe_rows = {name: [] for name in PROBE_FILES}

    history: list[dict] = []
    start = 1
    elapsed0 = 0.0
    if cfg.resume and os.path.exists(ckpt_path):
        ck = load_checkpoint(ckpt_path, map_location=device)
        diff = _resume_mismatches(ck, cfg, env)
        if diff:
            raise SvdgradError(
                "Expected the same options as the checkpoint in " + cfg.out + " to resume; these differ: "
                + "; ".join(diff) + ". Each changes the results. Use the original options, or a new --out "
                "to start over."
            )
        net.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        history = ck["history"]
        probe_rows = {name: list(ck.get("probes", {}).get(name, [])) for name in PROBE_FILES}
        start = ck["epoch"] + 1
        elapsed0 = ck.get("elapsed_s", 0.0)
        say(f"[svdgrad train] resuming {cfg.out} after epoch {ck['epoch']}")
    elif cfg.resume:
        say(f"[svdgrad train] no checkpoint in {cfg.out}; starting from epoch 1")
    ddp.barrier()  # every process has read the folder before the main one changes it
    if info.is_main:
        os.makedirs(cfg.out, exist_ok=True)
        if cfg.overwrite:
            for name in RUN_FILES:
                if os.path.exists(os.path.join(cfg.out, name)):
                    os.remove(os.path.join(cfg.out, name))
        write_atomic(log_path, "".join(json.dumps(h) + "\n" for h in history))
        for name, rows in probe_rows.items():
            if rows or os.path.exists(os.path.join(cfg.out, name)):
                write_atomic(os.path.join(cfg.out, name), "".join(json.dumps(r) + "\n" for r in rows))
        write_atomic(os.path.join(cfg.out, "config.json"), json.dumps(cfg.to_dict(), indent=1) + "\n")

    n_train = len(ty)
    local_bs = cfg.batch_size // info.world_size
    n_batches = n_train // cfg.batch_size
    t_run = time.perf_counter()
    pool = net.pool
    guard = _PoolGuard(pool) if cfg.head == "cov" else None
    from ..nn import Whitening
    whitening = [_WhiteningGuard(m) for m in net.modules() if isinstance(m, Whitening)]
    for epoch in range(start, cfg.epochs + 1):
        t0 = time.perf_counter()
        lr = schedule.lr(epoch)
        for group in opt.param_groups:
            group["lr"] = lr
        method = method_for_epoch(cfg, schedule, epoch)
        switched = cfg.protocol == "hybrid" and sw is not None and epoch == sw and epoch > 1
        if method is not None:
            set_pool_method(pool, method, cfg.pool_route)
            if switched:
                say(f"[svdgrad train] epoch {epoch}: switching the square root from newton_schulz to "
                    f"{_methods.method_spec(method)} (lr {lr:.4g}; rule: "
                    + ("lr < %g" % cfg.switch_lr if cfg.switch_lr is not None else
                       "--switch-epoch" if cfg.switch_epoch is not None else "last lr decay") + ")")
        g = _epoch_generator(cfg.seed, epoch)
        perm = torch.randperm(n_train, generator=g)
        flips = torch.rand(n_train, 2, generator=g) < 0.5
        model.train()
        loss_sum = correct = seen = 0.0
        skipped = 0
        skips: list[tuple[int, str]] = []  # (step of the epoch, this process's reason)
        kap, lmins, lmaxs = [], [], []
        small = total_eigs = 0
        bar = _progress(n_batches, epoch, cfg, info)
        for b in range(n_batches):
            gidx = perm[b * cfg.batch_size:(b + 1) * cfg.batch_size]
            lidx = gidx[info.rank * local_bs:(info.rank + 1) * local_bs]
            x = tx[lidx.to(device)]
            f = flips[lidx].to(device)
            x = torch.where(f[:, 0, None, None, None], x.flip(-1), x)
            x = torch.where(f[:, 1, None, None, None], x.flip(-2), x)
            y = ty[lidx.to(device)]
            step = (epoch - 1) * n_batches + b
            new_probes = _take_probes(cfg, net, step, epoch, probe_x, probe_y)
            for name, row in new_probes.items():
                probe_rows[name].append(row)
            if cfg.head == "cov":
                pool.last_covariance = None
            loss, out, reason = train_step(model, net, opt, x, y, guard=guard, whitening=whitening, device=device)
            if reason is not None:
                skipped += 1
                skips.append((b, reason))
            if loss is not None:  # (finite on every process)
                loss_sum += float(loss.detach()) * len(y)
                correct += int((out.detach().argmax(1) == y).sum())
                seen += len(y)
            if cfg.head == "cov" and pool.last_covariance is not None:
                S = pool.last_covariance
                S = S[torch.isfinite(S).flatten(1).all(1)]  # a non-finite Σ has no spectrum
                if len(S):
                    k, lo, hi, s, t = spectrum_stats(S)
                    kap += k
                    lmins += lo
                    lmaxs += hi
                    small += s
                    total_eigs += t
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss_sum / max(seen, 1):.4f}", skipped=skipped)
        if bar is not None:
            bar.close()
        skips = merged_skips(ddp.gather_lists(skips))  # (the causes, from whichever process met them)
        reasons = dict(collections.Counter(reason.split(":")[0] for _, reason in skips))  # (first-seen order)
        last_reason = skips[-1][1] if skips else None
        if skipped == n_batches:  # nothing was learned: a systematic fault, not a stray batch
            raise RunStopped(
                f"Every one of the {n_batches} steps of epoch {epoch} was skipped ("
                + ", ".join(f"{k}: {v}" for k, v in reasons.items()) + f"; the last: {last_reason}). "
                f"Check the data (--dataset {cfg.dataset}) for non-finite or huge values, and the options.", epoch)
        loss_sum, correct, seen, small, total_eigs = ddp.all_reduce_sum(
            [loss_sum, float(correct), float(seen), float(small), float(total_eigs)], device)
        kap, lmins, lmaxs = ddp.gather_lists(kap), ddp.gather_lists(lmins), ddp.gather_lists(lmaxs)
        # DDP trains the main process's buffers (it broadcasts them at every forward), but a statistic of the
        # local batch (Whitening's running mean and whitening matrix) differs on the others after the epoch's
        # last step: without this, the processes validated a mix of models, none of them the checkpoint's.
        ddp.broadcast_buffers(net)
        val_loss, val_acc = _evaluate(net, vx, vy, max(local_bs, 64), info)
        total_skipped = skipped + sum(h["skipped_steps"] for h in history)
        bad = _nonfinite_state(net)
        if bad or not math.isfinite(val_loss):
            what = (f"{len(bad)} tensors of the model are not finite ({', '.join(bad[:3])}"
                    f"{', ...' if len(bad) > 3 else ''})" if bad else
                    f"the validation loss is {val_loss} while every weight and buffer is finite, so a validation "
                    f"image probably overflows float32; check the validation data")
            raise RunStopped(
                f"Training stopped in epoch {epoch}: {what}. Steps with a non-finite loss, gradient or pooled "
                f"matrix were skipped ({total_skipped} so far), so finite but overflowing updates or data did "
                f"this: lower --lr, or check the data for values near float32's limit. "
                + (f"The checkpoint of epoch {epoch - 1} in {cfg.out} is kept." if epoch > 1 else
                   "No checkpoint was written."), epoch)
        row = {
            "epoch": epoch, "lr": lr,
            "method": _methods.method_spec(method) if method is not None else "none",
            "switched": switched,
            "train_loss": loss_sum / seen if seen else None, "train_acc": correct / seen if seen else None,
            "val_loss": val_loss, "val_acc": val_acc,
            "kappa_median": _median(kap), "kappa_max": max(kap) if kap else None,
            "lambda_min_median": _median(lmins), "lambda_max_median": _median(lmaxs),
            "small_eig_fraction": small / total_eigs if total_eigs else None,
            "skipped_steps": skipped, "skip_reasons": reasons, "steps": n_batches,
            "time_s": time.perf_counter() - t0,
        }
        history.append(row)
        if info.is_main:
            save_checkpoint({"version": CHECKPOINT_FORMAT, "config": cfg.to_dict(), "env": env, "epoch": epoch,
                             "model": net.state_dict(), "optimizer": opt.state_dict(), "history": history,
                             "probes": probe_rows, "elapsed_s": elapsed0 + time.perf_counter() - t_run}, ckpt_path)
            with open(log_path, "a") as fh:
                fh.write(json.dumps(row) + "\n")
            for name, rows in probe_rows.items():
                new = [r for r in rows if r["epoch"] == epoch]
                if new:
                    with open(os.path.join(cfg.out, name), "a") as fh:
                        fh.write("".join(json.dumps(r) + "\n" for r in new))
        say(f"[svdgrad train] epoch {epoch}/{cfg.epochs} lr {lr:.4g} {row['method']} "
            f"loss {row['train_loss'] if row['train_loss'] is not None else float('nan'):.4f} "
            f"val_acc {val_acc:.4f} skipped {skipped}"
            + (f" ({', '.join(f'{k}: {v}' for k, v in reasons.items())})" if reasons else "")
            + f" ({row['time_s']:.1f}s)")
    summary = summarize(history, cfg, sw)
    summary["elapsed_s"] = elapsed0 + time.perf_counter() - t_run
    summary["world_size"] = info.world_size
    summary["out"] = cfg.out
    summary["host"] = provenance()  # (the same code rounds differently on another host: see svdgrad._io)
    if cfg.robustness:
        summary["robustness"] = robustness(net, vx, vy, max(local_bs, 64), info)
    if info.is_main:
        write_atomic(os.path.join(cfg.out, "summary.json"), json.dumps(summary, indent=1) + "\n")
    return summary



def _probe_batch(tx, ty, n: int):
    """The fixed probe batch: n training images drawn once with a fixed generator (the same for every seed)."""
    idx = torch.randperm(len(ty), generator=torch.Generator().manual_seed(0))[:n]
    return tx[idx.to(tx.device)], ty[idx.to(ty.device)]


def _take_probes(cfg: TrainConfig, net, step: int, epoch: int, px, py) -> dict:
    """The probe rows due at ``step`` (0-based global step, before its update)."""
    from . import probes

    rows = {}
    if cfg.probe_every and cfg.head == "cov" and step % cfg.probe_every == 0:
        rows["probes.jsonl"] = {"epoch": epoch, "step": step, **probes.gradient_probe(net, px, py)}
    if cfg.landscape_every and step % cfg.landscape_every == 0:
        rows["landscape.jsonl"] = {"epoch": epoch, "step": step,
                                   **probes.landscape_probe(net, px, py, cfg.landscape_etas)}
    return rows


def robustness(net, vx, vy, batch_size, info) -> dict:
    """Validation accuracy on every corruption and severity (``corruptions``), and on the clean images."""
    from . import corruptions

    out = {"clean": _evaluate(net, vx, vy, batch_size, info)[1]}
    for kind, levels in corruptions.SEVERITIES.items():
        for sev in range(1, len(levels) + 1):
            out[f"{kind}{sev}"] = _evaluate(net, corruptions.corrupt(vx, kind, sev), vy, batch_size, info)[1]
    return out


def summarize(history: list[dict], cfg: TrainConfig, sw) -> dict:
    if not history:
        return {"epochs": 0}
    best = max(history, key=lambda h: h["val_acc"])
    return {
        "epochs": len(history), "final_val_acc": history[-1]["val_acc"], "final_val_loss": history[-1]["val_loss"],
        "final_train_loss": history[-1]["train_loss"], "best_val_acc": best["val_acc"], "best_epoch": best["epoch"],
        "skipped_steps": sum(h["skipped_steps"] for h in history), "switch_epoch": sw,
        "protocol": cfg.protocol, "head": cfg.head, "svd_method": cfg.svd_method, "seed": cfg.seed,
    }


def _norm(v):
    if isinstance(v, (list, tuple)):
        return [_norm(x) for x in v]
    return v


def _progress(n: int, epoch: int, cfg: TrainConfig, info: ddp.DistInfo):
    if not (cfg.progress and info.is_main):
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=n, desc=f"epoch {epoch}/{cfg.epochs}", leave=False, dynamic_ncols=True)
