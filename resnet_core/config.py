"""TrainConfig: everything a run needs to be re-run exactly, saved as config.json with it.

The command line's flags mirror these fields one to one (``batch_size`` is ``--batch-size``).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field, fields

DEFAULT_RECORDERS = ["analysis.recorders:LayerStatsRecorder"]
# Upper bounds: beyond them a value is a typo or an attack, never a run (an integer from a
# config file has no size limit in JSON, and 1e22 overflows torch's seeds and counters). What
# still fits under them but not in memory is refused by resnet_core.memory.check_run.
MAX_WIDTH = 4096  # channels of the first stage (the paper: 16 CIFAR, 64 ImageNet)
MAX_IMAGE_SIZE = 4096  # pixels a side
MAX_COUNT = 10**9  # iterations, batch size, images, step intervals
MAX_EPOCHS = 10**6
MAX_SEED = 2**32 - 1  # numpy's seed range; torch's generators take seed * 1_000_003 + step
MAX_THREADS = 1024


@dataclass
class TrainConfig:
    # --- model ---
    model: str = "resnet20"  # a name from list_models(), or cifar_{resnet,plain,preresnet}{6n+2}
    shortcut: str | None = None  # "A"/"B"/"C"; None = the family's paper default (A CIFAR, B ImageNet)
    width: int | None = None  # first stage's channels; None = paper (16 CIFAR, 64 ImageNet)
    norm: str = "batch"  # "none" removes BN, for studies of what BN does
    # "he" as the paper; "torch" = PyTorch's default; "looks_linear" (with crelu),
    # "delta_orthogonal", "fixup" (resnets, norm none): see models/variants.py
    init: str = "he"
    # "relu"; "tanh" (Xiao et al. 2018); "tat" (tailored leaky ReLU, Zhang et al. 2022) and
    # "crelu" (Balduzzi et al. 2017) on CIFAR plain nets
    activation: str = "relu"
    # "skipinit" (De & Smith 2020) or "rezero" (Bachlechner et al. 2020): a learnable scalar,
    # initialised to 0, on each residual branch
    branch_scalar: str = "none"
    zero_init_residual: bool = False  # start each residual branch's last BN gamma at 0 (Goyal et al. 2017)
    tat_target: float = 0.9  # TAT's eta: the whole net's correlation map sends 0 to it (activation "tat")
    # --- data ---
    # a name (digits, cifar10, cifar100, mnist, fashion_mnist, svhn) or a .npz / ImageFolder path
    dataset: str = "digits"
    data_root: str | None = None  # where torchvision datasets live; None = the user cache folder
    download: bool = False  # only download when asked: tests and offline machines never reach out
    subset: int | None = None  # use the first N training images (stratified); None = all
    image_size: int | None = None  # resize once at load, e.g. 16 for fast CPU runs; None = native
    val_split: int = 0  # hold out N training images for validation (the paper's 45k/5k is 5000)
    augment: str = "auto"  # "flip_crop" (paper), "crop", "none"; auto = no flips for digits/text-like sets
    train_eval_size: int = 1000  # training images re-scored in eval mode for "final training error"
    test_size: int | None = None  # test images scored at each evaluation (the first N); None = all
    # --- budget ---
    epochs: float | None = None  # either epochs or iterations; iterations wins when both are set
    iterations: int | None = None
    batch_size: int = 128
    # --- optimizer and schedule ---
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    # weight decay on BN parameters and biases too, as the paper; False (--no-decay-bn-bias)
    # exempts them, as many later recipes do
    decay_bn_bias: bool = True
    # "steps" (/10 at 50% and 75%, the paper's 32k/48k of 64k), "cosine", "onecycle", "constant"
    schedule: str = "steps"
    # "paper" (lr/10 until train error < 80%, capped at 1% of steps), "none"; auto = paper for
    # depth >= 110
    warmup: str = "auto"
    # --- reproducibility and hardware ---
    seed: int = 0
    device: str = "auto"  # auto picks cuda, then mps, then cpu
    threads: int | None = None  # torch intra-op threads; None = all cores (the queue divides them)
    precision: str = (
        "auto"  # "fp32", "bf16"; auto = bf16 where it runs fast (CUDA, CPUs with AMX/AVX-512 bf16)
    )
    channels_last: bool | None = None  # None = on where it helps (CUDA, bf16 CPUs)
    compile: bool = False  # torch.compile; only used when no recorder needs hooks
    # --- logging and checkpoints ---
    log_every: int = 10  # training loss/error are averaged and written every N steps
    eval_every: int | None = None  # steps between test/val evaluations; None = once per epoch
    checkpoint_every: int | None = None  # steps between last.pt saves; None = once per epoch
    checkpoint_steps: list[int] = field(default_factory=list)  # extra step-NNNNNN.pt to keep
    recorders: list[str] = field(
        default_factory=lambda: list(DEFAULT_RECORDERS)
    )  # "module:Class" import paths
    preset: str | None = None  # the preset the run started from, for the record
    name: str | None = None  # optional label shown in tables

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def model_options(self) -> dict:
        """The build_model options this config sets (all but the data's classes/channels)."""
        return dict(
            shortcut=self.shortcut,
            width=self.width,
            norm=self.norm,
            init=self.init,
            activation=self.activation,
            branch_scalar=self.branch_scalar,
            zero_init_residual=self.zero_init_residual,
            tat_target=self.tat_target,
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    @classmethod
    def from_dict(cls, d: dict, source: str = "config") -> TrainConfig:
        if not isinstance(d, dict):
            raise ConfigError(f"{source}: expected a JSON object of TrainConfig fields")
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise ConfigError(f"{source}: unknown field(s) {unknown}; accepted fields: {', '.join(known)}")
        cfg = cls(**d)
        cfg.validate(source)
        return cfg

    def validate(self, source: str = "config") -> TrainConfig:
        """Check every field's type and range; raise ConfigError naming the field."""
        c = _FieldChecker(self, source)
        self._validate_model(c)
        self._validate_data(c)
        self._validate_schedule(c)
        self._validate_running(c)
        self._validate_variants(source, c.bad, c.check_choice, c.check_bool, c.check_float)
        return self

    def _validate_model(self, c: _FieldChecker) -> None:
        """The fields of the model and its options."""
        from .models import INITS, ModelNameError, parse_name

        if not isinstance(self.model, str):
            c.bad("model", "expected a model name")
        try:
            parse_name(self.model)
        except ModelNameError as e:
            raise ConfigError(f"{c.source}: model: {e}") from None
        c.check_choice("shortcut", (None, "A", "B", "C"))
        c.check_int("width", 1, optional=True, hi=MAX_WIDTH)
        c.check_choice("norm", ("batch", "none"))
        c.check_choice("init", INITS)

    def _validate_data(self, c: _FieldChecker) -> None:
        """The fields of the dataset, its size and augmentation."""
        if not isinstance(self.dataset, str) or not self.dataset:
            c.bad("dataset", "expected a dataset name or a path")
        if self.data_root is not None and not isinstance(self.data_root, str):
            c.bad("data_root", "expected a folder path")
        c.check_bool("download")
        c.check_int("subset", 1, optional=True)
        c.check_int("image_size", 4, optional=True, hi=MAX_IMAGE_SIZE)
        c.check_int("val_split", 0)
        c.check_choice("augment", ("auto", "flip_crop", "crop", "none"))
        c.check_int("train_eval_size", 0)
        c.check_int("test_size", 1, optional=True)

    def _validate_schedule(self, c: _FieldChecker) -> None:
        """The fields of length, batch, optimizer, schedule and seed."""
        c.check_float("epochs", 0, hi=MAX_EPOCHS, lo_open=True, optional=True)
        c.check_int("iterations", 1, optional=True)
        if self.epochs is None and self.iterations is None:
            raise ConfigError(f"{c.source}: set either epochs or iterations (or use a preset)")
        c.check_int("batch_size", 1)
        c.check_float("lr", 0, lo_open=True)
        c.check_float("momentum", 0, 1)
        c.check_float("weight_decay", 0)
        c.check_bool("decay_bn_bias")
        c.check_choice("schedule", ("steps", "cosine", "onecycle", "constant"))
        c.check_choice("warmup", ("auto", "paper", "none"))
        c.check_int("seed", 0, hi=MAX_SEED)

    def _validate_running(self, c: _FieldChecker) -> None:
        """The fields of hardware, logging, checkpoints, recorders and labels."""
        c.check_choice("device", ("auto", "cpu", "cuda", "mps"))
        c.check_int("threads", 1, optional=True, hi=MAX_THREADS)
        c.check_choice("precision", ("auto", "fp32", "bf16"))
        c.check_bool("channels_last", optional=True)
        c.check_bool("compile")
        c.check_int("log_every", 1)
        c.check_int("eval_every", 1, optional=True)
        c.check_int("checkpoint_every", 1, optional=True)
        if (
            not isinstance(self.checkpoint_steps, list)
            or not all(
                isinstance(s, int) and not isinstance(s, bool) and 1 <= s <= MAX_COUNT
                for s in self.checkpoint_steps
            )
            or len(self.checkpoint_steps) > 10000
        ):
            c.bad("checkpoint_steps", f"expected a list of at most 10000 integers from 1 to {MAX_COUNT}")
        if not isinstance(self.recorders, list) or not all(
            isinstance(r, str) and ":" in r for r in self.recorders
        ):
            c.bad("recorders", "expected a list of 'module:Class' import paths")
        if self.preset is not None and not isinstance(self.preset, str):
            c.bad("preset", "expected a preset name")
        if self.name is not None and not isinstance(self.name, str):
            c.bad("name", "expected a string")

    def _validate_variants(self, source, bad, check_choice, check_bool, check_float) -> None:
        """The variants of models/variants.py: each field alone, then how they combine with
        the model and norm (the message names the option and what is accepted)."""
        from .models import ACTIVATIONS, BRANCH_SCALARS, check_model_options

        check_choice("activation", ACTIVATIONS)
        check_choice("branch_scalar", BRANCH_SCALARS)
        check_bool("zero_init_residual")
        check_float("tat_target", 0, lo_open=True)
        if self.tat_target >= 1:
            bad("tat_target", "expected a number in (0, 1)")
        try:
            check_model_options(self.model, **self.model_options())
        except ValueError as e:
            err = ConfigError(f"{source}: {e}")
            err.field = next((f for f in VARIANT_FIELDS if str(e).startswith(f)), "init")
            raise err from None


VARIANT_FIELDS = ("activation", "init", "branch_scalar", "zero_init_residual", "tat_target")


class _FieldChecker:
    """Type and range checks of a config's fields; a failure is a ConfigError naming the field
    (``.field``) and what is accepted."""

    def __init__(self, cfg: TrainConfig, source: str):
        self.cfg, self.source = cfg, source

    def bad(self, name, what):
        e = ConfigError(f"{self.source}: {name}={getattr(self.cfg, name)!r} is not accepted; {what}")
        e.field = name
        raise e

    def check_int(self, name, lo=None, optional=False, hi=MAX_COUNT):
        v = getattr(self.cfg, name)
        if v is None and optional:
            return
        if isinstance(v, bool) or not isinstance(v, int):
            self.bad(name, f"expected an integer{f' >= {lo}' if lo is not None else ''}")
        if lo is not None and v < lo:
            self.bad(name, f"expected an integer >= {lo}")
        if v > hi:
            self.bad(name, f"expected an integer from {lo} to {hi}")

    def check_float(self, name, lo=None, hi=None, lo_open=False, optional=False):
        v = getattr(self.cfg, name)
        if v is None and optional:
            return
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            self.bad(name, "expected a finite number")
        if lo is not None and (v < lo or (lo_open and v == lo)):
            self.bad(name, f"expected a number {'>' if lo_open else '>='} {lo}")
        if hi is not None and v > hi:
            self.bad(name, f"expected a number <= {hi}")

    def check_choice(self, name, choices):
        if getattr(self.cfg, name) not in choices:
            self.bad(name, f"accepted: {', '.join(map(str, choices))}")

    def check_bool(self, name, optional=False):
        v = getattr(self.cfg, name)
        if not (isinstance(v, bool) or (optional and v is None)):
            self.bad(name, "expected true or false")


class ConfigError(ValueError):
    """A config field is missing, mistyped or out of range. The message names the field."""


# The paper's CIFAR-10 SGD recipe (section 4.2): lr 0.1, momentum 0.9, weight decay 1e-4,
# every training image trained on (val_split=0: none held out; the preset says how many).
# Every preset but smoke starts from it; PAPER_STEPS adds the paper's batch of 128 and its
# step schedule (lr /10 at 50% and 75% of the steps).
PAPER_SGD = dict(lr=0.1, momentum=0.9, weight_decay=1e-4, val_split=0)
PAPER_STEPS = dict(PAPER_SGD, batch_size=128, schedule="steps")

# Presets: field overrides. Explicit flags override a preset.
PRESETS: dict[str, dict] = {
    # The paper's CIFAR-10 recipe (section 4.2): 64k iterations, lr 0.1 /10 at 32k and 48k.
    "paper": dict(
        PAPER_STEPS,
        iterations=64000,
        epochs=None,
        warmup="auto",
        augment="auto",
        subset=None,
        image_size=None,
        test_size=None,
    ),
    # A 2-core-CPU budget that still shows degradation in fp32 (BENCHMARKS.md): 2,500 images
    # at 12x12, 6 epochs of batch 64 (234 steps). Few images and many passes make training
    # error -- what degradation is about -- fall fast for the nets that can optimize.
    # onecycle's low start is the warm-up that lets resnet56 train from step 0. One
    # evaluation, at the end (eval_every = the run's 234 steps), on 2,000 test images: a pass
    # over all 10k costs about two epochs here. Training curves come from the "train" rows.
    "quick": dict(
        PAPER_SGD,
        epochs=6,
        iterations=None,
        batch_size=64,
        schedule="onecycle",
        warmup="none",
        subset=2500,
        image_size=12,
        checkpoint_every=None,
        eval_every=234,
        train_eval_size=1000,
        test_size=2000,
    ),
    # About half an hour for the four nets of `sweep lesson` on a 2-core CPU (29 min measured,
    # BENCHMARKS.md 6b): long enough for the paper's step schedule, so the curves drop at 50%
    # and 75% as in Fig. 6, and for plain56 to end 33 points above plain20. The paper's
    # warm-up (lr 0.01 for at most 1% of the steps) for every depth: without it the 56-layer
    # nets sat at chance for their first ~300 steps, 13% of this budget. Not long enough for
    # resnet56 to pass resnet20 (it ends 10 points behind). 10,000 images at 16x16, 30 epochs
    # of batch 128 (2,340 steps); one evaluation per epoch on 2,000 test images. Start it
    # before class, or show its bundled reference runs (reference/lesson-cpu).
    "lesson": dict(
        PAPER_STEPS,
        epochs=30,
        iterations=None,
        warmup="paper",
        subset=10000,
        image_size=16,
        eval_every=None,
        train_eval_size=1000,
        test_size=2000,
    ),
    # The cheapest budget found where depth pays for residual nets on a 2-core CPU
    # (BENCHMARKS.md 9): all 50,000 images at 16x16, the paper's shape at width 8 (8/16/32
    # channels: a narrow net is capacity-bound, so depth helps sooner), 6,000 steps of the
    # paper's step schedule. resnet56 ends below resnet20 in training error and plain56 far
    # above plain20. About 8-14 min (20 layers) and 21-44 min (56 layers) per run on one core: one
    # seed of `sweep laptop` in 30-40 min on 2 cores. Training error is scored in eval mode
    # on 5,000 training images every 300 steps, so the step where depth starts to pay shows.
    "laptop": dict(
        PAPER_STEPS,
        width=8,
        epochs=None,
        iterations=6000,
        warmup="paper",
        subset=50000,
        image_size=16,
        eval_every=300,
        train_eval_size=5000,
        test_size=2000,
    ),
    # The smallest useful run: a smoke test of the whole pipeline.
    "smoke": dict(
        iterations=20, epochs=None, batch_size=32, subset=512, image_size=16, log_every=5, eval_every=10
    ),
}

# On the 1,797 images of `digits` (1,438 to train on, 8x8), 12 epochs of batch 64 (264 steps):
# plain20 and resnet20 fit them (~1% error) while plain56 stays far behind (BENCHMARKS.md).
DATASET_PRESET_OVERRIDES: dict[tuple[str, str], dict] = {
    ("quick", "digits"): dict(
        epochs=12, subset=None, image_size=None, batch_size=64, val_split=0, eval_every=264
    ),
    ("lesson", "digits"): dict(image_size=None),  # native 8x8: no point upsampling digits
}

# Models are listed (and so queued) deepest first: with fewer cores than runs, the longest
# runs start together and the short ones fill in after, instead of a deep run starting last
# and leaving a core idle at the end.
SWEEPS: dict[str, dict] = {
    "quick": dict(preset="quick", models=["plain56", "resnet56", "plain20", "resnet20"]),
    "lesson": dict(preset="lesson", models=["plain56", "resnet56", "plain20", "resnet20"]),
    "laptop": dict(preset="laptop", models=["plain56", "resnet56", "plain20", "resnet20"]),
    "fig6": dict(
        preset="paper",
        models=[
            "resnet110",
            "plain56",
            "resnet56",
            "plain44",
            "resnet44",
            "plain32",
            "resnet32",
            "plain20",
            "resnet20",
        ],
    ),
}


def _rescue_runs() -> list[dict]:
    """Can plain nets be fixed? Three groups on the `lesson` budget, each changing one thing
    from its baseline (issue 15): no shortcuts (plain56, He + BN, against looks-linear CReLU,
    tanh delta-orthogonal at criticality without BN as Xiao et al., TAT without BN); no
    normalisation (resnet56 without BN against Fixup, SkipInit, ReZero); and resnet56 with BN
    with and without zero-init of the last BN gamma. The no-shortcut variants also at depth
    110, with seed 0 only (``seeds``): the depth-56 runs are meant for seeds 0, 1, 2, added one
    seed at a time (``sweep rescue --seed 1``) where three do not fit the wall-clock budget."""
    no_shortcut = [
        ("plain, He + BN", {}),
        ("looks-linear CReLU", dict(activation="crelu", init="looks_linear")),
        ("delta-orthogonal tanh, no BN", dict(activation="tanh", init="delta_orthogonal", norm="none")),
        ("TAT leaky ReLU, no BN", dict(activation="tat", init="delta_orthogonal", norm="none")),
    ]
    no_norm = [
        ("resnet, no BN", dict(norm="none")),
        ("Fixup", dict(norm="none", init="fixup")),
        ("SkipInit", dict(norm="none", branch_scalar="skipinit")),
        ("ReZero", dict(norm="none", branch_scalar="rezero")),
    ]
    zero_init = [("resnet, He + BN", {}), ("resnet, zero-init last BN", dict(zero_init_residual=True))]
    runs = [
        dict(model="plain110", name=f"rescue: no shortcuts: {label}", seeds=[0], **o)
        for label, o in no_shortcut
    ]  # deepest first (see the note above SWEEPS)
    runs += [dict(model="plain56", name=f"rescue: no shortcuts: {label}", **o) for label, o in no_shortcut]
    runs += [dict(model="resnet56", name=f"rescue: no normalisation: {label}", **o) for label, o in no_norm]
    runs += [dict(model="resnet56", name=f"rescue: zero-init: {label}", **o) for label, o in zero_init]
    return runs


# Not yet measured here: a later session times it and adds seeds within 2.5 h on 2 cores.
SWEEPS["rescue"] = dict(preset="lesson", runs=_rescue_runs())
for _sw in SWEEPS.values():  # every sweep names its models (pages list them)
    _sw.setdefault("models", [r["model"] for r in _sw.get("runs", [])])


def sweep_runs(name: str, seed: int | None = None) -> list[dict]:
    """The field overrides of each run of sweep ``name`` (model, and for `rescue` the variant
    and its label). A run with ``seeds`` is left out for any other ``seed``."""
    if name not in SWEEPS:
        raise ConfigError(f"sweep {name!r} is not accepted; accepted: {', '.join(SWEEPS)}")
    sw = SWEEPS[name]
    if "runs" not in sw:
        return [{"model": m} for m in sw["models"]]
    seed = 0 if seed is None else seed
    return [
        {k: v for k, v in r.items() if k != "seeds"} for r in sw["runs"] if seed in r.get("seeds", [seed])
    ]


def sweep_plan(name: str, seeds: list[int | None]) -> list[dict]:
    """Every run of sweep ``name`` once per seed, as field overrides (``seed`` set unless it is
    None). Model-major in the sweep's order, so the deepest model's seeds are queued (and
    start) first; a run limited to some seeds (rescue's plain110) appears only for those."""
    sw = SWEEPS.get(name)
    if sw is None:
        sweep_runs(name)  # raises the one message naming the accepted sweeps
    runs = sw.get("runs") or [{"model": m} for m in sw["models"]]
    plan = []
    for run in runs:  # a run without "seeds" runs for every seed; None is the preset's (0)
        own = {k: v for k, v in run.items() if k != "seeds"}
        for seed in seeds:
            if "seeds" not in run or (0 if seed is None else seed) in run["seeds"]:
                plan.append({**own, **({} if seed is None else {"seed": seed})})
    return plan


def apply_preset(preset: str | None, overrides: dict) -> TrainConfig:
    """Build a config from a preset plus explicit overrides (None values are ignored)."""
    base: dict = {}
    if preset is not None:
        if preset not in PRESETS:
            raise ConfigError(f"preset={preset!r} is not accepted; accepted: {', '.join(PRESETS)}")
        base.update(PRESETS[preset])
        dataset = overrides.get("dataset") or TrainConfig.dataset
        base.update(DATASET_PRESET_OVERRIDES.get((preset, dataset), {}))
        base["preset"] = preset
    explicit = {k: v for k, v in overrides.items() if v is not None}
    if "iterations" in explicit and "epochs" not in explicit:
        base["epochs"] = None
    if "epochs" in explicit and "iterations" not in explicit:
        base["iterations"] = None
    base.update(explicit)
    return TrainConfig.from_dict(base, source="options")


# A seed also picks a run's training subset and validation split (resnet_core.data); below 2^32
# so every generator derived from it (seed * 1_000_003 + step, ...) stays in torch's range.
MAX_SEED = 2**32 - 1
SEEDS_ACCEPTED = f"a comma-separated list of distinct integers from 0 to {MAX_SEED}, e.g. 0,1,2"


def parse_seeds(text: str, source: str = "--seeds") -> list[int]:
    """The seeds of a multi-seed sweep, from "0,1,2". Refuses an empty list, an entry that is
    not an integer in range and duplicates (a duplicate would train the same run twice and
    count it twice in the mean +- std), with a message naming what is accepted."""
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"{source}: no seeds given; accepted: {SEEDS_ACCEPTED}")
    seeds = []
    for part in text.split(","):
        p = part.strip()
        if not p:
            raise ConfigError(f"{source}: {text.strip()!r} has an empty entry; accepted: {SEEDS_ACCEPTED}")
        if not (p.isascii() and p.lstrip("+").isdigit()) or int(p) > MAX_SEED:
            raise ConfigError(
                f"{source}: {p!r} (in {text.strip()!r}) is not a seed; accepted: {SEEDS_ACCEPTED}"
            )
        seeds.append(int(p))
    dup = sorted({s for s in seeds if seeds.count(s) > 1})
    if dup:
        what = f"seed {dup[0]} is" if len(dup) == 1 else f"seeds {', '.join(map(str, dup))} are"
        raise ConfigError(f"{source}: {what} listed more than once; accepted: {SEEDS_ACCEPTED}")
    return seeds
