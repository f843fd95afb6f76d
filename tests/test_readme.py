"""The README's shell blocks, run: every command of every ```bash fence must exit 0.

Each command is looked up in ``TABLE`` (reviewed by hand): it runs as written with small-size
overrides appended (the CLI's later ``key=value`` wins), runs with listed word substitutions, or is
skipped with a reason. A README command missing from the table fails ``test_every_readme_command_is_in_the_table``,
so a new command must be added here, and from then on a command that stops working fails CI.

All commands run in one temporary working folder (module scope) holding a ``configs`` link to the
repository's configs and small stand-ins for the README's placeholder inputs (``cutouts/*.fits``,
``labels.csv``, ``tiles/*.fits``, ...; see ``tests/readme_inputs.py``), so the relative paths of
the README (``runs/demo``, ``data/mysurvey``) resolve there. The tiny demo run is made once and
reused by the commands that read ``runs/demo/...``. ``darg2010_gz1_mergers.csv`` is the real
catalogue in ``../shared/data/catalogs`` (that command skips without ../shared).
"""
from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import ROOT, shared_path
from tests.readme_inputs import jpeg_inputs, own_survey_inputs, stamp_inputs

README = ROOT / "README.md"
TIMEOUT_S = 300
# the console script next to this interpreter (what the README calls), else the module
_SCRIPT = Path(sys.executable).parent / "galclip"
GALCLIP = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "galclip.cli"]

# a demo of ~120 galaxies, a 4-step tiny model, one label budget: ~15 s instead of ~5 min
DEMO_SMALL = ["simulate.n=120", "simulate.n_jobs=1", "pretrain.model=tiny", "pretrain.train.steps=4",
              "pretrain.train.batch_size=16", "pretrain.train.num_workers=0", "pretrain.train.checkpoint_every=0",
              "finetune.n_labels=20", "finetune.train.epochs=5", "finetune.train.cv_folds=2",
              "evaluate.budgets=[10]", "evaluate.seeds=[0]", "evaluate.methods=[galclip_fusion]",
              "evaluate.train.epochs=5", "evaluate.train.cv_folds=2"]
PRETRAIN_SMALL = ["train.steps=2", "train.batch_size=8", "train.num_workers=0", "train.checkpoint_every=0",
                  "progress=false"]
HEAD_SMALL = ["train.epochs=3", "train.cv_folds=2", "progress=false"]


@dataclass(frozen=True)
class How:
    """How one README command runs here."""
    append: tuple[str, ...] = ()          # small-size overrides appended to the command
    replace: dict = field(default_factory=dict)  # word -> word substitutions (listed in the report)
    after: tuple[str, ...] = ()           # README commands whose outputs it reads (run first)
    skip: str = ""                        # reason it cannot run here
    shared: tuple[str, ...] = ()          # ../shared/data files it needs (linked into the work folder)
    ddp: bool = False                     # launches Lightning DDP ranks: clean env + a free port
    check: str = ""                       # a JSON file it writes, with values to check: "path:key=value,..."


DEMO = ".venv/bin/galclip demo --out runs/demo"
INGEST = ("galclip ingest --out data/mysurvey images=[cutouts/*.fits] spectra=[spectra/*.fits] "
          "labels.path=labels.csv labels.by=position morphology=true")
OWN_PRETRAIN = "galclip pretrain --data data/mysurvey --out runs/my_pretrain train.steps=5000"
OWN_INDEX = "galclip index --data data/mysurvey --checkpoint runs/my_pretrain --out runs/my_index"
REP_INGEST = "galclip ingest --config configs/ingest_sdss_jpeg.yaml --out data/sdss_jpeg images=[cutouts/]"
MY_INGEST = "galclip ingest --config configs/ingest_sdss_jpeg.yaml --out data/my_survey images=[my_cutouts/]"
MY_PRETRAIN = ("galclip pretrain --config configs/pretrain_image_only.yaml --data data/my_survey "
               "--out runs/my_pretrain")
MY_FINETUNE = ("galclip finetune --config configs/finetune.yaml --data data/my_survey --checkpoint runs/my_pretrain "
               "--labels my_labels.csv test_fraction=0 --out runs/my_head")
MY_STUDENT = ("galclip finetune --config configs/finetune.yaml --data data/my_survey --checkpoint runs/my_pretrain "
              "--labels my_labels.csv test_fraction=0 self_train.enabled=true self_train.prior=0.05 "
              "--out runs/my_student")

TABLE: dict[str, How] = {
    'python3 -m venv .venv && .venv/bin/pip install -e .[dev]':
        How(skip="installation: CI has already installed the package (and runs no network installs)"),
    DEMO: How(append=tuple(DEMO_SMALL)),
    ".venv/bin/python -m pytest -q": How(skip="the test suite itself (this test is part of it)"),
    "galclip pretrain --config configs/pretrain.yaml --data runs/demo/survey train.batch_size=512 train.steps=20000":
        How(append=("model=tiny", *PRETRAIN_SMALL), after=(DEMO,)),
    "galclip pretrain --print-config": How(),
    ("galclip pretrain --config configs/pretrain.yaml --data big/survey --model base train.strategy=ddp "
     "train.devices=4 train.num_nodes=2 train.batch_size=2048"):
        # 4 GPUs x 2 nodes cannot run here: the same command as 2 CPU ranks on 1 node, tiny model
        How(replace={"big/survey": "runs/demo/survey", "base": "tiny", "train.devices=4": "train.devices=2",
                     "train.num_nodes=2": "train.num_nodes=1", "train.batch_size=2048": "train.batch_size=8"},
            append=("train.accelerator=cpu", "train.threads=1", "out=runs/ddp", *PRETRAIN_SMALL[:1],
                    *PRETRAIN_SMALL[2:]),
            after=(DEMO,), ddp=True, check="runs/ddp/metrics.json:world_size=2,steps=2,global_batch=8"),
    INGEST: How(),
    OWN_PRETRAIN: How(append=tuple(PRETRAIN_SMALL), after=(INGEST,)),
    "galclip finetune --config configs/finetune.yaml --data data/mysurvey --checkpoint runs/my_pretrain --out runs/my_finetune":
        How(append=("n_labels=12", *HEAD_SMALL), after=(OWN_PRETRAIN,)),
    "galclip evaluate --data data/mysurvey --checkpoint runs/my_pretrain --out runs/my_eval":
        How(append=("budgets=[10]", "seeds=[0]", *HEAD_SMALL), after=(OWN_PRETRAIN,)),
    OWN_INDEX: How(after=(OWN_PRETRAIN,)),
    "galclip search --index runs/my_index --spectrum spec-1234-56789-0123.fits --k 20 --out runs/q1":
        How(after=(OWN_INDEX,)),
    "galclip candidates --index runs/my_index positives=known_mergers.csv --out runs/cands": How(after=(OWN_INDEX,)),
    "galclip crossmatch data=data/mysurvey catalog=darg2010_gz1_mergers.csv --out runs/xmatch":
        How(after=(INGEST,), shared=("catalogs/darg2010_gz1_mergers.csv",)),
    ("galclip ingest --config configs/ingest_survey_images.yaml --out data/stamps stamps.images=[tiles/*.fits] "
     "stamps.catalog=targets.csv stamps.size_arcsec=60"): How(),
    # "The representation": the image-only recipe on the same 16 small JPEGs
    REP_INGEST: How(replace={"images=[cutouts/]": "images=[my_cutouts/]"}, append=("progress=false",)),
    ("galclip pretrain --config configs/pretrain_image_only.yaml --data data/sdss_jpeg "
     "--out runs/pretrain_images"): How(append=tuple(PRETRAIN_SMALL), after=(REP_INGEST,),
                                        check="runs/pretrain_images/metrics.json:steps=2"),
    # "Classify your own galaxies": 16 small JPEGs, 6 labels in a CSV (and one unknown id)
    MY_INGEST: How(append=("progress=false",)),
    # (the README's two pretrain examples both write runs/my_pretrain; this one reads data/my_survey)
    MY_PRETRAIN: How(replace={"runs/my_pretrain": "runs/my_jpeg_pretrain"}, append=tuple(PRETRAIN_SMALL),
                     after=(MY_INGEST,)),
    MY_FINETUNE: How(replace={"runs/my_pretrain": "runs/my_jpeg_pretrain"}, append=tuple(HEAD_SMALL),
                     after=(MY_PRETRAIN,)),
    # a second survey ingested the same way: the same one here
    "galclip predict --model runs/my_head --data data/new_survey --out runs/my_predictions":
        How(replace={"data/new_survey": "data/my_survey"}, append=("progress=false",), after=(MY_FINETUNE,),
            check="runs/my_predictions/summary.json:n=16"),
    # self-training: the same labels, a one-epoch student
    MY_STUDENT: How(replace={"runs/my_pretrain": "runs/my_jpeg_pretrain"},
                    append=(*HEAD_SMALL, "self_train.epochs=1", "self_train.min_steps=2", "self_train.batch_size=8"),
                    after=(MY_PRETRAIN,)),
    "galclip predict --model runs/my_student --data data/new_survey --out runs/my_predictions":
        How(replace={"data/new_survey": "data/my_survey"}, append=("progress=false",), after=(MY_STUDENT,),
            check="runs/my_predictions/summary.json:n=16"),
}


def readme_commands(text: str) -> list[str]:
    """Every command of the ```bash fences: continuations joined, comments dropped, words
    normalised by shell quoting rules (so ``images='[a/*.fits]'`` reads ``images=[a/*.fits]``)."""
    cmds = []
    for block in re.findall(r"^```bash\n(.*?)^```", text, flags=re.M | re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words:
                cmds.append(" ".join(words))
    return cmds


def _argv(cmd: str, how: How) -> list[str]:
    words = [how.replace.get(w, w) for w in shlex.split(cmd)]
    assert Path(words[0]).name == "galclip", f"not a galclip command: {cmd}"
    return [*GALCLIP, *words[1:], *how.append]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Runner:
    """Runs README commands in one work folder, each at most once, prerequisites first."""

    def __init__(self, work: Path):
        self.work, self.done = work, {}

    def run(self, cmd: str) -> None:
        if cmd in self.done:
            assert self.done[cmd], f"an earlier run of this README command failed: {cmd}"
            return
        how = TABLE[cmd]
        for before in how.after:
            self.run(before)
        for rel in how.shared:
            link = self.work / Path(rel).name
            if not link.exists():
                link.symlink_to(shared_path(*Path(rel).parts))
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_", "RANK"))}
        env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
        if how.ddp:
            env["MASTER_PORT"] = str(_free_port())
        self.done[cmd] = False
        argv = _argv(cmd, how)
        try:
            proc = subprocess.run(argv, cwd=self.work, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired as e:
            pytest.fail(f"README command timed out after {TIMEOUT_S} s: {cmd}\nran: {shlex.join(argv)}\n"
                        f"{(e.stdout or '')[-1500:] if isinstance(e.stdout, str) else ''}")
        if proc.returncode != 0:
            tail = (proc.stdout[-1500:] + "\n" + proc.stderr[-3000:]).strip()
            pytest.fail(f"README command exited {proc.returncode}: {cmd}\nran: {shlex.join(argv)}\n--- output tail ---\n{tail}")
        if how.check:
            rel, _, pairs = how.check.partition(":")
            got = json.loads((self.work / rel).read_text())
            for pair in pairs.split(","):
                key, _, want = pair.partition("=")
                assert str(got.get(key)) == want, f"{cmd}: {rel} has {key}={got.get(key)!r}, expected {want}"
        self.done[cmd] = True


@pytest.fixture(scope="module")
def runner(tmp_path_factory) -> Runner:
    work = tmp_path_factory.mktemp("readme")
    (work / "configs").symlink_to(ROOT / "configs")
    own_survey_inputs(work)
    stamp_inputs(work)
    jpeg_inputs(work)
    return Runner(work)


def test_every_readme_command_is_in_the_table() -> None:
    cmds = readme_commands(README.read_text())
    assert len(cmds) >= 10, cmds
    unknown = [c for c in cmds if c not in TABLE]
    assert not unknown, ("README commands missing from TABLE in tests/test_readme.py (add each with how it "
                         "runs here):\n" + "\n".join(unknown))
    stale = [c for c in TABLE if c not in cmds]
    assert not stale, "TABLE entries no longer in the README:\n" + "\n".join(stale)


def _param(cmd: str):
    marks = [pytest.mark.shared] if TABLE[cmd].shared else []
    return pytest.param(cmd, marks=marks, id=re.sub(r"\W+", "_", " ".join(cmd.split()[1:5])).strip("_")[:60])


@pytest.mark.parametrize("cmd", [_param(c) for c in TABLE])
def test_readme_command_runs(cmd: str, runner: Runner) -> None:
    how = TABLE[cmd]
    if how.skip:
        pytest.skip(how.skip)
    if how.shared:
        for rel in how.shared:
            shared_path(*Path(rel).parts)
    runner.run(cmd)


def test_parser_joins_continuations_and_drops_comments() -> None:
    text = ("x\n```bash\n# a comment\ngalclip a --out o \\\n    k='[p/*.f]'  # trailing\n\n"
            "galclip b\n```\n```python\nnot_a_command()\n```\n")
    assert readme_commands(text) == ["galclip a --out o k=[p/*.f]", "galclip b"]
