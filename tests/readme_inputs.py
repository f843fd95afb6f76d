"""Small stand-ins for the input files the README's commands name (cutouts, spectra, labels, tiles).

Each file is written under the exact relative name the README uses, in the working folder the
README test runs its commands in, so those commands run as written.
"""
from __future__ import annotations

from pathlib import Path

from astropy.io import fits

from tests.data.test_readers import make_fits_cube, make_sdss_spec
from tests.data.test_stamps import DEC0, RA0, _render, _wcs

N_OWN = 40  # rows of the "own survey": enough for a 12-label fine-tune and a 10-label budget


def own_survey_inputs(root: Path) -> None:
    """cutouts/*.fits + spectra/*.fits at the same positions, labels.csv by position,
    known_mergers.csv (object ids of the ingested rows) and one query spectrum."""
    (root / "cutouts").mkdir(exist_ok=True)
    (root / "spectra").mkdir(exist_ok=True)
    rows = ["id,ra,dec,merger"]
    for i in range(N_OWN):
        ra, dec = 150.0 + 0.01 * i, 2.0
        make_fits_cube(root / "cutouts" / f"obj{i:03d}.fits", size=48, ra=ra, dec=dec, nan_pixel=False)
        make_sdss_spec(root / "spectra" / f"spec-0266-51602-{i:04d}.fits", n=3000, ra=ra, dec=dec,
                       objid=1000 + i, mask_frac=0.0)
        rows.append(f"x{i},{ra},{dec},{int(i % 3 == 0)}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    (root / "known_mergers.csv").write_text("object_id\nobj000\nobj003\n")  # ids ingest gives the cutouts
    make_sdss_spec(root / "spec-1234-56789-0123.fits", n=3000, ra=150.03, dec=2.0, objid=99, mask_frac=0.0)


def stamp_inputs(root: Path) -> None:
    """tiles/tile1-{g,r,z}.fits (one WCS mosaic per band) and targets.csv of 9 positions on it."""
    (root / "tiles").mkdir(exist_ok=True)
    d = 1 / 3600.0
    src = [(f"t{i}", RA0 + (i - 4) * 12 * d, DEC0 + ((i * 7) % 9 - 4) * 8 * d) for i in range(9)]
    for band in "grz":
        w = _wcs(400, 0.5)
        hdr = w.to_header()
        hdr["FILTER"], hdr["SEEING"] = band, 1.0
        fits.PrimaryHDU(_render(w, 400, src), header=hdr).writeto(root / "tiles" / f"tile1-{band}.fits")
    (root / "targets.csv").write_text("objid,ra,dec\n" + "".join(f"{i},{ra:.8f},{dec:.8f}\n" for i, ra, dec in src))


def jpeg_inputs(root: Path) -> None:
    """``my_cutouts/``: 16 small gri JPEGs, and ``my_labels.csv`` marking 6 of them (2 mergers)
    plus an id the survey does not have (the README's "Classify your own galaxies")."""
    from tests.data.test_readers import make_jpeg

    (root / "my_cutouts").mkdir()
    ids = [str(1237648720142401611 + k) for k in range(16)]
    for k, oid in enumerate(ids):
        make_jpeg(root / "my_cutouts" / f"{oid}.jpeg", size=80, seed=k)
    rows = [f"{oid},{int(k < 2)}\n" for k, oid in enumerate(ids[:6])] + ["not_in_survey,1\n"]
    (root / "my_labels.csv").write_text("object_id,merger\n" + "".join(rows))
