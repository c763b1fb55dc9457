"""Exported-model inference: onnxruntime (CPU) against PyTorch eager (CPU), same model, same input, per image,
for the UNet and CHNet, as ratios in one run.

Each model is exported with ``medseg.engine.export.export_model`` (which itself refuses an export whose logits
differ from PyTorch's by more than 1e-4); then both engines run the same batch-1 image, best of ``--repeats``
calls after a warm-up, with the same number of threads (``--threads``, default 2). Values are checked
independently of the exporter: onnxruntime's logits against PyTorch's, largest absolute difference, tolerance
1e-4 (recorded as ``1 + max|Δ|`` against 1 in ``benchmarks/_gate.py``, so the relative gate reads the
absolute difference); the script exits 1 when it is over (``MEDSEG_BENCH_INJECT=1e-3`` shows it red).

    python benchmarks/export_speed.py            # UNet base 32 at 256 px, CHNet (Res2Net-50) at 256 px
    python benchmarks/export_speed.py --quick    # 128 px, 3 repeats
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _gate import Gate  # noqa: E402

TOL = 1e-4
MODELS = {"unet": {"base": 32, "depth": 4}, "chnet": {}}


def best_of(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def measure(name: str, kwargs: dict, size: int, repeats: int, threads: int, gate: Gate) -> dict:
    import numpy as np
    import onnxruntime as ort
    import torch

    from medseg.config import build_config
    from medseg.engine.export import LogitsOnly, export_model

    torch.manual_seed(0)
    cfg = build_config({"name": f"bench-{name}", "model": {"name": name, "kwargs": kwargs},
                        "data": {"kind": "synthetic2d", "image_size": [size, size], "in_channels": 3}})
    from medseg.engine.trainer import build_model

    model = build_model(cfg).eval()
    x = torch.randn(1, 3, size, size)
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        result = export_model(model, cfg, "onnx", Path(tmp) / "m", example=x)
        export_s = time.perf_counter() - t
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        session = ort.InferenceSession(str(result.file), opts, providers=["CPUExecutionProvider"])
        net = LogitsOnly(model).eval()
        feed = {"image": x.numpy()}
        with torch.no_grad():
            ref = net(x).numpy()
            torch_s = best_of(lambda: net(x), repeats)
        ort_out = session.run(None, feed)[0]
        ort_s = best_of(lambda: session.run(None, feed), repeats)
    diff = float(np.max(np.abs(ort_out.astype(np.float64) - ref)))
    gate.add(f"{name}: onnxruntime vs PyTorch logits (1 + max|diff|)", 1.0 + diff, 1.0, TOL)
    return {"model": name, "size": size, "params": sum(p.numel() for p in model.parameters()),
            "export_s": round(export_s, 1), "torch_ms": round(torch_s * 1e3, 2), "ort_ms": round(ort_s * 1e3, 2),
            "ort_over_torch": round(ort_s / torch_s, 3), "max_abs_diff": diff,
            "dynamic_axes": result.dynamic_axes["image"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="128 px, 3 repeats")
    args = parser.parse_args()
    if args.quick:
        args.size, args.repeats = 128, 3
    import torch

    torch.set_num_threads(args.threads)
    gate = Gate()
    rows = [measure(name, kw, args.size, args.repeats, args.threads, gate) for name, kw in MODELS.items()]
    print(f"{'model':8} {'px':>5} {'params':>11} {'PyTorch ms':>11} {'ORT ms':>9} {'ORT/PyTorch':>12} {'max|diff|':>10}")
    for r in rows:
        print(f"{r['model']:8} {r['size']:>5} {r['params']:>11,} {r['torch_ms']:>11} {r['ort_ms']:>9} "
              f"{r['ort_over_torch']:>12} {r['max_abs_diff']:>10.2g}")
    print(json.dumps({"threads": args.threads, "repeats": args.repeats, "rows": rows, "gate": gate.summary()}))
    return gate.exit_code()


if __name__ == "__main__":
    sys.exit(main())
