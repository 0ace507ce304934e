"""Reading and checking data: ``students.csv``/``classes.csv`` folders, stacked
replicates, the STAR tables, and what the rest of the package is handed
(:class:`~classsize.inference.data.dataset.LoadedData`).

Every malformed input is refused here, as one :class:`~classsize.inference.data.checks.DataError`
line naming the file, row, column or field.
"""
