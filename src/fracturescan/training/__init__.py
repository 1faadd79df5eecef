"""fracturescan.training"""
