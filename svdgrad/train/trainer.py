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
resumed run replays exactly the same batches), then validation.  A step
whose loss or gradient is not finite is skipped and counted; NaN never
reaches the weights.  A checkpoint is written atomically (temporary file,
then ``os.replace``) after every epoch, then one JSON line is appended to
``log.jsonl``.  See ``LOG_FIELDS`` for the line's fields.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time

import torch
import torch.nn.functional as F

from .. import _methods
from .._errors import SvdgradError
from .._io import save_atomic, write_atomic
from . import data, ddp, schedules

PROTOCOLS = ("ns", "svd", "hybrid")
HEADS = ("cov", "gap")

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
    "skipped_steps": "steps skipped in this epoch because the loss or a gradient was not finite",
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
                "weight_decay", "schedule", "gamma", "milestones", "poly_power", "poly_final_epoch", "seed")


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
    out: str = "runs/train"
    resume: bool = False
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
        m = _methods.get_method(self.svd_method)  # raises, listing the valid names
        if self.protocol == "hybrid" and isinstance(m, _methods.NewtonSchulz):
            raise SvdgradError("Expected an eigen method for --svd-method with --protocol hybrid; received "
                               "newton_schulz, which makes the hybrid the same as --protocol ns.")
        if self.lr <= 0 or not math.isfinite(self.lr):
            raise SvdgradError(f"Expected --lr > 0; received {self.lr!r}.")
        if not (0 <= self.momentum < 1):
            raise SvdgradError(f"Expected 0 <= --momentum < 1; received {self.momentum!r}.")
        if self.weight_decay < 0:
            raise SvdgradError(f"Expected --weight-decay >= 0; received {self.weight_decay!r}.")
        if self.switch_lr is not None and not self.switch_lr > 0:
            raise SvdgradError(f"Expected --switch-lr > 0; received {self.switch_lr!r}.")
        if self.switch_epoch is not None and not (1 <= self.switch_epoch <= self.epochs):
            raise SvdgradError(f"Expected --switch-epoch in [1, {self.epochs}]; received {self.switch_epoch!r}.")
        if self.threads < 0:
            raise SvdgradError(f"Expected --threads >= 0 (0 = automatic); received {self.threads!r}.")
        if self.device not in ("auto", "cpu") and not self.device.startswith("cuda"):
            raise SvdgradError(f"Expected --device auto, cpu or cuda[:i]; received {self.device!r}.")
        self.make_schedule()
        if self.protocol == "hybrid" and self.head == "cov":
            switch_epoch_of(self, self.make_schedule())

    def make_schedule(self):
        return schedules.make(self.schedule, self.lr, self.epochs, gamma=self.gamma, milestones=self.milestones,
                              power=self.poly_power, final_epoch=self.poly_final_epoch)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


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
        return _methods.get_method(cfg.svd_method)
    return _methods.NewtonSchulz(iterations=cfg.ns_iterations)


def build_model(cfg: TrainConfig, in_channels: int, num_classes: int):
    from ..nn import SmallResNet

    torch.manual_seed(cfg.seed)
    opts = {}
    if cfg.head == "cov":
        opts = dict(reduced_channels=cfg.reduced_channels, offdiag_scale=cfg.offdiag_scale, keep_covariance=True,
                    method=_methods.NewtonSchulz(iterations=cfg.ns_iterations))
    return SmallResNet(num_classes, in_channels, tuple(cfg.widths), blocks=cfg.blocks, pool=cfg.head,
                       last_stride=cfg.last_stride, **opts)


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


def train(cfg: TrainConfig, *, info: ddp.DistInfo | None = None, echo=None) -> dict:
    """Train as configured; returns the summary (also written to ``out/summary.json``)."""
    cfg.validate()
    info = info or ddp.DistInfo()
    device = _resolve_device(cfg.device, info)
    if cfg.batch_size % info.world_size:
        raise SvdgradError(f"Expected --batch-size divisible by the number of processes ({info.world_size}); "
                           f"received {cfg.batch_size}.")
    threads = cfg.threads or max(1, (os.cpu_count() or 1) // max(1, info.local_world_size))
    torch.set_num_threads(threads)
    echo = echo or (lambda msg: print(msg, file=sys.stderr, flush=True))
    say = (lambda msg: echo(msg)) if info.is_main else (lambda msg: None)

    ds = data.load(cfg.dataset, cfg.image_size, train_per_class=cfg.train_per_class,
                   val_per_class=cfg.val_per_class, split_seed=cfg.split_seed)
    if len(ds.train_y) < cfg.batch_size:
        raise SvdgradError(f"Expected at least --batch-size ({cfg.batch_size}) training images; the dataset "
                           f"{ds.name} has {len(ds.train_y)}. Lower --batch-size.")
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

    os.makedirs(cfg.out, exist_ok=True)
    ckpt_path = os.path.join(cfg.out, "checkpoint.pt")
    log_path = os.path.join(cfg.out, "log.jsonl")
    history: list[dict] = []
    start = 1
    elapsed0 = 0.0
    if cfg.resume and os.path.exists(ckpt_path):
        ck = torch.load(ckpt_path, map_location=device, weights_only=False)
        saved = ck["config"]
        diff = [k for k in _RESUME_KEYS if _norm(saved.get(k)) != _norm(getattr(cfg, k))]
        if diff:
            raise SvdgradError(
                "Expected the same options as the checkpoint in " + cfg.out + " to resume; these differ: "
                + ", ".join(f"{k} (checkpoint {saved.get(k)!r}, now {getattr(cfg, k)!r})" for k in diff)
                + ". Use the original options, or a new --out to start over."
            )
        net.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        history = ck["history"]
        start = ck["epoch"] + 1
        elapsed0 = ck.get("elapsed_s", 0.0)
        say(f"[svdgrad train] resuming {cfg.out} after epoch {ck['epoch']}")
    elif cfg.resume:
        say(f"[svdgrad train] no checkpoint in {cfg.out}; starting from epoch 1")
    if info.is_main:
        write_atomic(log_path, "".join(json.dumps(h) + "\n" for h in history))
        write_atomic(os.path.join(cfg.out, "config.json"), json.dumps(cfg.to_dict(), indent=1) + "\n")

    n_train = len(ty)
    local_bs = cfg.batch_size // info.world_size
    n_batches = n_train // cfg.batch_size
    t_run = time.perf_counter()
    pool = net.pool
    for epoch in range(start, cfg.epochs + 1):
        t0 = time.perf_counter()
        lr = schedule.lr(epoch)
        for group in opt.param_groups:
            group["lr"] = lr
        method = method_for_epoch(cfg, schedule, epoch)
        switched = cfg.protocol == "hybrid" and sw is not None and epoch == sw and epoch > 1
        if method is not None:
            pool.method = method
            if switched:
                say(f"[svdgrad train] epoch {epoch}: switching the square root from newton_schulz to "
                    f"{method.name} (lr {lr:.4g}; rule: "
                    + ("lr < %g" % cfg.switch_lr if cfg.switch_lr is not None else
                       "--switch-epoch" if cfg.switch_epoch is not None else "last lr decay") + ")")
        g = _epoch_generator(cfg.seed, epoch)
        perm = torch.randperm(n_train, generator=g)
        flips = torch.rand(n_train, 2, generator=g) < 0.5
        model.train()
        loss_sum = correct = seen = 0.0
        skipped = 0
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
            opt.zero_grad(set_to_none=False)
            out = model(x)
            loss = F.cross_entropy(out, y)
            loss.backward()
            bad = not bool(torch.isfinite(loss))
            if not bad:
                grads = [p.grad for p in net.parameters() if p.grad is not None]
                bad = not bool(torch.stack([torch.isfinite(gr).all() for gr in grads]).all())
            bad = ddp.any_flag(bad, device)
            if bad:
                skipped += 1
                opt.zero_grad(set_to_none=False)
            else:
                opt.step()
            if bool(torch.isfinite(loss)):
                loss_sum += float(loss.detach()) * len(y)
                correct += int((out.detach().argmax(1) == y).sum())
                seen += len(y)
            if cfg.head == "cov" and pool.last_covariance is not None:
                k, lo, hi, s, t = spectrum_stats(pool.last_covariance)
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
        loss_sum, correct, seen, small, total_eigs = ddp.all_reduce_sum(
            [loss_sum, float(correct), float(seen), float(small), float(total_eigs)], device)
        kap, lmins, lmaxs = ddp.gather_lists(kap), ddp.gather_lists(lmins), ddp.gather_lists(lmaxs)
        val_loss, val_acc = _evaluate(net, vx, vy, max(local_bs, 64), info)
        row = {
            "epoch": epoch, "lr": lr, "method": method.name if method is not None else "none",
            "switched": switched,
            "train_loss": loss_sum / seen if seen else None, "train_acc": correct / seen if seen else None,
            "val_loss": val_loss, "val_acc": val_acc,
            "kappa_median": _median(kap), "kappa_max": max(kap) if kap else None,
            "lambda_min_median": _median(lmins), "lambda_max_median": _median(lmaxs),
            "small_eig_fraction": small / total_eigs if total_eigs else None,
            "skipped_steps": skipped, "steps": n_batches,
            "time_s": time.perf_counter() - t0,
        }
        history.append(row)
        if info.is_main:
            save_atomic({"version": 1, "config": cfg.to_dict(), "epoch": epoch, "model": net.state_dict(),
                          "optimizer": opt.state_dict(), "history": history,
                          "elapsed_s": elapsed0 + time.perf_counter() - t_run}, ckpt_path)
            with open(log_path, "a") as fh:
                fh.write(json.dumps(row) + "\n")
        say(f"[svdgrad train] epoch {epoch}/{cfg.epochs} lr {lr:.4g} {row['method']} "
            f"loss {row['train_loss'] if row['train_loss'] is not None else float('nan'):.4f} "
            f"val_acc {val_acc:.4f} skipped {skipped} ({row['time_s']:.1f}s)")
    summary = summarize(history, cfg, sw)
    summary["elapsed_s"] = elapsed0 + time.perf_counter() - t_run
    summary["world_size"] = info.world_size
    if info.is_main:
        write_atomic(os.path.join(cfg.out, "summary.json"), json.dumps(summary, indent=1) + "\n")
    return summary


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
