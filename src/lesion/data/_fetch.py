"""Download the four files of a MNIST-family dataset from the official mirrors, MD5-checked."""

from __future__ import annotations

import shutil
import urllib.request
from pathlib import Path

from lesion._errors import LesionError, closest
from lesion.data._idx import CHECKSUMS, FILES, md5

MIRRORS = {
    "mnist": "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "fashion-mnist": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "kmnist": "http://codh.rois.ac.jp/kmnist/dataset/kmnist/",
}


def fetch(name: str, data_dir: str | Path, timeout: float = 60.0) -> list[Path]:
    """Download ``name``'s four ``.gz`` files to ``<data_dir>/<name>/``.

    Files already there with the published MD5 are kept; others are (re)downloaded, and each
    download is checked against its MD5 before it replaces anything.

    Parameters
    ----------
    name : {"mnist", "fashion-mnist", "kmnist"}
    data_dir : path
    timeout : float
        Seconds to wait on the network per request.

    Returns
    -------
    list of Path
        The files downloaded (empty when all four were already present and valid).
    """
    if name not in MIRRORS:
        raise LesionError(
            f"name must be one of {tuple(MIRRORS)}, got {name!r}{closest(name, MIRRORS)}"
        )
    folder = Path(data_dir).expanduser() / name
    folder.mkdir(parents=True, exist_ok=True)
    downloaded = []
    for file in FILES:
        target = folder / file
        if target.is_file() and md5(target) == CHECKSUMS[name][file]:
            continue
        _download(MIRRORS[name] + file, target, CHECKSUMS[name][file], timeout)
        downloaded.append(target)
    return downloaded


def _download(url: str, target: Path, expected_md5: str, timeout: float) -> None:
    """Fetch ``url`` to ``target`` via a ``.part`` file, renamed into place once its MD5 matches."""
    part = target.with_name(target.name + ".part")
    by_hand = (
        f"Without a network, download {target.name} elsewhere (from {url}) and copy it to "
        f"{target} (MD5 {expected_md5})."
    )
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(part, "wb") as out:
            shutil.copyfileobj(response, out)
    except OSError as err:  # URLError, HTTPError and timeouts are all OSErrors
        part.unlink(missing_ok=True)
        raise LesionError(f"could not download {url}: {err}. {by_hand}") from err
    found = md5(part)
    if found != expected_md5:
        part.unlink()
        raise LesionError(f"{url} arrived with MD5 {found}, expected {expected_md5}. {by_hand}")
    part.replace(target)
