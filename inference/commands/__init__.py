"""The ``classsize`` command line and the comparison of several analyses on one dataset."""
