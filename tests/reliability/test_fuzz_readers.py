"""Fast subset of the reader fuzzing (the ≥10,000-case run is benchmarks/bench_fuzz.py)."""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from tests.reliability.fuzz_cases import STRATEGIES, check_case

FAST = settings(max_examples=25, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.mark.parametrize("kind", sorted(STRATEGIES))
def test_reader_gives_product_or_one_line_error(kind: str) -> None:
    """Any hostile file → sane arrays or a one-line InputFileError naming the file."""

    @FAST
    @given(case=STRATEGIES[kind]())
    def run(case: tuple[str, bytes]) -> None:
        with tempfile.TemporaryDirectory() as d:
            check_case(kind, case[0], case[1], Path(d))

    run()


def test_corrupt_header_card_gives_product_or_one_line_error(tmp_path: Path) -> None:
    """Found by benchmarks/bench_fuzz.py: an unparsable card escaped as astropy's VerifyError."""
    from astropy.io import fits

    path = tmp_path / "src.fits"
    hdu = fits.PrimaryHDU(np.ones((16, 16), np.float32))
    hdu.header["FILTER"] = "r"
    hdu.writeto(path)
    raw = path.read_bytes().replace(b"FILTER  = 'r       '", b"FILTER  = 1.2.3'    ", 1)
    assert check_case("fits_image", "cutout.fits", raw, tmp_path) in ("ok", "error")
