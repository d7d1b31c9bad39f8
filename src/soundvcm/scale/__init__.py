"""Scale-out engines on existing frameworks: Ray Data for dataset-scale extraction and generation."""
