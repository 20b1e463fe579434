"""New run: model, dataset (pick or upload, with a preview and line-by-line checks), method, hyperparameters
with per-method defaults, "auto" batch size and rank from the optimizer, and the predicted peak memory against
the machine's before anything starts."""

from __future__ import annotations

import json

import streamlit as st
from peftlab.v1 import common_pb2, gateway_pb2, optimizer_pb2

from ui import client, formatting, state, widgets

OTHER_MODEL = "(another model dir or hub name)"
DEFAULT_MODEL = "smollm2-135m-instruct"
METHOD_HELP = {
    "lora": "LoRA: small low-rank adapters next to frozen weights. Fast, light, the usual choice.",
    "dora": "DoRA: LoRA plus a learned magnitude per output; often a bit better, a bit slower.",
    "qlora": "QLoRA: LoRA on a 4- or 8-bit quantized base model; least memory.",
    "full": "Full fine-tuning: every weight trains; needs the most memory and a small learning rate.",
}
LEARNING_RATE = {"lora": 2e-3, "dora": 2e-3, "qlora": 2e-3, "full": 5e-5}  # RunSpec's defaults per method
PROBE = {"iters": 30, "rank": 16, "alpha": 32.0, "test_samples": 0, "eval_every": 0, "save_every": 0}
UNLIMITED_GB = 1e6  # a budget nothing exceeds: RecommendBatchSize then predicts the peak at max_batch


def _model_caption(info) -> str:
    quant = f"{info.quant_bits}-bit" if info.quant_bits else "float"
    template = " · chat template" if info.chat_template else ""
    return (
        f"{info.model_type} · {info.num_layers} layers · hidden {info.hidden_size} · {quant} · "
        f"{formatting.gigabytes(info.size_bytes)}{template}"
    )


def _save_upload() -> None:
    """Button callback (runs before the page, so it may select the new dataset in the picker)."""
    name = st.session_state.get("upload.name", "").strip()
    files = {split: st.session_state.get(f"upload.{split}") for split in ("train", "valid", "test")}
    st.session_state.pop(state.UPLOAD_RESULT, None)
    if not name or files["train"] is None or files["valid"] is None:
        st.session_state[state.UPLOAD_RESULT] = (
            "Give the dataset a name and upload train.jsonl and valid.jsonl."
        )
        return
    try:
        result = client.create_dataset(
            name,
            files["train"].getvalue(),
            files["valid"].getvalue(),
            files["test"].getvalue() if files["test"] else b"",
        )
    except client.GatewayError as error:
        st.session_state[state.UPLOAD_RESULT] = error.message
        return
    st.session_state[state.UPLOAD_RESULT] = result.SerializeToString()
    if result.created:
        st.session_state[state.NEW_RUN_DATASET] = name


def _upload_tab() -> None:
    st.text_input("Name of the new dataset", key="upload.name", placeholder="e.g. my-task")
    cols = st.columns(3)
    for col, split, note in zip(cols, ("train", "valid", "test"), ("required", "required", "optional")):
        col.file_uploader(f"{split}.jsonl ({note})", type=["jsonl"], key=f"upload.{split}")
    st.caption(
        'One JSON object per line: {"messages": [...]} (chat), {"prompt": ..., "completion": ...} or '
        '{"text": ...}. Every line is checked before anything is saved.'
    )
    st.button("Check and save", on_click=_save_upload, key="upload.save", icon=":material/upload:")
    result = st.session_state.get(state.UPLOAD_RESULT)
    if isinstance(result, str):
        st.error(result)
    elif isinstance(result, bytes):
        response = gateway_pb2.CreateDatasetResponse.FromString(result)
        if response.created:
            st.success(f"Saved dataset **{response.dataset.name}** and selected it.")
        else:
            st.error(f"Not saved: {len(response.problems)} problem(s). Fix these lines and upload again.")
            st.dataframe([{"file": p.file, "line": p.line or "-", "problem": p.problem} for p in response.problems],
                         hide_index=True)  # fmt: skip


MAPPING = {  # RunSpec's column-mapping fields: label, placeholder
    "prompt_field": ("Prompt column", "e.g. question"),
    "completion_field": ("Completion column", "e.g. answer"),
    "messages_field": ("Messages column", "e.g. dialog"),
    "system_field": ("System prompt column", "e.g. persona"),
}


def _column_mapping() -> dict[str, str]:
    """Which columns hold what, for data not in the engine's own keys; "" = the format's own key."""
    st.caption("Column mapping, for rows whose columns have other names (leave empty for messages / prompt + "
               "completion / text, Alpaca and ShareGPT rows). The checks and the preview below use it.")  # fmt: skip
    cols = st.columns(4)
    return {
        name: col.text_input(label, key=f"new_run.{name}", placeholder=hint).strip()
        for col, (name, (label, hint)) in zip(cols, MAPPING.items())
    }


def _dataset_check(name: str, model: str, columns: dict[str, str]) -> float:
    """Shows the dataset's checks and a preview with token counts; returns the mean tokens per row (0 if unknown)."""
    check = client.validate_dataset(name, columns)
    splits = ", ".join(f"{s.split} {s.rows:,}" for s in check.dataset.splits)
    if check.valid:
        st.success(f"Every line checks out: {splits} rows · format {check.dataset.format or '?'}.")
    else:
        st.error(f"{len(check.problems)} problem(s) found: training would stop at the first one.")
        st.dataframe([{"file": p.file.rsplit("/", 1)[-1], "line": p.line or "-", "problem": p.problem}
                      for p in check.problems], hide_index=True)  # fmt: skip
        return 0.0
    split = st.radio(
        "Preview split", [s.split for s in check.dataset.splits], horizontal=True, key="preview.split"
    )
    preview = client.preview_dataset(name, split, rows=8, model=model, columns=columns)
    st.dataframe(
        [
            {
                "line": r.line,
                "format": r.format,
                "prompt tokens": r.prompt_tokens,
                "completion tokens": r.completion_tokens,
                "total tokens": r.total_tokens,
                "row": r.json,
            }
            for r in preview.rows
        ],
        hide_index=True,
        column_config={"row": st.column_config.TextColumn(width="large")},
    )
    mean = sum(r.total_tokens for r in preview.rows) / max(len(preview.rows), 1)
    st.caption(
        f"{preview.total_rows:,} rows in {split}; about {mean:.0f} tokens a row under {preview.model}'s tokenizer."
    )
    return mean


def _memory_request(info, spec: dict, hardware, budget_gb: float, max_batch: int, target: int):
    quantized = info.quant_bits > 0 and spec["method"] != "full"
    explicit = spec.get("dtype", "auto")
    dtype_bytes = 4 if explicit == "float32" or (explicit == "auto" and hardware.device_kind == "cpu") else 2
    return optimizer_pb2.RecommendBatchSizeRequest(
        model_shape=info.shape,
        method="qlora" if quantized else spec["method"],
        seq_len=spec["max_seq_length"],
        memory_budget_gb=budget_gb,
        grad_checkpoint=spec.get("grad_checkpoint", False),
        target_effective_batch=target,
        rank=spec.get("rank", 8),
        quant_bits=info.quant_bits or spec.get("quant_bits", 4),
        dtype_bytes=dtype_bytes,
        max_batch=max_batch,
    )


def _show_prediction(answer, hardware) -> None:
    total = hardware.total_memory_bytes
    available = hardware.available_memory_bytes
    peak = answer.predicted_peak_bytes
    cols = st.columns(3)
    cols[0].metric("predicted peak memory", formatting.gigabytes(peak))
    cols[1].metric("machine memory", formatting.gigabytes(total))
    cols[2].metric("free now", formatting.gigabytes(available))
    if total:
        st.progress(min(peak / total, 1.0), text=f"{100 * peak / total:.1f}% of the machine's memory")
    if not answer.fits or (total and peak > total):
        st.error("This run will not fit in the machine's memory: lower the batch size or sequence length, "
                 "use QLoRA, or turn on gradient checkpointing.", icon=":material/memory:")  # fmt: skip
    elif available and peak > available:
        st.warning("It fits the machine but not the memory free right now: other work may have to end first.")
    parts = {
        "frozen weights": answer.frozen_weights_bytes,
        "trainable + AdamW": answer.trainable_bytes,
        "activations": answer.activations_bytes,
        "logits": answer.logits_bytes,
        "runtime": answer.overhead_bytes,
    }
    st.caption(" · ".join(f"{k} {formatting.gigabytes(v)}" for k, v in parts.items()))


@st.fragment(run_every=2)
@widgets.shows_errors
def _probe_status(probe_id: str, train_tokens: int) -> None:
    probe = client.run(probe_id)
    status = formatting.run_status(probe.status)
    if probe.status in formatting.ACTIVE_RUN:
        total = max(probe.progress.total_steps, 1)
        st.progress(min(probe.progress.step / total, 1.0), text=f"rank probe {probe_id}: {status}, "
                    f"step {probe.progress.step} of {probe.progress.total_steps}")  # fmt: skip
        return
    if probe.status != common_pb2.RUN_STATUS_SUCCEEDED:
        st.error(f"The rank probe ended {status}: {probe.error.message or 'no adapter to read'}.")
        return
    advice = st.session_state.setdefault(state.RANK_ADVICE, {})
    if probe_id not in advice:
        advice[probe_id] = client.recommend_rank_from_run(probe_id, train_tokens).SerializeToString()
        st.rerun()  # once: the form above now uses the recommended rank


def _rank_advice(probe_id: str | None) -> optimizer_pb2.RecommendRankResponse | None:
    raw = st.session_state.get(state.RANK_ADVICE, {}).get(probe_id or "")
    return optimizer_pb2.RecommendRankResponse.FromString(raw) if raw else None


st.title("New run")
models = client.models()
datasets = client.datasets()
hardware = client.hardware()

# ---- 1. model ----
st.subheader("1 · Model")
names = [m.name for m in models]
choice = st.selectbox(
    "Model",
    names + [OTHER_MODEL],
    index=names.index(DEFAULT_MODEL) if DEFAULT_MODEL in names else 0,
    key=state.NEW_RUN_MODEL,
)
info = next((m for m in models if m.name == choice), None)
if info is None:
    model = st.text_input(
        "Model dir or hub name",
        key=state.NEW_RUN_MODEL_OTHER,
        placeholder="e.g. my-model or mlx-community/SmolLM2-360M-Instruct",
        help="A dir in mlx_lm format under the gateway's models root. A hub name works once it has been "
        "downloaded there (trainers do not download models on their own).",
    ).strip()
    st.caption("The gateway checks the name when the run is submitted.")
else:
    model = info.name
    st.caption(_model_caption(info))

# ---- 2. dataset ----
st.subheader("2 · Dataset")
pick, upload = st.tabs(["Pick a dataset", "Upload JSONL"])
with upload:
    _upload_tab()
with pick:
    dataset_names = [d.name for d in datasets]
    if not dataset_names:
        st.warning("No dataset under the data root yet: upload one in the other tab.")
        dataset = ""
    else:
        default_index = dataset_names.index("default") if "default" in dataset_names else 0
        dataset = st.selectbox(
            "Dataset",
            dataset_names,
            index=default_index,
            key=state.NEW_RUN_DATASET,
            format_func=lambda n: f"{n} ({next(d for d in datasets if d.name == n).format or '?'} format)",
        )
tokens_per_row = 0.0
columns: dict[str, str] = {}
if dataset:
    with st.expander("Preview and checks", expanded=True):
        columns = _column_mapping()
        try:
            tokens_per_row = _dataset_check(dataset, model if info is not None else "", columns)
        except client.GatewayError as error:
            widgets.show_error(error)
train_rows = next((s.rows for d in datasets if d.name == dataset for s in d.splits if s.split == "train"), 0)

# ---- 3. method ----
st.subheader("3 · Method")
method = st.radio("Method", list(METHOD_HELP), horizontal=True, key=state.NEW_RUN_METHOD)
st.caption(METHOD_HELP[method])
adapter = method != "full"

# ---- 4. hyperparameters ----
st.subheader("4 · Hyperparameters")
st.caption("The defaults suit the method; hover a field for what it does.")
spec: dict = {"model": model, "data": dataset, "method": method} | {k: v for k, v in columns.items() if v}
c1, c2, c3, c4 = st.columns(4)
spec["iters"] = c1.number_input("Steps", 1, 10_000_000, 60, key=state.NEW_RUN_ITERS,
                                 help="Optimizer steps to train for.")  # fmt: skip
spec["learning_rate"] = c2.number_input(
    "Learning rate", 1e-7, 1.0, LEARNING_RATE[method], format="%.1e", step=1e-5, key=f"new_run.lr.{method}",
    help="Peak AdamW learning rate. Adapters take ~1e-3; full fine-tuning ~5e-5.",
)  # fmt: skip
spec["warmup_steps"] = c3.number_input("Warmup steps", 0, 10_000_000, min(6, spec["iters"] - 1),
                                       help="Linear warmup from 0; must be below the steps.")  # fmt: skip
spec["schedule"] = c4.selectbox("Schedule", ["cosine", "linear", "constant"], help="Decay after warmup.")

rank_auto = False
if adapter:
    c1, c2, c3, c4 = st.columns(4)
    rank_auto = c1.toggle("auto rank", key=state.NEW_RUN_RANK_AUTO,
                          help="Run a short probe and let the optimizer pick the rank.")  # fmt: skip
    spec["rank"] = int(c1.number_input("Rank", 1, 1024, 8, key=state.NEW_RUN_RANK, disabled=rank_auto))
    alpha_default = 16.0
    spec["alpha"] = c2.number_input("Alpha", 0.01, 1e6, alpha_default, help="Update scale is alpha / rank.")
    spec["dropout"] = c3.number_input("Dropout", 0.0, 0.99, 0.0, step=0.05)
    if method == "qlora":
        spec["quant_bits"] = c4.selectbox("Quantization bits", [4, 8])

c1, c2, c3, c4 = st.columns(4)
batch_auto = c1.toggle("auto batch size", key=state.NEW_RUN_BATCH_AUTO,
                       help="The largest batch that fits the machine's free memory (optimizer).")  # fmt: skip
spec["batch_size"] = int(
    c1.number_input("Batch size", 1, 4096, 4, key=state.NEW_RUN_BATCH, disabled=batch_auto)
)
spec["grad_accumulation"] = int(c2.number_input("Gradient accumulation", 1, 1024, 1, disabled=batch_auto))
spec["max_seq_length"] = int(c3.number_input("Max sequence length", 16, 131072, 256, step=16,
                                             help="Tokens per row; longer samples are truncated."))  # fmt: skip
effective = int(c4.number_input("Effective batch (auto)", 1, 65536, 8, disabled=not batch_auto,
                                help="Batch x accumulation that auto aims for."))  # fmt: skip
if tokens_per_row and tokens_per_row > spec["max_seq_length"]:
    st.warning(
        f"Rows average {tokens_per_row:.0f} tokens, more than the max sequence length: they will be cut."
    )

with st.expander("More settings"):
    c1, c2, c3, c4 = st.columns(4)
    spec["eval_every"] = c1.number_input("Validate every (steps)", 0, 10_000_000, 50)
    spec["save_every"] = c2.number_input("Checkpoint every (steps)", 0, 10_000_000, 50)
    spec["seed"] = c3.number_input("Seed", 0, 2**31 - 1, 0)
    spec["test_samples"] = c4.number_input("Test samples scored", 0, 1_000_000, 50,
                                           help="Generated at the end for the task metric (exact match).")  # fmt: skip
    c1, c2, c3, c4 = st.columns(4)
    spec["dtype"] = c1.selectbox("Compute dtype", ["auto", "float32", "bfloat16", "float16"])
    spec["grad_checkpoint"] = c2.toggle("Gradient checkpointing", help="Less memory, ~30% slower.")
    spec["packing"] = c3.toggle("Pack samples", value=True)
    spec["mask_prompt"] = c4.selectbox(
        "Loss on", ["assistant", "last_assistant", "none"],
        help="assistant: every assistant turn (the completion); last_assistant: the final answer only; "
        "none: every token, prompts too.",
    )  # fmt: skip

# ---- 5. rank probe (auto rank) ----
probe_id = st.session_state.get(state.PROBE_RUN_ID)
advice = _rank_advice(probe_id)
if adapter and rank_auto:
    st.subheader("Auto rank")
    st.caption(f"A probe run ({PROBE['iters']} steps at rank {PROBE['rank']}) shows how much of its rank the "
               "update uses; the optimizer turns that spectrum into a rank.")  # fmt: skip
    if st.button("Run the rank probe", key="new_run.probe", icon=":material/biotech:"):
        probe_spec = {**{k: v for k, v in spec.items() if k not in ("rank", "alpha")}, **PROBE}
        probe_spec["warmup_steps"] = min(probe_spec["warmup_steps"], PROBE["iters"] - 1)
        probe = client.submit_run(probe_spec, name="rank probe", labels={"purpose": "rank-probe"})
        st.session_state[state.PROBE_RUN_ID] = probe_id = probe.id
        advice = None
    if probe_id and advice is None:
        _probe_status(probe_id, int(tokens_per_row * train_rows))
    if advice is not None:
        spec["rank"] = advice.rank
        spec["alpha"] = 2.0 * advice.rank
        st.success(f"Recommended rank **{advice.rank}** (alpha {2 * advice.rank}) from probe {probe_id}.")
        with st.expander("Why this rank"):
            st.write(advice.explanation)

# ---- 6. memory ----
st.subheader("5 · Memory")
if not hardware:
    st.warning("No trainer is registered, so there is no machine to check the memory against.")
elif info is None or not info.shape.hidden_size:
    st.info("The memory prediction needs the model's shape: pick a model from the list.")
else:
    machines = {h.trainer_id: h for h in hardware}
    where = st.selectbox("Check against trainer", list(machines),
                         format_func=lambda t: f"{t} · {formatting.device(machines[t].hardware)}")  # fmt: skip
    machine = machines[where].hardware
    free_gb = (machine.available_memory_bytes or machine.total_memory_bytes) / formatting.GB
    try:
        if batch_auto:
            answer = client.recommend_batch_size(
                _memory_request(info, spec, machine, free_gb, 1024, effective)
            )
            spec["batch_size"], spec["grad_accumulation"] = answer.batch_size, answer.grad_accumulation
            st.markdown(f"Auto: batch size **{answer.batch_size}** x accumulation **{answer.grad_accumulation}** "
                        f"(largest that fits: {answer.largest_fitting_batch}).")  # fmt: skip
        else:
            answer = client.recommend_batch_size(
                _memory_request(info, spec, machine, UNLIMITED_GB, spec["batch_size"], 0)
            )
        _show_prediction(answer, machine)
    except client.GatewayError as error:
        st.warning(f"No memory prediction: {error.message}")
        if batch_auto:
            st.caption("Auto batch size needs the optimizer; the batch size above is used instead.")

if batch_auto:
    # The trainer picks the micro-batch itself from the memory model on the machine it lands on (the figure
    # above is the optimizer's preview for the machine chosen here); it keeps the effective batch.
    spec["batch_size"], spec["grad_accumulation"], spec["effective_batch_size"] = 0, 1, effective

# ---- start ----
st.subheader("Start")
problems = []
if not model:
    problems.append("Name a model.")
if not dataset:
    problems.append("Pick or upload a dataset.")
if spec["warmup_steps"] >= spec["iters"]:
    problems.append("Warmup steps must be fewer than the steps.")
if adapter and rank_auto and advice is None:
    problems.append("Auto rank: run the rank probe first (or turn auto rank off).")
for problem in problems:
    st.warning(problem)
name = st.text_input("Run name (optional)", key=state.NEW_RUN_NAME, max_chars=200)
with st.expander("The spec that will be submitted"):
    st.code(json.dumps(spec, indent=2), language="json")
if st.button(
    "Start run", type="primary", disabled=bool(problems), key="new_run.start", icon=":material/rocket_launch:"
):
    run = client.submit_run(spec, name=name)
    widgets.open_run(run.id, f"Started run {run.id}.")
