"""`cnnzoo sample` and `cnnzoo translate`."""

from __future__ import annotations

from typing import Annotated

import typer

from cnnzoo.cli.common import (
    app,
    clear_errors,
    console,
)


@app.command()
@clear_errors
def sample(
    run: Annotated[str, typer.Argument(help="a VAE or GAN run directory")],
    n: Annotated[int, typer.Option("-n", help="number of images")] = 64,
    out: Annotated[str, typer.Option(help="the PNG grid written")] = "samples.png",
    interpolate: Annotated[
        bool, typer.Option(help="rows walking the latent space between two codes")
    ] = False,
    steps: Annotated[int, typer.Option(help="interpolation: images per row")] = 10,
    label: Annotated[int | None, typer.Option(help="conditional GAN: the class")] = None,
    seed: int = 0,
    overwrite: bool = False,
) -> None:
    """New images from a VAE or GAN run, as a PNG grid."""
    from cnnzoo.workflows.sample import sample as run_sample

    path = run_sample(run, out, n=n, seed=seed, interpolate=interpolate, steps=steps,
                      label=label, overwrite=overwrite)  # fmt: skip
    console.print(f"wrote {path}")


@app.command()
@clear_errors
def translate(
    run: Annotated[str, typer.Argument(help="an image-translation run (cyclegan, pix2pix...)")],
    images: Annotated[list[str], typer.Argument(help="image files")],
    out: Annotated[str, typer.Option(help="output PNG (one image) or folder")] = "translated",
    direction: Annotated[str, typer.Option(help="AB or BA (unpaired models)")] = "AB",
    overwrite: bool = False,
) -> None:
    """Translate images from domain A to B (or B to A) with a trained translation run."""
    from cnnzoo.workflows.sample import translate as run_translate

    for path in run_translate(run, images, out, direction=direction, overwrite=overwrite):
        console.print(f"wrote {path}")
