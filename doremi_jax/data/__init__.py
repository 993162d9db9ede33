"""Data: SeqIO input, domain Tasks, corpora (building, reading, sizes), tokenizers."""
