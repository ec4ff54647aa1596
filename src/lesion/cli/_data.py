"""`lesion data check|fetch`: dataset files on disk."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lesion.cli._app import data_app
from lesion.cli._common import DataDirOpt, console


@data_app.command("fetch")
def data_fetch(
    name: Annotated[str, typer.Argument(help="mnist, fashion-mnist or kmnist.")],
    data_dir: Annotated[Path, typer.Option("--data-dir", help="Where to put the files (DIR/NAME/).")],
) -> None:
    """Download a dataset's raw IDX files from the official mirror and check their MD5 (needs a network)."""
    from lesion.data import fetch

    got = fetch(name, data_dir)
    console.print(f"{len(got)} file(s) downloaded" if got else "all files already present and verified")


@data_app.command("check")
def data_check(
    name: Annotated[str, typer.Argument(help="digits, mnist, fashion-mnist, kmnist, cifar10.")],
    data_dir: DataDirOpt = None,
) -> None:
    """Load a dataset (checking every file) and print its splits and classes."""
    from lesion.data import load_dataset

    ds = load_dataset(name, data_dir)
    for split in (ds.test, ds.train):
        if split is not None:
            console.print(f"{split.name}: {len(split)} samples, input {tuple(split.input_shape)}, {split.n_classes} classes")
    console.print("classes: " + ", ".join(ds.class_names))
