"""``p3b-hf export``'s options: one dataclass, from which the flags are generated (:mod:`p3b_hf.options`)."""

from __future__ import annotations

from dataclasses import dataclass

from ..options import option
from .deploy import FOLDS, GRAPHS
from .verify import DEFAULT_TOLERANCE


@dataclass
class ExportOptions:
    """``p3b-hf export``'s options (the flags are generated from these fields, :mod:`p3b_hf.options`)."""

    model: str = option(help="model dir written by `p3b-hf prune` / `p3b-hf finetune`")
    format: str = option("onnx", choices=("onnx",), help="export format")
    quantize: str | None = option(
        None,
        choices=("int8",),
        help="also write onnx/model_int8.onnx: dynamic int8, or static with --calibration-dataset",
    )
    calibration_dataset: str | None = option(
        None,
        help="static int8: calibrate activation ranges on images of this "
        "data set's train split (implies --quantize int8)",
    )
    calibration_samples: int = option(128, help="calibration images")
    dataset: str | None = option(
        None,
        help="verify on its eval images and report top-1 of PyTorch / ONNX fp32 / int8 on the eval split",
    )
    image_column: str | None = option(
        None, help="image column of --dataset / --calibration-dataset (default: detected)"
    )
    label_column: str | None = option(None, help="label column (default: detected)")
    train_split: str = option("train", help="split --calibration-dataset draws from")
    eval_split: str | None = option(None, help="split --dataset is scored on (default: validation/test)")
    max_eval_samples: int | None = option(None, help="evaluate on at most this many images")
    opset: int | None = option(None, help="ONNX opset (default 20; 23 adds the Attention op)")
    static_batch: int | None = option(
        None,
        help="export a static batch of N images (default: a dynamic batch axis, as optimum exports; a "
        "static graph may run slightly faster at that one batch size)",
    )
    fold: str = option(
        "all",
        choices=FOLDS,
        help="fold P3B's residual gathers (reads) and scatter-adds (all) into "
        "zero columns/rows of the adjacent Linears (exact) or keep them as "
        "Gather/ScatterND ops (none)",
    )
    graph: str = option(
        "deploy",
        choices=GRAPHS,
        help="deploy: the optimize_for_inference module (ViT/DeiT; BEiT "
        "and DINOv2 always export their HF module); hf: the HF module",
    )
    tolerance: float = option(
        DEFAULT_TOLERANCE, help="largest allowed max |logit(ONNX fp32) - logit(PyTorch)|"
    )
    verify_samples: int = option(16, help="images in the verification batch")
    int8_min_agreement: float | None = option(
        None,
        help="refuse the export if int8 and fp32 agree on fewer top-1 "
        "predictions of the verification batch (fraction, e.g. "
        "0.9; default: report only)",
    )
    speed: bool = option(
        False,
        help="also time (CPU, batch 1) the export against the dense original's export and "
        "PyTorch eager; the result goes into export_report.json and the model card",
    )
    speed_repeats: int = option(5, help="timed repeats of --speed")
    dense_model: str | None = option(
        None,
        help="--speed: the dense original to time against (dir or Hub id; 'random': random weights of its "
        "dense shape, ViT/DeiT; default: config.json base_model_name_or_path, refused if it cannot be loaded)",
    )
    threads: int | None = option(None, help="torch and onnxruntime CPU threads")
    output_dir: str | None = option(None, help="where the ONNX files go (default MODEL/onnx)")
    seed: int = option(0, help="seed of the verification / calibration samples")
