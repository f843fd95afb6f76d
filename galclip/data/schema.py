"""Column names of the galclip survey format (Multimodal-Universe compatible).

One row is one galaxy. Either modality may be absent; ``has_image`` / ``has_spectrum``
say which are present so that missing data is explicit rather than a zero array.

Per-row datasets in each HDF5 shard::

    object_id        str            survey identifier (kept as text: SDSS objid, DESI TARGETID, IAU name)
    ra, dec          float64 deg    NaN when unknown
    z                float32        redshift, NaN when unknown
    has_image        bool
    image_array      float32 (B,H,W) flux per pixel (simulations: nanomaggies; JPEG: 0..1)
    image_ivar       float32 (B,H,W) inverse variance; 0 = masked pixel
    image_scale      float32        arcsec/pixel (NaN when unknown)
    image_psf_fwhm   float32 (B,)   arcsec (NaN when unknown)
    has_spectrum     bool
    spectrum_flux    float32 (L,)   1e-17 erg/s/cm^2/Å on the dataset grid
    spectrum_ivar    float32 (L,)   0 = masked pixel
    spectrum_mask    bool (L,)      True = bad pixel
    <label columns>  numeric (N,)   e.g. merger, merger_stage, and physical parameters
    tabular/<name>   float32 (N,)   catalogue measurements (NaN = missing)

Per-shard (not per-row) datasets: ``spectrum_lambda`` float64 (L,) Å observed frame and the
``image_band`` attribute (list of band names). All shards of one dataset share them.
"""
from __future__ import annotations

OBJECT_ID = "object_id"
RA = "ra"
DEC = "dec"
Z = "z"
HAS_IMAGE = "has_image"
IMAGE = "image_array"
IMAGE_IVAR = "image_ivar"
IMAGE_SCALE = "image_scale"
IMAGE_PSF = "image_psf_fwhm"
IMAGE_BAND = "image_band"
HAS_SPECTRUM = "has_spectrum"
SPEC_FLUX = "spectrum_flux"
SPEC_IVAR = "spectrum_ivar"
SPEC_MASK = "spectrum_mask"
SPEC_LAMBDA = "spectrum_lambda"
TABULAR_GROUP = "tabular"

CORE_COLUMNS = (
    OBJECT_ID, RA, DEC, Z, HAS_IMAGE, IMAGE, IMAGE_IVAR, IMAGE_SCALE, IMAGE_PSF,
    HAS_SPECTRUM, SPEC_FLUX, SPEC_IVAR, SPEC_MASK,
)

#: Merger stages of the simulator and their binary merger label.
MERGER_STAGES = ("isolated", "projected_pair", "major_premerger", "minor_merger", "post_merger")
MERGER_STAGE_IS_MERGER = (0, 0, 1, 1, 1)

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1
