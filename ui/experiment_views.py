"""Drawing a comparison or a study from the comparator's messages (Experiment, Report) and the runs' loss
curves; the Compare and Study pages fetch, these draw. Kept apart from the pages so tests can draw real
messages they build."""

from __future__ import annotations

import streamlit as st
from peftlab.v1 import comparator_pb2

from ui import charts, client, formatting, reports, state, widgets

UNSUPPORTED = (
    "The comparator behind this gateway does not support this (it answered UNIMPLEMENTED): it is older than "
    "this UI. Single runs work meanwhile: see the New run page."
)


def unsupported_or_raise(error: client.GatewayError) -> None:
    """Explain an UNIMPLEMENTED comparator; any other error is the page's to show."""
    if not error.unimplemented:
        raise error
    st.info(UNSUPPORTED, icon=":material/construction:")


def header(experiment: comparator_pb2.Experiment) -> None:
    status = formatting.experiment_status(experiment.status)
    st.markdown(f"### {experiment.name or experiment.id} {formatting.badge(status)}")
    total = max(experiment.total_runs, 1)
    st.progress(min(experiment.finished_runs / total, 1.0),
                text=f"{experiment.finished_runs} of {experiment.total_runs} runs finished")  # fmt: skip
    if experiment.error.message:
        st.error(f"{experiment.error.code}: {experiment.error.message}")


def loss_rows(experiment: comparator_pb2.Experiment, report: comparator_pb2.Report | None) -> list[dict]:
    """Training loss per step of every run of the experiment, labelled by arm (read incrementally)."""
    from ui import feed

    labels = reports.run_labels(report, experiment)
    feeds = st.session_state.setdefault(state.RUN_FEEDS, {})
    rows = []
    for run_id in experiment.run_ids:
        f = feeds.setdefault(run_id, feed.RunFeed(run_id))
        f.add(client.run_events(run_id, f.last_event_id, wait_s=0.3))
        rows += [{"step": r["step"], "loss": r["train_loss"], "run": f"{labels[run_id]} · {run_id[-6:]}"}
                 for r in f.steps]  # fmt: skip
    return rows


def comparison(
    experiment: comparator_pb2.Experiment, report: comparator_pb2.Report, curves: list[dict]
) -> None:
    header(experiment)
    if curves:
        st.altair_chart(
            charts.curve(curves, "loss", "training loss, every run", color="run"),
            key="cmp.curves",
            width="stretch",
        )
    if not report.rows:
        st.info("The report fills in as runs finish.")
        return
    st.subheader("Time, memory, speed")
    cols = st.columns(3)
    for col, (metric, title) in zip(
        cols,
        (
            ("wall_seconds", "time (s)"),
            ("peak_memory_bytes", "peak memory (GB)"),
            ("tokens_per_second", "tokens/s"),
        ),
    ):
        rows = reports.bar_rows(report, metric)
        if rows:
            col.altair_chart(charts.bars(rows, title), key=f"cmp.bar.{metric}", width="stretch")
    st.subheader("Report")
    st.caption("Means over seeds with 95% confidence intervals (Student t); best first." +
               ("" if report.complete else " Partial: some runs are still going."))  # fmt: skip
    widgets.table(reports.report_table(report), key="cmp.table")
    for note in report.notes:
        st.info(note, icon=":material/info:")
    if report.failures:
        st.markdown("**Runs without metrics**")
        widgets.table(
            [{"row": f.label, "run": f.run_id, "code": f.code, "why": f.message} for f in report.failures]
        )
    tests = reports.stat_tests(report)
    if tests:
        st.markdown("**Pairwise tests**")
        st.caption("paired-t: across seeds, one pair per seed. mcnemar-exact: the same test samples answered "
                   "by both arms (runs sharing a seed); only samples one arm gets right and the other wrong count.")  # fmt: skip
        widgets.table(tests, key="cmp.tests")
    samples = reports.sample_table(report)
    if samples:
        st.markdown("**Which test samples each arm gets right**")
        st.caption("Per test sample (its index in the test split): how many of the arm's seeds answered it exactly "
                   "right. Each run's test_samples.jsonl has the answers.")  # fmt: skip
        widgets.table(samples, key="cmp.samples")
    points = reports.pareto_rows(report)
    if points:
        st.subheader("Pareto view")
        st.altair_chart(charts.pareto(points), key="cmp.pareto", width="stretch")
    figures(report)


def figures(report: comparator_pb2.Report) -> None:
    if report.plots:
        with st.expander("The comparator's figures"):
            for plot in report.plots:
                if plot.png:
                    st.image(plot.png, caption=plot.title or plot.name)
    if report.markdown:
        st.download_button("Report as Markdown", report.markdown, file_name=f"{report.experiment_id}.md",
                           mime="text/markdown", icon=":material/description:")  # fmt: skip


def study(experiment: comparator_pb2.Experiment) -> None:
    header(experiment)
    objective, minimize = reports.objective_of(experiment)
    trials = reports.trials_table(experiment)
    if not trials:
        st.info("No trial yet: the optimizer proposes the first ones as the study starts.")
        return
    progress = reports.best_so_far(experiment)
    left, right = st.columns(2)
    if progress:
        left.altair_chart(charts.best_so_far(progress, objective), key="study.best", width="stretch")
    params = sorted({k for row in trials for k in row} - {"trial", "status", "run", objective})
    if params:
        right.altair_chart(
            charts.parallel_coordinates(trials, params + [objective], objective),
            key="study.parallel",
            width="stretch",
        )
    counts = {}
    for row in trials:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    st.markdown(" · ".join(f"{formatting.badge(s)} {n}" for s, n in sorted(counts.items())))
    widgets.table(trials, key="study.trials")
    best = reports.best_trial(experiment)
    st.subheader("Best configuration")
    if best is None:
        st.info("No trial has completed yet.")
        return
    spec = reports.trial_spec(experiment, best)
    direction = "lowest" if minimize else "highest"
    st.markdown(
        f"Trial with the {direction} **{objective}**: **{best.values[objective]:.4g}** (run `{best.trial_id}`)"
    )
    st.json({k: reports.param_value(v) for k, v in sorted(best.params.items())})
    if st.button(
        "Train this configuration", type="primary", key="study.train", icon=":material/rocket_launch:"
    ):
        run = client.submit_run(spec, name=f"best of {experiment.name or experiment.id}")
        widgets.open_run(run.id, f"Started run {run.id} with the study's best configuration.")


def start_from_form(problems: list[str], start, current_key: str, started: str) -> None:
    """Show the form's problems; or start the experiment (`start()` returns it), make it the page's current one
    and say so (`started` may name `{id}`)."""
    for problem in problems:
        st.error(problem)
    if problems:
        return
    try:
        experiment = start()
    except client.GatewayError as error:
        unsupported_or_raise(error)
        return
    st.session_state[current_key] = experiment.id
    widgets.flash(started.format(id=experiment.id))
    st.rerun()


def choose_and_follow(kind: int, noun: str, current_key: str, select_key: str, cancel_key: str, draw) -> None:
    """The experiments of one kind: pick one (the page's current one first), draw it with `draw(experiment)`,
    live while it runs (a fragment, no page reload), and offer to cancel it."""
    try:
        found = [e for e in client.experiments(50) if e.kind == kind]
    except client.GatewayError as error:
        unsupported_or_raise(error)
        st.stop()
    if not found:
        st.info(f"No {noun} yet: start one above.")
        st.stop()
    ids = [e.id for e in found]
    names = {e.id: e.name for e in found}
    current = st.session_state.get(current_key)
    if current in ids:
        # The page's current one wins over the widget's remembered value: after "Started comparison x-...",
        # the selectbox (keyed, so it keeps its own state) would otherwise still show the one viewed before.
        st.session_state[select_key] = current
    chosen = st.selectbox(noun.capitalize(), ids, key=select_key,
                          format_func=lambda i: f"{i} · {names[i]}" if names[i] else i)  # fmt: skip
    st.session_state[current_key] = chosen
    running = next(e for e in found if e.id == chosen).status == comparator_pb2.EXPERIMENT_STATUS_RUNNING

    @st.fragment(run_every=3 if running else None)
    @widgets.shows_errors
    def live(experiment_id: str) -> None:
        experiment = client.experiment(experiment_id)
        draw(experiment)
        if running and experiment.status != comparator_pb2.EXPERIMENT_STATUS_RUNNING:
            st.rerun()

    live(chosen)
    if running and st.button(f"Cancel {noun}", key=cancel_key, icon=":material/stop:"):
        client.cancel_experiment(chosen)
        st.rerun()
