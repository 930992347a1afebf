"""`python -m lightclf predict --ckpt CKPT --input PHOTO_OR_FOLDER ...`: top-k classes of images."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from lightclf.cli_args import ToolArgumentParser
from lightclf.errors import ConfigError
from lightclf.training.checkpoints import LoadedRun, load_run

__all__ = ["preprocess", "predict_paths", "main"]

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


def _expand(inputs: list[str]) -> list[Path]:
    paths = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            paths += sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.exists():
            paths.append(path)
        else:
            raise ConfigError(f"--input: {path} does not exist")
    if not paths:
        raise ConfigError(f"--input: no images found in {', '.join(inputs)}")
    return paths


def preprocess(image, run: LoadedRun) -> torch.Tensor:
    """PIL image -> the normalised C,H,W tensor the run's test set fed the network (its data
    module's preprocessing, stored in the checkpoint)."""
    return run.preprocessing(image)


@torch.inference_mode()
def predict_paths(run: LoadedRun, paths: list[Path], topk: int = 5, batch_size: int = 32) -> list[dict]:
    """Top-k class names and probabilities for each image file under ``paths`` (folders walked)."""
    from PIL import Image

    results, batch, batch_paths = [], [], []

    def flush():
        if not batch:
            return
        probs = run.module(torch.stack(batch)).softmax(-1)
        values, indices = probs.topk(min(topk, probs.shape[-1]), dim=-1)
        for path, vals, idxs in zip(batch_paths, values.tolist(), indices.tolist()):
            results.append({"path": str(path), "top": [(run.class_names[i], round(v, 4)) for v, i in zip(vals, idxs)]})
        batch.clear()
        batch_paths.clear()

    for path in paths:
        try:
            with Image.open(path) as image:
                batch.append(preprocess(image, run))
                batch_paths.append(path)
        except (OSError, ValueError, SyntaxError) as err:
            print(f"lightclf: warning: skipping unreadable image {path}: {err}", file=sys.stderr)
            continue
        if len(batch) == batch_size:
            flush()
    flush()
    return results


def main(argv: list[str] | None = None) -> None:
    """The command's entry point: parse ``argv`` and run it (one-line errors for bad input)."""
    parser = ToolArgumentParser(prog="lightclf predict", description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True, help="a lightclf checkpoint (runs/<project>/<id>/checkpoints/*.ckpt)")
    parser.add_argument("--input", nargs="+", required=True, help="image files and/or folders (searched recursively)")
    parser.add_argument("--topk", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--json", action="store_true", help="one JSON object per image")
    args = parser.parse_args(argv)
    if args.topk < 1 or args.batch_size < 1:
        parser.error(f"--topk and --batch-size must be >= 1, got {args.topk} and {args.batch_size}")
    run = load_run(args.ckpt)
    paths = _expand(args.input)
    results = predict_paths(run, paths, args.topk, args.batch_size)
    if not results:  # every input was skipped as unreadable (each named in a warning above)
        named = ", ".join(Path(p).name for p in paths[:3]) + (", ..." if len(paths) > 3 else "")
        raise ConfigError(f"--input: none of the {len(paths)} image(s) could be read ({named})")
    for result in results:
        if args.json:
            print(json.dumps(result))
        else:
            ranked = ", ".join(f"{name} {p:.1%}" for name, p in result["top"])
            print(f"{result['path']}: {ranked}")
    sys.stdout.flush()
