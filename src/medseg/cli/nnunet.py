"""``medseg nnunet convert|train|predict|trainers|trainer-path``: medseg's IFE and CWCD trainers run by nnU-Net v2.

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
    tr.add_argument("--iterations", type=int, help="override num_iterations_per_epoch (nnU-Net: 250)")
    tr.add_argument("--val-iterations", type=int, help="override num_val_iterations_per_epoch (nnU-Net: 50; only "
                                                       "for the per-epoch pseudo Dice and checkpoint_best)")
    tr.add_argument("--batch-size", type=int, help="replace the planned batch size (saved in the fold's plans.json)")
    tr.add_argument("--seed", type=int, help="seed Python, NumPy and torch before building the network (nnU-Net "
                                             "seeds nothing); with nnUNet_n_proc_DA=0 sampling and augmentation too")
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

    cv = add_command(cmds, "convert", "Convert a medseg 2-D folder (images/ + masks/) to nnU-Net v2's raw layout "
                                      "(DatasetXXX_Name: imagesTr, labelsTr, dataset.json; imagesTs with --split).",
                     "medseg nnunet convert data/kvasir-seg --dataset-id 501 --name KvasirSEG --split random --size 128")
    cv.add_argument("source", help="folder holding images/ and masks/ (paired by file stem)")
    cv.add_argument("--dataset-id", type=int, required=True, help="nnU-Net dataset id, 1..999")
    cv.add_argument("--name", required=True, help="dataset name (letters, digits, _ or -): Dataset<ID>_<Name>")
    cv.add_argument("--output", help="nnU-Net raw folder to write into (default: $nnUNet_raw)")
    cv.add_argument("--split", metavar="random|FILE", help="write medseg's train/val/test split: 'random' (seeded, "
                    "--val-fraction/--test-fraction/--seed) or a medseg split file (JSON/CSV); test cases go to "
                    "imagesTs/labelsTs, train/val to splits_final.json fold 0. Default: every case in imagesTr")
    cv.add_argument("--val-fraction", type=float, default=0.1, help="with --split random (default 0.1)")
    cv.add_argument("--test-fraction", type=float, default=0.1, help="with --split random (default 0.1)")
    cv.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    cv.add_argument("--size", type=int, nargs="+", metavar="N", help="resize to N x N (or H W): images bilinear, "
                                                                     "labels nearest")
    cv.add_argument("--overwrite", action="store_true", help="replace an existing Dataset<ID>_<Name> folder")
    cv.add_argument("--mask-threshold", type=float, help="binary masks: foreground where value > T (default: "
                                                         "medseg's rule: 0/1, 0/255 or JPEG-noisy 0/255)")
    cv.add_argument("--num-classes", type=int, default=1, help="K >= 2: masks are label maps 0..K-1 (default 1: "
                                                               "binary)")
    cv.add_argument("--label-names", nargs="+", help="names of labels 1.. in dataset.json (default foreground)")
    cv.add_argument("--separate-channels", action="store_true", help="RGB as three grey PNGs _0000/_0001/_0002 "
                    "(default: one RGB PNG _0000 declared as channels R, G, B, as nnU-Net's Dataset120 example)")
    cv.add_argument("--images-dir", default="images")
    cv.add_argument("--masks-dir", default="masks")
    cv.add_argument("--mask-suffix", default="", help="mask file stem = image stem + this suffix (e.g. _mask)")
    cv.set_defaults(func=run_convert)

    ls = add_command(cmds, "trainers", "List medseg's nnU-Net trainers.", "medseg nnunet trainers")
    ls.set_defaults(func=run_trainers)
    tp = add_command(cmds, "trainer-path", "Print the folder for nnU-Net's nnUNet_extTrainer variable, so that "
                                           "nnUNetv2_train -tr <medseg trainer> works.",
                     'export nnUNet_extTrainer="$(medseg nnunet trainer-path)"')
    tp.set_defaults(func=run_trainer_path)


def run_train(args: argparse.Namespace) -> int:
    from medseg.integrations.nnunet.run import train

    settings = {k: v for k, v in (("num_epochs", args.epochs), ("num_iterations_per_epoch", args.iterations),
                                  ("num_val_iterations_per_epoch", args.val_iterations)) if v is not None}
    out = train(args.dataset, args.configuration, args.fold, args.trainer, args.plans, args.device,
                args.continue_training, args.validate, args.pretrained, settings, args.seed,
                args.batch_size)
    print(f"trained: {out}")
    return 0


def run_predict(args: argparse.Namespace) -> int:
    from medseg.integrations.nnunet.run import predict

    out = predict(args.input, args.output, args.dataset, args.configuration, args.trainer, args.folds, args.plans,
                  args.checkpoint, args.device, args.overwrite, args.save_probabilities, mirroring=args.mirroring,
                  processes=args.processes)
    print(f"predictions: {out}")
    return 0


def _split_config(args: argparse.Namespace):
    from medseg.config import SplitConfig
    from medseg.integrations.nnunet.errors import NNUNetError

    if args.split is None:
        return None
    for option, value in (("--val-fraction", args.val_fraction), ("--test-fraction", args.test_fraction)):
        if not 0 <= value < 1:
            raise NNUNetError(f"{option} must be in [0, 1), got {value}")
    if args.split == "random":
        return SplitConfig(mode="random", val_fraction=args.val_fraction, test_fraction=args.test_fraction,
                           seed=args.seed)
    return SplitConfig(mode="file", file=args.split, val_fraction=args.val_fraction, seed=args.seed)


def run_convert(args: argparse.Namespace) -> int:
    from medseg.integrations.nnunet.convert import convert_folder
    from medseg.integrations.nnunet.errors import NNUNetError

    if args.size is not None and len(args.size) not in (1, 2):
        raise NNUNetError(f"--size takes N or H W, got {args.size}")
    size = None if args.size is None else (args.size * 2)[:2]
    out = convert_folder(args.source, args.dataset_id, args.name, args.output, _split_config(args), size,
                         args.overwrite, args.num_classes, args.mask_threshold, args.separate_channels,
                         args.label_names, args.images_dir, args.masks_dir, args.mask_suffix)
    counts = ", ".join(f"{k} {len(v)}" for k, v in out.parts.items() if v)
    print(f"dataset: {out.folder} ({counts}; {out.channels} channel(s))")
    for path in out.splits_files:
        print(f"split: {path}")
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
