"""Time `evaluate(k=1)` of the 2020 CNN's 1,216 single-unit lesions over the 10,000 Fashion-MNIST test images.

Run it with two source trees to compare them in one sitting (the machine's state is the same):

    for src in OLD/src src; do PYTHONPATH=$src python bench/cnn_sweep_time.py --label $src; done
"""

from __future__ import annotations

import argparse
import os
import time

import torch

import lesion
from lesion.data import load_dataset
from lesion.models import build_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", default="this tree")
    parser.add_argument("--data-dir", default=os.environ.get("LESION_DATA_DIR", "../shared/datasets"))
    args = parser.parse_args()
    torch.manual_seed(0)
    model = build_model("meyes2020-cnn").eval()
    split = load_dataset("fashion-mnist", args.data_dir, normalize="half", train=False).test
    lesions = list(lesion.single(model, "conv1;conv2;conv3;fc1;fc2"))
    start = time.perf_counter()
    count = sum(1 for _ in lesion.evaluate(model, split, lesions, k=1))
    print(f"{args.label}: {count} lesions x {len(split)} images in {time.perf_counter() - start:.1f} s", flush=True)


if __name__ == "__main__":
    main()
