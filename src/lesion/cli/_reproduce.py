"""`lesion reproduce NAME`: the papers' studies, each from one command defined beside its study."""

from __future__ import annotations

from lesion.cli._app import reproduce_app
from lesion.studies import cli_meyes2019_mlp, cli_meyes2019_vgg, cli_meyes2020_cnn

reproduce_app.command("meyes2019-mlp")(cli_meyes2019_mlp.command)
reproduce_app.command("meyes2019-vgg")(cli_meyes2019_vgg.command)
reproduce_app.command("meyes2020-cnn")(cli_meyes2020_cnn.command)
