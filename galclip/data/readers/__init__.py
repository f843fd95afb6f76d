"""Readers of real survey products; each raises :class:`~galclip.errors.InputFileError` on bad input."""
from galclip.data.readers.catalogs import Catalog, read_catalog
from galclip.data.readers.images import ImageRecord, read_color_image, read_fits_bands, read_fits_image, read_image
from galclip.data.readers.spectra import SpectrumRecord, read_spectra, read_spectrum_file

__all__ = [
    "Catalog", "read_catalog", "ImageRecord", "read_image", "read_color_image", "read_fits_image",
    "read_fits_bands", "SpectrumRecord", "read_spectra", "read_spectrum_file",
]
