"""Autoencoders and generative models: conv_ae (plain and denoising), vae, dcgan, and the
image-translation GANs cyclegan, unit, pix2pix and pix2pixhd; importing this registers them."""

from cnnzoo.models.generative import (  # noqa: F401
    autoencoder,
    cyclegan,
    dcgan,
    pix2pix,
    pix2pixhd,
    unit,
    vae,
)
