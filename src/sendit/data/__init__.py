"""Data in: readers by format, labels and classes, rows and their checks, the split."""
