"""Entry point: ``streamlit run app/main.py``.

``streamlit run`` puts only ``app/`` on sys.path, so the repository root goes there on purpose
(resnet_core, analysis and the ``app`` package itself are imported from it). This is the one
place the app does so: the pages run after this script, in the same process.
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from app import ui  # noqa: E402
from app.warm import warm_imports  # noqa: E402

warm_imports()  # torch and analysis, once per server process, in the background

st.set_page_config(page_title="ResNet lab: plain vs residual", page_icon="🧱", layout="wide")

PAGES = Path(__file__).resolve().parent / "app_pages"
pages = {
    "Train and compare": [
        st.Page(PAGES / "lab.py", title="Lab", icon=":material/science:", default=True),
        st.Page(PAGES / "degradation.py", title="Degradation", icon=":material/trending_up:"),
        st.Page(PAGES / "runs.py", title="Runs", icon=":material/table_rows:"),
    ],
    "Look inside": [
        st.Page(PAGES / "responses.py", title="Layer responses", icon=":material/stacked_line_chart:"),
        st.Page(PAGES / "gradients.py", title="Gradient flow", icon=":material/gradient:"),
        st.Page(PAGES / "activations.py", title="Activations", icon=":material/image_search:"),
        st.Page(PAGES / "embeddings.py", title="Embeddings", icon=":material/scatter_plot:"),
        st.Page(PAGES / "studies.py", title="Studies", icon=":material/biotech:"),
        st.Page(PAGES / "rescue.py", title="Can plain nets be fixed?", icon=":material/healing:"),
    ],
    "Teach": [
        st.Page(PAGES / "tour.py", title="Tour", icon=":material/school:"),
    ],
}
page = st.navigation(pages)

with st.sidebar:
    ui.presentation_toggle()
    store = ui.get_store()
    try:
        df = ui.runs_df(store)
        n_active = ui.active_count(df)
        st.caption(f"**{len(df)}** runs · **{n_active}** queued or running")
    except Exception as e:  # the sidebar must never take a page down
        st.caption(f"run store unreadable: {e}")
    st.caption(
        f"Run store: `{store.root}` (set RESNET_LAB_RUNS_DIR to move it; the CLI "
        "reads the same). Runs are separate processes: they keep training when this "
        "tab closes."
    )

    addr = st.get_option("server.address")
    if addr not in ("127.0.0.1", "localhost", "::1"):
        st.warning(
            "This server listens beyond this machine (server.address is "
            f"{addr or 'unset: all interfaces'}). Start it from the repository folder, "
            "whose .streamlit/config.toml binds to 127.0.0.1, unless you mean to share it.",
            icon=":material/lan:",
        )

page.run()
