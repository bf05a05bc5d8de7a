"""Pure drawing: tables and arrays in, matplotlib figures (and their files) out; no run folders are read."""
