"""Run: live loss/perplexity curves and tokens/s (fed by WatchRun, read incrementally in a fragment), a
progress bar with ETA, logs, cancel/resume, final metrics, the adapter to download, and evaluation."""

from __future__ import annotations

import json

import streamlit as st
from google.protobuf import json_format
from peftlab.v1 import common_pb2, trainer_pb2

from ui import charts, client, feed, formatting, state, widgets

REFRESH_S = 2
# What a finished run offers to download (DownloadAdapter's `artifact`), by button label.
DOWNLOADS = {"adapter": "adapter", "fused": "fused model", "gguf": "GGUF"}


def _feed(run_id: str) -> feed.RunFeed:
    feeds = st.session_state.setdefault(state.RUN_FEEDS, {})
    if run_id not in feeds:
        feeds[run_id] = feed.RunFeed(run_id)
    return feeds[run_id]


def _charts(f: feed.RunFeed, active: bool) -> None:
    if not f.steps:
        if active:
            st.info(
                "Waiting for the first step: the trainer loads the model and scores the base model first."
            )
        else:
            st.info("This run recorded no training step.")
        return
    curves = f.curves()
    left, right = st.columns(2)
    left.altair_chart(charts.curve(curves, "loss", "loss (nats/token)"), key="chart.loss", width="stretch")
    right.altair_chart(
        charts.curve(curves, "perplexity", "perplexity", log_y=True), key="chart.perplexity", width="stretch"
    )
    speed = [{"step": r["step"], "series": "tokens/s", "tokens/s": r["tokens_per_second"]} for r in f.steps]
    memory = [
        {"step": r["step"], "series": "peak", "GB": r["peak_memory_bytes"] / formatting.GB} for r in f.steps
    ]
    left, right = st.columns(2)
    left.altair_chart(
        charts.curve(speed, "tokens/s", "tokens per second"), key="chart.speed", width="stretch"
    )
    right.altair_chart(charts.curve(memory, "GB", "peak memory (GB)"), key="chart.memory", width="stretch")


def _header(run_id: str) -> None:
    """Status, trainer and banners, fetched in a fragment of their own that refreshes like the charts: a page
    opened while the run was QUEUED follows it to RUNNING instead of keeping "QUEUED · trainer -" (and the
    queued banner) above charts that train live. Its own fragment, so it stays above the action buttons."""
    run = client.run(run_id)
    spec = run.spec
    status = formatting.run_status(run.status)
    st.markdown(
        f"### {run.name or run.id} {formatting.badge(status)}\n"
        f"{spec.method or 'lora'} on **{spec.model or 'the default model'}** with **{spec.data or 'the default dataset'}**"
        f" · trainer `{run.trainer_id or '-'}` · attempt {run.attempt} · created {formatting.when(run.created_at)}"
    )
    if run.status == common_pb2.RUN_STATUS_FAILED or run.error.message:
        where = f" (field `{run.error.field}`)" if run.error.field else ""
        st.error(f"{run.error.code or 'FAILED'}: {run.error.message}{where}", icon=":material/error:")
    if run.status == common_pb2.RUN_STATUS_QUEUED:
        st.info("Queued: it starts as soon as a trainer has a free slot.", icon=":material/hourglass_top:")
    if run.waiting:  # a lost run whose checkpoint only its own trainer sees (per-machine runs roots)
        st.warning(run.waiting, icon=":material/hourglass_empty:")


LIVE_SPEED_HELP = (
    "This step's tokens (prompts and answers) per second of its own step time. The final tokens/s is the "
    "mean over all steps (all tokens / summed step time), so it smooths out slow first steps."
)
ELAPSED_HELP = (
    "Time since training started (or resumed), evaluations and checkpoints included. The final wall time "
    "is the whole run: loading the model, training, the last evaluation and the test-split scoring."
)
FINAL_SPEED_HELP = (
    "Mean over the training steps: all tokens / summed step time (evaluations and checkpoints excluded)."
)
WALL_HELP = "The whole run: loading the model, training, evaluations, checkpoints and the test-split scoring."


def _live(run_id: str, was_active: bool) -> None:
    run = client.run(run_id)
    f = _feed(run_id)
    f.add(client.run_events(run_id, f.last_event_id, wait_s=0.5))
    p = feed.progress(f.steps, run.progress.total_steps or run.spec.iters)
    st.progress(p.fraction, text=p.label())
    if f.phase:
        st.caption(f"Now: {f.phase}")
    last = f.steps[-1] if f.steps else None
    valid = f.evals[-1] if f.evals else None
    cols = st.columns(5)
    cols[0].metric("step", f"{p.step}/{p.total}")
    cols[1].metric("train loss", formatting.number(last["train_loss"]) if last else "-")
    cols[2].metric("valid loss", formatting.number(valid["valid_loss"]) if valid else "-")
    cols[3].metric(
        "tokens/s (this step)", f"{last['tokens_per_second']:.0f}" if last else "-", help=LIVE_SPEED_HELP
    )
    cols[4].metric(
        "elapsed", formatting.duration(last["elapsed_seconds"]) if last else "-", help=ELAPSED_HELP
    )
    _charts(f, run.status in formatting.ACTIVE_RUN)
    with st.expander(f"Logs ({len(f.logs)} lines)"):
        st.code("\n".join(f.logs[-200:]) or "(none yet)", language=None)
    if was_active and run.status not in formatting.ACTIVE_RUN:
        st.rerun()  # once, when it ends: the page redraws with the final metrics and stops refreshing


def _metrics(run: common_pb2.Run) -> None:
    m = run.metrics
    st.subheader("Final metrics")
    cols = st.columns(4)
    cols[0].metric("best valid loss", formatting.number(m.best_valid_loss))
    cols[1].metric("valid perplexity", formatting.number(m.valid_perplexity))
    cols[2].metric("test loss", formatting.number(m.test_loss))
    cols[3].metric("exact match", f"{m.task.exact_match:.0%}" if m.HasField("task") else "-")
    cols = st.columns(4)
    cols[0].metric("tokens/s (mean)", f"{m.tokens_per_second:.0f}", help=FINAL_SPEED_HELP)
    cols[1].metric("wall time", formatting.duration(m.wall_seconds), help=WALL_HELP)
    # How far the prediction made before the run was from what it measured (+ = predicted more).
    off = (
        (m.predicted_peak_memory_bytes - m.peak_memory_bytes) / m.peak_memory_bytes
        if m.peak_memory_bytes
        else 0
    )
    cols[2].metric("peak memory", formatting.gigabytes(m.peak_memory_bytes),
                   f"predicted {formatting.gigabytes(m.predicted_peak_memory_bytes)} ({off:+.0%})",
                   delta_color="off", delta_arrow="off")  # fmt: skip
    share = m.trainable_parameters / m.total_parameters if m.total_parameters else 0
    cols[3].metric(
        "trained parameters",
        f"{m.trainable_parameters:,}",
        f"{share:.2%} of the model",
        delta_color="off",
        delta_arrow="off",
    )
    st.caption(f"{m.steps} steps ({m.status}) · {m.train_tokens:,} training tokens · adapter "
               f"{formatting.gigabytes(m.adapter_bytes)} · backend {m.backend} · {m.run_dir}")  # fmt: skip


def _actions(run: common_pb2.Run) -> None:
    slots = iter(st.columns(6))  # the actions this run offers, left to right
    if run.status in formatting.ACTIVE_RUN and next(slots).button(
        "Cancel", key="run.cancel", icon=":material/stop:"
    ):
        client.cancel_run(run.id)
        widgets.flash(f"Asked run {run.id} to checkpoint and stop.")
        st.rerun()
    if run.status in formatting.RESUMABLE_RUN and next(slots).button(
        "Resume", key="run.resume", icon=":material/replay:"
    ):
        client.resume_run(run.id)
        widgets.flash(f"Run {run.id} resumes from its newest checkpoint.")
        st.rerun()
    if run.status in formatting.HAS_ADAPTER:
        zips = st.session_state.setdefault(state.ADAPTER_ZIPS, {})
        for artifact, label in DOWNLOADS.items():
            download, key = next(slots), (run.id, artifact)
            if key in zips:
                download.download_button(f"Save {label} (.zip)", zips[key], file_name=f"{run.id}-{artifact}.zip",
                                         mime="application/zip", icon=":material/download:",
                                         key=f"run.save.{artifact}")  # fmt: skip
            elif download.button(
                f"Download {label}", key=f"run.download.{artifact}", icon=":material/download:"
            ):
                try:
                    with st.spinner(f"Preparing the {label} ..."):
                        zips[key] = client.download_adapter(run.id, artifact)
                except client.GatewayError as error:
                    widgets.show_error(error)
                else:
                    st.rerun()
        if next(slots).button("Try it in the Playground", key="run.playground", icon=":material/chat:"):
            st.session_state[state.PLAYGROUND_RUN] = run.id
            st.switch_page(state.PAGE_PLAYGROUND)


def _evaluate(run: common_pb2.Run) -> None:
    st.subheader("Evaluate")
    with st.form("evaluate"):
        cols = st.columns(3)
        split = cols[0].selectbox("Split", ["test", "valid", "train"], key="evaluate.split")
        samples = cols[1].number_input("Samples scored by generation", 0, 10000, 0,
                                       help="0 = loss and perplexity only (fast).")  # fmt: skip
        batches = cols[2].number_input("Batches (0 = whole split)", 0, 100000, 0, key="evaluate.batches")
        go = st.form_submit_button("Evaluate", icon=":material/fact_check:")
    results = st.session_state.setdefault(state.EVALUATIONS, {}).setdefault(run.id, [])
    if go:
        with st.spinner("Evaluating on the trainer..."):
            try:
                results.append(client.evaluate(run.id, split, int(samples), int(batches)).SerializeToString())
            except client.GatewayError as error:
                widgets.show_error(error)
    if results:
        rows = []
        for raw in results:
            r = trainer_pb2.EvaluateResponse.FromString(raw)
            rows.append({"split": r.split, "loss": round(r.loss, 4), "perplexity": round(r.perplexity, 3),
                         "exact match": f"{r.task.exact_match:.0%}" if r.HasField("task") else "-",
                         "seconds": round(r.seconds, 1)})  # fmt: skip
        st.dataframe(rows, hide_index=True)


st.title("Run")
recent = client.runs(page_size=50)
chosen = (
    st.session_state.get(state.RUN_ID) or st.query_params.get("run") or (recent[0].id if recent else None)
)
if not chosen:
    st.info("No runs yet: start one on the New run page.")
    st.page_link(state.PAGE_NEW_RUN, label="New run", icon=":material/add_circle:")
    st.stop()
ids = [r.id for r in recent]
if chosen not in ids:
    ids.insert(0, chosen)
labels = {r.id: widgets.run_label(r) for r in recent}
chosen = st.selectbox(
    "Run", ids, index=ids.index(chosen), format_func=lambda i: labels.get(i, i), key=state.RUN_SELECT
)
st.session_state[state.RUN_ID] = chosen
st.query_params["run"] = chosen

run = client.run(chosen)
spec = run.spec
active = run.status in formatting.ACTIVE_RUN
st.fragment(run_every=REFRESH_S if active else None)(widgets.shows_errors(_header))(chosen)
_actions(run)
st.fragment(run_every=REFRESH_S if active else None)(widgets.shows_errors(_live))(chosen, active)
if run.status == common_pb2.RUN_STATUS_SUCCEEDED and run.HasField("metrics"):
    _metrics(run)
if run.status in formatting.HAS_ADAPTER:
    _evaluate(run)
with st.expander("Spec as submitted"):
    st.code(json.dumps(json_format.MessageToDict(spec), indent=2), language="json")
