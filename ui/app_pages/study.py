"""Study: search hyperparameters with the optimizer; best-so-far, parallel coordinates of the trials, the
trials with their status, and the best configuration with a button to train it."""

from __future__ import annotations

import streamlit as st
from peftlab.v1 import comparator_pb2

from ui import client, experiment_views, reports, state

st.title("Hyperparameter study")
st.caption("The optimizer proposes each next configuration from the trials so far (Bayesian optimization); "
           "unpromising trials can be stopped early.")  # fmt: skip

models = [m.name for m in client.models()]
datasets = [d.name for d in client.datasets()]

with st.expander("New study", expanded=not st.session_state.get(state.STUDY_ID)):
    with st.form("study.form"):
        c1, c2, c3 = st.columns(3)
        name = c1.text_input("Name", placeholder="e.g. lr and rank on tiny-llama")
        model = c2.selectbox(
            "Model", models, index=models.index("tiny-llama") if "tiny-llama" in models else 0
        )
        data = c3.selectbox(
            "Dataset", datasets, index=datasets.index("default") if "default" in datasets else 0
        )
        methods = st.multiselect("Methods to search", reports.METHODS, default=["lora"], key="study.methods")
        st.caption("The search space is the optimizer's default for the chosen methods (learning rate, rank, "
                   "dropout, warmup, weight decay).")  # fmt: skip
        c1, c2, c3, c4 = st.columns(4)
        iters = c1.number_input("Steps per trial", 1, 100000, 60, key="study.iters")
        n_trials = c2.number_input("Trials", 1, 1000, 12, key="study.n_trials")
        parallelism = c3.number_input("Trials at once", 1, 1000, 1, key="study.parallelism")
        objective = c4.selectbox("Objective", list(reports.OBJECTIVES), help="best_valid_loss and time are "
                                 "minimized, exact match maximized.")  # fmt: skip
        pruning = st.toggle("Stop unpromising trials early (pruning)", value=True)
        submitted = st.form_submit_button("Start study", type="primary", icon=":material/play_arrow:")
    if submitted:
        form = reports.StudyForm(name, model or "", data or "", int(iters), tuple(methods), int(n_trials),
                                 int(parallelism), objective, pruning)  # fmt: skip

        def start():
            space = client.default_space(reports.default_space_request(form)).space
            return client.start_study(reports.study_request(form, space))

        experiment_views.start_from_form(
            reports.check_study(form),
            start,
            state.STUDY_ID,
            f"Started study {{id}}: {n_trials} trials.",
        )

experiment_views.choose_and_follow(
    comparator_pb2.EXPERIMENT_KIND_STUDY,
    "study",
    state.STUDY_ID,
    state.STUDY_SELECT,
    "study.cancel",
    experiment_views.study,
)
