"""fracturescan.models"""
