"""Streamlit script: ``streamlit run app.py`` (use ``fracturescan app``, which sets the config)."""

from fracturescan.webapp.main import run

run()
