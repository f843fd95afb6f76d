"""``galclip simulate --preview``: a PNG of example galaxies per merger stage, each beside its
fibre spectrum, so a person can judge the simulation's realism at a glance."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from galclip.data import schema as S
from galclip.data.sim import calibration as C
from galclip.data.sim.galaxy import simulate_galaxy
from galclip.data.sim.spectra import LINES
from galclip.utils.io import atomic_path

if TYPE_CHECKING:
    from galclip.data.sim.survey import SimulateConfig

_PREVIEW_OFFSET = 10**8  # preview galaxies use indices outside any survey's range


#: Lupton stretch of the preview: low enough (in units of the brightest pixels) that
#: tidal tails, shells and bridges at 25-27 mag/arcsec² show above the sky
PREVIEW_Q, PREVIEW_STRETCH = 10.0, 0.05


def write_preview(cfg: "SimulateConfig", path: Path) -> Path:
    """Simulate ``preview_per_stage`` galaxies per merger stage and plot image + spectrum."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from galclip.data.preprocess import log_grid
    from galclip.gallery import rgb_composite

    p = cfg.sim_params()
    wave = log_grid(C.SPEC_WAVE_MIN, C.SPEC_WAVE_MAX, C.SPEC_NPIX)
    k = max(1, cfg.preview_per_stage)
    fig, axes = plt.subplots(len(S.MERGER_STAGES), 2 * k, figsize=(5.2 * k, 2.2 * len(S.MERGER_STAGES)),
                             gridspec_kw={"width_ratios": [1, 1.9] * k})
    axes = np.atleast_2d(axes)
    for s, name in enumerate(S.MERGER_STAGES):
        for j in range(k):
            row = simulate_galaxy(cfg.seed, _PREVIEW_OFFSET + 1000 * s + j, p, stage=s)
            ax_i, ax_s = axes[s, 2 * j], axes[s, 2 * j + 1]
            ax_i.imshow(rgb_composite(row[S.IMAGE], q=PREVIEW_Q, stretch=PREVIEW_STRETCH), origin="lower")
            ax_i.set_xticks([])
            ax_i.set_yticks([])
            extra = f" μ={row['mass_ratio']:.2f}" if np.isfinite(row["mass_ratio"]) else ""
            if np.isfinite(row["companion_sep_kpc"]):
                extra += f" {row['companion_sep_kpc']:.0f} kpc"
            if row["tidal_frac"] > 0:
                extra += f" tidal {100 * row['tidal_frac']:.0f}%"
            # one line each for the stage, its merger parameters and the photometry: on one line
            # they ran past the image panel and the figure's left edge clipped them
            lines = [name, extra.strip(), f"z={row['redshift']:.3f} r={row['mag_r']:.1f} g-r={row.get('g_r', np.nan):.2f}"]
            ax_i.set_title("\n".join(x for x in lines if x), fontsize=7)
            good = row[S.SPEC_IVAR] > 0
            f = np.where(good, row[S.SPEC_FLUX], np.nan)
            kern = np.ones(5) / 5
            ax_s.plot(wave, f, lw=0.3, color="0.6")
            ax_s.plot(wave, np.convolve(np.nan_to_num(f), kern, "same"), lw=0.5, color="k")
            ax_s.plot(wave, row["_fibre_model"], lw=0.5, color="tab:red", alpha=0.7)
            for lam in (LINES["halpha"], LINES["hbeta"], LINES["oiii5007"], LINES["oii3729"]):
                ax_s.axvline(lam * (1 + row["redshift"]), color="tab:blue", lw=0.4, alpha=0.4)
            lo, hi = np.nanpercentile(row["_fibre_model"], [1, 99.5])
            ax_s.set_ylim(min(0, lo) - 0.1 * hi, 1.4 * hi)
            ax_s.tick_params(labelsize=6)
            tags = [t for t, on in (("AGN", row["agn"]), ("quiescent", row["quiescent"])) if on]
            ax_s.set_title(f"log M*={row['log_mstar']:.1f} log SFR={row['log_sfr']:.1f} {' '.join(tags)}", fontsize=7)
    fig.suptitle(f"simulated survey, {cfg.survey} imaging depth (arcsinh stretch Q={PREVIEW_Q:g}, "
                 f"stretch={PREVIEW_STRETCH:g} of the brightest pixels)", fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path
