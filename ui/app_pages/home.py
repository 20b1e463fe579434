"""Home: the trainers' hardware, the health of every service, recent runs and experiments, and one button
that starts the default fine-tuning."""

from __future__ import annotations

import streamlit as st
from peftlab.v1 import comparator_pb2

from ui import client, formatting, widgets

st.title("peftlab")
st.caption("Fine-tune language models with LoRA, DoRA, QLoRA or full fine-tuning on MLX, compare the methods, "
           "and search their hyperparameters.")  # fmt: skip

left, right = st.columns([2, 1], vertical_alignment="center")
with left:
    st.markdown(
        "**New here?** One click trains the default job: SmolLM2-135M-Instruct learns to turn a sentence "
        "into JSON (LoRA, 60 steps), and the Run page shows it live."
    )
with right:
    if st.button("Start the default fine-tuning", type="primary", icon=":material/play_arrow:"):
        run = client.submit_run({}, name="default fine-tuning")
        widgets.open_run(run.id, f"Started run {run.id}: the default LoRA fine-tuning.")


@st.fragment(run_every=5)
@widgets.shows_errors
def system() -> None:
    status = client.status()
    st.subheader("Services")
    columns = st.columns(max(len(status.services), 1))
    for column, service in zip(columns, status.services):
        with column:
            mark = ":green[:material/check_circle:]" if service.healthy else ":red[:material/error:]"
            st.markdown(f"{mark} **{service.name}**  \n`{service.address}`")
            if service.detail:
                st.caption(service.detail)
    st.caption(f"peftlab {status.version}")

    st.subheader("Trainers")
    if not status.trainers:
        st.warning("No trainer is registered: runs will wait in the queue until one starts (`make run`).")
    for trainer in status.trainers:
        hw = trainer.hardware
        with st.container(border=True):
            st.markdown(
                f"**{trainer.id}** · {formatting.device(hw)}" + (" · draining" if trainer.draining else "")
            )
            cols = st.columns(5)
            cols[0].metric("memory", formatting.gigabytes(hw.total_memory_bytes))
            cols[1].metric("available", formatting.gigabytes(hw.available_memory_bytes))
            cols[2].metric("CPU cores", hw.cpu_cores)
            cols[3].metric("slots busy", f"{trainer.busy_slots}/{trainer.slots}")
            cols[4].metric("heartbeat", formatting.age(trainer.last_heartbeat))
            accel = ", ".join(name for name, on in (("Metal", hw.metal), ("CUDA", hw.cuda)) if on) or "none"
            st.caption(f"CPU {hw.cpu_name} · GPU backends: {accel} · mlx {hw.mlx_version} · {hw.platform}")

    if status.runs:
        st.markdown(
            " · ".join(f"{formatting.badge(formatting.run_status(c.status))} {c.count}" for c in status.runs)
        )


system()

st.subheader("Recent runs")
recent = client.runs(page_size=10)
if not recent:
    st.info("No runs yet. Start the default fine-tuning above, or set one up on the New run page.")
else:
    st.dataframe(
        [
            {
                "run": r.id,
                "name": r.name,
                "status": formatting.run_status(r.status),
                "model": r.spec.model or "default",
                "method": r.spec.method or "lora",
                "step": f"{r.progress.step}/{r.progress.total_steps}",
                "loss": round(r.progress.train_loss, 4) if r.progress.step else None,
                "created": formatting.when(r.created_at),
            }
            for r in recent
        ],
        hide_index=True,
    )
    chosen = st.selectbox("Run", [r.id for r in recent], format_func=lambda i: widgets.run_label(
        next(r for r in recent if r.id == i)))  # fmt: skip
    if st.button("Open run", icon=":material/open_in_new:"):
        widgets.open_run(chosen)

st.subheader("Recent experiments")
try:
    experiments = client.experiments(page_size=5)
except client.GatewayError as error:
    if error.unimplemented:
        st.info("Comparisons and studies need the comparator, which does not support them yet.")
    else:
        widgets.show_error(error)
else:
    if not experiments:
        st.info("No comparisons or studies yet: start one on the Compare or Study page.")
    for experiment in experiments:
        kind = comparator_pb2.ExperimentKind.Name(experiment.kind).removeprefix("EXPERIMENT_KIND_").lower()
        st.markdown(
            f"{formatting.badge(formatting.experiment_status(experiment.status))} **{experiment.id}** "
            f"{experiment.name} · {kind} · {experiment.finished_runs}/{experiment.total_runs} runs"
        )
