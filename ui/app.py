"""The peftlab web UI (`streamlit run ui/app.py`; `make run` starts it on http://localhost:8501): the
navigation and the gateway banner. Each page is a script in ui/app_pages/ (not pages/, which Streamlit would
take for its older automatic navigation); every backend call goes through
ui/client.py to the gateway (PEFTLAB_GATEWAY, PEFTLAB_API_TOKEN)."""

from __future__ import annotations

import streamlit as st

from ui import client, state, widgets

st.set_page_config(page_title="peftlab", page_icon=":material/science:", layout="wide")
page = st.navigation(
    [
        st.Page(state.PAGE_HOME, title="Home", icon=":material/home:", default=True),
        st.Page(state.PAGE_NEW_RUN, title="New run", icon=":material/add_circle:"),
        st.Page(state.PAGE_RUN, title="Run", icon=":material/monitoring:"),
        st.Page(state.PAGE_COMPARE, title="Compare", icon=":material/compare_arrows:"),
        st.Page(state.PAGE_STUDY, title="Study", icon=":material/tune:"),
        st.Page(state.PAGE_PLAYGROUND, title="Playground", icon=":material/chat:"),
    ]
)
widgets.sidebar()
if widgets.gateway_up():
    widgets.show_flash()
    try:
        page.run()
    except client.GatewayError as error:
        widgets.show_error(error)
