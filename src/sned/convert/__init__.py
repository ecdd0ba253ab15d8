"""Bring diffusers models into sned: :mod:`.unet2d` converts a ``UNet2DModel`` (DDPM / ADM
family) into an equivalent static :class:`~sned.models.unet.VideoUNet` (``sned import``)."""

from .unet2d import UnmappableError, config_from_unet2d, convert_unet2d, import_unet2d

__all__ = ["UnmappableError", "config_from_unet2d", "convert_unet2d", "import_unet2d"]
