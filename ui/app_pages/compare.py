"""Compare: start a comparison of methods over seeds; overlaid loss curves, bars of time, memory and
tokens/s, the report table with confidence intervals, and the Pareto view."""

from __future__ import annotations

import streamlit as st
from peftlab.v1 import comparator_pb2

from ui import client, experiment_views, reports, state

st.title("Compare methods")
st.caption(
    "The same job trained with several methods and seeds, side by side: which is best, fastest, lightest?"
)

models = [m.name for m in client.models()]
datasets = [d.name for d in client.datasets()]

with st.expander("New comparison", expanded=not st.session_state.get(state.COMPARISON_ID)):
    with st.form("compare.form"):
        c1, c2, c3 = st.columns(3)
        name = c1.text_input("Name", placeholder="e.g. methods on tiny-llama")
        model = c2.selectbox(
            "Model", models, index=models.index("tiny-llama") if "tiny-llama" in models else 0
        )
        data = c3.selectbox(
            "Dataset", datasets, index=datasets.index("default") if "default" in datasets else 0
        )
        methods = st.multiselect(
            "Methods", reports.METHODS, default=["lora", "dora", "qlora"], key="compare.methods"
        )
        c1, c2, c3, c4 = st.columns(4)
        iters = c1.number_input("Steps per run", 1, 100000, 60, key="compare.iters")
        rank = c2.number_input("Rank (adapters)", 1, 1024, 8, key="compare.rank")
        seeds = c3.number_input(
            "Seeds per method",
            1,
            32,
            2,
            help="More seeds, tighter confidence intervals.",
            key="compare.seeds",
        )
        test_samples = c4.number_input("Test samples scored", 0, 10000, 20, key="compare.test_samples")
        submitted = st.form_submit_button("Start comparison", type="primary", icon=":material/play_arrow:")
    if submitted:
        form = reports.ComparisonForm(name, model or "", data or "", int(iters), tuple(methods), int(rank),
                                      int(seeds), int(test_samples))  # fmt: skip
        experiment_views.start_from_form(
            reports.check_comparison(form),
            lambda: client.start_comparison(reports.comparison_request(form)),
            state.COMPARISON_ID,
            f"Started comparison {{id}}: {len(methods)} methods x {seeds} seeds.",
        )


def draw(experiment: comparator_pb2.Experiment) -> None:
    report = client.report(experiment.id)
    experiment_views.comparison(experiment, report, experiment_views.loss_rows(experiment, report))


experiment_views.choose_and_follow(
    comparator_pb2.EXPERIMENT_KIND_COMPARISON, "comparison", state.COMPARISON_ID, state.COMPARE_SELECT,
    "compare.cancel", draw,
)  # fmt: skip
