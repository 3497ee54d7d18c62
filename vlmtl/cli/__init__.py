"""Command-line entry points (``vlmtl-train-vl``, ``vlmtl-train-dense``; the scripts in
``scripts/`` call the same functions). Each only parses arguments and calls the library."""
