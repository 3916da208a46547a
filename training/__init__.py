"""Training, evaluation, calibration and export of HAM10000 classifiers."""
