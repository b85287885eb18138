"""The `kvlab` command line."""
