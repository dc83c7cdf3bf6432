"""The web UI: a Streamlit app that reaches the hub only through neve.client."""
