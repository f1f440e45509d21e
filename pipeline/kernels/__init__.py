"""The shipped-kernel matrix: which kernel builds a distribution ships, and from where."""
