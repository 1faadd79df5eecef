"""The clinical Streamlit web app (``fracturescan app``); needs the ``app`` extra.

Holds no ML: it calls :class:`fracturescan.inference.Predictor` and :mod:`fracturescan.explain`.
"""

from pathlib import Path

#: The script ``streamlit run`` executes.
APP_SCRIPT = Path(__file__).with_name("app.py")
