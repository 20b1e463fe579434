"""Playground: one prompt to the base model and to a run's adapter, side by side, both streamed as the
trainer generates them."""

from __future__ import annotations

import threading
import time

import streamlit as st
from peftlab.v1 import common_pb2

from ui import client, state, widgets

EXAMPLE = "Ana Lima, 34, joined Acme in Lisbon as CTO. Give JSON."


class Stream:
    """Collects one generation in a background thread; the page redraws what it has every few ms. (Threads
    never touch Streamlit: only the page does.)"""

    def __init__(self, pieces):
        self.text = ""
        self.error: client.GatewayError | None = None
        self.done = False
        self._thread = threading.Thread(target=self._read, args=(pieces,), daemon=True)
        self._thread.start()

    def _read(self, pieces) -> None:
        try:
            for piece in pieces:
                self.text += piece
        except client.GatewayError as error:
            self.error = error
        finally:
            self.done = True


st.title("Playground")
st.caption("Prompt the base model and a fine-tuned adapter with the same words and compare their answers.")

finished = client.runs(page_size=50, statuses=(common_pb2.RUN_STATUS_SUCCEEDED,))
if not finished:
    st.info("No finished run yet: the adapter side needs one. Start a run on the New run page.")
    st.stop()
ids = [r.id for r in finished]
preferred = st.session_state.get(state.PLAYGROUND_RUN)
labels = {r.id: widgets.run_label(r) for r in finished}
run_id = st.selectbox("Adapter of run", ids, index=ids.index(preferred) if preferred in ids else 0,
                      format_func=labels.get, key=state.PLAYGROUND_RUN)  # fmt: skip
run = next(r for r in finished if r.id == run_id)
base_model = run.spec.model or "smollm2-135m-instruct"
st.caption(f"Base model: **{base_model}** · method {run.spec.method or 'lora'} · "
           f"{run.progress.step} steps · best valid loss {run.metrics.best_valid_loss:.4g}")  # fmt: skip

with st.form("playground.form"):
    prompt = st.text_area("Prompt", EXAMPLE, key=state.PLAYGROUND_PROMPT, height=90)
    c1, c2 = st.columns(2)
    max_tokens = c1.slider("Max tokens", 1, 512, 96)
    temperature = c2.slider(
        "Temperature", 0.0, 2.0, 0.0, step=0.1, help="0 = greedy (the same answer every time)."
    )
    go = st.form_submit_button("Generate", type="primary", icon=":material/send:")

left, right = st.columns(2)
left.markdown(f"**Base model** `{base_model}`")
right.markdown(f"**With the adapter** of `{run_id}`")
base_box, adapter_box = left.empty(), right.empty()
if go and prompt.strip():
    kwargs = {"max_tokens": max_tokens, "temperature": temperature}
    streams = (
        Stream(client.generate(prompt, model=base_model, **kwargs)),
        Stream(client.generate(prompt, run_id=run_id, **kwargs)),
    )
    while True:
        for box, stream in zip((base_box, adapter_box), streams):
            box.code(stream.text + ("" if stream.done else " ▌"), language=None, wrap_lines=True)
        if all(s.done for s in streams):
            break
        time.sleep(0.1)
    for box, stream in zip((base_box, adapter_box), streams):
        if stream.error is not None:
            with box.container():
                st.code(stream.text, language=None, wrap_lines=True)
                widgets.show_error(stream.error)
    st.session_state[state.GENERATIONS] = (prompt, streams[0].text, streams[1].text)
elif state.GENERATIONS in st.session_state:
    _, base_text, adapter_text = st.session_state[state.GENERATIONS]
    base_box.code(base_text, language=None, wrap_lines=True)
    adapter_box.code(adapter_text, language=None, wrap_lines=True)
