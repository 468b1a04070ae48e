"""Servers that pushservice is measured against, speaking the same HTTP paths."""
