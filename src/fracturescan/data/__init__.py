"""fracturescan.data"""
