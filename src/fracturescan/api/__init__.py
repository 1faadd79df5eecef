"""The REST API (``fracturescan serve``; needs the ``api`` extra): FastAPI over the same service
layer, database and active model as the web app. Holds no ML: it calls
:mod:`fracturescan.service`, which calls :class:`~fracturescan.inference.Predictor`.
"""
