"""fracturescan.explain"""
