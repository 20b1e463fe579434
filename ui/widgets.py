"""Page pieces every page shares: the gateway banner, error messages, a one-shot notice, the run picker."""

from __future__ import annotations

import functools
from collections.abc import Callable

import streamlit as st

from ui import client, formatting, state


def show_error(error: client.GatewayError) -> None:
    """A gateway error as a readable message in the page (never a traceback)."""
    if error.gateway_down:
        gateway_down_banner()
        return
    st.error(error.message, icon=":material/error:")


def gateway_down_banner() -> None:
    st.error(
        f"**The gateway at `{client.gateway_address()}` is not reachable.** The UI talks only to it: start it "
        "with `make run` (or set `PEFTLAB_GATEWAY` to where it listens), then retry.",
        icon=":material/cloud_off:",
    )
    if st.button("Retry", key="gateway-retry", icon=":material/refresh:"):
        client.refresh()
        st.rerun()


def gateway_up() -> bool:
    """True when the gateway answers; otherwise draws the banner with a retry button."""
    healthy, _ = client.gateway_health()
    if not healthy:
        gateway_down_banner()
    return healthy


def shows_errors(render: Callable) -> Callable:
    """For fragments: they rerun on their own, outside the page's error handling."""

    @functools.wraps(render)
    def wrapper(*args, **kwargs):
        try:
            return render(*args, **kwargs)
        except client.GatewayError as error:
            show_error(error)
            return None

    return wrapper


def flash(message: str) -> None:
    """Show `message` at the top of the next page drawn (e.g. after st.switch_page)."""
    st.session_state[state.FLASH] = message


def show_flash() -> None:
    message = st.session_state.pop(state.FLASH, None)
    if message:
        st.success(message, icon=":material/check_circle:")


def open_run(run_id: str, message: str = "") -> None:
    """Go to the Run page showing `run_id`."""
    st.session_state[state.RUN_ID] = run_id
    if message:
        flash(message)
    st.switch_page(state.PAGE_RUN)


def run_label(run) -> str:
    name = f" · {run.name}" if run.name else ""
    return f"{run.id}{name} · {formatting.run_status(run.status)}"


MISSING = "-"


def table(rows: list[dict], key: str | None = None) -> None:
    """st.dataframe with each column as wide as its longest cell (its automatic widths cut report cells:
    "216.5 [-8.65" of "216.5 [-8.65, 441.6]"), and "-" where a value is missing (a running trial's
    objective), not "None"."""
    st.dataframe(rows, hide_index=True, key=key, placeholder=MISSING,
                 column_config={name: st.column_config.Column(width=px) for name, px in fitted_widths(rows).items()})  # fmt: skip


def fitted_widths(rows: list[dict], char_px: int = 8, pad_px: int = 28, max_px: int = 480) -> dict[str, int]:
    """Column -> pixels for the longest of its header and cells (the grid's font is ~8 px per character)."""
    widths: dict[str, int] = {}
    for row in rows:
        for name, value in row.items():
            text = "" if value is None else str(value)
            widths[name] = max(widths.get(name, len(str(name))), len(text))
    return {name: min(max_px, chars * char_px + pad_px) for name, chars in widths.items()}


def sidebar() -> None:
    with st.sidebar:
        auth = "with API token" if client.token_configured() else "no API token"
        st.caption(f"gateway `{client.gateway_address()}` · {auth}")
