"""``medseg profile MODEL --input 3x352x352``: parameters (encoder/head/total), FLOPs, latency, peak memory."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from medseg.cli import add_command


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "profile", "Parameters, FLOPs, latency and peak memory of a model at one input size.",
                    "medseg profile chnet --input 3x352x352 --set head=fcn32s")
    p.add_argument("model", help="registered model name (see `medseg models`) or a run config YAML")
    p.add_argument("--input", default="3x352x352", help="CxHxW (or CxDxHxW) of one sample (default 3x352x352)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="model keyword (e.g. head=fcn32s), or a dotted config key when MODEL is a YAML file")
    p.add_argument("--batch", type=int, default=1, help="batch size (default 1)")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1 ...")
    p.add_argument("--train", action="store_true", help="profile forward + backward in train mode")
    p.add_argument("--warmup", type=int, default=2, help="untimed passes before timing (default 2)")
    p.add_argument("--repeats", type=int, default=5, help="timed passes; the median is reported (default 5)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def build_model_from_args(model: str, overrides: list[str]):  # -> (name, nn.Module)
    """A model from a registry name plus ``k=v`` keywords, or from a config file's ``model`` section."""
    from medseg.config import ConfigError, load_config, parse_value
    from medseg.models import create_model

    if model.endswith((".yaml", ".yml")) or Path(model).is_file():
        cfg = load_config(model, overrides)
        return _label(cfg.model.name, cfg.model.kwargs), create_model(cfg.model.name, **cfg.model.kwargs)
    kwargs = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got '{item}'")
        key, value = item.split("=", 1)
        kwargs[key.strip()] = parse_value(value)
    try:
        net = create_model(model, **kwargs)
    except (KeyError, TypeError, ValueError) as err:
        raise ConfigError(str(err)) from None
    return _label(model, kwargs), net


def _label(name: str, kwargs: dict) -> str:
    """``chnet(head=fcn32s)``: the model name and the keywords that shape it."""
    label = ",".join(f"{k}={v}" for k, v in kwargs.items() if k != "pretrained")
    return f"{name}({label})" if label else name


def run(args: argparse.Namespace) -> int:
    import torch

    from medseg.engine.profile import format_profiles, parse_input_shape, profile_model

    from medseg.config import ConfigError

    try:
        shape = parse_input_shape(args.input)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    name, model = build_model_from_args(args.model, args.overrides)
    result = profile_model(model, shape, name=name, batch=args.batch, device=device, train=args.train,
                           warmup=args.warmup, repeats=args.repeats)
    if args.json:
        print(json.dumps(result.as_dict(), indent=2))
    else:
        print(format_profiles([result]))
        print(f"FLOPs by torch.utils.flop_counter (1 multiply-add = 2 FLOPs; thop-style 'FLOPs' = GMACs); "
              f"memory: {result.memory_method}")
    return 0
