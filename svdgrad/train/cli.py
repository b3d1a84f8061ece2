"""``svdgrad train ...`` and ``svdgrad study hybrid ...``.

Under ``torchrun --nproc_per_node=W -m svdgrad train ...`` the environment
(RANK, WORLD_SIZE, LOCAL_RANK) makes ``train`` run DDP over W processes.
"""

from __future__ import annotations

import argparse
import json
import sys

from .._errors import SvdgradError



def _ints(text: str) -> tuple[int, ...]:
    try:
        vals = tuple(int(t) for t in text.replace(" ", "").split(",") if t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, e.g. 16,32,64; received {text!r}")
    if not vals:
        raise argparse.ArgumentTypeError(f"expected at least one integer; received {text!r}")
    return vals


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def train_parser() -> argparse.ArgumentParser:
    from .trainer import PROTOCOLS, TrainConfig
    from .schedules import SCHEDULES
    from .data import DATASETS
    from .. import methods

    d = TrainConfig()
    p = _Parser(prog="svdgrad train", description=(
        "Train a small ResNet with covariance pooling (or GAP) under the NS / SVD / hybrid protocol. "
        "Writes OUT/log.jsonl (one line per epoch), OUT/checkpoint.pt (every epoch, atomically), "
        "OUT/summary.json. Run under torchrun for DDP."))
    a = p.add_argument
    a("--dataset", default=d.dataset, help=f"{' | '.join(DATASETS)} (default {d.dataset})")
    a("--image-size", type=int, default=d.image_size, help="images are resized to this side (default %(default)s)")
    a("--train-per-class", type=int, default=d.train_per_class, help="textures: training patches per class (default %(default)s)")
    a("--val-per-class", type=int, default=d.val_per_class, help="textures: validation patches per class (default %(default)s)")
    a("--split-seed", type=int, default=d.split_seed, help="seed of the data split (default %(default)s)")
    a("--head", choices=("cov", "gap"), default=d.head, help="covariance pooling or the GAP baseline (default %(default)s)")
    a("--widths", type=_ints, default=d.widths, help=f"stage widths of the ResNet (default {','.join(map(str, d.widths))})")
    a("--blocks", type=int, default=d.blocks, help="basic blocks per stage (default %(default)s)")
    a("--reduced-channels", type=int, default=d.reduced_channels, help="d of the covariance (default %(default)s)")
    a("--keep-last-stride", action="store_true", help="keep stride 2 in the last stage (default: dropped, as the papers)")
    a("--offdiag-scale", type=float, default=d.offdiag_scale, help="off-diagonal weight in the triu vector (1 or 1.41421356; default 1)")
    a("--protocol", choices=PROTOCOLS, default=d.protocol, help="ns | svd | hybrid (default %(default)s)")
    a("--svd-method", default=d.svd_method, help=f"sqrtm method for svd/hybrid: {', '.join(methods())} (default %(default)s)")
    a("--ns-iterations", type=int, default=d.ns_iterations, help="Newton-Schulz iterations (default %(default)s)")
    a("--switch-lr", type=float, default=None, help="hybrid: switch at the first epoch with lr < X (default: at the last lr decay)")
    a("--switch-epoch", type=int, default=None, help="hybrid: switch at this 1-based epoch")
    a("--epochs", type=int, default=d.epochs, help="default %(default)s")
    a("--batch-size", type=int, default=d.batch_size, help="global batch size (default %(default)s)")
    a("--lr", type=float, default=d.lr, help="base learning rate (default %(default)s)")
    a("--momentum", type=float, default=d.momentum, help="default %(default)s")
    a("--weight-decay", type=float, default=d.weight_decay, help="default %(default)s")
    a("--schedule", choices=SCHEDULES, default=d.schedule, help="lr schedule (default %(default)s)")
    a("--gamma", type=float, default=None, help="step: decay factor (0.1); exp: base of the power (0.98)")
    a("--milestones", type=_ints, default=None, help="step: 1-based epochs where a decay takes effect (default 1+E/3, 1+2E/3)")
    a("--poly-power", type=float, default=d.poly_power, help="poly: rho (default %(default)s)")
    a("--poly-final-epoch", type=int, default=None, help="poly: e_f (default epochs+1)")
    a("--seed", type=int, default=d.seed, help="default %(default)s")
    a("--threads", type=int, default=d.threads, help="torch threads per process (default 1: small convs gain little from more, and oversubscribed cores stall; 0 = cores / local processes)")
    a("--device", default=d.device, help="auto | cpu | cuda (default %(default)s)")
    a("--out", default=None, help="output folder (default runs/<dataset>-<head or protocol>-seed<seed>)")
    a("--resume", action="store_true", help="continue from OUT/checkpoint.pt if it exists")
    a("--no-progress", action="store_true", help="no progress bar; one line per epoch instead")
    return p


def config_from_args(ns) -> "TrainConfig":
    from .trainer import TrainConfig

    name = ns.head if ns.head == "gap" else ns.protocol
    out = ns.out or f"runs/{ns.dataset.split(':')[0]}-{name}-seed{ns.seed}"
    return TrainConfig(
        dataset=ns.dataset, image_size=ns.image_size, train_per_class=ns.train_per_class,
        val_per_class=ns.val_per_class, split_seed=ns.split_seed, head=ns.head, widths=tuple(ns.widths),
        blocks=ns.blocks, reduced_channels=ns.reduced_channels, last_stride=2 if ns.keep_last_stride else 1,
        offdiag_scale=ns.offdiag_scale, protocol=ns.protocol, svd_method=ns.svd_method,
        ns_iterations=ns.ns_iterations, switch_lr=ns.switch_lr, switch_epoch=ns.switch_epoch, epochs=ns.epochs,
        batch_size=ns.batch_size, lr=ns.lr, momentum=ns.momentum, weight_decay=ns.weight_decay,
        schedule=ns.schedule, gamma=ns.gamma, milestones=ns.milestones, poly_power=ns.poly_power,
        poly_final_epoch=ns.poly_final_epoch, seed=ns.seed, threads=ns.threads, device=ns.device, out=out,
        resume=ns.resume, progress=not ns.no_progress,
    )


def run_train(argv: list[str]) -> int:
    from . import ddp
    from .trainer import train

    ns = train_parser().parse_args(argv)
    try:
        cfg = config_from_args(ns)
        cfg.validate()
        info = ddp.init_from_env("cuda" if cfg.device.startswith("cuda") or (
            cfg.device == "auto" and _cuda()) else "cpu")
        try:
            summary = train(cfg, info=info)
        except BaseException:
            ddp.shutdown(wait=False)
            raise
        ddp.shutdown()
    except SvdgradError as exc:
        print(f"svdgrad train: error: {exc}", file=sys.stderr)
        return 2
    if info.is_main:
        print(json.dumps(summary))
    return 0


def _cuda() -> bool:
    import torch
    return torch.cuda.is_available()


def study_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="svdgrad study hybrid", description=(
        "Run the hybrid-protocol study (GAP, NS, SVD with ordinary/pade/taylor/exact, NS->ordinary/pade/exact; "
        "several seeds on textures) and write REPORT.md and figures. Finished runs are skipped; "
        "interrupted runs resume from their checkpoints."))
    p.add_argument("study", choices=("hybrid",), help="the study to run")
    p.add_argument("--quick", action="store_true", help="tiny settings for a smoke test (well under 2 minutes)")
    p.add_argument("--out", default=None, help="output folder (default reports/hybrid_protocol, or a temporary "
                                               "folder's reports/hybrid_protocol_quick with --quick)")
    p.add_argument("--seeds", type=int, default=None, help="seeds per protocol (default 3; 1 with --quick)")
    p.add_argument("--jobs", type=int, default=None, help="parallel runs (default: number of cores, at most 2)")
    p.add_argument("--report-only", action="store_true", help="rewrite REPORT.md and figures from the saved logs")
    return p


def run_study(argv: list[str]) -> int:
    from .study import run

    ns = study_parser().parse_args(argv)
    try:
        out = run(quick=ns.quick, out=ns.out, seeds=ns.seeds, jobs=ns.jobs, report_only=ns.report_only)
    except SvdgradError as exc:
        print(f"svdgrad study: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


def main(command: str, argv: list[str]) -> int:
    if command == "train":
        return run_train(list(argv))
    if command == "study":
        return run_study(list(argv))
    print(f"svdgrad: unknown command {command!r} for svdgrad.train.cli; expected train or study.", file=sys.stderr)
    return 2
