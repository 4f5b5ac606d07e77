"""Lab: launch a run or a sweep; the queue with progress, ETA and cancel, refreshed live."""

import os

import streamlit as st

from app import ui
from app.checks import InputError, check_dataset, check_depth, model_name
from resnet_core import jobs, launch
from resnet_core.config import (
    DATASET_PRESET_OVERRIDES,
    DEFAULT_RECORDERS,
    MAX_WIDTH,
    SWEEPS,
    ConfigError,
    apply_preset,
    parse_seeds,
    sweep_plan,
    sweep_runs,
)
from resnet_core.data import (
    NAMED,
    TORCHVISION_FILES,
    TORCHVISION_WHERE,
    data_root_of,
    on_disk,
    require_on_disk,
)
from resnet_core.eta import runs_eta
from resnet_core.memory import check_run
from resnet_core.models import ACTIVATIONS, BRANCH_SCALARS, INITS
from resnet_core.raybackend import BackendError
from resnet_core.store import ACTIVE, RESUMABLE, DiskFullError, StoreError

KINDS = {
    "plain": "Plain (no shortcuts)",
    "resnet": "Residual (ResNet)",
    "preresnet": "Residual, pre-activation",
}
PRESET_HELP = {
    "quick": "about 90 s for four nets on a 2-core CPU: deeper plain nets worse, resnet56 still "
    f"behind resnet20 (on digits: {DATASET_PRESET_OVERRIDES[('quick', 'digits')]['epochs']} epochs, minutes)",
    "lesson": "about half an hour on a 2-core CPU for four nets: deeper plain nets worse; "
    "resnet56 still trails resnet20 (no budget under 30 min found where it wins)",
    "laptop": "width 8, all 50k images, 6,000 steps: 30-40 min a seed for four nets on 2 "
    "cores; the cheapest budget found where resnet56 ends below resnet20",
    "smoke": "20 iterations: checks the pipeline in seconds, shows nothing",
    "paper": "the paper's 64k iterations at batch 128: hours on a GPU, days on a CPU",
    "custom": "no preset: set epochs or iterations under Options",
}
PATH_CHOICE = "a path (.npz or ImageFolder)…"
# what to do when a torchvision dataset is not on disk, in the page's words (see
# resnet_core.data.not_found_message; the CLI's version names its flags instead)
LAB_REMEDY = (
    f"tick 'Download it if missing' to fetch it into {{root}} when the run starts "
    f"(needs network), choose '{PATH_CHOICE}' for a .npz file or an ImageFolder folder, "
    "or pick digits (bundled, works offline)"
)

st.title("Lab")
st.markdown(
    "**Pick a model and a budget, press Launch** (or launch the `quick` sweep), then "
    "watch it train here and on **Degradation**; runs keep going if you close the tab."
)

store = ui.get_store()


def where_to_train() -> tuple[str, str | None]:
    """This machine, or a Ray cluster (README, Beyond one machine). The default follows
    $RESNET_LAB_BACKEND and $RAY_ADDRESS, as the CLI's. The page never connects to Ray: the
    store check runs in a child process and the queue's runner is the Ray driver."""
    try:
        default = launch.backend_name()
    except ValueError as e:
        st.warning(f"{e}; the Lab starts on this machine", icon=":material/warning:")
        default = "local"
    where = st.radio(
        "Train on",
        list(launch.BACKENDS),
        index=list(launch.BACKENDS).index(default),
        format_func={"local": "this machine", "ray": "a Ray cluster"}.get,
        key="lab_backend",
        horizontal=True,
        help="A Ray cluster: each run is one Ray task on a node with free CPUs (a GPU share "
        "on GPU nodes), training into this store, which every node must reach at the same "
        "path. Needs `pip install 'resnet-lab[ray]'`.",
    )
    if where != "ray":
        return where, None
    address = st.text_input(
        "Ray address",
        value=os.environ.get("RAY_ADDRESS", ""),
        key="lab_ray_address",
        placeholder="host:6379 (empty: a local cluster the queue starts)",
    )
    # empty means $RAY_ADDRESS where it is set (as the CLI's), so the page names that one
    return where, address.strip() or os.environ.get("RAY_ADDRESS") or None


def queued_where(backend: str, address: str | None) -> str:
    if backend != "ray":
        return "as soon as a core is free"
    return f"on the Ray cluster at {address or '(a local one the queue starts)'} when a node has a free CPU"


def submit(cfg, start_runner: bool = True):
    with st.spinner(
        "Checking the Ray cluster and the store from its nodes…" if backend == "ray" else "Queueing…"
    ):
        return jobs.submit(store, cfg, start_runner=start_runner, backend=backend, address=ray_address)


# --- the form ---------------------------------------------------------------------------
c1, c2, c3 = st.columns(3)
with c1:
    kind = st.radio("Model family", list(KINDS), format_func=KINDS.get, key="lab_kind")
    depth_in = st.number_input("Depth (6n+2: 8, 14, 20, 32, 44, 56, 110)", value=20, step=6, key="lab_depth")
    shortcut = st.selectbox(
        "Shortcut option",
        ["A", "B", "C"],
        key="lab_shortcut",
        disabled=kind == "plain",
        help="A: identity + zero-padding (the paper's CIFAR choice); "
        "B: 1x1 projection where dimensions change; C: projections "
        "everywhere. Plain nets have no shortcut.",
    )
with c2:
    ds_choice = st.selectbox(
        "Dataset",
        list(NAMED) + [PATH_CHOICE],
        key="lab_dataset",
        help="digits is bundled (no download, works offline).",
    )
    data_path = ""
    download = False
    if ds_choice == PATH_CHOICE:
        data_path = st.text_input(
            "Dataset path", key="lab_data_path", placeholder="../shared/data/cifar10-jpeg.npz"
        )
    elif ds_choice != "digits":
        download = st.checkbox("Download it if missing", key="lab_download", value=False)
    if ds_choice in TORCHVISION_FILES:
        # the folder the trainer reads: the Lab leaves TrainConfig.data_root unset
        _root = data_root_of(None)
        if on_disk(ds_choice, None):
            st.caption(
                f":material/check_circle: **{ds_choice}** found in `{_root}`",
                help=f"torchvision reads {TORCHVISION_WHERE[ds_choice]} there.",
            )
        elif download:
            st.caption(
                f":material/cloud_download: **{ds_choice}** not found in `{_root}`: "
                "it will be downloaded there when the run starts (needs network)."
            )
        else:
            st.caption(
                f":material/error: **{ds_choice}** not found in `{_root}`: torchvision "
                f"looks there for {TORCHVISION_WHERE[ds_choice]}. Tick **Download it if "
                "missing**, choose a .npz / ImageFolder path, or pick **digits**."
            )
    preset = st.selectbox(
        "Budget preset",
        ["quick", "lesson", "laptop", "smoke", "paper", "custom"],
        key="lab_preset",
        format_func=lambda p: f"{p} — {PRESET_HELP[p]}",
    )
with c3:
    with st.expander("Options (empty = the preset's value)", expanded=False):
        iterations = st.number_input("Iterations", value=None, step=100, key="lab_iterations")
        epochs = st.number_input("Epochs", value=None, step=1.0, key="lab_epochs")
        batch = st.number_input("Batch size", value=None, step=32, key="lab_batch")
        lr = st.number_input("Learning rate", value=None, step=0.01, format="%.4f", key="lab_lr")
        width = st.number_input(
            "Width (first stage's channels; paper 16)",
            value=None,
            step=4,
            max_value=MAX_WIDTH,
            key="lab_width",
        )
        image_size = st.number_input(
            "Image size (pixels; resize at load)", value=None, step=4, key="lab_image_size"
        )
        subset = st.number_input("Training subset (images)", value=None, step=500, key="lab_subset")
        seed = st.number_input("Seed", value=0, step=1, key="lab_seed")
        norm = st.selectbox("Normalization", ["batch", "none"], key="lab_norm")
        init = st.selectbox(
            "Init",
            list(INITS),
            key="lab_init",
            help="he (the paper), torch (PyTorch's default); looks_linear: "
            "mirrored weights for CReLU (Balduzzi et al. 2017); "
            "delta_orthogonal: orthogonal centre tap (Xiao et al. 2018); "
            "fixup: residual nets without BN (Zhang et al. 2019)",
        )
        activation = st.selectbox(
            "Activation",
            list(ACTIVATIONS),
            key="lab_activation",
            help="tanh: Xiao et al.'s, with delta_orthogonal and no BN; "
            "tat: leaky ReLU tailored to the depth (Zhang et al. "
            "2022); crelu: with looks_linear, doubles each conv's "
            "input channels at equal width. tat, crelu: plain nets.",
        )
        branch_scalar = st.selectbox(
            "Residual-branch scalar",
            list(BRANCH_SCALARS),
            key="lab_branch_scalar",
            help="skipinit (De & Smith 2020), rezero (Bachlechner et "
            "al. 2020): x + alpha F(x), alpha learnable from 0",
        )
        zero_init = st.checkbox(
            "Zero-init each branch's last BN gamma (Goyal et al. 2017)", key="lab_zero_init", value=False
        )
        tat_target = st.number_input(
            "TAT target C(0) (activation tat)",
            value=0.9,
            step=0.05,
            min_value=0.01,
            max_value=0.99,
            key="lab_tat_target",
        )
        record = st.checkbox("Record per-layer statistics (Fig. 7, gradients)", value=True, key="lab_record")
    name = st.text_input("Label (optional)", key="lab_name", max_chars=60)
    backend, ray_address = where_to_train()


def _int_or_none(v):
    if v is None:
        return None
    return int(v) if float(v).is_integer() else v  # a fraction goes on to validation's message


def overrides() -> dict:
    """The explicit options (None = keep the preset's), with the dataset checked."""
    if ds_choice == PATH_CHOICE:
        dataset = check_dataset(data_path)
    else:
        dataset = check_dataset(ds_choice)
    return {
        "dataset": dataset,
        "download": download or None,
        "iterations": _int_or_none(iterations),
        "epochs": epochs,
        "batch_size": _int_or_none(batch),
        "lr": lr,
        "width": _int_or_none(width),
        "image_size": _int_or_none(image_size),
        "subset": _int_or_none(subset),
        "seed": _int_or_none(seed),
        "norm": norm,
        "init": init,
        "activation": activation,
        "branch_scalar": branch_scalar,
        "zero_init_residual": zero_init,
        "tat_target": tat_target,
        "recorders": list(DEFAULT_RECORDERS) if record else [],
        "name": name.strip() or None,
    }


def require_data(cfg):
    """Refuse a torchvision dataset that is neither on disk nor to be downloaded, now rather
    than when the background trainer starts; the config's data_root and download are the
    ones the trainer uses."""
    require_on_disk(cfg.dataset, cfg.data_root, cfg.download, remedy=LAB_REMEDY)


def build_single():
    depth = check_depth(depth_in)
    ov = overrides()
    ov["model"] = model_name(kind, depth)
    ov["shortcut"] = None if kind == "plain" else shortcut
    cfg = apply_preset(None if preset == "custom" else preset, ov)
    if kind == "plain":
        cfg.shortcut = None
    return cfg


def memory_note():
    """The memory the configured run needs, and the machine's, before Launch (the same check
    jobs.submit makes: what can't fit is refused, naming both numbers)."""
    try:
        cfg = build_single()
        est = check_run(cfg)
    except (InputError, ConfigError, StoreError, ValueError) as e:
        return f":material/memory: Can't launch: {e}", True
    if est is None:
        return ":material/memory: Memory: known once the dataset is read", False
    from resnet_core.memory import device_memory_limit, fmt_bytes

    limit, what, _ = device_memory_limit(cfg.device)
    return (
        f":material/memory: Memory: about **{fmt_bytes(est.total)}** of {fmt_bytes(limit)} "
        f"({what}): {est.breakdown()}"
    ), False


b1, b2 = st.columns([1, 3])
with b1:
    launch = st.button("Launch", type="primary", key="lab_launch", icon=":material/rocket_launch:")
with b2:
    _mem_text, _mem_bad = memory_note()
    (st.warning if _mem_bad else st.caption)(_mem_text)
if launch:
    try:
        cfg = build_single()
        require_data(cfg)
        run = submit(cfg)
        st.success(
            f"Queued **{run.id}** ({cfg.model}, {cfg.dataset}). "
            f"It starts {queued_where(backend, ray_address)}.",
            icon=":material/check:",
        )
        st.session_state["lab_last"] = [run.id]
    except (InputError, ConfigError, StoreError, ValueError, DiskFullError, BackendError) as e:
        st.error(f"Not launched: {e}", icon=":material/error:")

# --- sweeps -------------------------------------------------------------------------------
with st.container(border=True):
    s1, s2, s3 = st.columns([1, 2, 1])
    with s1:
        sweep = st.selectbox("Sweep", list(SWEEPS), key="lab_sweep")
    sw = SWEEPS[sweep]
    with s2:
        own_budget = st.checkbox(
            f"Use the budget chosen above instead of the sweep's own (`{sw['preset']}`)",
            key="lab_sweep_budget",
            value=False,
        )
        seeds_text = st.text_input(
            "Seeds (optional)",
            key="lab_sweep_seeds",
            placeholder="e.g. 0,1,2",
            help="Train every model once per seed; the pages then show "
            "runs that differ only in seed as mean ± std. Empty: "
            "one run per model with the seed under Options.",
        )
        per_seed = ", once per seed" if seeds_text.strip() else ""
        st.caption(
            f"Trains {', '.join(sw['models'])} on the dataset chosen above{per_seed}."
            if "runs" not in sw
            else f"Trains {len(sweep_runs(sweep))} runs of {', '.join(dict.fromkeys(sw['models']))}"
            f" on the dataset chosen above{per_seed}, each with its own variant (init, "
            "activation, norm, branch scalar): the Options' are not used."
        )
        if sw["preset"] == "paper" and not own_budget:
            st.caption(
                ":warning: `fig6` uses the paper's 64k iterations per run: hours on a GPU, "
                "days on a CPU. Tick the box to use a smaller budget."
            )
    with s3:
        launch_sweep = st.button(
            f"Launch sweep `{sweep}`", key="lab_launch_sweep", icon=":material/playlist_add:"
        )
if launch_sweep:
    try:
        ov = overrides()
        ov.pop("name")
        pre = (None if preset == "custom" else preset) if own_budget else sw["preset"]
        seeds = [ov["seed"]]
        if seeds_text.strip():
            if ov["seed"] not in (0, None):  # as the CLI refuses --seed with --seeds
                raise InputError(
                    f"Seed {ov['seed']} (under Options) and Seeds {seeds_text.strip()!r} "
                    "can't be combined: set Seed back to 0, or clear Seeds"
                )
            seeds = parse_seeds(seeds_text, source="Seeds")
        runs = sweep_plan(sweep, seeds)  # model-major, deepest first (as the CLI)
        for k in {k for r in runs for k in r} - {"model", "name", "seed"}:
            ov.pop(k, None)  # rescue's runs set their own variant (the CLI refuses the flags)
        cfgs = [apply_preset(pre, {**ov, "name": f"sweep {sweep}", **r}) for r in runs]
        for c in cfgs:
            require_data(c)
        ids = [submit(c, start_runner=False).id for c in cfgs]
        jobs.ensure_runner(store)
        st.session_state["lab_last"] = ids
        per_seed = f" ({len(sw['models'])} models × {len(seeds)} seeds)" if len(seeds) > 1 else ""
        st.success(
            f"Queued {len(ids)} runs of sweep `{sweep}`{per_seed}; each starts "
            f"{queued_where(backend, ray_address)}.",
            icon=":material/check:",
        )
    except (InputError, ConfigError, StoreError, ValueError, DiskFullError, BackendError) as e:
        st.error(f"Sweep not launched: {e}", icon=":material/error:")

with st.expander("The config that Launch would queue", expanded=False):
    try:
        st.code(build_single().to_json(), language="json")
    except (InputError, ConfigError, ValueError) as e:
        st.error(str(e))


# --- the queue ------------------------------------------------------------------------------
def queue_rows(df):
    active = df[df["state"].isin(ACTIVE)]
    recent = df[~df["state"].isin(ACTIVE)].head(6)
    return active, recent


try:
    _df0 = ui.runs_df(store)
except OSError as e:
    st.error(f"The run store {store.root} can't be read: {e}")
    st.stop()
_every = 2.0 if ui.active_count(_df0) else 8.0


def queue_eta_line(active):
    """One ETA for everything queued or running (a sweep's runs: the queued ones estimated
    from the running ones, scaled by depth; resnet_core.eta)."""
    if len(active) < 2:
        return  # a single run's own ETA is on its row
    slots = jobs.concurrent_jobs(jobs.cores())
    eta = runs_eta(store, list(active["id"]), slots)
    if eta is None:
        st.caption("Whole queue: ETA once a run has started.")
    else:
        st.markdown(
            f"**Whole queue ({len(active)} runs): {ui.fmt_eta(eta)}** (an estimate: "
            f"queued runs timed from the running ones, by depth, {slots} at a time)"
        )


@st.fragment(run_every=_every)
def queue_panel():
    df = ui.runs_df(store)
    st.subheader("Queue")
    if not len(df):
        st.caption(
            "No runs yet: launch one above."
            + (
                " Meanwhile **Degradation**, **Layer responses** and the **Tour** show "
                "the bundled reference runs (measured, shipped with the lab)."
                if len(ui.reference_df())
                else ""
            )
        )
        return
    active, recent = queue_rows(df)
    if (active["state"] == "queued").any():
        jobs.restart_if_stranded(store)  # after a restart: queued runs need a runner again
    n_run, n_q = int((active["state"] == "running").sum()), int((active["state"] == "queued").sum())
    st.caption(f"{n_run} running · {n_q} queued · {jobs.cores()} core(s); refreshed every {int(_every)} s")
    queue_eta_line(active)
    for r in list(active.itertuples()) + list(recent.itertuples()):
        with st.container(border=True):
            a, b, c = st.columns([3, 5, 1.4])
            a.markdown(f"**{r.label}**  \n{ui.state_text(r.state)}")
            with b:
                total = r.total if isinstance(r.total, (int, float)) and r.total == r.total else None
                if r.state == "queued":
                    text = r.message or "waiting for a free core"
                elif r.state == "running":
                    rate = (
                        f" · {r.images_per_s:,.0f} img/s"
                        if isinstance(r.images_per_s, (int, float)) and r.images_per_s == r.images_per_s
                        else ""
                    )
                    text = f"step {int(r.step)}/{int(total) if total else '?'} · {ui.fmt_eta(r.eta_s)}{rate}"
                else:
                    errs = (
                        f"test error {ui.fmt_pct(r.test_error)}"
                        if r.test_error == r.test_error and r.test_error is not None
                        else ""
                    )
                    text = f"{r.message[:160]}" + (f" · {errs}" if errs else "")
                st.progress(float(r.progress or 0.0), text=text)
            with c:
                if r.state in ACTIVE:
                    if st.button("Cancel", key=f"lab_cancel_{r.id}", icon=":material/stop:"):
                        try:
                            st.toast(f"{r.label}: {jobs.cancel(store, r.id)}")
                        except StoreError as e:
                            st.error(str(e))
                elif r.state in RESUMABLE:
                    if st.button("Resume", key=f"lab_resume_{r.id}", icon=":material/play_arrow:"):
                        try:
                            jobs.resume(store, r.id)
                            st.toast(f"{r.label}: queued to resume")
                        except StoreError as e:
                            st.error(str(e))
    st.caption("Older runs: see **Runs**.")


queue_panel()
