"""``medseg nnunet train|predict|trainers|trainer-path``: medseg's IFE and CWCD trainers run by nnU-Net v2.

Needs the optional extra (``pip install 'medseg[nnunet]'``) and nnU-Net's folder variables ``nnUNet_raw``,
``nnUNet_preprocessed``, ``nnUNet_results`` (``docs/nnunet.md``).
"""
from __future__ import annotations

import argparse

from medseg.cli import add_command


def register(sub: argparse._SubParsersAction) -> None:
    top = add_command(sub, "nnunet", "Train and predict with medseg's IFE / CWCD trainers inside nnU-Net v2.",
                      "medseg nnunet train 4 2d 0 --trainer nnUNetTrainerIFECurvature")
    cmds = top.add_subparsers(dest="nnunet_command", metavar="SUBCOMMAND")
    top.set_defaults(func=lambda args: top.print_help() or 2)

    tr = add_command(cmds, "train", "nnU-Net training (as nnUNetv2_train) with one of medseg's trainers.",
                     "medseg nnunet train Dataset004_Hippocampus 2d 0 --trainer nnUNetTrainerIFECurvature")
    tr.add_argument("dataset", help="dataset id or name (DatasetXXX_Name), planned and preprocessed")
    tr.add_argument("configuration", help="nnU-Net configuration, e.g. 2d or 3d_fullres")
    tr.add_argument("fold", help="fold 0-4 or 'all'")
    tr.add_argument("--trainer", required=True, help="trainer name (medseg nnunet trainers lists medseg's; any "
                                                     "nnU-Net trainer name works too)")
    tr.add_argument("--plans", default="nnUNetPlans", help="plans identifier (default nnUNetPlans)")
    tr.add_argument("--device", default="auto", help="auto (cuda if available), cuda or cpu")
    tr.add_argument("--continue", dest="continue_training", action="store_true",
                    help="continue from the latest checkpoint of this fold")
    tr.add_argument("--no-val", dest="validate", action="store_false",
                    help="skip nnU-Net's final validation (prediction of the fold's validation cases)")
    tr.add_argument("--pretrained", metavar="CHECKPOINT", help="initialise from these network weights")
    tr.add_argument("--epochs", type=int, help="override num_epochs (e.g. 1 for a smoke run)")
    tr.add_argument("--iterations", type=int, help="override num_iterations_per_epoch")
    tr.set_defaults(func=run_train)

    pr = add_command(cmds, "predict", "nnU-Net prediction (as nnUNetv2_predict) with a model trained by a "
                                      "medseg trainer.",
                     "medseg nnunet predict -i imagesTs -o pred 4 2d --trainer nnUNetTrainerIFECurvature -f 0")
    pr.add_argument("dataset", help="dataset id or name")
    pr.add_argument("configuration", help="nnU-Net configuration, e.g. 2d")
    pr.add_argument("-i", "--input", required=True, help="folder of raw images (CASE_0000.ext)")
    pr.add_argument("-o", "--output", required=True, help="output folder (existing predictions are kept "
                                                           "unless --overwrite)")
    pr.add_argument("--trainer", required=True, help="trainer name used for training")
    pr.add_argument("-f", "--folds", nargs="+", help="folds to ensemble (default: all trained folds)")
    pr.add_argument("--plans", default="nnUNetPlans")
    pr.add_argument("--checkpoint", default="checkpoint_final.pth")
    pr.add_argument("--device", default="auto")
    pr.add_argument("--overwrite", action="store_true", help="replace existing predictions")
    pr.add_argument("--save-probabilities", action="store_true")
    pr.add_argument("--no-mirroring", dest="mirroring", action="store_false", help="disable mirroring TTA")
    pr.add_argument("--processes", type=int, default=3,
                    help="worker processes for pre-processing and export (0: all in this process)")
    pr.set_defaults(func=run_predict)

    ls = add_command(cmds, "trainers", "List medseg's nnU-Net trainers.", "medseg nnunet trainers")
    ls.set_defaults(func=run_trainers)
    tp = add_command(cmds, "trainer-path", "Print the folder for nnU-Net's nnUNet_extTrainer variable, so that "
                                           "nnUNetv2_train -tr <medseg trainer> works.",
                     'export nnUNet_extTrainer="$(medseg nnunet trainer-path)"')
    tp.set_defaults(func=run_trainer_path)


def run_train(args: argparse.Namespace) -> int:
    from medseg.integrations.nnunet.run import train

    settings = {k: v for k, v in (("num_epochs", args.epochs), ("num_iterations_per_epoch", args.iterations))
                if v is not None}
    out = train(args.dataset, args.configuration, args.fold, args.trainer, args.plans, args.device,
                args.continue_training, args.validate, args.pretrained, settings)
    print(f"trained: {out}")
    return 0


def run_predict(args: argparse.Namespace) -> int:
    from medseg.integrations.nnunet.run import predict

    out = predict(args.input, args.output, args.dataset, args.configuration, args.trainer, args.folds, args.plans,
                  args.checkpoint, args.device, args.overwrite, args.save_probabilities, mirroring=args.mirroring,
                  processes=args.processes)
    print(f"predictions: {out}")
    return 0


def run_trainers(args: argparse.Namespace) -> int:
    from medseg.integrations.nnunet.trainers import TRAINERS

    width = max(map(len, TRAINERS))
    for name, text in TRAINERS.items():
        print(f"{name:<{width}}  {text}")
    return 0


def run_trainer_path(args: argparse.Namespace) -> int:
    from medseg.integrations.nnunet.run import ext_trainer_dir

    print(ext_trainer_dir())
    return 0
