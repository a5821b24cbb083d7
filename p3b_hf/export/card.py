"""The model-card section of an export (``p3b-hf push --with-onnx``): the files, their checks, accuracy, speed
and a runnable onnxruntime example, all read from ``export_report.json``."""

from __future__ import annotations

from typing import Any

from .files import FP32_NAME


def _batch_text(batch: Any) -> str:
    """How the export's batch axis reads in the card: any batch size, or the one static size it takes."""
    if batch == "dynamic":
        return "dynamic batch axis (any batch size)"
    if batch is None:
        return "batch axis not recorded"
    return f"static batch of {batch} (exported with --static-batch)"


def card_section(report: dict[str, Any], repo_id: str) -> list[str]:
    """Model-card lines for the ONNX files (``p3b-hf push --with-onnx``)."""
    files = report.get("files", {})
    v = report.get("verification", {})
    fp = v.get("fp32_vs_torch", {})
    lines = [
        "## ONNX (deployable artefact)",
        "",
        f"This repo also holds an ONNX export made with `p3b-hf export` (opset {report.get('opset')}, "
        f"input `pixel_values` {report.get('input', {}).get('shape')}, {_batch_text(report.get('batch'))}, "
        "output `logits`; residual gathers / "
        f"scatter-adds folded: `{report.get('fold')}`), verified in onnxruntime against the PyTorch model "
        "before it was written:",
        "",
        "| file | what | check |",
        "|---|---|---|",
    ]
    if "fp32" in files:
        lines.append(
            f"| `onnx/{files['fp32']['file']}` | fp32 | max abs logit diff vs PyTorch "
            f"{fp.get('max_abs_diff', float('nan')):.1e}, top-1 agreement "
            f"{100 * fp.get('top1_agreement', float('nan')):.1f} % ({v.get('inputs', 'n/a')}) |"
        )
    if "int8" in files:
        q = v.get("int8_vs_fp32", {})
        lines.append(
            f"| `onnx/{files['int8']['file']}` | int8 ({report.get('int8', {}).get('mode')}) | top-1 "
            f"agreement with fp32 {100 * q.get('top1_agreement', float('nan')):.1f} % |"
        )
    acc = report.get("accuracy")
    if acc:
        line = (
            f"\nTop-1 on {acc['eval_split']}: PyTorch {100 * acc['torch']:.2f} %, ONNX fp32 "
            f"{100 * acc['onnx_fp32']:.2f} %"
        )
        if "onnx_int8" in acc:
            line += f", ONNX int8 {100 * acc['onnx_int8']:.2f} % ({acc['int8_minus_fp32_points']:+.2f} points vs fp32)"
        lines.append(line + ".")
    sp = report.get("speed")
    lines.append("")
    if sp:
        ips = sp["images_per_s"]
        lines += [
            f"Speed (CPU, {sp['threads']} thread(s), batch {sp['batch_size']}, fp32, one run; dense = "
            f"{sp.get('dense_source') or 'the dense original'}):",
            "",
            "| | images/s | vs dense |",
            "|---|---|---|",
            f"| dense, PyTorch eager | {ips['dense/eager']:.1f} | 1.00x |",
            f"| this model, PyTorch eager | {ips['pruned/eager']:.1f} | {sp['eager_speed_vs_dense']:.2f}x |",
            f"| dense, deployable ({sp['backend']}) | {ips['dense/deploy']:.1f} | "
            f"{ips['dense/deploy'] / ips['dense/eager']:.2f}x |",
            f"| **this model, deployable ({sp['backend']})** | {ips['pruned/deploy']:.1f} | "
            f"**{sp['deploy_vs_dense_eager']:.2f}x** ({sp['deploy_speed_vs_dense']:.2f}x the dense deployable) |",
        ]
        if "pruned/ort-int8" in ips:
            lines.append(
                f"| this model, ONNX int8 | {ips['pruned/ort-int8']:.1f} | {sp['int8_vs_dense_eager']:.2f}x |"
            )
        lines.append("")
    else:
        lines += ["(Speed not measured for this export: `p3b-hf export --speed` adds it.)", ""]
    lines += [
        "```python",
        "import numpy as np, onnxruntime as ort",
        "from huggingface_hub import hf_hub_download",
        "from PIL import Image",
        "from transformers import AutoImageProcessor",
        f'path = hf_hub_download("{repo_id}", "onnx/{files.get("fp32", {}).get("file", FP32_NAME)}")',
        f'processor = AutoImageProcessor.from_pretrained("{repo_id}")',
        'session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])',
        'image = Image.open("cat.jpg").convert("RGB")',
        'pixels = processor(images=image, return_tensors="np")["pixel_values"].astype(np.float32)',
        'logits = session.run(None, {"pixel_values": pixels})[0]  # labels: config.json id2label',
        "```",
        "",
    ]
    return lines
