"""``medseg train CONFIG``: train a model from a YAML config (also resume and DDP)."""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from medseg.cli import add_command
from medseg.cli._options import add_override_options, overrides_of


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "train", "Train a model from a YAML config (validated before anything runs).",
                    "medseg train src/medseg/recipes/cpu/ife_kvasir_unet.yaml --set train.epochs=5 --set optim.lr=3e-4\n"
                    "  medseg train --resume runs/demo            # continue an interrupted run\n"
                    "  medseg train --resume runs/demo --from epoch_010   # continue from an earlier checkpoint\n"
                    "  medseg train cfg.yaml --nproc 2            # DDP via torchrun (gloo on CPU, NCCL on CUDA)\n"
                    "  torchrun --nnodes 2 --nproc-per-node 8 --rdzv-endpoint HOST:29500 -m medseg train cfg.yaml")
    p.add_argument("config", nargs="?", help="YAML config (optional with --resume: the run's own config)")
    add_override_options(p)
    p.add_argument("--output", help="run folder (default: output_dir/name from the config)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from checkpoints/last.pt")
    p.add_argument("--from", dest="resume_from", metavar="CHECKPOINT",
                   help="with --resume: continue from another checkpoint of the run, 'best' or 'epoch_NNN' "
                        "(checkpoints/epoch_NNN.pt); the later checkpoints are moved to "
                        "checkpoints/superseded-<time>/, not deleted")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run in the folder")
    p.add_argument("--force", action="store_true", help="resume even if the config changed (differences printed)")
    p.add_argument("--nproc", type=int, default=None, help="launch N processes with torchrun (DDP)")
    p.set_defaults(func=run_train)



def launch_torchrun(args: argparse.Namespace, argv: list[str]) -> int:
    """Re-launch this command under ``torch.distributed.run`` with ``--nproc`` removed."""
    rest, skip = [], False
    for i, a in enumerate(argv):
        if skip:
            skip = False
            continue
        if a == "--nproc":
            skip = True
            continue
        if a.startswith("--nproc="):
            continue
        rest.append(a)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={args.nproc}",
           "-m", "medseg", *rest]
    print("launching:", " ".join(cmd), flush=True)
    return subprocess.call(cmd)


def run_train(args: argparse.Namespace) -> int:
    from medseg.config import load_config
    from medseg.engine.trainer import train_run

    if args.nproc and args.nproc > 1:
        return launch_torchrun(args, sys.argv[1:])
    config = args.config
    run_dir = Path(args.output) if args.output else None
    if args.resume_from and not args.resume:
        from medseg.config import ConfigError

        raise ConfigError(f"--from {args.resume_from} needs --resume RUN_DIR (the run whose checkpoint to use)")
    if args.resume:
        run_dir = Path(args.resume)
        if config is None:
            config = run_dir / "config.yaml"
            if not config.is_file():
                from medseg.errors import CheckpointError

                raise CheckpointError(f"--resume: {run_dir} holds no run (no config.yaml)")
    if config is None:
        print("error: give a CONFIG file (or --resume RUN_DIR)", file=sys.stderr)
        return 2
    cfg = load_config(config, overrides_of(args))
    result = train_run(cfg, run_dir, resume=bool(args.resume), overwrite=args.overwrite, force=args.force,
                       resume_from=args.resume_from)
    if int(__import__("os").environ.get("RANK", 0)) == 0:
        print(json.dumps(result, indent=2))
    return 0 if result["status"] in ("finished", "paused") else 3
