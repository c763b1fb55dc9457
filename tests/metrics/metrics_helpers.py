"""PySODMetrics oracles shared by the metrics tests (HCE, and the per-image SOD / polyp map scores)."""
from __future__ import annotations

import warnings

import numpy as np
import py_sod_metrics as sod


def pysod_hce(pred: np.ndarray, gt: np.ndarray) -> float:
    m = sod.HumanCorrectionEffortMeasure()
    m.step(pred.astype(np.uint8) * 255, gt.astype(np.uint8) * 255)
    return float(m.hces[-1])


def pysod_meters() -> tuple:
    """Fresh ``(Fmeasure, Emeasure, Smeasure, WeightedFmeasure, MAE, FmeasureV2 dice/iou)``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        f = sod.Fmeasure()
    e, s, w, m = sod.Emeasure(), sod.Smeasure(), sod.WeightedFmeasure(), sod.MAE()
    v2 = sod.FmeasureV2({"dice": sod.DICEHandler(with_dynamic=True, with_adaptive=False),
                         "iou": sod.IOUHandler(with_dynamic=True, with_adaptive=False)})
    return f, e, s, w, m, v2


def pysod_step(meters: tuple, pm: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """Step every meter of :func:`pysod_meters` on one (map, boolean GT) and return that image's values."""
    f, e, s, w, m, v2 = meters
    gu = gt.astype(np.uint8) * 255
    for metric in meters:
        metric.step(pm, gu)
    return {"mae": m.maes[-1], "s_measure": s.sms[-1], "wf_measure": w.weighted_fms[-1],
            "f_measure_max": f.changeable_fms[-1].max(), "f_measure_mean": f.changeable_fms[-1].mean(),
            "f_measure_adp": f.adaptive_fms[-1], "e_measure_max": e.changeable_ems[-1].max(),
            "e_measure_mean": e.changeable_ems[-1].mean(), "e_measure_adp": e.adaptive_ems[-1],
            "polyp_mdice": v2._metric_handlers["dice"].dynamic_results[-1].mean(),
            "polyp_miou": v2._metric_handlers["iou"].dynamic_results[-1].mean()}
