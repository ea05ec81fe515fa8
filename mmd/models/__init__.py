"""The detectors: each in its own folder with config, model, loss and train (see DESIGN.md).

`data` assembles what every detector trains on (real labelled items plus the selected
synthetic set, split without leaks, as frozen text and image features).
"""
