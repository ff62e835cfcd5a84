"""Image data: sources (named data sets and folders), preprocessing, training batches."""
