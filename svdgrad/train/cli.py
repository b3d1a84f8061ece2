"""``svdgrad train ...`` and ``svdgrad study hybrid ...``.

Under ``torchrun --nproc_per_node=W -m svdgrad train ...`` the environment
(RANK, WORLD_SIZE, LOCAL_RANK) makes ``train`` run DDP over W processes.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import sys

from .._errors import SvdgradError, WorkerLost

#: Exit status after Ctrl-C (128 + SIGINT), as a shell reports it.
EXIT_INTERRUPTED = 130


def _ints(text: str) -> tuple[int, ...]:
    try:
        vals = tuple(int(t) for t in text.replace(" ", "").split(",") if t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, e.g. 16,32,64; received {text!r}")
    if not vals:
        raise argparse.ArgumentTypeError(f"expected at least one integer; received {text!r}")
    return vals


def _floats(text: str) -> tuple[float, ...]:
    try:
        vals = tuple(float(t) for t in text.replace(" ", "").split(",") if t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, e.g. 0.1,1,10; received {text!r}")
    if not vals:
        raise argparse.ArgumentTypeError(f"expected at least one number; received {text!r}")
    return vals


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def train_parser() -> argparse.ArgumentParser:
    from .trainer import NORMS, POOL_ROUTES, PROTOCOLS, SIGMA_DTYPES, TrainConfig
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
    a("--norm", choices=NORMS, default=d.norm, help="backbone normalization: bn (BatchNorm2d) or whiten "
                                                    "(svdgrad.nn.Whitening, groups of 16 channels; default %(default)s)")
    a("--whiten-method", default=d.whiten_method, help="--norm whiten: inv_sqrtm method spec (newton_schulz = "
                                                      "IterNorm, exact = DBN; default %(default)s)")
    a("--pool-route", choices=POOL_ROUTES, default=d.pool_route, help="covariance: sqrtm(Σ); features: "
      "gram_sqrtm of the centred features, Σ never formed (needs --svd-method exact; default %(default)s)")
    a("--sigma-dtype", choices=tuple(SIGMA_DTYPES), default=None, help="dtype Σ is formed and decomposed in "
      "(default: float64 for eigen methods on the covariance route, the network's float32 otherwise)")
    a("--protocol", choices=PROTOCOLS, default=d.protocol, help="ns | svd | hybrid (default %(default)s)")
    a("--svd-method", default=d.svd_method, help=f"sqrtm method for svd/hybrid: a name ({', '.join(methods())}) or a spec with options such as taylor:degree=9 (default %(default)s)")
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
    a("--ddp-timeout", type=float, default=d.ddp_timeout, help="under torchrun: seconds a process waits for the "
      "others in a collective before the run stops with an error and the command that resumes it (default: "
      "torch's, 30 minutes; a stopped or hung process stalls the others that long). Set it well above the "
      "slowest step and the data's loading")
    a("--probe-every", type=int, default=d.probe_every, help="every K steps, log to OUT/probes.jsonl how far the "
      "method's gradient at the pooling layer's input is from exact's, on a fixed probe batch (0 = off)")
    a("--probe-batch", type=int, default=d.probe_batch, help="images in the fixed probe batch (default %(default)s)")
    a("--landscape-every", type=int, default=d.landscape_every, help="every K steps, log the CVPR20 probes "
      "(eqs. 3-4: loss Lipschitzness and gradient predictiveness) to OUT/landscape.jsonl (0 = off)")
    a("--landscape-etas", type=_floats, default=d.landscape_etas, help="step sizes η of the landscape probes "
      "(default %(default)s)")
    a("--robustness", action="store_true", help="after training, validation accuracy on corrupted images "
      "(noise, blur, contrast at 3 severities) into summary.json")
    a("--out", default=None, help="output folder (default runs/<dataset>-<gap | protocol[-svd method]>-<schedule>-seed<seed>)")
    a("--resume", action="store_true", help="continue from OUT/checkpoint.pt (verified by its checksum; every option that changes the results must match)")
    a("--overwrite", action="store_true", help="delete the run already in OUT (log, checkpoint, summary) and start over")
    a("--no-progress", action="store_true", help="no progress bar; one line per epoch instead")
    return p


def config_from_args(ns) -> "TrainConfig":
    from .trainer import TrainConfig

    out = ns.out or default_out(ns)
    return TrainConfig(
        dataset=ns.dataset, image_size=ns.image_size, train_per_class=ns.train_per_class,
        val_per_class=ns.val_per_class, split_seed=ns.split_seed, head=ns.head, widths=tuple(ns.widths),
        blocks=ns.blocks, reduced_channels=ns.reduced_channels, last_stride=2 if ns.keep_last_stride else 1,
        offdiag_scale=ns.offdiag_scale, norm=ns.norm, whiten_method=ns.whiten_method, pool_route=ns.pool_route,
        sigma_dtype=ns.sigma_dtype, probe_every=ns.probe_every, probe_batch=ns.probe_batch,
        landscape_every=ns.landscape_every, landscape_etas=tuple(ns.landscape_etas), robustness=ns.robustness, protocol=ns.protocol,
        svd_method=ns.svd_method, ns_iterations=ns.ns_iterations, switch_lr=ns.switch_lr, switch_epoch=ns.switch_epoch, epochs=ns.epochs,
        batch_size=ns.batch_size, lr=ns.lr, momentum=ns.momentum, weight_decay=ns.weight_decay,
        schedule=ns.schedule, gamma=ns.gamma, milestones=ns.milestones, poly_power=ns.poly_power,
        poly_final_epoch=ns.poly_final_epoch, seed=ns.seed, threads=ns.threads, device=ns.device,
        ddp_timeout=ns.ddp_timeout, out=out,
        resume=ns.resume, overwrite=ns.overwrite, progress=not ns.no_progress,
    )


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text.replace("=", "")).strip("-")


def default_out(ns) -> str:
    """runs/<dataset>-<gap | protocol[-svd method]>-<schedule>-seed<seed>: the options that tell
    the README's examples apart, so that two of them never share a folder."""
    ds = ns.dataset
    if ds.startswith("tensors:"):
        ds = "tensors-" + os.path.splitext(os.path.basename(ds[len("tensors:"):]))[0]
    if ns.head == "gap":
        name = "gap"
    elif ns.protocol == "ns":
        name = "ns"
    else:
        name = f"{ns.protocol}-{ns.svd_method}"
    if ns.head == "cov" and ns.pool_route != "covariance":
        name += f"-{ns.pool_route}"
    if ns.head == "cov" and ns.sigma_dtype:
        name += f"-sigma-{ns.sigma_dtype}"
    if ns.norm != "bn":
        name += f"-{ns.norm}"
    return os.path.join("runs", _slug(f"{ds}-{name}-{ns.schedule}-seed{ns.seed}"))


def resume_command(prefix: list[str], argv: list[str], out: str) -> str:
    """The command line that continues an interrupted run: the same options, --resume, no --overwrite."""
    args = [a for a in argv if a not in ("--overwrite", "--resume")]
    if not any(a == "--out" or a.startswith("--out=") for a in args):
        args += ["--out", out]
    return shlex.join(prefix + args + ["--resume"])


def _interrupted(what: str, command: str, kept: str) -> int:
    # Leading newline: the terminal has just echoed ^C (and maybe half a progress bar) on the current line.
    print(f"\nsvdgrad {what}: interrupted (Ctrl-C); {kept}. Resume with: {command}", file=sys.stderr)
    return EXIT_INTERRUPTED


def run_train(argv: list[str]) -> int:
    from . import ddp
    from .trainer import train

    ns = train_parser().parse_args(argv)
    info = ddp.env_info()
    cfg = None
    try:
        cfg = config_from_args(ns)
        cfg.validate()
        info = ddp.init_from_env("cuda" if cfg.device.startswith("cuda") or (
            cfg.device == "auto" and _cuda()) else "cpu", timeout=cfg.ddp_timeout)
        try:
            summary = train(cfg, info=info)
        except BaseException:
            ddp.shutdown(wait=False)
            raise
        ddp.shutdown()
    except SvdgradError as exc:
        if info.is_main:
            print(f"svdgrad train: error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        if not (info.distributed and ddp.is_timeout(exc)):
            raise
        # (every process that timed out says so: the main process may be the one that stopped)
        prefix, note = ddp.launch_command(info)
        limit = "torch's default timeout" if cfg.ddp_timeout is None else f"--ddp-timeout {cfg.ddp_timeout:g} s"
        print(f"svdgrad train: error: process {info.rank} of {info.world_size} waited longer than {limit} for the "
              f"others in a collective ({str(exc).splitlines()[0]}): another process stopped, hung or died. Every "
              f"finished epoch is in the checkpoint. Resume with: {resume_command(prefix, argv, cfg.out)}{note}",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if not info.is_main:
            return EXIT_INTERRUPTED
        prefix, note = ddp.launch_command(info)
        return _interrupted("train", resume_command(prefix, argv, cfg.out if cfg else default_out(ns)) + note,
                           "every finished epoch is in the checkpoint")
    if info.is_main:
        print(json.dumps(summary))
    return 0


def _cuda() -> bool:
    import torch
    return torch.cuda.is_available()


#: study name -> one-line description (``svdgrad study NAME``).
STUDIES = {"hybrid": "NS / SVD / NS -> SVD training protocols on textures, several seeds; writes REPORT.md",
           "landscape": "CVPR20 probes (eqs. 3-4), gradient smoothness, data precision, fast schedules, "
                        "robustness, the second-order dataset; writes REPORT.md"}
STUDY_USAGE = ("usage: svdgrad study {" + ",".join(STUDIES) + "} [--quick] [--out OUT] [--seeds N] [--jobs N] "
               "[--backend joblib|ray] [--device cpu|cuda] [--resume] [--max-minutes M] [--report-only] "
               "[--protocols a,b (hybrid)]")


def study_parser(name: str = "hybrid") -> argparse.ArgumentParser:
    from .runner import BACKENDS

    desc = {"hybrid": "Run the hybrid-protocol study (GAP, NS, SVD with ordinary/pade/taylor/exact, "
                      "NS->ordinary/pade/exact; several seeds on textures) and write REPORT.md and figures.",
            "landscape": "Run the landscape study (CVPR20 loss Lipschitzness and gradient predictiveness, ICCV21 "
                         "gradient smoothness and data precision, fast lr schedules, corrupted images, the "
                         "second-order dataset) and write REPORT.md and figures."}[name]
    p = _Parser(prog=f"svdgrad study {name}", description=desc + (
        " Finished runs are skipped; interrupted runs resume from their checkpoints."))
    p.add_argument("--quick", action="store_true", help="tiny settings for a smoke test (well under 2 minutes)")
    p.add_argument("--out", default=None, help=f"output folder (default reports/{'hybrid_protocol' if name == 'hybrid' else 'landscape'}; "
                                               "with --quick a new scratch folder under the system's temporary directory)")
    p.add_argument("--seeds", type=int, default=None, help="seeds per protocol (default: the grid's; 1 with --quick)")
    p.add_argument("--jobs", type=int, default=None, help="parallel runs, one torch thread each (default: number "
                                                          "of cores, at most 2; never more than the cores)")
    p.add_argument("--backend", choices=BACKENDS, default="joblib", help="joblib (local processes) or ray "
                   "(a local Ray, or the cluster in RAY_ADDRESS; default %(default)s)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | auto (default %(default)s); cuda is refused "
                                                   "where no GPU is available")
    p.add_argument("--resume", action="store_true", help="complete a study already in --out: finished runs are "
                                                         "skipped, interrupted ones continue")
    p.add_argument("--max-minutes", type=float, default=None, help="launch no run after M minutes of wall time; "
                   "the report says which part ran and --resume completes it")
    p.add_argument("--report-only", action="store_true", help="rewrite REPORT.md and figures from the saved logs")
    if name == "hybrid":
        p.add_argument("--protocols", default=None, type=lambda v: [x.strip() for x in v.split(",") if x.strip()],
                       help="comma-separated protocols that get --seeds N (default: all); the others keep their "
                            "planned seeds, so the seeds go where the claims need them")
        p.add_argument("--dataset", choices=("textures", "elpv"), default="textures",
                       help="textures (default; reports/hybrid_protocol) or elpv (needs the elpv extra; "
                            "reports/hybrid_protocol_elpv)")
    return p


def run_study(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        print(STUDY_USAGE)
        for name, text in STUDIES.items():
            print(f"  {name:10s} {text}")
        print("svdgrad study NAME --help for the options.")
        return 0
    if not argv or argv[0] not in STUDIES:
        print(STUDY_USAGE, file=sys.stderr)
        got = f"received {argv[0]!r}" if argv else "received none"
        print(f"svdgrad study: error: expected the name of a study ({', '.join(STUDIES)}); {got}. "
              f"Example: svdgrad study hybrid --quick", file=sys.stderr)
        return 2
    name, rest = argv[0], argv[1:]
    if name == "hybrid":
        from .study import default_out, run
    else:
        from .landscape import default_out, run
    ns = study_parser(name).parse_args(rest)
    extra = {"dataset": ns.dataset} if name == "hybrid" else {}
    out = ns.out or default_out(ns.quick, **extra)
    if name == "hybrid":
        extra["protocols"] = ns.protocols
    try:
        out = run(quick=ns.quick, out=out, seeds=ns.seeds, jobs=ns.jobs, report_only=ns.report_only,
                  resume=ns.resume, backend=ns.backend, device=ns.device, max_minutes=ns.max_minutes, **extra)
    except SvdgradError as exc:
        print(f"svdgrad study: error: {exc}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, WorkerLost) as exc:
        args = [a for a in rest if a not in ("--report-only", "--resume")]
        if ns.out is None:
            args += ["--out", out]
        command = shlex.join(["svdgrad", "study", name] + args + ["--resume"])
        if isinstance(exc, WorkerLost):
            print(f"svdgrad study: error: {exc}; resume with: {command}", file=sys.stderr, flush=True)
            return 1
        return _interrupted("study", command, "finished runs are kept and unfinished ones resume from their last epoch")
    print(f"wrote {out}")
    return 0


def main(command: str, argv: list[str]) -> int:
    if command == "train":
        return run_train(list(argv))
    if command == "study":
        return run_study(list(argv))
    print(f"svdgrad: unknown command {command!r} for svdgrad.train.cli; expected train or study.", file=sys.stderr)
    return 2
