"""Hypothesis strategies that build hostile survey files, and the oracle that judges a reader.

Shared by the fast test subset (tests/reliability/test_fuzz_readers.py) and the ≥10,000-case
benchmark (benchmarks/bench_fuzz.py). Each case is a file written to disk: a structurally
plausible FITS/JPEG/CSV/YAML product built from random parameters (NaN/inf, zero-length
and mismatched arrays, wrong dtypes, missing columns, swapped HDUs, absurd header sizes),
optionally truncated or with flipped bytes. The oracle: a reader returns sane arrays or
raises ``InputFileError`` whose message is one line naming the file — nothing else.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Callable

import numpy as np
from hypothesis import strategies as st

from galclip.errors import GalclipError, InputFileError

DTYPES = ("f4", "f8", "i2", "i4", "i8", "u1", ">f4")


@st.composite
def arrays(draw: Any, shape: tuple[int, ...]) -> np.ndarray:
    """A numeric array of ``shape`` in a random dtype with NaN/inf/huge values sprinkled in."""
    dtype = draw(st.sampled_from(DTYPES))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    a = rng.normal(draw(st.sampled_from([0.0, 1.0, 1e-20, 1e20])), 1.0, size=shape)
    poison = draw(st.sampled_from(["none", "nan", "inf", "allnan", "zero"]))
    if a.size and poison == "nan":
        a.flat[rng.integers(0, a.size, max(1, a.size // 7))] = np.nan
    elif a.size and poison == "inf":
        a.flat[rng.integers(0, a.size, max(1, a.size // 7))] = np.inf
    elif poison == "allnan":
        a[...] = np.nan
    elif poison == "zero":
        a[...] = 0
    if dtype in ("i2", "i4", "i8", "u1"):
        a = np.nan_to_num(a, nan=0, posinf=0, neginf=0).clip(-1000, 1000)
    return a.astype(dtype)


def _n(draw: Any) -> int:
    return draw(st.sampled_from([0, 1, 3, 60, 200]))


def _corrupt(draw: Any, data: bytes) -> bytes:
    how = draw(st.sampled_from(["keep", "keep", "truncate", "flip", "empty", "garbage"]))
    if how == "truncate" and data:
        return data[: draw(st.integers(0, len(data) - 1))]
    if how == "flip" and data:
        b = bytearray(data)
        for _ in range(draw(st.integers(1, 8))):
            i = draw(st.integers(0, len(b) - 1))
            b[i] = draw(st.integers(0, 255))
        return bytes(b)
    if how == "empty":
        return b""
    if how == "garbage":
        return draw(st.binary(min_size=1, max_size=4000))
    return data


def _fits_bytes(hdus: list[Any]) -> bytes:
    from astropy.io import fits

    buf = io.BytesIO()
    fits.HDUList(hdus).writeto(buf, output_verify="silentfix")
    return buf.getvalue()


@st.composite
def sdss_spec_file(draw: Any) -> tuple[str, bytes]:
    from astropy.io import fits

    n = _n(draw)
    cols = {"flux": draw(arrays((n,))), "loglam": np.linspace(3.58, 3.96, n).astype(draw(st.sampled_from(["f4", "f8"]))),
            "ivar": draw(arrays((n,))), "and_mask": np.zeros(n, "i4")}
    if draw(st.booleans()):
        cols["ivar"] = draw(arrays((max(0, n - draw(st.integers(0, 3))),)))  # length mismatch
    drop = draw(st.sampled_from([None, "flux", "loglam", "ivar", "and_mask"]))
    table_cols = []
    for name, arr in cols.items():
        if name == drop:
            continue
        fmt = {"f4": "E", "f8": "D", "i2": "I", "i4": "J", "i8": "K", "u1": "B"}[arr.dtype.str[1:]]
        table_cols.append(fits.Column(name=name, format=fmt, array=arr))
    hdus: list[Any] = [fits.PrimaryHDU()]
    if table_cols and draw(st.booleans()):
        hdus.append(fits.BinTableHDU.from_columns(table_cols))
    else:
        hdus.append(fits.ImageHDU(draw(arrays((3, 3)))))  # wrong HDU type
    if draw(st.booleans()):
        info = fits.BinTableHDU.from_columns([
            fits.Column(name="Z", format="E", array=draw(arrays((1,))).astype("f4")),
            fits.Column(name="PLUG_RA", format="D", array=np.array([draw(st.floats(-1e3, 1e3))])),
            fits.Column(name="PLUG_DEC", format="D", array=np.array([draw(st.floats(-1e3, 1e3))]))])
        hdus.append(info)
    return "spec-0001-51000-0001.fits", _corrupt(draw, _fits_bytes(hdus))


@st.composite
def desi_file(draw: Any) -> tuple[str, bytes]:
    from astropy.io import fits

    nobj, n = draw(st.sampled_from([0, 1, 3])), _n(draw)
    hdus: list[Any] = [fits.PrimaryHDU()]
    fm = fits.BinTableHDU.from_columns([
        fits.Column(name="TARGETID", format="K", array=np.arange(nobj)),
        fits.Column(name="TARGET_RA", format="D", array=draw(arrays((nobj,))).astype("f8")),
        fits.Column(name="TARGET_DEC", format="D", array=draw(arrays((nobj,))).astype("f8")),
        fits.Column(name="OBJTYPE", format="3A", array=np.array(["TGT"] * nobj))], name="FIBERMAP")
    if draw(st.booleans()):
        hdus.append(fm)
    for arm, lo in (("B", 3600), ("R", 5700), ("Z", 7500)):
        if draw(st.integers(0, 5)) == 0:
            continue
        hdus.append(fits.ImageHDU(np.linspace(lo, lo + 2200, n), name=f"{arm}_WAVELENGTH"))
        m = draw(st.integers(0, 2))
        hdus.append(fits.ImageHDU(draw(arrays((nobj, n + m))), name=f"{arm}_FLUX"))
        hdus.append(fits.ImageHDU(draw(arrays((nobj, n))), name=f"{arm}_IVAR"))
        if draw(st.booleans()):
            hdus.append(fits.ImageHDU(np.zeros((nobj, n), "i4"), name=f"{arm}_MASK"))
    return "coadd-1-1-thru20210419.fits", _corrupt(draw, _fits_bytes(hdus))


@st.composite
def spplate_file(draw: Any) -> tuple[str, bytes]:
    from astropy.io import fits

    nfib, n = draw(st.sampled_from([0, 1, 4])), _n(draw)
    prim = fits.PrimaryHDU(draw(arrays((nfib, n))))
    if draw(st.booleans()):
        prim.header["COEFF0"] = draw(st.sampled_from([3.5, 3.58, -10.0, 1e9, 0.0]))
    if draw(st.booleans()):
        prim.header["COEFF1"] = draw(st.sampled_from([1e-4, 0.0, -1e-4, 1e3]))
    prim.header["PLATEID"], prim.header["MJD"] = 4055, 55359
    hdus = [prim]
    if draw(st.booleans()):
        hdus.append(fits.ImageHDU(draw(arrays((nfib, n + draw(st.integers(0, 2)))))))
    return "spPlate-4055-55359.fits", _corrupt(draw, _fits_bytes(hdus))


@st.composite
def fits_image_file(draw: Any) -> tuple[str, bytes]:
    from astropy.io import fits

    shape = draw(st.sampled_from([(0,), (5,), (16, 16), (3, 16, 16), (1, 1, 8, 8), (2, 0, 4), (5, 40, 40)]))
    hdu = fits.PrimaryHDU(draw(arrays(shape)))
    if draw(st.booleans()):
        hdu.header["FILTER"] = draw(st.sampled_from(["r", "q", "", "gri"]))
    if draw(st.booleans()):
        hdu.header["CDELT1"] = draw(st.sampled_from([-1.1e-4, 0.0, 1e10, -1e-30]))
    data = _fits_bytes([hdu])
    if draw(st.integers(0, 6)) == 0:  # absurd size claimed in the header
        data = data.replace(b"NAXIS1  =                   16", b"NAXIS1  =          999999999", 1)
    return "cutout.fits", _corrupt(draw, data)


@st.composite
def raster_file(draw: Any) -> tuple[str, bytes]:
    from PIL import Image

    fmt = draw(st.sampled_from(["JPEG", "PNG"]))
    mode = draw(st.sampled_from(["RGB", "L", "RGBA", "I;16"] if fmt == "PNG" else ["RGB", "L", "CMYK"]))
    w, h = draw(st.integers(1, 80)), draw(st.integers(1, 80))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    if mode == "RGB":
        img = Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8), "RGB")
    elif mode in ("RGBA", "CMYK"):
        img = Image.fromarray(rng.integers(0, 255, (h, w, 4), dtype=np.uint8), "RGBA").convert(mode)
    else:
        img = Image.fromarray(rng.integers(0, 255, (h, w), dtype=np.uint8), "L").convert(mode)
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return f"cutout.{fmt.lower()}", _corrupt(draw, buf.getvalue())


@st.composite
def catalog_file(draw: Any) -> tuple[str, bytes]:
    n = draw(st.integers(0, 6))
    header = draw(st.sampled_from(["objid,ra,dec,merger", "id,RA,DEC", "name,x,y", "ra,dec", "", "objid;ra;dec"]))
    cells = st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(str), st.text(max_size=6),
                      st.integers(-10**20, 10**20).map(str))
    lines = [header] + [",".join(draw(st.lists(cells, min_size=0, max_size=5))) for _ in range(n)]
    return "catalog.csv", _corrupt(draw, "\n".join(lines).encode("utf-8", "replace"))


@st.composite
def config_file(draw: Any) -> tuple[str, bytes]:
    texts = st.one_of(
        st.text(max_size=200),
        st.sampled_from(["a: [1, 2", "!!python/object:os.system {}", "train:\n  batch_size: -x",
                         "- 1\n- 2", "seed: 1e999", "out: {a: b}", "n: .nan", "&a [*a]"]))
    return "config.yaml", draw(texts).encode("utf-8", "replace")


def _readers() -> dict[str, Callable[[Path], Any]]:
    from galclip.config import load_config, read_yaml  # noqa: F401
    from galclip.data.readers.catalogs import read_catalog
    from galclip.data.readers.images import read_image
    from galclip.data.readers.spectra import read_spectrum_file

    def cfg(path: Path) -> Any:
        from galclip.data.sim.survey import SimulateConfig

        return load_config(SimulateConfig, path)

    return {"sdss_spec": read_spectrum_file, "desi": read_spectrum_file, "spplate": read_spectrum_file,
            "fits_image": read_image, "raster": read_image, "catalog": read_catalog, "config": cfg}


STRATEGIES = {"sdss_spec": sdss_spec_file, "desi": desi_file, "spplate": spplate_file,
              "fits_image": fits_image_file, "raster": raster_file, "catalog": catalog_file, "config": config_file}


def _sane(result: Any) -> None:
    """A returned product must be self-consistent: no NaN where ivar > 0, matching shapes."""
    recs = result[0] if isinstance(result, tuple) else result
    recs = recs if isinstance(recs, list) else [recs]
    for r in recs:
        if hasattr(r, "flux"):
            assert r.flux.shape == r.ivar.shape == r.wave.shape, "spectrum arrays differ in shape"
            good = r.ivar > 0
            assert np.isfinite(r.flux[good]).all() and np.isfinite(r.ivar).all(), "non-finite good pixels"
            assert good.any(), "a spectrum with no good pixel was returned"
        if hasattr(r, "image"):
            assert r.image.ndim == 3 and r.image.shape == r.ivar.shape, "image/ivar shapes differ"
            assert np.isfinite(r.image).all() and np.isfinite(r.ivar).all(), "non-finite pixels returned"
            assert len(r.bands) == r.image.shape[0], "band names do not match planes"


def check_case(kind: str, name: str, data: bytes, workdir: Path) -> str:
    """Write the case and run its reader; return ``"ok"`` or ``"error"``; raise if the oracle fails."""
    path = workdir / name
    path.write_bytes(data)
    try:
        result = _readers()[kind](path)
    except InputFileError as exc:
        msg = str(exc)
        assert "\n" not in msg, f"multi-line error: {msg!r}"
        assert str(path) in msg, f"error does not name the file: {msg!r}"
        return "error"
    except GalclipError as exc:  # config errors name the key rather than the file
        assert "\n" not in str(exc), f"multi-line error: {exc!r}"
        return "error"
    _sane(result)
    return "ok"
