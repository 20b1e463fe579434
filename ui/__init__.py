"""peftlab: the Streamlit UI."""
