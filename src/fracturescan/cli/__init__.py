"""fracturescan.cli"""
