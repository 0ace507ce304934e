"""classsize.inference: reading data, the analysis models, fits, summaries, plots,
recovery studies and the command line."""
