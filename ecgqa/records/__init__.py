"""ECG files -> canonical records: reading, lead names, measurements, paper plots.

Everything file-format specific (WFDB, Challenge .mat) stays inside this package.
"""
