"""fracturescan.evaluation"""
