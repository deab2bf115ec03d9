"""The `pgolf` command line: argument parsing and thin wrappers over the layers below; pgolf's own
errors print one line, anything else (a bug) a traceback. Nothing imports it but __main__."""
